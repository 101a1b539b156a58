//! The store's door to the kernel: the few ipset calls it makes, and the
//! one iptables call a set replacement needs. [`IpsetClient`] is the real
//! one; unit tests swap in the in-memory fake (store/fake_kernel.rs), so
//! the store's logic is tested without root.

use crate::kernel::{
    ipset::{IpSet, IpsetClient, IpsetError, Listing, Request, SetName},
    iptables::{self, IptablesError},
};

/// What the store asks of the kernel. Errors are the real client's
/// variants, so the store decides what is idempotent the same way
/// against either implementation.
pub trait SetKernel: Send {
    /// Runs one ipset request (create, destroy, add, del, ...).
    fn execute(&mut self, request: &Request) -> Result<(), IpsetError>;

    /// `ipset list -n`: the names of every set, ours or not.
    fn list_names(&mut self) -> Result<Vec<String>, IpsetError>;

    /// `ipset list NAME`: one set with its members.
    fn list(&mut self, set: &SetName) -> Result<IpSet, IpsetError>;

    /// `ipset list -t NAME`: one set's header and entry count, no members.
    fn list_header(&mut self, set: &SetName) -> Result<IpSet, IpsetError>;

    /// `ipset list -t`: every set's header and entry count (`stats`), no
    /// members, in one dump.
    fn list_headers(&mut self) -> Result<Listing, IpsetError>;

    /// Points every iptables rule that matches set `from` at set `to`;
    /// returns how many rules moved.
    fn switch_references(&mut self, from: &str, to: &str) -> Result<usize, IptablesError>;
}

impl SetKernel for IpsetClient {
    fn execute(&mut self, request: &Request) -> Result<(), IpsetError> {
        IpsetClient::execute(self, request)
    }

    fn list_names(&mut self) -> Result<Vec<String>, IpsetError> {
        IpsetClient::list_names(self)
    }

    fn list(&mut self, set: &SetName) -> Result<IpSet, IpsetError> {
        IpsetClient::list(self, set)
    }

    fn list_header(&mut self, set: &SetName) -> Result<IpSet, IpsetError> {
        IpsetClient::list_header(self, set)
    }

    fn list_headers(&mut self) -> Result<Listing, IpsetError> {
        IpsetClient::list_headers(self)
    }

    fn switch_references(&mut self, from: &str, to: &str) -> Result<usize, IptablesError> {
        iptables::switch_set_references(from, to)
    }
}
