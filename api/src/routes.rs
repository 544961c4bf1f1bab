//! The HTTP routes, one module per resource.

pub mod accounts;
pub mod admin;
pub mod alerts;
pub mod audit;
pub mod dlq;
pub mod health;
pub mod query;
pub mod transactions;
