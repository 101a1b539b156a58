//! /metrics (OpenMetrics), /healthz and /readyz where Prometheus and the
//! kubelet reach them, /state on loopback only; the
//! health-check node ports of Services.

pub mod health_checks;
pub mod metrics;
mod server;
pub mod state;
pub mod sync_metrics;

pub use health_checks::HealthChecks;
pub use metrics::{Metrics, ResultLabel};
pub use server::{serve, Routes};
