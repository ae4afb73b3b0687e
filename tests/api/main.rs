//! The integration tests, in one binary with one harness ([`helpers`]), against the real
//! PostgreSQL, LocalStack and Prometheus that `scripts/services.sh up` starts. One module
//! per suite.

mod helpers;

mod chaos;
mod cli;
mod credentials;
mod deadlines;
mod dlq;
mod endpoints;
mod envelopes;
mod fifo;
mod hostile;
mod ingest;
mod kubernetes;
mod observability;
mod progress;
mod rotation;
mod secrets;
mod status;
mod streams;
mod systemic;
mod tls;
