//! Names the agent and the eBPF object agree on. BPF object names are at
//! most 15 bytes (BPF_OBJ_NAME_LEN - 1), so map names are short.

/// Mirror of `ipwarden-svip-prt`: (address, protocol, port) -> [`crate::ServiceValue`].
pub const MAP_SERVICES: &str = "IPW_SVC_PORTS";
/// Per-CPU hit counters keyed like [`MAP_SERVICES`].
pub const MAP_HITS: &str = "IPW_HITS";
/// One-slot array holding [`crate::Config`].
pub const MAP_CONFIG: &str = "IPW_CONFIG";

/// The tc ingress classifier.
pub const PROG_INGRESS: &str = "ipwarden_ingress";

/// Default bpffs directory for pins.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/ipwarden";

/// Default packet mark bit set on a mirror hit (kube-router uses 0x10000 and
/// 0x20000 for policy; this stays clear of both).
pub const DEFAULT_MARK: u32 = 0x0040_0000;
