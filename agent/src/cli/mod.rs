//! Sub-commands of the `ipwarden` binary, one file each.

pub mod demo;
pub mod kernel_ipset;
pub mod kernel_ipvs;
pub mod race;
pub mod run;
