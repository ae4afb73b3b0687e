//! The two outside systems, each behind a trait so the pipeline can be driven by in-memory
//! fakes: SQS ([`sqs::Queue`]) and PostgreSQL ([`postgres::Sink`]).

pub mod postgres;
pub mod sqs;
