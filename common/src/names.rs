//! Names the agent and the eBPF object agree on. BPF object names are at
//! most 15 bytes (BPF_OBJ_NAME_LEN - 1), so map names are short.

/// Mirror of `ipwarden-svip-prt`: (address, protocol, port) -> [`crate::ServiceValue`].
pub const MAP_SERVICES: &str = "IPW_SVC_PORTS";
/// Per-CPU hit counters, indexed by [`crate::TableEntry::slot`].
pub const MAP_HITS: &str = "IPW_HITS";
/// The classifier's fast table: two halves of [`crate::TableBucket`]s.
pub const MAP_TABLE: &str = "IPW_SVC_TABLE";
/// The classifier's VIP bitmap: two halves of u64 words.
pub const MAP_VIP_BITS: &str = "IPW_VIP_BITS";
/// This node's pods whose egress a policy restricts: [`crate::SourceKey`]
/// -> [`crate::SourceValue`], as the agent and bpftool read it.
pub const MAP_EGRESS_SOURCES: &str = "IPW_EGRESS_SRC";
/// The classifier's bitmap of those sources: u64 words, one half.
pub const MAP_SOURCE_BITS: &str = "IPW_SRC_BITS";
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
    MAP_TABLE,
    MAP_VIP_BITS,
    MAP_EGRESS_SOURCES,
    MAP_SOURCE_BITS,
];

/// The tc ingress classifier.
pub const PROG_INGRESS: &str = "ipwarden_ingress";

/// Default bpffs directory for pins.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/ipwarden";

/// Default packet mark bit set on a mirror hit (kube-router uses 0x10000 and
/// 0x20000 for policy; this stays clear of both).
pub const DEFAULT_MARK: u32 = 0x0040_0000;
