//! ipwarden's eBPF programs. Built by `cargo xtask build-ebpf` only.
#![no_std]
#![no_main]

mod maps;
mod parse;

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use aya_log_ebpf::debug;
use ipwarden_common::{
    maps::{
        key_meta, source_bit, table_buckets, table_hash, vip_bit, vip_hash, EVENT_RESCUED,
        EVENT_WOULD_REJECT, FAMILY_V4, FAMILY_V6, FLAG_CHAIN_DECIDES, FLAG_MISSING_FROM_KERNEL,
        TABLE_BUCKETS, TABLE_WAYS, VIP_BITMAP_WORDS,
    },
    Event, Mode, TableEntry, VipKey,
};

use crate::maps::{CONFIG, EVENTS, HITS, SOURCE_BITS, STATS, TABLE, VIPS, VIP_BITS};

/// tc ingress: looks (daddr, proto, dport) up in the mirror of the service
/// sets. On a hit it counts the packet and ORs the configured mark bit into
/// skb->mark, so that iptables can see mirrored traffic: a counting rule
/// before the REJECT (mode log), or an ACCEPT at the top of INPUT (mode
/// allow). The mark means "the chains would accept this": it is never set
/// on a member whose sources only the chain checks
/// (`loadBalancerSourceRanges`), and a packet from a source in the bitmap
/// of egress-restricted local pods gets the checked mark instead, which
/// INPUT accepts only after the policy chain (a bit shared with another
/// address only costs that address the fast path). A hit on a member the auditor found missing from the kernel set
/// is reported through the ring buffer. The program never drops: every
/// path returns TC_ACT_OK.
///
/// The fast path touches arrays only, each lookup of which the verifier
/// inlines: the config, one bit of the VIP bitmap (a packet to anything
/// but a VIP stops there), one or two buckets of the fast table, and this
/// member's per-CPU counters. The hash maps the agent and bpftool read
/// (`IPW_SVC_PORTS`, `IPW_VIPS`) cost a jhash and a bucket walk each, so
/// the classifier looks at them only off the fast path.
#[classifier]
pub fn ipwarden_ingress(ctx: TcContext) -> i32 {
    let _ = try_ingress(&ctx);
    TC_ACT_OK
}

#[inline(always)]
fn try_ingress(ctx: &TcContext) -> Option<()> {
    let config = CONFIG.get(0)?;
    if config.mode == Mode::Off as u32 {
        return None;
    }
    let pkt = parse::packet(ctx)?;
    let half = config.active & 1;
    let seed = if half == 0 {
        config.seeds[0]
    } else {
        config.seeds[1]
    };
    let vh = vip_hash(&pkt.daddr, pkt.v6, seed);
    let (word, bit) = vip_bit(vh);
    let bits = VIP_BITS.get(half * VIP_BITMAP_WORDS + word)?;
    if (*bits >> bit) & 1 == 0 {
        // Not a VIP: the common case for everything but service traffic.
        return None;
    }
    let family = if pkt.v6 { FAMILY_V6 } else { FAMILY_V4 };
    let port = u16::from_be(pkt.dport);
    let meta = key_meta(family, pkt.proto, port);
    let (b1, b2) = table_buckets(table_hash(vh, meta));
    let base = half * TABLE_BUCKETS;
    let Some(entry) = find(base + b1, meta, &pkt).or_else(|| find(base + b2, meta, &pkt)) else {
        other_port(&vip_key(&pkt, family));
        return None;
    };
    // SAFETY: `entry` points into the table's value memory, valid for
    // this run; the agent writes only the inactive half.
    let (flags, slot) = unsafe { ((*entry).flags, (*entry).slot) };
    let len = ctx.len();
    if let Some(c) = HITS.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot; nothing else writes it meanwhile.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(len);
        }
    }
    let marked = flags & FLAG_CHAIN_DECIDES == 0;
    if marked {
        // A restricted source gets the checked mark, which INPUT accepts
        // only below the policy chain.
        let bit = if restricted_source(&pkt) {
            config.checked_mark
        } else {
            config.mark
        };
        // SAFETY: reading skb->mark of the packet we were handed.
        let mark = unsafe { (*ctx.skb.skb).mark };
        ctx.set_mark(mark | bit);
    }
    // Per-packet lines cost a ring-buffer write each: the agent keeps the
    // level at info unless asked, and AYA_LOG_LEVEL (a load-time constant)
    // lets the verifier drop this line altogether.
    debug!(
        ctx,
        "mirror hit proto {} port {} len {}", pkt.proto, port, len
    );
    if flags & FLAG_MISSING_FROM_KERNEL != 0 {
        let rescued = marked && config.mode == Mode::Allow as u32;
        let event = Event {
            kind: if rescued {
                EVENT_RESCUED
            } else {
                EVENT_WOULD_REJECT
            },
            family,
            proto: pkt.proto,
            dport: port,
            daddr: vip_key(&pkt, family).addr,
            ..Event::default()
        };
        missing(ctx, &event, pkt.l4);
    }
    Some(())
}

/// Is the packet's source (maybe) one whose egress a policy restricts?
/// One bit of the source bitmap.
#[inline(always)]
fn restricted_source(pkt: &parse::Packet) -> bool {
    let (word, bit) = source_bit(&parse::source_words(pkt));
    SOURCE_BITS.get(word).is_none_or(|w| (*w >> bit) & 1 == 1)
}

/// The entry of `meta` and the packet's address in bucket `index`.
#[inline(always)]
fn find(index: u32, meta: u32, pkt: &parse::Packet) -> Option<*const TableEntry> {
    let bucket = TABLE.get_ptr(index)?;
    for i in 0..TABLE_WAYS {
        // SAFETY: in bounds of the bucket the lookup returned; entries are
        // 4-byte aligned (the map's values are 8-byte aligned), and the
        // first five words of an entry are the key: meta, then the address.
        unsafe {
            let e = core::ptr::addr_of!((*bucket).entries[i]);
            let w = e as *const u32;
            if *w == meta
                && *w.add(1) == pkt.daddr[0]
                && (!pkt.v6
                    || (*w.add(2) == pkt.daddr[1]
                        && *w.add(3) == pkt.daddr[2]
                        && *w.add(4) == pkt.daddr[3]))
            {
                return Some(e);
            }
        }
    }
    None
}

/// The packet's destination as the VIP map's key. Built where a slow
/// path needs it, never from a reference to `pkt` held across a call that
/// is not inlined: that would keep the whole packet summary on the stack
/// on every path.
#[inline(always)]
fn vip_key(pkt: &parse::Packet, family: u8) -> VipKey {
    VipKey {
        family,
        _pad: [0; 3],
        // SAFETY: [u32; 4] and [u8; 16] have the same size; the words
        // were loaded from the packet as they sit in memory.
        addr: unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(pkt.daddr) },
    }
}

/// A packet to a VIP (or to a false positive of the bitmap) on a port the
/// mirror does not hold: counted when the address is a VIP indeed.
#[inline(never)]
fn other_port(vip: &VipKey) {
    if VIPS.get_ptr(*vip).is_some() {
        if let Some(stats) = STATS.get_ptr_mut(0) {
            // SAFETY: this CPU's slot.
            unsafe { (*stats).vip_other_port += 1 };
        }
    }
}

/// A hit on a member the auditor found missing from the kernel set:
/// counted, and reported when the packet starts a connection. `event`
/// holds what the fast path knew (kind, family, protocol, destination);
/// the transport header is at `l4`.
#[inline(never)]
fn missing(ctx: &TcContext, event: &Event, l4: usize) {
    let Some(stats) = STATS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot.
    unsafe { (*stats).missing_hits += 1 };
    let Some((sport, starts)) = parse::source_port_and_start(ctx, l4, event.proto) else {
        return;
    };
    if !starts {
        return;
    }
    let Some(saddr) = parse::source_addr(ctx, event.family == FAMILY_V6) else {
        return;
    };
    let event = Event {
        sport,
        saddr,
        // SAFETY: reading skb->ifindex of the packet we were handed.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        ..*event
    };
    // The agent logs each event: no aya-log line here, it would cost a
    // second ring-buffer write per event.
    match EVENTS.reserve_bytes(core::mem::size_of::<Event>(), 0) {
        Some(mut entry) => {
            // SAFETY: the entry is exactly size_of::<Event>() bytes.
            unsafe { core::ptr::write_unaligned(entry.as_mut_ptr() as *mut Event, event) };
            entry.submit(0);
        }
        // SAFETY: this CPU's slot.
        None => unsafe { (*stats).events_dropped += 1 },
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
