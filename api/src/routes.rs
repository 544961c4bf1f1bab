//! The HTTP routes, one module per resource.

pub mod accounts;
pub mod health;
pub mod transactions;
