//! ipwarden's eBPF programs. Built by `cargo xtask build-ebpf` only.
#![no_std]
#![no_main]

mod maps;
mod parse;

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use aya_log_ebpf::debug;
use ipwarden_common::{
    maps::{EVENT_RESCUED, EVENT_WOULD_REJECT, FLAG_MISSING_FROM_KERNEL},
    Event, HitCounter, Mode, ServiceKey, Stats, VipKey,
};

use crate::maps::{CONFIG, EVENTS, HITS, SERVICES, STATS, VIPS};

/// tc ingress: looks (daddr, proto, dport) up in the mirror of the service
/// sets. On a hit it counts the packet and ORs the configured mark bit into
/// skb->mark, so that iptables can see mirrored traffic: a counting rule
/// before the REJECT (mode log), or an ACCEPT at the top of the service
/// chain (mode allow). A hit on a member the auditor found missing from the
/// kernel set is reported through the ring buffer. The program never drops:
/// every path returns TC_ACT_OK.
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
    let stats = STATS.get_ptr_mut(0)?;
    let Some(value) = SERVICES.get_ptr(&pkt.key) else {
        if VIPS.get_ptr(&VipKey::of(&pkt.key)).is_some() {
            // SAFETY: this CPU's slot; nothing else writes it meanwhile.
            unsafe { (*stats).vip_other_port += 1 };
        }
        return None;
    };
    count_hit(&pkt.key, ctx.len());
    // SAFETY: get_ptr points at the map slot, valid for this program run.
    let flags = unsafe { (*value).flags };
    // SAFETY: reading skb->mark of the packet we were handed.
    let mark = unsafe { (*ctx.skb.skb).mark };
    ctx.set_mark(mark | config.mark);
    // SAFETY: this CPU's slot.
    unsafe { (*stats).mirror_hits += 1 };
    // Per-packet lines cost a ring-buffer write each: the agent keeps the
    // level at info unless asked, and AYA_LOG_LEVEL gates them here.
    debug!(
        ctx,
        "mirror hit proto {} port {} len {}",
        pkt.key.proto,
        pkt.key.port,
        ctx.len()
    );
    if flags & FLAG_MISSING_FROM_KERNEL != 0 {
        // SAFETY: this CPU's slot.
        unsafe { (*stats).missing_hits += 1 };
        if pkt.starts_connection {
            let kind = if config.mode == Mode::Allow as u32 {
                EVENT_RESCUED
            } else {
                EVENT_WOULD_REJECT
            };
            // The agent logs each event: no aya-log line here, it would
            // cost a second ring-buffer write per event.
            report(ctx, &pkt, kind, stats);
        }
    }
    Some(())
}

#[inline(always)]
fn report(ctx: &TcContext, pkt: &parse::Packet, kind: u32, stats: *mut Stats) {
    let event = Event {
        kind,
        // SAFETY: reading skb->ifindex of the packet we were handed.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        family: pkt.key.family,
        proto: pkt.key.proto,
        sport: pkt.sport,
        dport: pkt.key.port,
        _pad: 0,
        saddr: pkt.saddr,
        daddr: pkt.key.addr,
    };
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

#[inline(always)]
fn count_hit(key: &ServiceKey, len: u32) {
    match HITS.get_ptr_mut(key) {
        // SAFETY: per-CPU slot of this CPU, no concurrent writer.
        Some(c) => unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(len);
        },
        None => {
            let first = HitCounter {
                packets: 1,
                bytes: u64::from(len),
            };
            // Racing inserts from two CPUs: the loser gets EEXIST and its
            // packet goes uncounted in this rare first-hit case.
            let _ = HITS.insert(key, &first, 0);
        }
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
