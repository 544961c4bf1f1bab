//! End-to-end tests: the api and a worker node in-process, against the real PostgreSQL,
//! Redis and RabbitMQ, each test on its own database, broker names and Redis prefix.

mod accounts;
mod alerts;
mod backlog;
mod browser;
mod cluster;
mod dashboard;
mod dlq;
mod events;
mod helpers;
mod models;
mod reads;
mod recovery;
mod scoring;
mod stream;
