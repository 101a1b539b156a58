//! /metrics (Prometheus text), /healthz and /readyz on one port.

pub mod metrics;
mod server;

pub use metrics::{Metrics, ResultLabel};
pub use server::serve;
