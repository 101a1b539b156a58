//! /metrics (Prometheus text), /healthz and /readyz on one port.

pub mod metrics;
mod server;
pub mod state;
pub mod sync_metrics;

pub use metrics::{Metrics, ResultLabel};
pub use server::serve;
