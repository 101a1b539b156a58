//! ipwarden's eBPF programs. Built by `cargo xtask build-ebpf` only.
#![no_std]
#![no_main]

mod maps;
mod parse;

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use aya_log_ebpf::{debug, info};
use ipwarden_common::{maps::FLAG_MISSING_FROM_KERNEL, HitCounter, Mode};

use crate::maps::{CONFIG, HITS, SERVICES};

/// tc ingress: looks (daddr, proto, dport) up in the service mirror. On a
/// hit it counts the packet and ORs the configured mark bit into skb->mark.
/// It never drops: every path returns TC_ACT_OK so the next program or the
/// stack decides.
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
    let key = parse::service_key(ctx)?;
    let value = SERVICES.get_ptr(&key)?;
    count_hit(&key, ctx.len());
    // SAFETY: get_ptr points at the map slot, valid for this program run.
    let flags = unsafe { (*value).flags };
    // SAFETY: reading skb->mark of the packet we were handed.
    let mark = unsafe { (*ctx.skb.skb).mark };
    ctx.set_mark(mark | config.mark);
    // Per-packet lines cost a ring-buffer write each: the agent keeps the
    // level at info unless asked, and AYA_LOG_LEVEL gates them here.
    debug!(ctx, "mirror hit proto {} port {} len {}", key.proto, key.port, ctx.len());
    if flags & FLAG_MISSING_FROM_KERNEL != 0 {
        info!(ctx, "mirror hit for a member missing from the ipset: proto {} port {}", key.proto, key.port);
    }
    Some(())
}

#[inline(always)]
fn count_hit(key: &ipwarden_common::ServiceKey, len: u32) {
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
