//! The pure core: no I/O, so it is property-tested and fuzzed on its own (the crate builds
//! without the `service` feature to prove it).

pub mod dead_letter;
pub mod envelope;
pub mod event;
#[cfg(any(test, feature = "invariants"))]
pub mod invariants;
pub mod keyring;
pub mod redact;
pub mod stream;
#[cfg(feature = "service")]
pub mod synthetic;
