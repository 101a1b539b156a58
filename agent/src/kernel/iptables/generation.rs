//! Has anything in this network namespace's iptables changed since we last
//! read it? With the nf_tables backend (iptables-nft), every committed
//! change of any table, ours or another program's, bumps the ruleset's
//! generation, which one netlink request reads (NFT_MSG_GETGEN) in
//! microseconds, while `iptables-save` of a table the policy controller
//! filled takes hundreds of milliseconds (BENCHMARKS.md, "Reading
//! iptables back"). The legacy backend has no such counter: there every
//! apply reads the table.

use std::{io, mem::size_of, os::fd::AsRawFd, time::Duration};

use neli::{
    consts::socket::{Msg, NlFamily},
    socket::NlSocket,
    utils::Groups,
};

use super::nft_backend;

/// Where and when a table was read: the network namespace (its cookie,
/// never reused, unlike its inode number) and the ruleset generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    netns: u64,
    generation: u32,
}

/// The calling thread's stamp, or `None` when it cannot tell a change
/// (the legacy backend, a kernel without netns cookies): then the caller
/// reads the table every time, as it always did.
pub fn current() -> Option<Stamp> {
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

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NLMSG_ERROR: u16 = 2;
/// nlmsghdr (16 bytes) + nfgenmsg (4 bytes).
const HEADER: usize = 20;
/// A kernel that never answers must not hang an apply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

fn read() -> io::Result<Stamp> {
    let sock = NlSocket::connect(NlFamily::Netfilter, None, Groups::empty())?;
    set_recv_timeout(sock.as_raw_fd())?;
    let netns = netns_cookie(sock.as_raw_fd())?;
    sock.send(request(), Msg::empty())?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = sock.recv(&mut buf[..], Msg::empty())?;
    let generation = parse_reply(&buf[..n])?;
    Ok(Stamp { netns, generation })
}

fn request() -> [u8; HEADER] {
    let mut msg = [0u8; HEADER];
    msg[0..4].copy_from_slice(&(HEADER as u32).to_ne_bytes());
    let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN;
    msg[4..6].copy_from_slice(&kind.to_ne_bytes());
    msg[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // nfgenmsg: AF_UNSPEC, version 0, resource id 0.
    msg
}

/// The NFTA_GEN_ID attribute (big-endian u32) of a NFT_MSG_NEWGEN reply.
fn parse_reply(reply: &[u8]) -> io::Result<u32> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let kind = u16::from_ne_bytes(
        reply
            .get(4..6)
            .ok_or_else(|| bad("short reply"))?
            .try_into()
            .unwrap(),
    );
    if kind == NLMSG_ERROR {
        let errno = i32::from_ne_bytes(
            reply
                .get(16..20)
                .ok_or_else(|| bad("short error"))?
                .try_into()
                .unwrap(),
        );
        return Err(io::Error::from_raw_os_error(-errno));
    }
    let mut attrs = reply.get(HEADER..).ok_or_else(|| bad("short reply"))?;
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        if kind == NFTA_GEN_ID && len >= 8 {
            return Ok(u32::from_be_bytes(attrs[4..8].try_into().unwrap()));
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    Err(bad("no NFTA_GEN_ID in the reply"))
}

pub(super) fn set_recv_timeout(fd: i32) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: fd is an open socket; tv lives across the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// SO_NETNS_COOKIE (Linux 5.14): a 64-bit id of the socket's network
/// namespace that is never reused.
fn netns_cookie(fd: i32) -> io::Result<u64> {
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: fd is an open socket; cookie and len outlive the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_generation_is_read_from_its_attribute() {
        let mut reply = super::request().to_vec();
        // NFTA_GEN_ID = 0x01020304, then NFTA_GEN_PROC_PID.
        reply.extend_from_slice(&[8, 0, 1, 0, 1, 2, 3, 4, 8, 0, 2, 0, 0, 0, 0, 9]);
        reply[4..6].copy_from_slice(&((10u16 << 8) | 15).to_ne_bytes());
        assert_eq!(super::parse_reply(&reply).unwrap(), 0x0102_0304);
        let mut error = vec![0u8; 36];
        error[4..6].copy_from_slice(&2u16.to_ne_bytes());
        error[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            super::parse_reply(&error).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
    }
}
