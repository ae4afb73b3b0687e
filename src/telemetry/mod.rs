//! What the service tells its operators: typed events, metrics, endpoints and logs.

pub mod events;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod throttle;
