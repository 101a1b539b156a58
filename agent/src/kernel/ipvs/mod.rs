//! IPVS over generic netlink (family "IPVS", `include/uapi/linux/ip_vs.h`).
//!
//! - [`types`]: the values (`ServiceKey`, `Service`, `Destination`, ...),
//!   checked when built and free of wire details. Address family and
//!   protocol are desired/'s `Family` and `Protocol`.
//! - [`Request`]: a change as a plain value; log a plan, then run it.
//! - [`IpvsClient`]: the one socket; batches changes (many requests per
//!   `sendmsg`, an ack each) and reads the table back.
//! - `message` (private): pure encode and decode on
//!   [`crate::kernel::netlink`]'s codec, tested with golden bytes and
//!   arbitrary input, without root.
//!
//! - [`sync`]: desired virtual services to a minimal list of requests.
//! - [`readback`], [`sockopt`], [`full_read`]: a full sync's cheap read of
//!   the whole table (getsockopt, else `/proc`), netlink for the rest.
//!
//! No code outside this module sees an attribute number.
//!
//! ```no_run
//! use ipwarden::kernel::ipvs::{Destination, IpvsClient, Request, Scheduler, Service, ServiceKey};
//!
//! let key = ServiceKey::tcp("10.96.0.10".parse()?, 53);
//! let plan = vec![
//!     Request::AddService(Service::new(key, Scheduler::round_robin())),
//!     Request::AddDestination { service: key, destination: Destination::new("10.244.1.5".parse()?, 53) },
//! ];
//! for req in &plan {
//!     println!("{req}");
//! }
//! let mut ipvs = IpvsClient::connect()?;
//! for result in ipvs.execute_all(&plan) {
//!     result?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod client;
mod consts;
mod error;
pub mod full_read;
mod message;
pub mod readback;
mod request;
pub mod sockopt;
mod sockopt_wire;
pub mod sync;
mod types;

#[cfg(test)]
mod tests;

pub use crate::kernel::netlink::DecodeError;
pub use client::IpvsClient;
pub use error::{IpvsError, IpvsErrorKind};
pub use request::Request;
pub(crate) use types::SockAddr;
pub use types::{
    protocol_name, Destination, DestinationEntry, DestinationKey, ForwardMethod, Info,
    InvalidValue, Netmask, Scheduler, Service, ServiceConfig, ServiceEntry, ServiceFlagBits,
    ServiceKey, Timeouts, VirtualServer,
};
