//! Typed access to the maps named in `ipwarden_common::names`.

use aya::{
    maps::{Array, HashMap, IterableMap, MapData, MapError, PerCpuHashMap},
    Ebpf,
};
use ipwarden_common::{names, Config, HitCounter, ServiceKey, ServiceValue};

use super::BpfError;

pub(super) fn config_mut(ebpf: &mut Ebpf) -> Result<Array<&mut MapData, Config>, BpfError> {
    let map = ebpf.map_mut(names::MAP_CONFIG).ok_or(BpfError::Missing {
        what: "map",
        name: names::MAP_CONFIG,
    })?;
    Array::try_from(map).map_err(|source| BpfError::Map {
        name: names::MAP_CONFIG,
        source,
    })
}

/// Packets and bytes for one key, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HitTotals {
    pub packets: u64,
    pub bytes: u64,
}

/// The service mirror (`IPW_SVC_PORTS`) and its per-CPU hit counters.
pub struct ServiceMirror<'a> {
    services: HashMap<&'a mut MapData, ServiceKey, ServiceValue>,
    hits: PerCpuHashMap<&'a mut MapData, ServiceKey, HitCounter>,
}

impl<'a> ServiceMirror<'a> {
    pub(super) fn new(ebpf: &'a mut Ebpf) -> Result<Self, BpfError> {
        let [services, hits] = ebpf.maps_disjoint_mut([names::MAP_SERVICES, names::MAP_HITS]);
        let services = services.ok_or(BpfError::Missing {
            what: "map",
            name: names::MAP_SERVICES,
        })?;
        let hits = hits.ok_or(BpfError::Missing {
            what: "map",
            name: names::MAP_HITS,
        })?;
        Ok(Self {
            services: HashMap::try_from(services).map_err(map_err(names::MAP_SERVICES))?,
            hits: PerCpuHashMap::try_from(hits).map_err(map_err(names::MAP_HITS))?,
        })
    }

    /// Inserts or replaces one member in place (no delete-then-add window).
    pub fn insert(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), BpfError> {
        self.services
            .insert(key, value, 0)
            .map_err(map_err(names::MAP_SERVICES))
    }

    pub fn remove(&mut self, key: &ServiceKey) -> Result<(), BpfError> {
        self.services
            .remove(key)
            .map_err(map_err(names::MAP_SERVICES))
    }

    /// The kernel's id of the mirror map, for `bpftool map dump id N`.
    pub fn map_id(&self) -> Result<u32, BpfError> {
        let data: &MapData = self.services.map();
        data.info()
            .map(|i| i.id())
            .map_err(map_err(names::MAP_SERVICES))
    }

    /// Every member of the mirror.
    pub fn entries(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, BpfError> {
        self.services
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(names::MAP_SERVICES))
    }

    /// Hits for `key` summed over CPUs; zero when the key was never hit.
    pub fn hits(&self, key: &ServiceKey) -> Result<HitTotals, BpfError> {
        match self.hits.get(key, 0) {
            Ok(per_cpu) => Ok(per_cpu.iter().fold(HitTotals::default(), |t, c| HitTotals {
                packets: t.packets + c.packets,
                bytes: t.bytes + c.bytes,
            })),
            Err(MapError::KeyNotFound) => Ok(HitTotals::default()),
            Err(source) => Err(BpfError::Map {
                name: names::MAP_HITS,
                source,
            }),
        }
    }
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> BpfError {
    move |source| BpfError::Map { name, source }
}
