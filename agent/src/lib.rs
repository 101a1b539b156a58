//! ipwarden: a Kubernetes node agent that does kube-router's job (IPVS
//! service proxy, NetworkPolicy, VIP firewall) with one save-then-apply path
//! for ipsets and an eBPF mirror of the service sets.
//!
//! Layers (see docs/ARCHITECTURE.md): `cluster/` -> `controllers/` (pure)
//! -> `desired/` (the value types) -> `store/` (the one ipset path) and
//! `kernel/` (the only code that talks to the kernel); `bpf/` loads, pins
//! and attaches the eBPF object; `reconcile.rs` runs a pass; `api/` and
//! `cli/` sit on top. Hooks that a lower layer calls are traits it owns.
//! Test scaffolding (`lab`, `netns`, `store::race`, the `demo` and `race`
//! subcommands) is compiled only with the `lab` feature, which the tests,
//! benches and `cargo xtask demo`/`race` turn on; the shipped binary has none.

pub mod api;
pub mod bpf;
pub mod cli;
pub mod cluster;
pub mod controllers;
pub mod desired;
pub mod kernel;
#[cfg(any(test, feature = "lab"))]
pub mod lab;
pub mod locks;
pub mod malloc;
#[cfg(any(test, feature = "lab"))]
pub mod netns;
pub mod reconcile;
pub mod store;
pub mod sys;
