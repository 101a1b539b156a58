//! The classifier's fast path: a table of the mirrored members in a BPF
//! array (two-choice cuckoo hashing, two entries a bucket) and a bitmap of
//! the VIPs, each in two halves. The classifier reads the half that
//! `Config::active` names; the agent writes the other one through a shared
//! mapping of the map's memory (`BPF_F_MMAPABLE`), then flips `active`.
//!
//! So a packet costs a few inlined array loads instead of a jhash and a
//! bucket walk per lookup, and the classifier never sees a half-written
//! entry: a half is only written while no program reads it. After a flip
//! the old half is left alone for [`GRACE`], longer than any program run
//! that read `active` before the flip can take.
//!
//! The halves are reached through windows mapped on demand (`mmap.rs`) and
//! unmapped after each operation, so the table's pages (the kernel's
//! memory) do not stay in the agent's RSS.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    os::fd::BorrowedFd,
    time::{Duration, Instant},
};

use ipwarden_common::{
    maps::{
        addr_words, key_meta, table_buckets, table_hash, vip_bit, vip_hash, FAMILY_V6,
        TABLE_BUCKETS, TABLE_WAYS, VIP_BITMAP_WORDS,
    },
    ServiceKey, TableBucket, TableEntry, VipKey,
};

use super::mmap::{Cells, Mmap};

/// How long a half stays untouched after the classifier stopped reading it.
/// A program run takes well under a microsecond.
pub const GRACE: Duration = Duration::from_millis(10);

/// Cuckoo displacements tried per member before a new seed is drawn.
const MAX_KICKS: usize = 500;
/// Seeds tried before giving up (at the sizes allowed, one always does).
const MAX_SEEDS: usize = 16;

/// What the table holds for one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberSlot {
    pub flags: u32,
    pub slot: u32,
}

/// One half's content, as built in user space before it is written.
pub struct Layout {
    pub seed: u32,
    buckets: Vec<TableBucket>,
    bits: Vec<u64>,
}

fn words(key: &ServiceKey) -> ([u32; 4], bool, u32) {
    (
        addr_words(&key.addr),
        key.family == FAMILY_V6,
        key_meta(key.family, key.proto, key.port),
    )
}

/// The two candidate buckets of `key` under `seed`.
pub fn buckets_of(key: &ServiceKey, seed: u32) -> (u32, u32) {
    let (addr, v6, meta) = words(key);
    table_buckets(table_hash(vip_hash(&addr, v6, seed), meta))
}

/// SplitMix64, for seeds and the choice of cuckoo victims.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Layout {
    /// Places every member (cuckoo: a member goes to a free entry of one of
    /// its two buckets, else evicts one there, which moves to its other
    /// bucket, and so on), and sets the bit of every address in `vips` and
    /// of every member's address. Tries `seed` first, then others; None if
    /// no seed places them all, which at the map's sizes does not happen.
    pub fn build(
        members: &BTreeMap<ServiceKey, MemberSlot>,
        vips: &BTreeSet<VipKey>,
        seed: u32,
    ) -> Option<Self> {
        if members.len() > TABLE_BUCKETS as usize * TABLE_WAYS {
            return None;
        }
        let mut rng = u64::from(seed) | 1 << 40;
        let mut seed = seed;
        for _ in 0..MAX_SEEDS {
            if let Some(buckets) = place(members, seed, &mut rng) {
                let mut bits = vec![0u64; VIP_BITMAP_WORDS as usize];
                let addresses = members
                    .keys()
                    .map(|k| (addr_words(&k.addr), k.family == FAMILY_V6))
                    .chain(
                        vips.iter()
                            .map(|v| (addr_words(&v.addr), v.family == FAMILY_V6)),
                    );
                for (addr, v6) in addresses {
                    let (w, b) = vip_bit(vip_hash(&addr, v6, seed));
                    bits[w as usize] |= 1 << b;
                }
                return Some(Self {
                    seed,
                    buckets,
                    bits,
                });
            }
            seed = splitmix(&mut rng) as u32;
        }
        None
    }

    /// The member stored for `key`, looked up as the classifier does.
    pub fn find(&self, key: &ServiceKey) -> Option<MemberSlot> {
        let (b1, b2) = buckets_of(key, self.seed);
        [b1, b2]
            .iter()
            .flat_map(|&b| self.buckets[b as usize].entries)
            .find(|e| e.key == *key && e.key.family != 0)
            .map(|e| MemberSlot {
                flags: e.flags,
                slot: e.slot,
            })
    }
}

fn place(
    members: &BTreeMap<ServiceKey, MemberSlot>,
    seed: u32,
    rng: &mut u64,
) -> Option<Vec<TableBucket>> {
    let mut buckets = vec![TableBucket::default(); TABLE_BUCKETS as usize];
    for (key, m) in members {
        let mut entry = TableEntry {
            key: *key,
            flags: m.flags,
            slot: m.slot,
            _pad: 0,
        };
        let mut at = buckets_of(key, seed).0;
        let mut placed = false;
        for _ in 0..MAX_KICKS {
            let (b1, b2) = buckets_of(&entry.key, seed);
            if let Some(free) = [b1, b2].into_iter().find_map(|b| {
                buckets[b as usize]
                    .entries
                    .iter()
                    .position(|e| e.key.family == 0)
                    .map(|i| (b, i))
            }) {
                buckets[free.0 as usize].entries[free.1] = entry;
                placed = true;
                break;
            }
            // Both full: evict a random entry of the bucket we did not
            // come from, and carry it on to its other bucket.
            let victim = (splitmix(rng) % TABLE_WAYS as u64) as usize;
            let b = if at == b1 { b2 } else { b1 };
            std::mem::swap(&mut buckets[b as usize].entries[victim], &mut entry);
            at = b;
        }
        if !placed {
            return None;
        }
    }
    Some(buckets)
}

/// What [`FastTable::write`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub buckets: usize,
    pub words: usize,
}

/// Both halves of the table and the bitmap, mapped a window at a time.
/// Every operation unmaps its windows before it returns.
pub struct FastTable {
    table: Mmap<TableBucket>,
    bits: Mmap<u64>,
    /// The same maps value by value, for partial changes.
    cells: (Cells<TableBucket>, Cells<u64>),
    /// When the classifier last switched halves (from this process).
    last_flip: Option<Instant>,
    /// Chooses cuckoo victims.
    rng: u64,
}

impl FastTable {
    pub fn new(table: BorrowedFd<'_>, bits: BorrowedFd<'_>) -> io::Result<Self> {
        Ok(Self {
            table: Mmap::new(table, 2 * TABLE_BUCKETS as usize)?,
            bits: Mmap::new(bits, 2 * VIP_BITMAP_WORDS as usize)?,
            cells: (Cells::new(table)?, Cells::new(bits)?),
            last_flip: None,
            rng: 0x5eed,
        })
    }

    /// Runs `op`, then unmaps whatever it mapped.
    fn released<R>(&mut self, op: impl FnOnce(&mut Self) -> io::Result<R>) -> io::Result<R> {
        let result = op(self);
        self.table.release();
        self.bits.release();
        result
    }

    /// Every member the given half holds (to recover the counter slots of
    /// a previous agent), with its entry.
    pub fn entries(&mut self, half: u32) -> io::Result<Vec<TableEntry>> {
        let base = Self::base(half, TABLE_BUCKETS);
        self.released(|t| {
            let mut found = Vec::new();
            for b in 0..TABLE_BUCKETS as usize {
                let bucket = t.table.get(base + b)?;
                found.extend(bucket.entries.into_iter().filter(|e| e.key.family != 0));
            }
            Ok(found)
        })
    }

    /// Waits until the inactive half has been out of use for [`GRACE`].
    pub fn wait_for_readers(&self) {
        if let Some(t) = self.last_flip {
            let since = t.elapsed();
            if since < GRACE {
                std::thread::sleep(GRACE - since);
            }
        }
    }

    /// Writes `layout` into `half` (which the classifier must not be
    /// reading), touching only the buckets and words that differ.
    pub fn write(&mut self, half: u32, layout: &Layout) -> io::Result<Written> {
        self.released(|t| {
            let mut written = Written::default();
            let base = Self::base(half, TABLE_BUCKETS);
            for (i, b) in layout.buckets.iter().enumerate() {
                if t.table.get(base + i)? != *b {
                    t.table.set(base + i, *b)?;
                    written.buckets += 1;
                }
            }
            let base = Self::base(half, VIP_BITMAP_WORDS);
            for (i, w) in layout.bits.iter().enumerate() {
                if t.bits.get(base + i)? != *w {
                    t.bits.set(base + i, *w)?;
                    written.words += 1;
                }
            }
            // The flip that follows is a syscall, a full barrier as well;
            // this one documents that every store above comes before it.
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            Ok(written)
        })
    }

    /// Copies half `from` (which the classifier may be reading) into half
    /// `to` (which it must not be), touching only the buckets and words
    /// that differ.
    pub fn copy_half(&mut self, from: u32, to: u32) -> io::Result<Written> {
        let halves = |len| (Self::base(from, len), Self::base(to, len), len as usize);
        self.released(|t| {
            let written = Written {
                buckets: t.table.copy_differing(halves(TABLE_BUCKETS))?,
                words: t.bits.copy_differing(halves(VIP_BITMAP_WORDS))?,
            };
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            Ok(written)
        })
    }

    /// The index of `half`'s first element in an array of two halves of
    /// `len` each.
    fn base(half: u32, len: u32) -> usize {
        (half & 1) as usize * len as usize
    }

    /// Writes a whole `layout` into `half`; returns what it wrote and the
    /// half's state, for later changes. `addrs`: every address whose bit
    /// the layout set.
    pub fn write_full(
        &mut self,
        half: u32,
        layout: &Layout,
        addrs: BTreeSet<VipKey>,
    ) -> io::Result<(Written, Half)> {
        Ok((self.write(half, layout)?, Half::of(layout.seed, addrs)))
    }

    /// Brings `half` (which the classifier must not be reading) to the
    /// content at `keys` and `addrs` only: each key to `member(key)`, each
    /// address's bit to `used(address)`. Only the buckets and words that
    /// move are written, value by value through the syscall (each a full
    /// barrier before the flip). None when a member found no place (the
    /// half is then inconsistent and must be written whole).
    pub fn write_changes(
        &mut self,
        half: u32,
        state: &mut Half,
        keys: &BTreeSet<ServiceKey>,
        member: impl Fn(&ServiceKey) -> Option<MemberSlot>,
        addrs: &BTreeSet<VipKey>,
        used: impl Fn(&VipKey) -> bool,
    ) -> io::Result<Option<Written>> {
        let mut touched = Touched::default();
        let base = Self::base(half, TABLE_BUCKETS);
        for key in keys {
            if !self.set_member(base, state.seed, key, member(key), &mut touched)? {
                return Ok(None);
            }
        }
        let base = Self::base(half, VIP_BITMAP_WORDS);
        for a in addrs {
            self.set_bit(base, state, a, used(a), &mut touched)?;
        }
        Ok(Some(Written {
            buckets: touched.buckets.len(),
            words: touched.words.len(),
        }))
    }

    /// Makes `addr` count toward its bit in the bitmap half at `base` or
    /// not, clearing the bit when no address needs it any more.
    fn set_bit(
        &mut self,
        base: usize,
        state: &mut Half,
        addr: &VipKey,
        want: bool,
        touched: &mut Touched,
    ) -> io::Result<()> {
        if want == state.addrs.contains(addr) {
            return Ok(());
        }
        let (w, b) = bit_of(addr, state.seed);
        let uses = state.bit_uses.entry(w * 64 + b).or_insert(0);
        let word = self.cells.1.get(base + w as usize)?;
        let new = if want {
            state.addrs.insert(*addr);
            *uses += 1;
            word | 1 << b
        } else {
            state.addrs.remove(addr);
            *uses -= 1;
            if *uses == 0 {
                state.bit_uses.remove(&(w * 64 + b));
                word & !(1 << b)
            } else {
                word
            }
        };
        if new != word {
            self.cells.1.set(base + w as usize, new)?;
            touched.words.insert(w as usize);
        }
        Ok(())
    }

    /// Makes `key`'s entry in the half at `base` be `want` (None: absent);
    /// false when it found no place.
    fn set_member(
        &mut self,
        base: usize,
        seed: u32,
        key: &ServiceKey,
        want: Option<MemberSlot>,
        touched: &mut Touched,
    ) -> io::Result<bool> {
        let (b1, b2) = buckets_of(key, seed);
        let mut found = None;
        for b in [b1, b2] {
            let bucket = self.cells.0.get(base + b as usize)?;
            if let Some(i) = bucket
                .entries
                .iter()
                .position(|e| e.key == *key && e.key.family != 0)
            {
                found = Some((b as usize, i, bucket));
                break;
            }
        }
        match (found, want) {
            (None, None) => Ok(true),
            (Some((b, i, mut bucket)), None) => {
                bucket.entries[i] = TableEntry::default();
                self.cells.0.set(base + b, bucket)?;
                touched.buckets.insert(b);
                Ok(true)
            }
            (Some((b, i, mut bucket)), Some(m)) => {
                let e = &mut bucket.entries[i];
                if (e.flags, e.slot) != (m.flags, m.slot) {
                    (e.flags, e.slot) = (m.flags, m.slot);
                    self.cells.0.set(base + b, bucket)?;
                    touched.buckets.insert(b);
                }
                Ok(true)
            }
            (None, Some(m)) => self.insert(base, seed, *key, m, touched),
        }
    }

    /// Cuckoo insertion in place, as [`place`] does in user space; false
    /// when it found no place.
    fn insert(
        &mut self,
        base: usize,
        seed: u32,
        key: ServiceKey,
        m: MemberSlot,
        touched: &mut Touched,
    ) -> io::Result<bool> {
        let mut entry = TableEntry {
            key,
            flags: m.flags,
            slot: m.slot,
            _pad: 0,
        };
        let mut at = buckets_of(&key, seed).0;
        for _ in 0..MAX_KICKS {
            let (b1, b2) = buckets_of(&entry.key, seed);
            for b in [b1, b2] {
                let mut bucket = self.cells.0.get(base + b as usize)?;
                if let Some(free) = bucket.entries.iter().position(|e| e.key.family == 0) {
                    bucket.entries[free] = entry;
                    self.cells.0.set(base + b as usize, bucket)?;
                    touched.buckets.insert(b as usize);
                    return Ok(true);
                }
            }
            let victim = (splitmix(&mut self.rng) % TABLE_WAYS as u64) as usize;
            let b = if at == b1 { b2 } else { b1 };
            let mut bucket = self.cells.0.get(base + b as usize)?;
            std::mem::swap(&mut bucket.entries[victim], &mut entry);
            self.cells.0.set(base + b as usize, bucket)?;
            touched.buckets.insert(b as usize);
            at = b;
        }
        Ok(false)
    }

    /// Records that the classifier now reads the other half.
    pub fn flipped(&mut self) {
        self.last_flip = Some(Instant::now());
    }
}

/// One half's state beyond its buckets: its seed and the addresses whose
/// bits it set, counted per bit (addresses can share a bit), so a change
/// clears a bit only when no address needs it any more.
#[derive(Clone, Debug, Default)]
pub struct Half {
    pub seed: u32,
    addrs: BTreeSet<VipKey>,
    bit_uses: BTreeMap<u32, u32>,
}

fn bit_of(addr: &VipKey, seed: u32) -> (u32, u32) {
    vip_bit(vip_hash(
        &addr_words(&addr.addr),
        addr.family == FAMILY_V6,
        seed,
    ))
}

impl Half {
    /// The half a full write of a layout of these addresses leaves.
    fn of(seed: u32, addrs: BTreeSet<VipKey>) -> Self {
        let mut bit_uses = BTreeMap::new();
        for a in &addrs {
            let (w, b) = bit_of(a, seed);
            *bit_uses.entry(w * 64 + b).or_insert(0) += 1;
        }
        Self {
            seed,
            addrs,
            bit_uses,
        }
    }
}

/// Buckets and words one write touched.
#[derive(Default)]
struct Touched {
    buckets: BTreeSet<usize>,
    words: BTreeSet<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipwarden_common::maps::{PROTO_TCP, PROTO_UDP};

    fn members(n: u32) -> BTreeMap<ServiceKey, MemberSlot> {
        (0..n)
            .map(|i| {
                let key = if i % 7 == 0 {
                    let mut a = [0u8; 16];
                    a[0] = 0xfd;
                    a[12..].copy_from_slice(&i.to_be_bytes());
                    ServiceKey::v6(a, PROTO_UDP, 53)
                } else {
                    ServiceKey::v4(
                        [10, 96 + (i >> 16) as u8, (i >> 8) as u8, i as u8],
                        PROTO_TCP,
                        80 + (i % 3) as u16,
                    )
                };
                (
                    key,
                    MemberSlot {
                        flags: i % 2,
                        slot: i,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn every_member_is_found_in_one_of_its_buckets_and_nothing_else_is() {
        let m = members(20_000);
        let layout = Layout::build(&m, &BTreeSet::new(), 7).expect("placed");
        for (k, v) in &m {
            assert_eq!(layout.find(k), Some(*v), "{k:?}");
        }
        let absent = ServiceKey::v4([10, 96, 0, 1], PROTO_UDP, 80);
        assert_eq!(layout.find(&absent), None);
        let stored = layout
            .buckets
            .iter()
            .flat_map(|b| b.entries)
            .filter(|e| e.key.family != 0)
            .count();
        assert_eq!(stored, m.len());
    }

    #[test]
    fn the_table_takes_the_largest_mirror_at_half_load() {
        let m = members(ipwarden_common::maps::MAX_SERVICE_PORTS);
        let layout = Layout::build(&m, &BTreeSet::new(), 1).expect("placed");
        assert!(m.iter().all(|(k, v)| layout.find(k) == Some(*v)));
        let too_many = members(TABLE_BUCKETS * TABLE_WAYS as u32 + 1);
        assert!(Layout::build(&too_many, &BTreeSet::new(), 1).is_none());
    }

    #[test]
    fn the_same_content_gives_the_same_layout() {
        let m = members(1000);
        let a = Layout::build(&m, &BTreeSet::new(), 42).unwrap();
        let b = Layout::build(&m, &BTreeSet::new(), 42).unwrap();
        assert_eq!(a.seed, b.seed);
        assert!(a.buckets == b.buckets && a.bits == b.bits);
    }

    #[test]
    fn member_and_vip_addresses_set_their_bits() {
        let m = members(100);
        let vip = VipKey::of(&ServiceKey::v4([192, 0, 2, 7], 0, 0));
        let layout = Layout::build(&m, &[vip].into(), 3).unwrap();
        let bit = |addr: [u8; 16], v6: bool| {
            let (w, b) = vip_bit(vip_hash(&addr_words(&addr), v6, layout.seed));
            layout.bits[w as usize] >> b & 1 == 1
        };
        for k in m.keys() {
            assert!(bit(k.addr, k.family == FAMILY_V6));
        }
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[192, 0, 2, 7]);
        assert!(bit(a, false));
        let set: u32 = layout.bits.iter().map(|w| w.count_ones()).sum();
        assert!(set <= 101, "{set} bits for 101 addresses");
    }
}
