//! Map definitions. BTF maps (`#[btf_map]`) so the kernel keeps the key and
//! value types and `bpftool map dump` prints named fields.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    btf_maps::{Array, HashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use ipwarden_common::{
    Config, HitCounter, ServiceKey, ServiceValue, SourceKey, SourceValue, Stats, TableBucket,
    VipKey, VipValue,
};

const MAX_SERVICE_PORTS: usize = ipwarden_common::maps::MAX_SERVICE_PORTS as usize;
const MAX_VIPS: usize = ipwarden_common::maps::MAX_VIPS as usize;
const MAX_SOURCES: usize = ipwarden_common::maps::MAX_SOURCES as usize;
const SOURCE_BITMAP_WORDS: usize = ipwarden_common::maps::SOURCE_BITMAP_WORDS as usize;
const EVENTS_BYTES: usize = ipwarden_common::maps::EVENTS_BYTES as usize;
/// Both halves of the fast table and of the VIP bitmap.
const TABLE_BUCKETS: usize = 2 * ipwarden_common::maps::TABLE_BUCKETS as usize;
const VIP_BITMAP_WORDS: usize = 2 * ipwarden_common::maps::VIP_BITMAP_WORDS as usize;
/// The agent writes the inactive halves through a shared mapping.
const MMAPABLE: usize = BPF_F_MMAPABLE as usize;

/// The mirror of the service ports, as the agent and bpftool read it; the
/// classifier reads the fast table instead.
#[btf_map(name = "IPW_SVC_PORTS")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue, MAX_SERVICE_PORTS> = HashMap::new();

/// The mirror of the VIPs; the classifier asks it only to tell a VIP's
/// other ports from a false positive of the bitmap.
#[btf_map(name = "IPW_VIPS")]
pub static VIPS: HashMap<VipKey, VipValue, MAX_VIPS> = HashMap::new();

#[btf_map(name = "IPW_HITS")]
pub static HITS: PerCpuArray<HitCounter, MAX_SERVICE_PORTS> = PerCpuArray::new();

#[btf_map(name = "IPW_CONFIG")]
pub static CONFIG: Array<Config, 1> = Array::new();

#[btf_map(name = "IPW_STATS")]
pub static STATS: PerCpuArray<Stats, 1> = PerCpuArray::new();

#[btf_map(name = "IPW_EVENTS")]
pub static EVENTS: RingBuf<(), EVENTS_BYTES> = RingBuf::new();

#[btf_map(name = "IPW_SVC_TABLE")]
pub static TABLE: Array<TableBucket, TABLE_BUCKETS, MMAPABLE> = Array::new();

#[btf_map(name = "IPW_VIP_BITS")]
pub static VIP_BITS: Array<u64, VIP_BITMAP_WORDS, MMAPABLE> = Array::new();

/// This node's pods whose egress a policy restricts, as the agent and
/// bpftool read it; the classifier reads the bitmap instead.
#[btf_map(name = "IPW_EGRESS_SRC")]
pub static EGRESS_SOURCES: HashMap<SourceKey, SourceValue, MAX_SOURCES> = HashMap::new();

/// One bit per hash of those sources: a set bit means "maybe restricted",
/// and the classifier leaves the packet to the chains.
#[btf_map(name = "IPW_SRC_BITS")]
pub static SOURCE_BITS: Array<u64, SOURCE_BITMAP_WORDS> = Array::new();
