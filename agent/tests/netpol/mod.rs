//! The NetworkPolicy truth-table harness (see netpol_netns.rs): topology,
//! listeners, prober, reachability matrix, cluster and policy builders,
//! and the case runner.
#![allow(dead_code)] // not every helper is used by every case

/// Every case, as a #[test] in module `run`, and in the list `CASES`
/// (for the test binaries that `#[macro_use] mod netpol;`).
#[allow(unused_macros)]
macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        mod run {
            use super::*;
            $(
                #[test]
                fn $name() {
                    super::$name(Case::new(stringify!($name))).run();
                }
            )*
        }
        const CASES: &[(&str, fn(Case) -> Case)] = &[$((stringify!($name), $name)),*];
    };
}

pub mod case;
pub mod cluster_policy;
pub mod listen;
pub mod manifest;
pub mod matrix;
pub mod probe;
pub mod sctp;
pub mod topology;

pub use case::Case;
#[allow(unused_imports)] // each test binary uses its own share of the builders
pub use manifest::{
    all, any_port, expr, ip_block, named, namespaces, ns, number, pod, pods, pods_in, sctp, tcp,
    udp, Cluster, Node, Op, Pod, Policy, Rule,
};
