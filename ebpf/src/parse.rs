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
/// Fragment offset bits of the IPv4 frag_off field.
const IP_FRAG_OFFSET_MASK: u16 = 0x1FFF;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// What the classifier needs of a packet.
pub struct Packet {
    pub key: ServiceKey,
    pub saddr: [u8; 16],
    pub sport: u16,
    /// The first packet of a connection: a TCP SYN without ACK, or any
    /// UDP/SCTP packet (which have no handshake to look at here).
    pub starts_connection: bool,
}

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

/// An Ethernet frame carrying TCP, UDP or SCTP over IPv4 or IPv6; None for
/// anything else, and for non-first IPv4 fragments (which carry no ports).
#[inline(always)]
pub fn packet(ctx: &TcContext) -> Option<Packet> {
    let ethertype = u16::from_be(read::<u16>(ctx, 12)?);
    match ethertype {
        ETH_P_IP => v4(ctx),
        ETH_P_IPV6 => v6(ctx),
        _ => None,
    }
}

#[inline(always)]
fn v4(ctx: &TcContext) -> Option<Packet> {
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
    let s4 = read::<[u8; 4]>(ctx, ETH_HLEN + 12)?;
    let d4 = read::<[u8; 4]>(ctx, ETH_HLEN + 16)?;
    let (sport, dport, starts) = l4(ctx, proto, ETH_HLEN + ihl)?;
    let mut saddr = [0u8; 16];
    saddr[..4].copy_from_slice(&s4);
    Some(Packet {
        key: ServiceKey::v4(d4, proto, dport),
        saddr,
        sport,
        starts_connection: starts,
    })
}

#[inline(always)]
fn v6(ctx: &TcContext) -> Option<Packet> {
    // Extension headers are not walked: service traffic does not carry
    // them, and a miss only means "not ours", never a drop.
    let proto = read::<u8>(ctx, ETH_HLEN + 6)?;
    let saddr = read::<[u8; 16]>(ctx, ETH_HLEN + 8)?;
    let daddr = read::<[u8; 16]>(ctx, ETH_HLEN + 24)?;
    let (sport, dport, starts) = l4(ctx, proto, ETH_HLEN + IPV6_HLEN)?;
    Some(Packet {
        key: ServiceKey::v6(daddr, proto, dport),
        saddr,
        sport,
        starts_connection: starts,
    })
}

/// (sport, dport, starts a connection). TCP, UDP and SCTP all carry the
/// ports in their first four bytes.
#[inline(always)]
fn l4(ctx: &TcContext, proto: u8, off: usize) -> Option<(u16, u16, bool)> {
    match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            let sport = u16::from_be(read::<u16>(ctx, off)?);
            let dport = u16::from_be(read::<u16>(ctx, off + 2)?);
            let starts = if proto == PROTO_TCP {
                let flags = read::<u8>(ctx, off + 13)?;
                flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
            } else {
                true
            };
            Some((sport, dport, starts))
        }
        _ => None,
    }
}
