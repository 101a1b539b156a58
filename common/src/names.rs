//! Names the agent and the eBPF object agree on. BPF object names are at
//! most 15 bytes (BPF_OBJ_NAME_LEN - 1), so map names are short.

/// Mirror of `ipwarden-svip-prt`: (address, protocol, port) -> [`crate::ServiceValue`].
pub const MAP_SERVICES: &str = "IPW_SVC_PORTS";
/// Per-CPU hit counters keyed like [`MAP_SERVICES`].
pub const MAP_HITS: &str = "IPW_HITS";
/// One-slot array holding [`crate::Config`].
pub const MAP_CONFIG: &str = "IPW_CONFIG";
/// Mirror of `ipwarden-svip`: [`crate::VipKey`] -> [`crate::VipValue`].
pub const MAP_VIPS: &str = "IPW_VIPS";
/// Ring buffer of [`crate::Event`].
pub const MAP_EVENTS: &str = "IPW_EVENTS";
/// One-slot per-CPU array of [`crate::Stats`].
pub const MAP_STATS: &str = "IPW_STATS";

/// Every map the agent pins, so a restarted agent adopts them all.
pub const PINNED_MAPS: &[&str] = &[
    MAP_SERVICES,
    MAP_VIPS,
    MAP_HITS,
    MAP_CONFIG,
    MAP_STATS,
    MAP_EVENTS,
];

/// The tc ingress classifier.
pub const PROG_INGRESS: &str = "ipwarden_ingress";

/// Default bpffs directory for pins.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/ipwarden";

/// Default packet mark bit set on a mirror hit (kube-router uses 0x10000 and
/// 0x20000 for policy; this stays clear of both).
pub const DEFAULT_MARK: u32 = 0x0040_0000;
