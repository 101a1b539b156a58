//! Typed access to the maps named in `ipwarden_common::names`.
//!
//! [`MirrorMaps`] owns everything the mirror writes: the two hash maps the
//! agent and bpftool read (`IPW_SVC_PORTS`, `IPW_VIPS`), the classifier's
//! fast table and VIP bitmap (see [`super::table`]), the per-CPU hit
//! counters and a handle on the config (whose `active` half it flips).

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::AsFd,
};

use aya::{
    maps::{Array, HashMap, IterableMap, Map, MapData, MapError, PerCpuArray, PerCpuValues},
    Ebpf,
};
use ipwarden_common::{
    maps::{LAYOUT_VERSION, MAX_SERVICE_PORTS},
    names, Config, HitCounter, ServiceKey, ServiceValue, VipKey, VipValue,
};

use super::{
    table::{FastTable, Half, Layout, MemberSlot, Written},
    BpfError,
};

pub(super) fn config_mut(ebpf: &mut Ebpf) -> Result<Array<&mut MapData, Config>, BpfError> {
    let map = ebpf.map_mut(names::MAP_CONFIG).ok_or(BpfError::Missing {
        what: "map",
        name: names::MAP_CONFIG,
    })?;
    Array::try_from(map).map_err(map_err(names::MAP_CONFIG))
}

/// Packets and bytes for one key, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HitTotals {
    pub packets: u64,
    pub bytes: u64,
}

/// The mirror's maps, taken out of the loaded object.
pub struct MirrorMaps {
    pub(super) services: HashMap<MapData, ServiceKey, ServiceValue>,
    pub(super) vips: HashMap<MapData, VipKey, VipValue>,
    hits: PerCpuArray<MapData, HitCounter>,
    config: Array<MapData, Config>,
    /// Holds its own handles on the table and bitmap maps.
    table: FastTable,
    /// The hit counter slot of every member in the table.
    slots: BTreeMap<ServiceKey, u32>,
    /// Slots free for a new member (their counters are zeroed first).
    free: Vec<u32>,
    /// Slots of members removed by the last publish: free once the
    /// classifier can no longer be counting into them.
    released: Vec<u32>,
    /// The lowest slot never handed out by this process.
    next: u32,
    /// What the last publish gave the classifier: the same content again
    /// (an audit that found nothing) writes nothing and flips nothing.
    published: Option<(BTreeMap<ServiceKey, u32>, BTreeSet<VipKey>)>,
    /// How many published members are on each address (for the bitmap).
    member_addrs: BTreeMap<VipKey, u32>,
    /// Each half's seed and bitmap uses; None: written whole next time.
    halves: [Option<Half>; 2],
    /// The keys and addresses the inactive half has not had yet (the
    /// last publish went to the other half).
    behind: (BTreeSet<ServiceKey>, BTreeSet<VipKey>),
    /// Map writes that failed (the map full, say), for metrics.
    pub write_errors: u64,
}

fn mmap_err(source: std::io::Error) -> BpfError {
    BpfError::Mmap {
        table: names::MAP_TABLE,
        bits: names::MAP_VIP_BITS,
        source,
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<MapData, BpfError> {
    let map = ebpf
        .take_map(name)
        .ok_or(BpfError::Missing { what: "map", name })?;
    match map {
        Map::Array(d) | Map::HashMap(d) | Map::PerCpuArray(d) => Ok(d),
        _ => Err(BpfError::Map {
            name,
            source: MapError::InvalidName {
                name: name.to_string(),
            },
        }),
    }
}

impl MirrorMaps {
    /// Takes the mirror's maps out of `ebpf` (the config stays, this holds
    /// a second handle on it), and recovers the counter slots from the
    /// table's active half, so counts survive an agent restart.
    pub(super) fn take_from(ebpf: &mut Ebpf) -> Result<Self, BpfError> {
        let config_fd = match ebpf.map(names::MAP_CONFIG) {
            Some(Map::Array(d)) => {
                d.fd()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|source| BpfError::MapFd {
                        name: names::MAP_CONFIG,
                        source,
                    })?
            }
            _ => {
                return Err(BpfError::Missing {
                    what: "map",
                    name: names::MAP_CONFIG,
                })
            }
        };
        let config = Array::try_from(Map::Array(
            MapData::from_fd(config_fd).map_err(map_err(names::MAP_CONFIG))?,
        ))
        .map_err(map_err(names::MAP_CONFIG))?;
        let services = HashMap::try_from(Map::HashMap(take(ebpf, names::MAP_SERVICES)?))
            .map_err(map_err(names::MAP_SERVICES))?;
        let vips = HashMap::try_from(Map::HashMap(take(ebpf, names::MAP_VIPS)?))
            .map_err(map_err(names::MAP_VIPS))?;
        let hits = PerCpuArray::try_from(Map::PerCpuArray(take(ebpf, names::MAP_HITS)?))
            .map_err(map_err(names::MAP_HITS))?;
        let table_map = take(ebpf, names::MAP_TABLE)?;
        let bits_map = take(ebpf, names::MAP_VIP_BITS)?;
        let table =
            FastTable::new(table_map.fd().as_fd(), bits_map.fd().as_fd()).map_err(mmap_err)?;
        let mut maps = Self {
            services,
            vips,
            hits,
            config,
            table,
            slots: BTreeMap::new(),
            free: Vec::new(),
            released: Vec::new(),
            next: 0,
            published: None,
            member_addrs: BTreeMap::new(),
            halves: [None, None],
            behind: Default::default(),
            write_errors: 0,
        };
        maps.recover_slots()?;
        Ok(maps)
    }

    fn read_config(&self) -> Result<Config, BpfError> {
        self.config.get(&0, 0).map_err(map_err(names::MAP_CONFIG))
    }

    fn recover_slots(&mut self) -> Result<(), BpfError> {
        let active = self.read_config()?.active;
        let mut used = BTreeSet::new();
        for e in self.table.entries(active).map_err(mmap_err)? {
            if e.slot < MAX_SERVICE_PORTS && used.insert(e.slot) {
                self.slots.insert(e.key, e.slot);
            }
        }
        self.next = used.last().map_or(0, |s| s + 1);
        self.free = (0..self.next).rev().filter(|s| !used.contains(s)).collect();
        Ok(())
    }

    /// A slot for a new member, its counters zeroed.
    fn allocate(&mut self) -> Option<u32> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.next < MAX_SERVICE_PORTS => {
                self.next += 1;
                self.next - 1
            }
            None => return None,
        };
        let cpus = aya::util::nr_cpus().map_or(1, |n| n.max(1));
        let zero = PerCpuValues::try_from(vec![HitCounter::default(); cpus]);
        if zero.is_err() || self.hits.set(slot, zero.expect("checked"), 0).is_err() {
            self.write_errors += 1;
        }
        Some(slot)
    }

    /// Makes the classifier see exactly `members` (key -> flags) and the
    /// VIPs `vips`: slots for new members, the inactive half of the table
    /// and bitmap brought up to date, then the flip. Members that do not
    /// fit keep the previous table in force and count as write errors.
    pub fn publish(
        &mut self,
        members: &BTreeMap<ServiceKey, u32>,
        vips: &BTreeSet<VipKey>,
    ) -> Result<Written, BpfError> {
        let old = self.published.take();
        let (keys, vip_keys) = match &old {
            Some((m, v)) => (
                changed_keys(m, members),
                v.symmetric_difference(vips).copied().collect(),
            ),
            None => {
                // Nothing known: both halves are written whole.
                self.halves = [None, None];
                self.member_addrs.clear();
                (members.keys().copied().collect(), vips.clone())
            }
        };
        if old.is_some() && keys.is_empty() && vip_keys.is_empty() {
            self.published = old;
            return Ok(Written::default());
        }
        let old_members = old.map(|(m, _)| m).unwrap_or_default();
        for key in &keys {
            self.count_addr(
                key,
                old_members.contains_key(key),
                members.contains_key(key),
            );
        }
        self.published = Some((members.clone(), vips.clone()));
        self.write_published(keys, vip_keys)
    }

    /// Like [`Self::publish`], from the members (key -> flags, None: gone)
    /// and VIPs (true: present) that changed since the last publish; with
    /// nothing published yet, false (publish the whole content instead).
    pub fn publish_changes(
        &mut self,
        members: &BTreeMap<ServiceKey, Option<u32>>,
        vips: &BTreeMap<VipKey, bool>,
    ) -> Option<Result<Written, BpfError>> {
        let (published, published_vips) = self.published.as_mut()?;
        let mut keys = BTreeSet::new();
        let mut counts = Vec::new();
        for (key, want) in members {
            let had = published.contains_key(key);
            let before = published.get(key).copied();
            match want {
                Some(flags) => published.insert(*key, *flags),
                None => published.remove(key),
            };
            if before != *want {
                keys.insert(*key);
                counts.push((*key, had, want.is_some()));
            }
        }
        let mut vip_keys = BTreeSet::new();
        for (vip, want) in vips {
            let changed = if *want {
                published_vips.insert(*vip)
            } else {
                published_vips.remove(vip)
            };
            if changed {
                vip_keys.insert(*vip);
            }
        }
        for (key, had, has) in counts {
            self.count_addr(&key, had, has);
        }
        if keys.is_empty() && vip_keys.is_empty() {
            return Some(Ok(Written::default()));
        }
        Some(self.write_published(keys, vip_keys))
    }

    /// Follows how many members are on `key`'s address.
    fn count_addr(&mut self, key: &ServiceKey, had: bool, has: bool) {
        let addr = VipKey::of(key);
        match (had, has) {
            (false, true) => *self.member_addrs.entry(addr).or_insert(0) += 1,
            (true, false) => {
                let n = self.member_addrs.entry(addr).or_insert(1);
                *n -= 1;
                if *n == 0 {
                    self.member_addrs.remove(&addr);
                }
            }
            _ => {}
        }
    }

    /// Writes the published content at `keys` and `vips` (and what the
    /// inactive half missed at the last publish) into the inactive half,
    /// then flips.
    fn write_published(
        &mut self,
        keys: BTreeSet<ServiceKey>,
        vips: BTreeSet<VipKey>,
    ) -> Result<Written, BpfError> {
        self.table.wait_for_readers();
        // Removed at the previous publish: no program counts into them now.
        self.free.append(&mut self.released);
        self.follow_slots(&keys);
        let addrs: BTreeSet<VipKey> = keys.iter().map(VipKey::of).chain(vips).collect();
        let mut config = self.read_config()?;
        let active = (config.active & 1) as usize;
        let inactive = active ^ 1;
        let (mut all_keys, mut all_addrs) = std::mem::take(&mut self.behind);
        all_keys.extend(keys.iter().copied());
        all_addrs.extend(addrs.iter().copied());
        let written = match self.write_changes(inactive, &all_keys, &all_addrs)? {
            Some(w) => w,
            None => {
                let seed = match config.seeds[active] {
                    0 => fresh_seed(),
                    s => s,
                };
                self.write_whole(inactive, seed)?
            }
        };
        // The seed first (the classifier still reads the other half), then
        // the flip; each write leaves every other field as it was.
        config.seeds[inactive] = self.halves[inactive].as_ref().map_or(0, |h| h.seed);
        if config.layout_version == 0 {
            config.layout_version = LAYOUT_VERSION;
        }
        self.write_config(config)?;
        config.active = inactive as u32;
        self.write_config(config)?;
        self.table.flipped();
        if self.halves[active].is_none() {
            // The half just left was never written by this process: copied
            // now, on the whole publish, or the next change would pay for
            // the whole table (65,536 buckets) instead of what it moves.
            self.catch_up(active, inactive, config)?;
            return Ok(written);
        }
        // The half now inactive lacks this change.
        self.behind = (keys, addrs);
        Ok(written)
    }

    /// Makes the inactive half `half` a copy of the active half `from`
    /// (buckets, bitmap, seed), once no program reads it any more.
    fn catch_up(&mut self, half: usize, from: usize, mut config: Config) -> Result<(), BpfError> {
        self.table.wait_for_readers();
        self.table
            .copy_half(from as u32, half as u32)
            .map_err(mmap_err)?;
        self.halves[half] = self.halves[from].clone();
        config.seeds[half] = config.seeds[from];
        self.write_config(config)?;
        self.behind = Default::default();
        Ok(())
    }

    /// Slots released for members gone, allocated for new ones.
    fn follow_slots(&mut self, keys: &BTreeSet<ServiceKey>) {
        let members = self.published.as_ref().map(|(m, _)| m);
        let (gone, new): (Vec<ServiceKey>, Vec<ServiceKey>) = keys
            .iter()
            .filter(|k| members.is_none_or(|m| m.contains_key(k)) != self.slots.contains_key(k))
            .partition(|k| self.slots.contains_key(k));
        for key in gone {
            if let Some(slot) = self.slots.remove(&key) {
                self.released.push(slot);
            }
        }
        for key in new {
            match self.allocate() {
                Some(s) => {
                    self.slots.insert(key, s);
                }
                None => self.write_errors += 1,
            }
        }
    }

    /// The inactive half brought to the content at `keys` and `addrs`;
    /// None when it must be written whole.
    fn write_changes(
        &mut self,
        half: usize,
        keys: &BTreeSet<ServiceKey>,
        addrs: &BTreeSet<VipKey>,
    ) -> Result<Option<Written>, BpfError> {
        let Some(mut state) = self.halves[half].take() else {
            return Ok(None);
        };
        let Some((members, vips)) = self.published.as_ref() else {
            return Ok(None);
        };
        let slots = &self.slots;
        let member_addrs = &self.member_addrs;
        let written = self.table.write_changes(
            half as u32,
            &mut state,
            keys,
            |k| {
                let flags = *members.get(k)?;
                let slot = *slots.get(k)?;
                Some(MemberSlot { flags, slot })
            },
            addrs,
            |a| vips.contains(a) || member_addrs.contains_key(a),
        );
        let Some(written) = written.map_err(mmap_err)? else {
            return Ok(None);
        };
        self.halves[half] = Some(state);
        Ok(Some(written))
    }

    /// The whole published content laid out anew into `half`.
    fn write_whole(&mut self, half: usize, seed: u32) -> Result<Written, BpfError> {
        let (members, vips) = self.published.as_ref().expect("published first");
        let table: BTreeMap<ServiceKey, MemberSlot> = members
            .iter()
            .filter_map(|(k, &flags)| {
                let slot = *self.slots.get(k)?;
                Some((*k, MemberSlot { flags, slot }))
            })
            .collect();
        let Some(layout) = Layout::build(&table, vips, seed) else {
            self.write_errors += 1;
            let members = table.len();
            // Nothing known: the next publish starts over.
            self.published = None;
            return Err(BpfError::TableFull { members });
        };
        let addrs = table
            .keys()
            .map(VipKey::of)
            .chain(vips.iter().copied())
            .collect();
        let (written, state) = self
            .table
            .write_full(half as u32, &layout, addrs)
            .map_err(mmap_err)?;
        self.halves[half] = Some(state);
        Ok(written)
    }

    fn write_config(&mut self, config: Config) -> Result<(), BpfError> {
        self.config
            .set(0, config, 0)
            .map_err(map_err(names::MAP_CONFIG))
    }

    /// Every member of the canonical mirror (`IPW_SVC_PORTS`).
    pub fn entries(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, BpfError> {
        self.services
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(names::MAP_SERVICES))
    }

    /// Every VIP of the canonical mirror (`IPW_VIPS`).
    pub fn vip_keys(&self) -> Result<BTreeSet<VipKey>, BpfError> {
        self.vips
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(names::MAP_VIPS))
    }

    /// Republishes the table from the canonical maps as they are.
    fn publish_canonical(&mut self) -> Result<(), BpfError> {
        let members = self
            .entries()?
            .into_iter()
            .map(|(k, v)| (k, v.flags))
            .collect();
        let vips = self.vip_keys()?;
        self.publish(&members, &vips).map(|_| ())
    }

    /// Hits for `key` summed over CPUs; zero when it is not mirrored.
    pub fn hits(&self, key: &ServiceKey) -> Result<HitTotals, BpfError> {
        let Some(&slot) = self.slots.get(key) else {
            return Ok(HitTotals::default());
        };
        let per_cpu = self.hits.get(&slot, 0).map_err(map_err(names::MAP_HITS))?;
        Ok(per_cpu.iter().fold(HitTotals::default(), |t, c| HitTotals {
            packets: t.packets + c.packets,
            bytes: t.bytes + c.bytes,
        }))
    }

    /// The counter slot of `key`, if it is in the table.
    pub fn slot(&self, key: &ServiceKey) -> Option<u32> {
        self.slots.get(key).copied()
    }
}

/// A seed for a table half that has none yet.
fn fresh_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    (h.finish() as u32) | 1
}

/// The service mirror (`IPW_SVC_PORTS`) with its hit counters, for tests,
/// the demo and the benchmarks; the daemon writes through
/// [`super::BpfMirror`]. Every change is published to the classifier
/// before the call returns.
pub struct ServiceMirror<'a> {
    maps: &'a mut MirrorMaps,
}

impl<'a> ServiceMirror<'a> {
    pub(super) fn new(maps: &'a mut MirrorMaps) -> Self {
        Self { maps }
    }

    /// Inserts or replaces one member in place (no delete-then-add window).
    pub fn insert(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), BpfError> {
        self.insert_all([(key, value)])
    }

    /// Inserts or replaces many members, published once.
    pub fn insert_all(
        &mut self,
        members: impl IntoIterator<Item = (ServiceKey, ServiceValue)>,
    ) -> Result<(), BpfError> {
        for (key, value) in members {
            self.maps
                .services
                .insert(key, value, 0)
                .map_err(map_err(names::MAP_SERVICES))?;
        }
        self.maps.publish_canonical()
    }

    pub fn remove(&mut self, key: &ServiceKey) -> Result<(), BpfError> {
        self.maps
            .services
            .remove(key)
            .map_err(map_err(names::MAP_SERVICES))?;
        self.maps.publish_canonical()
    }

    /// The kernel's id of the mirror map, for `bpftool map dump id N`.
    pub fn map_id(&self) -> Result<u32, BpfError> {
        let data: &MapData = self.maps.services.map();
        data.info()
            .map(|i| i.id())
            .map_err(map_err(names::MAP_SERVICES))
    }

    /// Every member of the mirror.
    pub fn entries(&self) -> Result<Vec<(ServiceKey, ServiceValue)>, BpfError> {
        self.maps.entries()
    }

    /// Hits for `key` summed over CPUs; zero when it is not mirrored.
    pub fn hits(&self, key: &ServiceKey) -> Result<HitTotals, BpfError> {
        self.maps.hits(key)
    }
}

pub(super) fn map_err(name: &'static str) -> impl Fn(MapError) -> BpfError {
    move |source| BpfError::Map { name, source }
}

/// Keys added, removed or with other flags from `old` to `new`.
fn changed_keys(
    old: &BTreeMap<ServiceKey, u32>,
    new: &BTreeMap<ServiceKey, u32>,
) -> BTreeSet<ServiceKey> {
    let mut out: BTreeSet<ServiceKey> = old
        .iter()
        .filter(|(k, f)| new.get(k) != Some(f))
        .map(|(k, _)| *k)
        .collect();
    out.extend(new.keys().filter(|k| !old.contains_key(k)));
    out
}
