//! Before adopting pinned maps, check they are the maps this object
//! defines (cilium's bpffs migration, in small): same type, key and value
//! sizes and capacity, and the layout version in the config map. Anything
//! else is unpinned (held open), replaced by a fresh map, and dropped once
//! the new object loaded (or pinned back if it did not).

use aya::maps::{Array, Map, MapData, MapInfo, MapType};
use ipwarden_common::{
    maps::{
        EVENTS_BYTES, LAYOUT_VERSION, MAX_SERVICE_PORTS, MAX_SOURCES, MAX_VIPS,
        SOURCE_BITMAP_WORDS, TABLE_BUCKETS, VIP_BITMAP_WORDS,
    },
    names, Config, HitCounter, ServiceKey, ServiceValue, SourceKey, SourceValue, Stats,
    TableBucket, VipKey, VipValue,
};

use super::pins::PinLayout;

/// What a map must look like to be adopted.
struct Expected {
    name: &'static str,
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    /// Creation flags that must be set (BPF_F_MMAPABLE for the table).
    flags: u32,
}

/// BPF_F_MMAPABLE: the agent maps the table and bitmap into its memory.
const MMAPABLE: u32 = 1 << 10;

fn size<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

fn expected() -> [Expected; 10] {
    [
        Expected {
            name: names::MAP_SERVICES,
            map_type: MapType::Hash,
            key_size: size::<ServiceKey>(),
            value_size: size::<ServiceValue>(),
            max_entries: MAX_SERVICE_PORTS,
            flags: 0,
        },
        Expected {
            name: names::MAP_VIPS,
            map_type: MapType::Hash,
            key_size: size::<VipKey>(),
            value_size: size::<VipValue>(),
            max_entries: MAX_VIPS,
            flags: 0,
        },
        Expected {
            name: names::MAP_HITS,
            map_type: MapType::PerCpuArray,
            key_size: 4,
            value_size: size::<HitCounter>(),
            max_entries: MAX_SERVICE_PORTS,
            flags: 0,
        },
        Expected {
            name: names::MAP_CONFIG,
            map_type: MapType::Array,
            key_size: 4,
            value_size: size::<Config>(),
            max_entries: 1,
            flags: 0,
        },
        Expected {
            name: names::MAP_STATS,
            map_type: MapType::PerCpuArray,
            key_size: 4,
            value_size: size::<Stats>(),
            max_entries: 1,
            flags: 0,
        },
        Expected {
            name: names::MAP_EVENTS,
            map_type: MapType::RingBuf,
            key_size: 0,
            value_size: 0,
            max_entries: EVENTS_BYTES,
            flags: 0,
        },
        Expected {
            name: names::MAP_TABLE,
            map_type: MapType::Array,
            key_size: 4,
            value_size: size::<TableBucket>(),
            max_entries: 2 * TABLE_BUCKETS,
            flags: MMAPABLE,
        },
        Expected {
            name: names::MAP_VIP_BITS,
            map_type: MapType::Array,
            key_size: 4,
            value_size: 8,
            max_entries: 2 * VIP_BITMAP_WORDS,
            flags: MMAPABLE,
        },
        Expected {
            name: names::MAP_EGRESS_SOURCES,
            map_type: MapType::Hash,
            key_size: size::<SourceKey>(),
            value_size: size::<SourceValue>(),
            max_entries: MAX_SOURCES,
            flags: 0,
        },
        Expected {
            name: names::MAP_SOURCE_BITS,
            map_type: MapType::Array,
            key_size: 4,
            value_size: 8,
            max_entries: SOURCE_BITMAP_WORDS,
            flags: 0,
        },
    ]
}

/// What was found pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pinned {
    /// Nothing pinned: a first start.
    Nothing,
    /// Every map matches: adopt them.
    Compatible,
    /// Some map differs; the reason names it. The old maps were unpinned
    /// and are held open in [`Aside`] until the new object loaded.
    Replaced(String),
}

/// Old maps taken out of bpffs for a replacement, kept open so they can be
/// pinned back if the new object fails to load (bpffs cannot rename).
#[derive(Default)]
pub struct Aside {
    maps: Vec<(&'static str, MapData)>,
}

/// Why a pinned map is not adoptable, or None if it is.
fn mismatch(info: &MapInfo, e: &Expected) -> Option<String> {
    let found = (
        info.map_type().ok(),
        info.key_size(),
        info.value_size(),
        info.max_entries(),
    );
    let want = (Some(e.map_type), e.key_size, e.value_size, e.max_entries);
    if found != want {
        return Some(format!(
            "{}: pinned (type {:?}, key {} B, value {} B, {} entries), object wants (type {:?}, key {} B, value {} B, {} entries)",
            e.name, found.0, found.1, found.2, found.3, want.0, want.1, want.2, want.3
        ));
    }
    (info.map_flags() & e.flags != e.flags).then(|| {
        format!(
            "{}: pinned with flags {:#x}, object wants {:#x} set",
            e.name,
            info.map_flags(),
            e.flags
        )
    })
}

fn pinned_layout_version(pins: &PinLayout) -> Option<u32> {
    let data = MapData::from_pin(pins.map(names::MAP_CONFIG)).ok()?;
    let config: Array<_, Config> = Array::try_from(Map::Array(data)).ok()?;
    config.get(&0, 0).ok().map(|c| c.layout_version)
}

/// Checks the pinned maps; when any is incompatible, unpins them all
/// (holding them open in the returned [`Aside`]).
pub fn check(pins: &PinLayout) -> std::io::Result<(Pinned, Aside)> {
    let mut any = false;
    let mut reason = None;
    for e in expected() {
        let path = pins.map(e.name);
        if !path.exists() {
            continue;
        }
        any = true;
        match MapInfo::from_pin(&path) {
            Ok(info) => {
                if let Some(why) = mismatch(&info, &e) {
                    reason.get_or_insert(why);
                }
            }
            Err(err) => {
                reason.get_or_insert(format!("{}: unreadable pin ({err})", e.name));
            }
        }
    }
    if !any {
        return Ok((Pinned::Nothing, Aside::default()));
    }
    if reason.is_none() {
        // Same shapes but another meaning is still another layout; 0 is a
        // config map never written (a crash before configure).
        match pinned_layout_version(pins) {
            Some(v) if v != LAYOUT_VERSION && v != 0 => {
                reason = Some(format!(
                    "{}: layout version {v}, this agent writes {LAYOUT_VERSION}",
                    names::MAP_CONFIG
                ));
            }
            _ => return Ok((Pinned::Compatible, Aside::default())),
        }
    }
    let mut aside = Aside::default();
    for name in names::PINNED_MAPS {
        let path = pins.map(name);
        if !path.exists() {
            continue;
        }
        if let Ok(data) = MapData::from_pin(&path) {
            aside.maps.push((name, data));
        }
        std::fs::remove_file(&path)?;
    }
    Ok((Pinned::Replaced(reason.unwrap_or_default()), aside))
}

/// After a failed load: pin the old maps back so the running data plane
/// (attached programs still use them) keeps its state.
pub fn revert(pins: &PinLayout, aside: Aside) {
    for (name, data) in aside.maps {
        let path = pins.map(name);
        let _ = std::fs::remove_file(&path);
        if let Err(e) = data.pin(&path) {
            tracing::error!(map = name, "could not pin the old map back: {e}");
        }
    }
}
