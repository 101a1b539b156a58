//! Servers in a network namespace: TCP and UDP (and SCTP when a case
//! probes it) on each port, IPv4 and IPv6, answering every connection or
//! datagram with the endpoint's name ("x/a"); an SCTP server answers the
//! probe's question (see `sctp::answer`), on a thread per association.
//! A pod binds dual-stack `[::]` sockets (its namespace has one address per
//! family); a hostNetwork pod binds the node's addresses, so that a UDP
//! answer leaves from the address the probe was sent to (from `[::]` the
//! node would answer a bridged pod from the bridge's address, and the
//! prober's connected socket would never see it).
//!
//! The sockets are bound inside the namespace before `start` returns, so the
//! servers are ready when it does: no waiting before probing. Dropping the
//! value shuts the sockets down (which wakes the blocked accept/recv; an
//! SCTP accept wakes on its own every `SCTP_POLL`), joins the threads and
//! closes the sockets.

use std::{
    io::{self, Write},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use ipwarden::netns::NetNs;

use super::{matrix::Proto, probe, sctp};

/// How often a blocked SCTP accept wakes to see whether it must stop.
const SCTP_POLL: Duration = Duration::from_millis(100);

enum Socket {
    Tcp(Arc<TcpListener>),
    Udp(Arc<UdpSocket>),
    Sctp(Arc<OwnedFd>),
}

pub struct Listeners {
    stop: Arc<AtomicBool>,
    sockets: Vec<Socket>,
    threads: Vec<JoinHandle<()>>,
}

impl Listeners {
    /// Servers of `protos` on every port of `ports` on `[::]` (which, with
    /// bindv6only=0, the namespace default, takes IPv4 too).
    pub fn start(ns: &NetNs, name: &str, ports: &[u16], protos: &[Proto]) -> io::Result<Listeners> {
        Listeners::start_on(
            ns,
            name,
            &[IpAddr::V6(Ipv6Addr::UNSPECIFIED)],
            ports,
            protos,
        )
    }

    /// Servers of `protos` on every port of `ports` on each of `addrs`.
    pub fn start_on(
        ns: &NetNs,
        name: &str,
        addrs: &[IpAddr],
        ports: &[u16],
        protos: &[Proto],
    ) -> io::Result<Listeners> {
        let bound = ns.run(|| -> io::Result<Vec<Socket>> {
            let mut sockets = Vec::new();
            for &addr in addrs {
                for &port in ports {
                    for proto in protos {
                        sockets.push(match proto {
                            Proto::Tcp => Socket::Tcp(Arc::new(TcpListener::bind((addr, port))?)),
                            Proto::Udp => Socket::Udp(Arc::new(UdpSocket::bind((addr, port))?)),
                            Proto::Sctp => Socket::Sctp(Arc::new(sctp::listen(
                                SocketAddr::new(addr, port),
                                SCTP_POLL,
                            )?)),
                        });
                    }
                }
            }
            Ok(sockets)
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for socket in &bound {
            let stop = stop.clone();
            let answer = name.to_string();
            let thread = match socket {
                Socket::Tcp(l) => {
                    let l = l.clone();
                    std::thread::Builder::new()
                        .name(format!("tcp {name}"))
                        .spawn(move || serve_tcp(&l, answer.as_bytes(), &stop))?
                }
                Socket::Udp(u) => {
                    let u = u.clone();
                    std::thread::Builder::new()
                        .name(format!("udp {name}"))
                        .spawn(move || serve_udp(&u, answer.as_bytes(), &stop))?
                }
                Socket::Sctp(l) => {
                    let l = l.clone();
                    std::thread::Builder::new()
                        .name(format!("sctp {name}"))
                        .spawn(move || serve_sctp(&l, answer.as_bytes(), &stop))?
                }
            };
            threads.push(thread);
        }
        Ok(Listeners {
            stop,
            sockets: bound,
            threads,
        })
    }
}

fn serve_tcp(listener: &TcpListener, answer: &[u8], stop: &AtomicBool) {
    loop {
        let conn = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if let Ok((mut conn, _)) = conn {
            let _ = conn.write_all(answer);
        }
    }
}

/// A thread per association: the server waits for each probe's question,
/// and one slow prober must not hold up the others.
fn serve_sctp(listener: &OwnedFd, answer: &[u8], stop: &AtomicBool) {
    std::thread::scope(|scope| {
        while !stop.load(Ordering::SeqCst) {
            match sctp::accept(listener) {
                Ok(Some(conn)) => {
                    scope.spawn(move || sctp::answer(conn, answer, probe::SCTP_TIMEOUT));
                }
                Ok(None) => {}
                // Not expected; do not spin on it.
                Err(_) => std::thread::sleep(SCTP_POLL),
            }
        }
    });
}

fn serve_udp(socket: &UdpSocket, answer: &[u8], stop: &AtomicBool) {
    let mut buf = [0u8; 512];
    loop {
        let got = socket.recv_from(&mut buf);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if let Ok((_, from)) = got {
            let _ = socket.send_to(answer, from);
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in &self.sockets {
            let fd = match s {
                Socket::Tcp(l) => l.as_raw_fd(),
                Socket::Udp(u) => u.as_raw_fd(),
                // shutdown does not wake an SCTP accept; it times out.
                Socket::Sctp(_) => continue,
            };
            // SAFETY: the fd belongs to a socket this value still owns (the
            // Arcs are dropped after the join). shutdown wakes a blocked
            // accept (EINVAL) or recvfrom (returns 0), even on an
            // unconnected UDP socket (which reports ENOTCONN but wakes).
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
