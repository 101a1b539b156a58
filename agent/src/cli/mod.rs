//! Sub-commands of the `ipwarden` binary, one file each.

pub mod bpf_dump;
pub mod cleanup;
mod cleanup_ipvs;
#[cfg(feature = "lab")]
pub mod demo;
#[cfg(feature = "lab")]
mod demo_rescue;
pub mod duration;
pub mod explain;
pub mod flags;
pub mod ipvs_flags;
pub mod kernel_ipset;
pub mod kernel_ipvs;
pub mod logging;
pub mod panics;
#[cfg(feature = "lab")]
pub mod race;
pub mod run;
mod run_daemon;
mod run_once;
mod source_deadline;
pub mod status;
