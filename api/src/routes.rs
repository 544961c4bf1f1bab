//! The HTTP routes, one module per resource.

pub mod accounts;
pub mod admin;
pub mod alerts;
pub mod health;
pub mod transactions;
