//! Map definitions. BTF maps (`#[btf_map]`) so the kernel keeps the key and
//! value types and `bpftool map dump` prints named fields.

use aya_ebpf::{
    btf_maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    macros::btf_map,
};
use ipwarden_common::{Config, HitCounter, ServiceKey, ServiceValue, Stats, VipKey, VipValue};

const MAX_SERVICE_PORTS: usize = ipwarden_common::maps::MAX_SERVICE_PORTS as usize;
const MAX_VIPS: usize = ipwarden_common::maps::MAX_VIPS as usize;
const EVENTS_BYTES: usize = ipwarden_common::maps::EVENTS_BYTES as usize;

#[btf_map(name = "IPW_SVC_PORTS")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue, MAX_SERVICE_PORTS> = HashMap::new();

#[btf_map(name = "IPW_VIPS")]
pub static VIPS: HashMap<VipKey, VipValue, MAX_VIPS> = HashMap::new();

#[btf_map(name = "IPW_HITS")]
pub static HITS: PerCpuHashMap<ServiceKey, HitCounter, MAX_SERVICE_PORTS> = PerCpuHashMap::new();

#[btf_map(name = "IPW_CONFIG")]
pub static CONFIG: Array<Config, 1> = Array::new();

#[btf_map(name = "IPW_STATS")]
pub static STATS: PerCpuArray<Stats, 1> = PerCpuArray::new();

#[btf_map(name = "IPW_EVENTS")]
pub static EVENTS: RingBuf<(), EVENTS_BYTES> = RingBuf::new();
