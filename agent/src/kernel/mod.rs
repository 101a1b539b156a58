//! The only code that talks to the kernel: IPVS over generic netlink,
//! ipset over nfnetlink, iptables through iptables-restore. All netlink
//! goes through [`netlink`].

pub mod ipset;
pub mod iptables;
pub mod ipvs;
pub mod link;
pub mod netlink;
pub mod sysctl;

/// The IPVS sync under the name its callers know.
pub use ipvs::sync as ipvs_sync;
