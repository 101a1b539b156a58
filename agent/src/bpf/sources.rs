//! The egress-restricted sources: `IPW_EGRESS_SRC`, the canonical map the
//! agent, `ipwarden bpf dump` and bpftool read, and `IPW_SRC_BITS`, the
//! bitmap the classifier reads (one bit per source hash). A set bit means
//! "maybe restricted": the packet is not marked and the chains decide, so
//! a bit two addresses share only costs the other one the fast path.
//!
//! Writes go in the order that keeps a restricted source unmarked: an
//! entry and its bit are written before the call returns, and a bit is
//! cleared only once no entry left on it needs it. The bitmap has no
//! halves: a word only gains the bits of sources added and loses those of
//! sources gone, so whatever the classifier reads mid-write holds every
//! bit that must stay.

use std::{collections::BTreeSet, net::IpAddr};

use aya::{
    maps::{Array, HashMap, MapData},
    Ebpf,
};
use ipwarden_common::{
    maps::{addr_words, source_bit, FAMILY_V6, SOURCE_BITMAP_WORDS, SOURCE_EGRESS_RESTRICTED},
    names, SourceKey, SourceValue,
};

use super::{maps::map_err, BpfError};
use crate::store::SourceSink;

/// A source address as the map's key.
pub fn source_key(addr: &IpAddr) -> SourceKey {
    let mut key = SourceKey::default();
    match addr {
        IpAddr::V4(a) => {
            key.family = ipwarden_common::maps::FAMILY_V4;
            key.addr[..4].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            key.family = FAMILY_V6;
            key.addr = a.octets();
        }
    }
    key
}

/// (word, bit) of `key` in the bitmap, as the classifier computes it.
pub fn bit_of(key: &SourceKey) -> (u32, u32) {
    source_bit(&addr_words(&key.addr))
}

/// The bitmap words that `keys` set.
fn words_of<'a>(keys: impl Iterator<Item = &'a SourceKey>) -> Vec<u64> {
    let mut words = vec![0u64; SOURCE_BITMAP_WORDS as usize];
    for key in keys {
        let (w, b) = bit_of(key);
        words[w as usize] |= 1 << b;
    }
    words
}

const RESTRICTED: SourceValue = SourceValue {
    reasons: SOURCE_EGRESS_RESTRICTED,
};

/// Owns both maps; adopts what a previous run pinned.
pub struct EgressSources {
    map: HashMap<MapData, SourceKey, SourceValue>,
    bits: Array<MapData, u64>,
    /// Map writes that failed (the map full, say), for metrics.
    pub write_errors: u64,
}

impl EgressSources {
    pub(super) fn take_from(ebpf: &mut Ebpf) -> Result<Self, BpfError> {
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name)
                .ok_or(BpfError::Missing { what: "map", name })
        };
        let map = HashMap::try_from(take(ebpf, names::MAP_EGRESS_SOURCES)?)
            .map_err(map_err(names::MAP_EGRESS_SOURCES))?;
        let bits = Array::try_from(take(ebpf, names::MAP_SOURCE_BITS)?)
            .map_err(map_err(names::MAP_SOURCE_BITS))?;
        Ok(Self {
            map,
            bits,
            write_errors: 0,
        })
    }

    /// Every source in the canonical map.
    pub fn keys(&self) -> Result<BTreeSet<SourceKey>, BpfError> {
        self.map
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(names::MAP_EGRESS_SOURCES))
    }

    /// Brings the bitmap to the bits of `keys`, writing only the words
    /// that differ; returns how many did.
    fn write_bits(&mut self, keys: &BTreeSet<SourceKey>) -> usize {
        let mut wrong = 0;
        for (i, want) in words_of(keys.iter()).into_iter().enumerate() {
            let i = i as u32;
            if self.bits.get(&i, 0).ok() == Some(want) {
                continue;
            }
            wrong += 1;
            if self.bits.set(i, want, 0).is_err() {
                self.write_errors += 1;
            }
        }
        wrong
    }

    /// Writes the entries of `keys` the map lacks; returns how many.
    fn insert_missing(&mut self, have: &BTreeSet<SourceKey>, keys: &BTreeSet<SourceKey>) -> usize {
        let mut wrong = 0;
        for key in keys.difference(have) {
            wrong += 1;
            if self.map.insert(key, RESTRICTED, 0).is_err() {
                self.write_errors += 1;
            }
        }
        wrong
    }

    fn have(&mut self) -> BTreeSet<SourceKey> {
        self.keys().unwrap_or_else(|e| {
            tracing::error!("reading {}: {e}", names::MAP_EGRESS_SOURCES);
            self.write_errors += 1;
            BTreeSet::new()
        })
    }
}

fn keys_of(sources: &BTreeSet<IpAddr>) -> BTreeSet<SourceKey> {
    sources.iter().map(source_key).collect()
}

impl SourceSink for EgressSources {
    fn add(&mut self, sources: &BTreeSet<IpAddr>) {
        let have = self.have();
        let want = keys_of(sources);
        self.insert_missing(&have, &want);
        let all = have.union(&want).copied().collect();
        // Bits are only gained here: `all` holds every entry there was.
        self.write_bits(&all);
    }

    fn settle(&mut self, sources: &BTreeSet<IpAddr>) -> usize {
        let have = self.have();
        let want = keys_of(sources);
        let mut wrong = self.insert_missing(&have, &want);
        // The entries first, then the bits: a bit leaves only after no
        // entry on it is wanted.
        for key in have.difference(&want) {
            wrong += 1;
            if self.map.remove(key).is_err() {
                self.write_errors += 1;
            }
        }
        wrong + self.write_bits(&want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hold_the_family_and_the_address_as_the_packet_does() {
        let v4 = source_key(&"10.244.1.5".parse().unwrap());
        assert_eq!((v4.family, &v4.addr[..4]), (2, &[10, 244, 1, 5][..]));
        assert!(v4.addr[4..].iter().all(|b| *b == 0));
        let v6 = source_key(&"fd00::5".parse().unwrap());
        assert_eq!((v6.family, v6.addr[0], v6.addr[15]), (10, 0xfd, 5));
    }

    #[test]
    fn every_key_sets_its_bit_and_no_other() {
        let keys: BTreeSet<SourceKey> = (0..1000u32)
            .map(|i| source_key(&IpAddr::from((0x0af4_0000u32 + i).to_be_bytes())))
            .collect();
        let words = words_of(keys.iter());
        for key in &keys {
            let (w, b) = bit_of(key);
            assert_eq!(words[w as usize] >> b & 1, 1);
        }
        let set: u32 = words.iter().map(|w| w.count_ones()).sum();
        assert!(set <= 1000 && set > 990, "{set} bits for 1000 sources");
    }
}
