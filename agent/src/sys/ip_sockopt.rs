//! `getsockopt(2)` at level `IPPROTO_IP` into a caller's byte buffer.
//!
//! Netfilter's old control interfaces (IPVS's `IP_VS_SO_GET_*`, as
//! `ipvsadm` used them before netlink) are getsockopt calls whose buffer
//! is both a request and a reply of a length the caller chooses. nix,
//! rustix and socket2 only offer typed options of a fixed size (their
//! raw `getsockopt` is private), so this is the one FFI call, with the
//! length checks it needs.

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
};

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};

/// An IPv4 raw socket to ask netfilter's control interfaces on. Its
/// network namespace is the one of the thread that opened it.
#[derive(Debug)]
pub struct IpSocket(OwnedFd);

impl IpSocket {
    /// `socket(AF_INET, SOCK_RAW, IPPROTO_RAW)`, as `ipvsadm` opens it
    /// (needs CAP_NET_RAW; nothing is ever sent on it).
    pub fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Raw,
        )?;
        Ok(Self(fd))
    }

    /// `getsockopt(fd, IPPROTO_IP, option, buf, &len)` with `len` the
    /// whole buffer: the kernel reads its request from `buf` and writes its
    /// reply there. Returns the length the kernel reports back.
    pub fn get(&self, option: libc::c_int, buf: &mut [u8]) -> io::Result<usize> {
        let mut len = libc::socklen_t::try_from(buf.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer over 4 GiB"))?;
        // SAFETY: `buf` is valid for writes of `len` bytes (its own length,
        // checked to fit) and borrowed mutably for the call, so the kernel's
        // copy_to_user lands only in it; `len` is a valid socklen_t that
        // the kernel may lower. The descriptor is owned by `self`.
        let r = unsafe {
            libc::getsockopt(
                self.0.as_raw_fd(),
                libc::IPPROTO_IP,
                option,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // The kernel never reports more than it was given; clamp anyway.
        Ok((len as usize).min(buf.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An option IPv4 knows (`IP_TTL`, an int) fills a caller's buffer;
    /// one nothing registered is ENOPROTOOPT, as on a kernel without IPVS.
    #[test]
    fn reads_into_the_buffer_and_reports_unknown_options() {
        let Ok(sock) = IpSocket::open() else {
            eprintln!("no CAP_NET_RAW: skipped");
            return;
        };
        let mut buf = [0u8; 4];
        assert_eq!(sock.get(libc::IP_TTL, &mut buf).unwrap(), 4);
        assert_ne!(i32::from_ne_bytes(buf), 0);
        let err = sock.get(9999, &mut buf).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOPROTOOPT));
    }
}
