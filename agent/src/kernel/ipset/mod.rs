//! ipset over nfnetlink (NFNL_SUBSYS_IPSET, protocol 7), spoken directly:
//! no `ipset` process runs at run time.
//!
//! Layers above build plain values ([`SetSpec`], [`Member`], [`Request`]),
//! can log them as a plan (`Display` prints `ipset restore` syntax), and
//! hand them to one [`IpsetClient`], which owns the socket. No attribute
//! number leaves this module.
//!
//! ```no_run
//! use ipwarden::kernel::ipset::{Family, IpsetClient, Member, Request, SetName, SetSpec, SetType};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let name = SetName::new("ipwarden-svip-prt")?;
//! let plan = [
//!     Request::create(SetSpec::new(name.clone(), SetType::HashIpPort, Family::Inet)).exist_ok(),
//!     Request::add(name, [Member::parse(SetType::HashIpPort, "10.96.0.10,udp:53")?]).exist_ok(),
//! ];
//! let mut client = IpsetClient::new()?;
//! client.execute_all(&plan)?;
//! # Ok(()) }
//! ```
//!
//! Files: `consts` (wire numbers, ip_set.h), `nla` (attribute codec),
//! `types` and `member` (typed values with `ipset save` text), `message`
//! (pure encode/decode), `request` (request values), `client` (socket),
//! `error` (typed errors).

mod client;
mod consts;
mod error;
mod member;
mod message;
mod nla;
mod request;
mod types;

pub use client::{IpsetClient, Listing};
pub use error::{IpsetError, Op};
pub use member::{Comment, Counters, Entry, Member, Net, ProtoPort};
pub use message::UnsupportedSet;
pub use nla::DecodeError;
pub use request::Request;
pub use types::{
    parse_save, Family, IpSet, ParseError, SetHeader, SetName, SetSpec, SetStats, SetType,
};
