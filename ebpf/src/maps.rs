//! Map definitions. BTF maps (`#[btf_map]`) so the kernel keeps the key and
//! value types and `bpftool map dump` prints named fields.

use aya_ebpf::{
    btf_maps::{Array, HashMap, PerCpuHashMap},
    macros::btf_map,
};
use ipwarden_common::{Config, HitCounter, ServiceKey, ServiceValue};

/// Room for every service port of a large cluster (kube-router's biggest
/// reported clusters have a few thousand services, each with a few ports
/// times ClusterIP, ExternalIPs and LB IPs).
pub const MAX_SERVICE_PORTS: usize = 65_536;

#[btf_map(name = "IPW_SVC_PORTS")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue, MAX_SERVICE_PORTS> = HashMap::new();

#[btf_map(name = "IPW_HITS")]
pub static HITS: PerCpuHashMap<ServiceKey, HitCounter, MAX_SERVICE_PORTS> = PerCpuHashMap::new();

#[btf_map(name = "IPW_CONFIG")]
pub static CONFIG: Array<Config, 1> = Array::new();
