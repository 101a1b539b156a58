//! Map key and value layouts.

/// IP family as stored in [`ServiceKey::family`] (the AF_* numbers).
pub const FAMILY_V4: u8 = 2;
pub const FAMILY_V6: u8 = 10;

/// IP protocol numbers as stored in [`ServiceKey::proto`].
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// A service destination: what `ipset` writes as `10.0.0.1,tcp:80`.
///
/// IPv4 addresses sit in the first four bytes of `addr`, the rest zero, so
/// one map holds both families. `port` is in host byte order so that
/// `bpftool map dump` prints the number a person expects.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServiceKey {
    pub family: u8,
    pub proto: u8,
    pub port: u16,
    pub addr: [u8; 16],
}

impl ServiceKey {
    pub const fn v4(addr: [u8; 4], proto: u8, port: u16) -> Self {
        let mut a = [0u8; 16];
        a[0] = addr[0];
        a[1] = addr[1];
        a[2] = addr[2];
        a[3] = addr[3];
        Self {
            family: FAMILY_V4,
            proto,
            port,
            addr: a,
        }
    }

    pub const fn v6(addr: [u8; 16], proto: u8, port: u16) -> Self {
        Self {
            family: FAMILY_V6,
            proto,
            port,
            addr,
        }
    }
}

/// Set by the auditor: the kernel ipset lacks this member although it is desired.
pub const FLAG_MISSING_FROM_KERNEL: u32 = 1;
/// A member the classifier counts but never marks: the chain decides on
/// every packet (a frontend restricted by `loadBalancerSourceRanges`,
/// whose sources only the chain checks).
pub const FLAG_CHAIN_DECIDES: u32 = 2;

/// A VIP: what `ipset` writes as `10.0.0.1` in `ipwarden-svip`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct VipKey {
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}

impl VipKey {
    pub const fn of(key: &ServiceKey) -> Self {
        Self {
            family: key.family,
            _pad: [0; 3],
            addr: key.addr,
        }
    }
}

/// What the mirror knows about one VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipValue {
    /// `FLAG_*` bits.
    pub flags: u32,
}

/// A source address the classifier never marks traffic from: this node's
/// pods whose egress a policy restricts (their packets to the node's own
/// addresses must meet the policy chain in INPUT).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SourceKey {
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}

/// Why a source is in [`crate::names::MAP_EGRESS_SOURCES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SourceValue {
    /// `SOURCE_*` bits.
    pub reasons: u32,
}

/// A NetworkPolicy (or ClusterNetworkPolicy) restricts this pod's egress.
pub const SOURCE_EGRESS_RESTRICTED: u32 = 1;

/// Kinds of [`Event`].
pub const EVENT_WOULD_REJECT: u32 = 1;
pub const EVENT_RESCUED: u32 = 2;

/// A connection start to a mirrored service port that the kernel ipset
/// lacks: refused by the REJECT rule (mode log) or accepted thanks to the
/// mark (mode allow). Sent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Event {
    pub kind: u32,
    pub ifindex: u32,
    pub family: u8,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Per-CPU totals of the classifier, slot 0 of the stats array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stats {
    /// Packets whose (daddr, proto, dport) is in the mirror. Not counted
    /// per packet since layout 3: the per-member counters
    /// ([`crate::names::MAP_HITS`]) add up to it, and `ipwarden bpf dump`
    /// shows their sum here.
    pub mirror_hits: u64,
    /// Of those, packets to a member flagged missing from the kernel set.
    pub missing_hits: u64,
    /// Packets to a VIP on a port the mirror does not hold (refused by design).
    pub vip_other_port: u64,
    /// Events lost because the ring buffer was full.
    pub events_dropped: u64,
}

/// What the mirror knows about one service destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceValue {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Stable id of the owning Service (see the agent's service table).
    pub service_id: u32,
}

/// Per-CPU traffic seen for one mirrored member, at the slot its
/// [`TableEntry::slot`] names.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HitCounter {
    pub packets: u64,
    pub bytes: u64,
}

/// What the classifier does on a mirror hit.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Count nothing, mark nothing.
    Off = 0,
    /// Count and mark hits; report traffic the ipset would reject.
    Log = 1,
    /// As `Log`; the service chain also accepts marked packets.
    Allow = 2,
}

/// Sizes of the maps (max_entries), shared so the agent can check a pinned
/// map against the object before adopting it. Room for every service port
/// of a large cluster (kube-router's biggest reported clusters have a few
/// thousand services, each with a few ports times ClusterIP, externalIPs
/// and LB IPs).
pub const MAX_SERVICE_PORTS: u32 = 65_536;
pub const MAX_VIPS: u32 = 65_536;
/// Ring buffer bytes: thousands of events between two reads of the agent.
pub const EVENTS_BYTES: u32 = 1 << 18;

/// u64 words of the source bitmap ([`crate::names::MAP_SOURCE_BITS`]):
/// 2^18 bits, so 1k restricted sources set 0.4% of them (the share of
/// other sources' service traffic the classifier leaves to the chains).
pub const SOURCE_BITMAP_WORDS: u32 = 4_096;
/// Room for the egress-restricted pods of one node (a few hundred pods,
/// two families each).
pub const MAX_SOURCES: u32 = 16_384;
/// The source bitmap's fixed seed: the bitmap has no halves (a word only
/// ever gains the bits of sources added and loses those of sources gone,
/// so the classifier reading it mid-update never misses a source).
pub const SOURCE_SEED: u32 = 0x5EED_0001;

/// The layout version the agent checks before adopting pinned maps.
///
/// 5: IPv6 addresses hashed 64 bits at a time ([`vip_hash`],
/// [`source_bit`]): their buckets and bitmap bits moved, IPv4's did not.
///
/// 4: the egress-restricted sources ([`SourceKey`]) and their bitmap;
/// [`FLAG_CHAIN_DECIDES`]; [`Config::checked_mark`].
///
/// 3: the classifier's fast table ([`TableBucket`]) and VIP bitmap; the
/// hit counters moved from a per-CPU hash keyed by [`ServiceKey`] to a
/// per-CPU array indexed by [`TableEntry::slot`]; [`Config`] names the
/// active half of the table and its seeds.
pub const LAYOUT_VERSION: u32 = 5;

/// Runtime configuration, slot 0 of [`crate::names::MAP_CONFIG`]. The
/// classifier reads it first on every packet: one cache line with all it
/// needs before the table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// A [`Mode`] as u32.
    pub mode: u32,
    /// Bit(s) OR-ed into skb->mark on a hit.
    pub mark: u32,
    /// [`LAYOUT_VERSION`] of the agent that wrote the maps.
    pub layout_version: u32,
    /// The half of the fast table and of the VIP bitmap the classifier
    /// reads (0 or 1); the agent writes the other half, then flips this.
    pub active: u32,
    /// The hash seed of each half ([`vip_hash`], [`table_hash`]).
    pub seeds: [u32; 2],
    /// Bit(s) OR-ed into skb->mark instead of `mark` on a hit from an
    /// egress-restricted source ([`checked_mark`]): accepted in INPUT only
    /// below the policy chain, so the rescue still works for those pods
    /// once their policies let the packet through.
    pub checked_mark: u32,
}

/// The mark a hit from an egress-restricted source gets: the bit above
/// `mark` (none when `mark` is the top bit).
#[inline(always)]
pub const fn checked_mark(mark: u32) -> u32 {
    mark.wrapping_shl(1)
}

/// Entries per bucket of the fast table: two 32-byte entries, one cache line.
pub const TABLE_WAYS: usize = 2;
/// Buckets in each half of the fast table: room for [`MAX_SERVICE_PORTS`]
/// members at half load, where two-choice cuckoo placement of two-entry
/// buckets always succeeds in practice.
pub const TABLE_BUCKETS: u32 = 65_536;
/// u64 words of each half of the VIP bitmap: 2^20 bits, so 10k VIPs set
/// about 1% of them (the share of other traffic that looks further).
pub const VIP_BITMAP_WORDS: u32 = 16_384;

/// One member in the fast table: the [`ServiceKey`] as the mirror holds it
/// (an empty entry has family 0), and what the classifier needs on a hit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TableEntry {
    pub key: ServiceKey,
    /// `FLAG_*` bits, as in [`ServiceValue::flags`].
    pub flags: u32,
    /// This member's index in the per-CPU hit counters
    /// ([`crate::names::MAP_HITS`]), kept while it stays mirrored.
    pub slot: u32,
    pub _pad: u32,
}

/// One bucket of the fast table ([`crate::names::MAP_TABLE`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TableBucket {
    pub entries: [TableEntry; TABLE_WAYS],
}

/// The first 32-bit word of a [`ServiceKey`] in memory (family, protocol,
/// port in host order), as both sides read it: the classifier compares it
/// with one load, and it feeds [`table_hash`].
#[inline(always)]
pub const fn key_meta(family: u8, proto: u8, port: u16) -> u32 {
    family as u32 | (proto as u32) << 8 | (port as u32) << 16
}

/// The address of a [`ServiceKey`] as four little-endian words, which is
/// how the classifier loads it from the packet (bpfel, and the hosts the
/// agent runs on, are little-endian).
#[inline(always)]
pub const fn addr_words(addr: &[u8; 16]) -> [u32; 4] {
    const fn w(a: &[u8; 16], i: usize) -> u32 {
        u32::from_le_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]])
    }
    [w(addr, 0), w(addr, 4), w(addr, 8), w(addr, 12)]
}

const HASH_MUL: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline(always)]
const fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(HASH_MUL)
}

/// The two 64-bit halves of an address as four words; IPv4 (first word,
/// the rest zero) is all in the first.
#[inline(always)]
const fn halves(addr: &[u32; 4]) -> (u64, u64) {
    (
        addr[0] as u64 | (addr[1] as u64) << 32,
        addr[2] as u64 | (addr[3] as u64) << 32,
    )
}

/// Hash of a destination address under `seed`: its top bits pick the bit
/// of the VIP bitmap ([`vip_bit`]), and [`table_hash`] continues from it.
/// Multiplicative: the high bits depend on every input bit, the low ones
/// do not, so only high bits are used. One multiply per 64 bits of
/// address: one for IPv4, two for IPv6. Chained rather than XOR-folded,
/// so that which IPv6 addresses collide depends on the seed (addresses
/// built to share a bucket under every seed would make the table
/// unplaceable).
#[inline(always)]
pub const fn vip_hash(addr: &[u32; 4], v6: bool, seed: u32) -> u64 {
    let (lo, hi) = halves(addr);
    let h = mix(seed as u64 | 1 << 32, lo);
    if v6 {
        mix(h, hi)
    } else {
        h
    }
}

/// (word, bit) of the VIP bitmap half for an address hash.
#[inline(always)]
pub const fn vip_bit(vip_hash: u64) -> (u32, u32) {
    let bit = (vip_hash >> 44) as u32; // 20 bits
    (bit >> 6, bit & 63)
}

/// (word, bit) of the source bitmap for a source address (as
/// [`addr_words`] gives it): one multiply of the address folded to 64
/// bits (its halves XOR-ed; IPv4 folds to itself). The seed is fixed and
/// a collision only costs a source the fast path, so nothing is gained
/// by chaining here.
#[inline(always)]
pub const fn source_bit(addr: &[u32; 4]) -> (u32, u32) {
    let (lo, hi) = halves(addr);
    let bit = (mix(SOURCE_SEED as u64 | 1 << 32, lo ^ hi) >> 46) as u32; // 18 bits
    (bit >> 6, bit & 63)
}

/// Hash of a whole key, from its address hash and [`key_meta`].
#[inline(always)]
pub const fn table_hash(vip_hash: u64, meta: u32) -> u64 {
    mix(vip_hash, meta as u64)
}

/// The two candidate buckets of a key (distinct).
#[inline(always)]
pub const fn table_buckets(table_hash: u64) -> (u32, u32) {
    let mask = TABLE_BUCKETS - 1;
    let b1 = (table_hash >> 48) as u32 & mask;
    let mut b2 = (table_hash >> 32) as u32 & mask;
    if b2 == b1 {
        b2 ^= 1;
    }
    (b1, b2)
}

const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 8);
const _: () = assert!(core::mem::size_of::<HitCounter>() == 16);
const _: () = assert!(core::mem::size_of::<Config>() == 28);
const _: () = assert!(core::mem::size_of::<TableEntry>() == 32);
const _: () = assert!(core::mem::size_of::<TableBucket>() == 64);
const _: () = assert!(TABLE_BUCKETS.is_power_of_two());
const _: () = assert!(core::mem::size_of::<VipKey>() == 20);
const _: () = assert!(core::mem::size_of::<VipValue>() == 4);
const _: () = assert!(core::mem::size_of::<Event>() == 48);
const _: () = assert!(core::mem::size_of::<Stats>() == 32);
const _: () = assert!(core::mem::size_of::<SourceKey>() == 20);
const _: () = assert!(core::mem::size_of::<SourceValue>() == 4);
const _: () = assert!(SOURCE_BITMAP_WORDS * 64 == 1 << 18);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)], have no implicit padding (checked by the
    // size asserts above) and every bit pattern is valid.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::HitCounter {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipValue {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Stats {}
    unsafe impl aya::Pod for super::TableEntry {}
    unsafe impl aya::Pod for super::TableBucket {}
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::SourceValue {}
}
