//! Has anything in this network namespace's iptables changed since we last
//! read it? With the nf_tables backend (iptables-nft), every committed
//! change of any table, ours or another program's, bumps the ruleset's
//! generation, which one netlink request reads (NFT_MSG_GETGEN) in
//! microseconds, while `iptables-save` of a table the policy controller
//! filled takes hundreds of milliseconds (BENCHMARKS.md, "Reading
//! iptables back"). The legacy backend has no such counter: there every
//! apply reads the table.

use std::{fs::File, io, os::unix::fs::MetadataExt, sync::Arc, time::Duration};

use super::nft_backend;
use crate::kernel::netlink::{
    frame::NLM_F_REQUEST, message, socket::NETLINK_NETFILTER, AttrTable, DecodeError, Options,
    Socket,
};

/// Where and when a table was read: the network namespace and the
/// ruleset generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    netns: Netns,
    generation: u32,
}

impl Stamp {
    /// Is this the stamp of the `commits` commits right after `earlier`,
    /// in the same namespace?
    pub(super) fn follows(&self, earlier: &Stamp, commits: u32) -> bool {
        self.netns == earlier.netns && self.generation == earlier.generation.wrapping_add(commits)
    }
}

/// A network namespace by device and inode number, held open: a namespace
/// that a stamp names cannot die, so a new one cannot reuse its inode.
#[derive(Clone, Debug)]
struct Netns {
    id: (u64, u64),
    _pinned: Arc<File>,
}

impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Netns {}

impl Netns {
    /// The calling thread's.
    fn current() -> io::Result<Self> {
        let file = File::open("/proc/thread-self/ns/net")?;
        let meta = file.metadata()?;
        Ok(Netns {
            id: (meta.dev(), meta.ino()),
            _pinned: Arc::new(file),
        })
    }
}

/// The calling thread's stamp, or `None` when it cannot tell a change
/// (the legacy backend, a kernel without nf_tables): then the caller
/// reads the table every time, as it always did.
pub(super) fn current() -> Option<Stamp> {
    if !nft_backend() {
        return None;
    }
    match read() {
        Ok(stamp) => Some(stamp),
        Err(e) => {
            tracing::debug!(error = %e, "no nftables generation; reading iptables back in full");
            None
        }
    }
}

pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
/// A kernel that never answers must not hang an apply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A NETLINK_NETFILTER socket for one nf_tables read.
pub(super) fn nfnetlink(datagram: usize) -> io::Result<Socket> {
    let opts = Options {
        rcvbuf: None,
        sndbuf: None,
        timeout: REPLY_TIMEOUT,
        datagram,
    };
    Socket::open(NETLINK_NETFILTER, &opts)
}

fn read() -> io::Result<Stamp> {
    let netns = Netns::current()?;
    let mut sock = nfnetlink(4096)?;
    let seq = sock.next_seq(1);
    let mut generation = None;
    sock.transact(&request(seq), seq, true, |_, attrs| {
        generation = Some(generation_of(attrs)?);
        Ok(())
    })?;
    let generation =
        generation.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, MISSING_GEN_ID))?;
    Ok(Stamp { netns, generation })
}

const MISSING_GEN_ID: DecodeError = DecodeError::Missing {
    what: "NFTA_GEN_ID",
};

/// NFT_MSG_GETGEN: nfgenmsg AF_UNSPEC, version 0, resource id 0.
fn request(seq: u32) -> Vec<u8> {
    let mut msg = Vec::new();
    let ty = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN;
    message(&mut msg, (ty, NLM_F_REQUEST, seq), &[0; 4], |_| {});
    msg
}

/// The NFTA_GEN_ID attribute (big-endian u32) of a NFT_MSG_NEWGEN reply.
fn generation_of(attrs: &[u8]) -> Result<u32, DecodeError> {
    let table: AttrTable<u16> = AttrTable::parse(attrs)?;
    table.need(NFTA_GEN_ID, "NFTA_GEN_ID")?.be32()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_generation_is_read_from_its_attribute() {
        // NFTA_GEN_ID = 0x01020304, then NFTA_GEN_PROC_PID.
        let attrs = [8, 0, 1, 0, 1, 2, 3, 4, 8, 0, 2, 0, 0, 0, 0, 9];
        assert_eq!(super::generation_of(&attrs).unwrap(), 0x0102_0304);
        assert_eq!(
            super::generation_of(&attrs[8..]),
            Err(super::MISSING_GEN_ID)
        );
    }

    #[test]
    fn the_request_is_a_bare_getgen() {
        let msg = super::request(7);
        assert_eq!(msg.len(), 20);
        assert_eq!(msg[4..6], ((10u16 << 8) | 16).to_ne_bytes());
        assert_eq!(msg[8..12], 7u32.to_ne_bytes());
    }
}
