//! Encode/decode tests that need no root: golden bytes and arbitrary input.

mod fuzz;
mod golden;
mod ipvsadm;

use super::{message::encode_request, sync::tests::ip, Request};
use crate::kernel::netlink::{frames, Reply};

/// An arbitrary id for the IPVS family (the kernel assigns it at load).
const FAMILY: u16 = 0x1234;

/// A change request as the client sends it, with sequence number `seq`.
fn encoded(req: &Request, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(req, FAMILY, seq, &mut out).unwrap();
    out
}

/// The command and attribute bytes of the one generic netlink message in `buf`.
fn attrs_of(buf: &[u8]) -> (u8, &[u8]) {
    let mut it = frames(buf);
    let frame = it.next().unwrap().unwrap();
    assert!(it.next().is_none(), "one message expected");
    match frame.reply().unwrap() {
        Reply::Data { cmd, attrs } => (cmd, attrs),
        other => panic!("not a data message: {other:?}"),
    }
}
