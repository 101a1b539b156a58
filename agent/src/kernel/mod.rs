//! The only code that talks to the kernel: IPVS over generic netlink,
//! ipset over nfnetlink, iptables through iptables-restore. All netlink
//! goes through `netlink`. Private by default (`unreachable_pub`): what
//! is `pub` here is what the tests and benches use.
#![warn(unreachable_pub)]

pub mod ipset;
pub mod iptables;
pub mod ipvs;
pub mod link;
pub(crate) mod netlink;
pub(crate) mod sysctl;

/// The IPVS sync under the name its callers know.
pub use ipvs::sync as ipvs_sync;
