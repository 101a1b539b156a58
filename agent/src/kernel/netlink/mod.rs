//! Netlink, once for every family kernel/ speaks (IPVS over generic
//! netlink, ipset and nf_tables over nfnetlink):
//!
//! - `nla`: attributes, written and read, nested, aligned, typed;
//! - `frame`: `nlmsghdr` plus the family header (`genlmsghdr` or
//!   `nfgenmsg`), acks and errors with their extended-ack text;
//! - `socket`: the socket, batches filed by sequence number, dumps;
//! - [`DecodeError`]: why the kernel's bytes did not parse; `failure`:
//!   how an exchange failed, in words (errno text and extended ack);
//! - `addr`: addresses in attributes, 4 or 16 bytes.
//!
//! Pure byte code except `socket`, so the families' golden-byte and fuzz
//! tests run without root. Why not neli's own (de)serializers: they
//! allocate per attribute, which cost 0.7 s per 40k IPVS requests inside
//! the test VM, and its header parser subtracts lengths unchecked. neli
//! still provides the families' typed enums.
//!
//! Helpers the families' codecs share: `error_kind` (a kind enum with its
//! metric labels and messages), `nest` (a nest written as a closure),
//! `table_read` (an optional attribute read in one call).

use crate::desired::Family;

mod addr;
mod error;
mod failure;
pub(crate) mod frame;
pub(crate) mod nla;
pub(crate) mod socket;

mod error_kind;
mod nest;
mod table_read;

pub use error::DecodeError;
pub(crate) use frame::{begin, finish, frames, message, Frame, Reply};
pub(crate) use nla::{Attr, AttrTable, Attrs, Writer};
pub(crate) use socket::{Failure, Options, Refusal, Socket};

pub(crate) use error_kind::error_kinds;

/// A family's number on the wire: `AF_INET`/`AF_INET6`, which are also
/// `NFPROTO_IPV4`/`NFPROTO_IPV6` (IPVS, ipset and nf_tables all use it).
pub(crate) fn af(family: Family) -> u8 {
    match family {
        Family::V4 => libc::AF_INET as u8,
        Family::V6 => libc::AF_INET6 as u8,
    }
}

/// The family whose [`af`] number is `n`.
pub(crate) fn family_of(n: u16) -> Option<Family> {
    [Family::V4, Family::V6]
        .into_iter()
        .find(|f| u16::from(af(*f)) == n)
}

/// Netlink aligns every message and attribute to 4 bytes (`NLMSG_ALIGN`,
/// `NLA_ALIGN`).
pub(crate) const fn align4(len: usize) -> usize {
    (len + 3) & !3
}
