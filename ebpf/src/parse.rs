//! Header parsing with bounds-checked direct packet access: every read is
//! preceded by a check against data_end, which is what the verifier needs.

use aya_ebpf::programs::TcContext;
use ipwarden_common::maps::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};

const ETH_HLEN: usize = 14;
/// ETH_P_IP and ETH_P_IPV6 as they sit in the frame (network order, read
/// as a little-endian u16).
const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
const ETH_P_IPV6_BE: u16 = 0x86DDu16.to_be();
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
/// Fragment offset and MF bits of the IPv4 frag_off field, as read from
/// the frame (network order); only the offset matters here.
const IP_FRAG_OFFSET_BE: u16 = 0x1FFFu16.to_be();
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// What the classifier needs of a packet. Addresses and ports stay in
/// network order: the lookup key is built from them as they are.
pub struct Packet {
    /// IPv4: the address in `daddr[0]`, the rest zero.
    pub daddr: [u32; 4],
    pub v6: bool,
    pub proto: u8,
    /// Network order.
    pub dport: u16,
    /// Offset of the transport header (for the slow path: source port,
    /// TCP flags, source address).
    pub l4: usize,
    /// The IP header, whose fixed part the parse checked against
    /// data_end: [`source_words`] reads the source from it without a
    /// second bounds check.
    ip: *const u8,
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

/// Reads a `T` at `offset`.
///
/// One load of the natural size, not a byte at a time: packet data has no
/// alignment guarantee, and BPF on x86-64 and arm64 (the architectures the
/// agent ships for) allows misaligned packet loads, which the verifier
/// accepts without BPF_F_STRICT_ALIGNMENT.
#[inline(always)]
pub fn read<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    // SAFETY: ptr_at checked the bounds against data_end.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { core::ptr::read_volatile(p) })
}

/// An Ethernet frame carrying TCP, UDP or SCTP over IPv4 or IPv6; None for
/// anything else, and for non-first fragments (which carry no ports).
#[inline(always)]
pub fn packet(ctx: &TcContext) -> Option<Packet> {
    let ethertype = read::<u16>(ctx, 12)?;
    if ethertype == ETH_P_IP_BE {
        v4(ctx)
    } else if ethertype == ETH_P_IPV6_BE {
        v6(ctx)
    } else {
        None
    }
}

#[inline(always)]
fn v4(ctx: &TcContext) -> Option<Packet> {
    // One bounds check for the whole fixed header and the two ports that
    // follow it when there are no options (the common case).
    let start = ctx.data();
    if start + ETH_HLEN + IPV4_HLEN + 4 > ctx.data_end() {
        return None;
    }
    let ip = (start + ETH_HLEN) as *const u8;
    // SAFETY: the 20 header bytes are inside the packet (checked above).
    let (ver_ihl, frag, proto, daddr) = unsafe {
        (
            *ip,
            core::ptr::read_volatile(ip.add(6) as *const u16),
            *ip.add(9),
            core::ptr::read_volatile(ip.add(16) as *const u32),
        )
    };
    if frag & IP_FRAG_OFFSET_BE != 0 {
        return None;
    }
    if !is_l4(proto) {
        return None;
    }
    let ihl = usize::from(ver_ihl & 0x0F) * 4;
    if ihl < IPV4_HLEN {
        return None;
    }
    let l4 = ETH_HLEN + ihl;
    let dport = read::<u16>(ctx, l4 + 2)?;
    Some(Packet {
        daddr: [daddr, 0, 0, 0],
        v6: false,
        proto,
        dport,
        l4,
        ip,
    })
}

#[inline(always)]
fn is_l4(proto: u8) -> bool {
    proto == PROTO_UDP || proto == PROTO_TCP || proto == PROTO_SCTP
}

#[inline(always)]
fn v6(ctx: &TcContext) -> Option<Packet> {
    // One bounds check for the fixed header and the two ports that follow
    // it when there are no extension headers (the common case); a frame
    // shorter than that carries no ports in any case.
    let start = ctx.data();
    if start + ETH_HLEN + IPV6_HLEN + 4 > ctx.data_end() {
        return None;
    }
    let ip = (start + ETH_HLEN) as *const u8;
    // SAFETY: the 40 header bytes are inside the packet (checked above).
    let (next, daddr) = unsafe {
        let d = ip.add(24) as *const u32;
        (
            *ip.add(6),
            [
                core::ptr::read_volatile(d),
                core::ptr::read_volatile(d.add(1)),
                core::ptr::read_volatile(d.add(2)),
                core::ptr::read_volatile(d.add(3)),
            ],
        )
    };
    let (proto, l4, dport) = if is_l4(next) {
        // SAFETY: the ports are inside the packet (checked above).
        let dport = unsafe { core::ptr::read_volatile(ip.add(IPV6_HLEN + 2) as *const u16) };
        (next, ETH_HLEN + IPV6_HLEN, dport)
    } else {
        let (proto, l4) = ext_headers(ctx, next, ETH_HLEN + IPV6_HLEN)?;
        (proto, l4, read::<u16>(ctx, l4 + 2)?)
    };
    Some(Packet {
        daddr,
        v6: true,
        proto,
        dport,
        l4,
        ip,
    })
}

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
/// Extension headers walked before giving up: RFC 8200 order allows
/// hop-by-hop, destination options, routing, fragment, destination
/// options, so five covers every header chain a sender should build.
const MAX_EXT_HEADERS: usize = 6;
/// Ceiling of the offset the walk may reach, so the verifier can bound it
/// (an extension header is at most 2 KiB: (255 + 1) * 8 bytes).
const MAX_L4_OFFSET: usize = 2048;

/// Walks hop-by-hop, routing, fragment and destination-options headers
/// from `next`, the fixed header's next header (not a transport protocol),
/// to the transport header: Some((protocol, offset)) for TCP, UDP or SCTP,
/// None for anything else, for a non-first fragment, or for a chain longer
/// than MAX_EXT_HEADERS.
#[inline(always)]
fn ext_headers(ctx: &TcContext, mut next: u8, mut off: usize) -> Option<(u8, usize)> {
    for _ in 0..MAX_EXT_HEADERS {
        // The first two bytes of every one of these headers: next header
        // and (except the fragment header) length in 8-byte units, not
        // counting the first 8.
        if off > MAX_L4_OFFSET {
            return None;
        }
        let [nh, len] = read::<[u8; 2]>(ctx, off)?;
        match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                off += (usize::from(len) + 1) * 8;
            }
            NEXTHDR_FRAGMENT => {
                // Offset (13 bits) in the upper bits of bytes 2..4.
                let frag = u16::from_be(read::<u16>(ctx, off + 2)?);
                if frag & 0xFFF8 != 0 {
                    return None;
                }
                off += 8;
            }
            _ => return None,
        }
        next = nh;
        if is_l4(next) {
            return Some((next, off));
        }
    }
    None
}

/// The source port and whether the packet starts a connection: a TCP SYN
/// without ACK, or any UDP/SCTP packet (which have no handshake to look
/// at here). TCP, UDP and SCTP all carry the source port first.
#[inline(always)]
pub fn source_port_and_start(ctx: &TcContext, l4: usize, proto: u8) -> Option<(u16, bool)> {
    let sport = u16::from_be(read::<u16>(ctx, l4)?);
    let starts = if proto == PROTO_TCP {
        let flags = read::<u8>(ctx, l4 + 13)?;
        flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN
    } else {
        true
    };
    Some((sport, starts))
}

/// The source address, IPv4 in the first four bytes.
#[inline(always)]
pub fn source_addr(ctx: &TcContext, v6: bool) -> Option<[u8; 16]> {
    let mut saddr = [0u8; 16];
    if v6 {
        saddr = read::<[u8; 16]>(ctx, ETH_HLEN + 8)?;
    } else {
        let s4 = read::<[u8; 4]>(ctx, ETH_HLEN + 12)?;
        saddr[..4].copy_from_slice(&s4);
    }
    Some(saddr)
}

/// The source address as four words, loaded as they sit in memory (the
/// form [`ipwarden_common::maps::source_bit`] hashes); IPv4 in the first.
#[inline(always)]
pub fn source_words(pkt: &Packet) -> [u32; 4] {
    // SAFETY: the parse checked the fixed IP header, which holds the
    // source (IPv4: bytes 12..16, IPv6: bytes 8..24), against data_end,
    // and nothing since has changed the packet's data.
    unsafe {
        if pkt.v6 {
            let s = pkt.ip.add(8) as *const u32;
            [
                core::ptr::read_volatile(s),
                core::ptr::read_volatile(s.add(1)),
                core::ptr::read_volatile(s.add(2)),
                core::ptr::read_volatile(s.add(3)),
            ]
        } else {
            [
                core::ptr::read_volatile(pkt.ip.add(12) as *const u32),
                0,
                0,
                0,
            ]
        }
    }
}
