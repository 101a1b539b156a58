//! SCTP sockets through libc (std has none): one-to-one style
//! (`SOCK_STREAM`, `IPPROTO_SCTP`), which connects, accepts, reads and
//! writes like TCP.
//!
//! This host's kernel has no SCTP: `socket()` fails with
//! EPROTONOSUPPORT, reported as an Unsupported error that says where SCTP
//! cases run. The Debian kernel in the VM has it (module `sctp`, loaded by
//! cargo xtask vm-test).
//!
//! A refused SCTP connect: the REJECT answers the INIT with an ICMP port
//! unreachable, which the kernel reports to the socket only with
//! IP_RECVERR / IPV6_RECVERR set (else it keeps it as a soft error and
//! retransmits the INIT until it gives up); `connect_and_read` sets it and
//! polls a non-blocking connect, so a refusal shows at once as POLLERR with
//! ECONNREFUSED. An ABORT (nothing listening) ends the same way. A few
//! refusals end in the timeout instead (4 of 32 in the VM's self-test,
//! blocked either way), most likely an ICMP error that arrived while
//! connect() still held the socket's lock, which the kernel keeps as a
//! soft error whatever IP_RECVERR says.

use std::{
    fs::File,
    io::{self, Read, Write},
    mem,
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

/// The error of a failed libc call, naming it.
fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn check(ret: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(last_error(what))
    } else {
        Ok(ret)
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeros is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A new one-to-one SCTP socket of `addr`'s family.
fn socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket() has no memory arguments.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            libc::IPPROTO_SCTP,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPROTONOSUPPORT | libc::ESOCKTNOSUPPORT | libc::EAFNOSUPPORT) => {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "this kernel has no SCTP sockets ({e}): \
                         SCTP cases run inside the VM (cargo xtask test)"
                    ),
                )
            }
            _ => io::Error::new(e.kind(), format!("socket(IPPROTO_SCTP): {e}")),
        });
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Does the kernel of the calling thread's network namespace have SCTP sockets?
pub fn available() -> bool {
    socket(&"0.0.0.0:0".parse().unwrap()).is_ok()
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value is a c_int that outlives the call.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const _ as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(ret, "setsockopt").map(drop)
}

fn set_timeval(fd: RawFd, name: libc::c_int, d: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: the option value is a timeval that outlives the call.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            &tv as *const _ as *const libc::c_void,
            mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    check(ret, "setsockopt(SO_RCVTIMEO)").map(drop)
}

/// A listening socket on `addr`. `accept` on it gives up after `poll`
/// (SO_RCVTIMEO: shutdown does not wake an SCTP accept, so the server
/// loop wakes on its own to see whether it must stop).
pub fn listen(addr: SocketAddr, poll: Duration) -> io::Result<OwnedFd> {
    let fd = socket(&addr)?;
    let raw = fd.as_raw_fd();
    set_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let (sa, len) = sockaddr(addr);
    // SAFETY: sa is a valid sockaddr of length len.
    check(
        unsafe { libc::bind(raw, &sa as *const _ as *const libc::sockaddr, len) },
        &format!("bind sctp {addr}"),
    )?;
    // SAFETY: no memory arguments.
    check(unsafe { libc::listen(raw, 128) }, "listen")?;
    set_timeval(raw, libc::SO_RCVTIMEO, poll)?;
    Ok(fd)
}

/// The next connection, or `None` when the accept timeout ran out first.
pub fn accept(listener: &OwnedFd) -> io::Result<Option<File>> {
    // SAFETY: null address arguments are allowed.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    Ok(Some(File::from(unsafe { OwnedFd::from_raw_fd(fd) })))
}

/// The question a probe asks once the association is up.
pub const QUESTION: &[u8] = b"who are you?";

/// Reads the probe's question, writes `answer` and closes (a graceful
/// SHUTDOWN). The server speaks only when spoken to: a DATA chunk sent as
/// soon as `accept` returns can overtake the COOKIE ACK (they leave from
/// different CPUs, through veths), and the client, still in COOKIE-ECHOED,
/// discards it; it would come again only when the retransmission timer
/// runs out (3 s at first). The client's question comes after the COOKIE
/// ACK, so the answer does too.
pub fn answer(mut conn: File, answer: &[u8], patience: Duration) {
    if set_timeval(conn.as_raw_fd(), libc::SO_RCVTIMEO, patience).is_err() {
        return;
    }
    let mut buf = [0u8; 512];
    if matches!(conn.read(&mut buf), Ok(n) if n > 0) {
        let _ = conn.write_all(answer);
    }
}

/// Waits for `events` on `fd` until `deadline`; the events seen, or
/// TimedOut.
fn wait(fd: RawFd, events: libc::c_short, deadline: Instant) -> io::Result<libc::c_short> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let what = if events == libc::POLLOUT {
                "no association"
            } else {
                "no answer on the association"
            };
            return Err(io::Error::new(io::ErrorKind::TimedOut, what));
        }
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n > 0 {
            return Ok(pfd.revents);
        }
    }
}

/// The socket's pending error (SO_ERROR), if any.
fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: err and len are valid for the call.
    check(
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut _ as *mut libc::c_void,
                &mut len,
            )
        },
        "getsockopt(SO_ERROR)",
    )?;
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

/// Connects to `to`, asks, and reads what it says until it closes, all
/// within `timeout`. A refusal (ICMP port unreachable or ABORT) is
/// ConnectionRefused; no answer in time is TimedOut.
pub fn connect_and_read(to: SocketAddr, timeout: Duration) -> io::Result<String> {
    let deadline = Instant::now() + timeout;
    let fd = socket(&to)?;
    let raw = fd.as_raw_fd();
    let recverr = |on| match to {
        SocketAddr::V4(_) => set_int(raw, libc::IPPROTO_IP, libc::IP_RECVERR, on),
        SocketAddr::V6(_) => set_int(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, on),
    };
    recverr(1)?;
    // SAFETY: fcntl on a descriptor we own.
    check(
        unsafe { libc::fcntl(raw, libc::F_SETFL, libc::O_NONBLOCK) },
        "fcntl",
    )?;
    let (sa, len) = sockaddr(to);
    // SAFETY: sa is a valid sockaddr of length len.
    let ret = unsafe { libc::connect(raw, &sa as *const _ as *const libc::sockaddr, len) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        // POLLOUT once the association is up; POLLERR on a refusal.
        wait(raw, libc::POLLOUT, deadline)?;
        if let Some(e) = take_error(raw)? {
            return Err(e);
        }
    }
    // Up: from now on an ICMP error (say, for a heartbeat to the peer's
    // other address, which a policy may block) must not fail the read.
    recverr(0)?;
    let mut conn = File::from(fd);
    loop {
        match conn.write(QUESTION) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait(raw, libc::POLLOUT, deadline)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let seen = wait(raw, libc::POLLIN, deadline)?;
                if seen & libc::POLLERR != 0 {
                    if let Some(e) = take_error(raw)? {
                        return Err(e);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}
