//! ipwarden: a Kubernetes node agent that does kube-router's job (IPVS
//! service proxy, NetworkPolicy, VIP firewall) with one save-then-apply path
//! for ipsets and an eBPF mirror of the service sets.
//!
//! Layers (see DESIGN.md): `kernel/` is the only code that talks to the
//! kernel; `bpf/` loads, pins and attaches the eBPF object.

pub mod api;
pub mod bpf;
pub mod cli;
pub mod cluster;
pub mod controllers;
pub mod desired;
pub mod kernel;
pub mod lab;
pub mod netns;
pub mod reconcile;
pub mod store;
