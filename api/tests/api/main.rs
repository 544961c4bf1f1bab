//! Integration tests of the api against the real PostgreSQL, Redis and RabbitMQ.
//! Each test has its own database, broker names and Redis prefix (see `TestEnv`).

mod access;
mod admin;
mod alerts;
mod dashboard;
mod hardening;
mod health;
mod helpers;
mod idempotency;
mod metrics;
mod openapi;
mod properties;
mod transactions;
