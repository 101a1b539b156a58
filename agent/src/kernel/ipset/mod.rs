//! ipset over nfnetlink (NFNL_SUBSYS_IPSET, protocol 7), spoken directly:
//! no `ipset` process runs at run time.
//!
//! Layers above build plain values ([`CreateSet`], [`Element`], [`Request`]),
//! can log them as a plan (`Display` prints `ipset restore` syntax), and
//! hand them to one [`IpsetClient`], which owns the socket. No attribute
//! number leaves this module. The set's type and family are desired/'s
//! [`SetType`](crate::desired::SetType) and [`Family`](crate::desired::Family);
//! a desired [`Member`](crate::desired::Member) converts to an [`Element`]
//! (`Element::try_from`) and back (`Element::to_desired`).
//!
//! ```no_run
//! use ipwarden::desired::{Family, SetType};
//! use ipwarden::kernel::ipset::{CreateSet, Element, Entry, IpsetClient, ProtoPort, Request, SetName};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ip = "10.96.0.10".parse()?;
//! let name = SetName::new("ipwarden-svip-prt")?;
//! let plan = [
//!     Request::create(CreateSet::new(name.clone(), SetType::HashIpPort, Family::V4)).exist_ok(),
//!     Request::add(name, [Element::from(Entry::IpPort(ip, ProtoPort::udp(53)))]).exist_ok(),
//! ];
//! let mut client = IpsetClient::new()?;
//! client.execute_all(&plan)?;
//! # Ok(()) }
//! ```
//!
//! Files: `consts` (wire numbers, ip_set.h; the attribute codec and the
//! socket are [`crate::kernel::netlink`]'s),
//! `types` and `member` (typed values printed as `ipset save` does; the
//! tests' reader of that text is `lab::ipset_save`), `desired`
//! (desired members to elements and back), `message`
//! (pure encode/decode), `request` (request values), `client` (socket),
//! `error` (typed errors; [`Op`] is numbered as its ipset command).

mod client;
mod consts;
mod desired;
mod error;
mod member;
mod message;
mod request;
mod types;

pub use crate::kernel::netlink::DecodeError;
pub use client::{IpsetClient, Listing};
pub use error::{IpsetError, IpsetErrorKind, Op};
pub use member::{Comment, Counters, Element, Entry, Net, ProtoPort};
pub use message::UnsupportedSet;
pub use request::Request;
pub use types::{family_name, CreateSet, IpSet, ParseError, SetHeader, SetName, SetStats};
// For the tests' reader of `ipset save` text (lab/ipset_save.rs).
#[cfg(any(test, feature = "lab"))]
pub(crate) use {
    member::{icmp_key, proto_key},
    types::{member_syntax, parse_set_type},
};
