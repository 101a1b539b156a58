//! A real ICMPv6 Packet Too Big, for the tests that check the service
//! chain accepts it (a path-MTU black hole otherwise).

use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn6,
};

/// Sends one Packet Too Big (MTU 1280) to `dst` from the calling thread's
/// namespace, through a raw socket (the kernel fills in the checksum),
/// quoting a TCP packet `dst` would have sent back to `src`.
pub fn send_packet_too_big(src: Ipv6Addr, dst: Ipv6Addr) {
    let mut msg = vec![2u8, 0, 0, 0];
    msg.extend_from_slice(&1280u32.to_be_bytes());
    // The invoking packet: an IPv6 header from the VIP back to the sender.
    let mut quoted = [0u8; 40];
    quoted[0] = 0x60;
    quoted[4..6].copy_from_slice(&20u16.to_be_bytes());
    quoted[6] = 6;
    quoted[7] = 64;
    quoted[8..24].copy_from_slice(&dst.octets());
    quoted[24..40].copy_from_slice(&src.octets());
    msg.extend_from_slice(&quoted);
    msg.extend_from_slice(&[0u8; 20]);
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::IcmpV6,
    )
    .expect("raw ICMPv6 socket");
    let to = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, 0));
    let sent = sendto(fd.as_raw_fd(), &msg, &to, MsgFlags::empty()).expect("sendto");
    assert_eq!(sent, msg.len());
}
