//! Header parsing with bounds-checked direct packet access: every read is
//! preceded by a check against data_end, which is what the verifier needs.

use aya_ebpf::programs::TcContext;
use ipwarden_common::{
    maps::{PROTO_SCTP, PROTO_TCP, PROTO_UDP},
    ServiceKey,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPV6_HLEN: usize = 40;
/// IPv4 "more fragments" flag and offset mask of the frag_off field.
const IP_FRAG_OFFSET_MASK: u16 = 0x1FFF;

/// Returns a pointer to a `T` at `offset`, or None when the packet is shorter.
#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn read<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    // SAFETY: ptr_at checked the bounds; unaligned because packet headers
    // have no alignment guarantee.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { p.read_unaligned() })
}

/// (daddr, proto, dport) of an Ethernet frame carrying TCP, UDP or SCTP over
/// IPv4 or IPv6; None for anything else, and for non-first IPv4 fragments
/// (which carry no ports).
#[inline(always)]
pub fn service_key(ctx: &TcContext) -> Option<ServiceKey> {
    let ethertype = u16::from_be(read::<u16>(ctx, 12)?);
    match ethertype {
        ETH_P_IP => v4_key(ctx),
        ETH_P_IPV6 => v6_key(ctx),
        _ => None,
    }
}

#[inline(always)]
fn v4_key(ctx: &TcContext) -> Option<ServiceKey> {
    let ver_ihl = read::<u8>(ctx, ETH_HLEN)?;
    let ihl = usize::from(ver_ihl & 0x0F) * 4;
    if ihl < 20 {
        return None;
    }
    let frag = u16::from_be(read::<u16>(ctx, ETH_HLEN + 6)?);
    if frag & IP_FRAG_OFFSET_MASK != 0 {
        return None;
    }
    let proto = read::<u8>(ctx, ETH_HLEN + 9)?;
    let daddr = read::<[u8; 4]>(ctx, ETH_HLEN + 16)?;
    let port = dport(ctx, proto, ETH_HLEN + ihl)?;
    Some(ServiceKey::v4(daddr, proto, port))
}

#[inline(always)]
fn v6_key(ctx: &TcContext) -> Option<ServiceKey> {
    // Extension headers are not walked: service traffic does not carry
    // them, and a miss only means "not ours", never a drop.
    let proto = read::<u8>(ctx, ETH_HLEN + 6)?;
    let daddr = read::<[u8; 16]>(ctx, ETH_HLEN + 24)?;
    let port = dport(ctx, proto, ETH_HLEN + IPV6_HLEN)?;
    Some(ServiceKey::v6(daddr, proto, port))
}

/// TCP, UDP and SCTP all carry the destination port at bytes 2..4.
#[inline(always)]
fn dport(ctx: &TcContext, proto: u8, l4: usize) -> Option<u16> {
    match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => Some(u16::from_be(read::<u16>(ctx, l4 + 2)?)),
        _ => None,
    }
}
