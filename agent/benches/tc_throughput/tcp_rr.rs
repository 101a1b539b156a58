//! TCP request/response: 64-byte requests answered with 64 bytes
//! (netperf's TCP_RR), on `CONNECTIONS` connections at once, one request
//! in flight on each; one client and one server thread pinned to CPUs 0
//! and 1, both busy-polling non-blocking sockets.
//!
//! Why beside iperf3's stream: a bulk stream crosses the veth in
//! TSO-sized segments (about 59 KB per skb through INPUT here), so
//! netfilter's per-packet chain walk is paid once per 40-odd MTUs and the
//! stream's CPU goes to copying; no INPUT rule order can move it. Here
//! every request is one segment through the receiver's INPUT (and every
//! answer one through its OUTPUT), as in the service traffic of
//! small RPCs, so the chain walk is a share of the work per transaction.
//!
//! Why busy-polling and several connections: with blocking sockets each
//! transaction cost two sleeps and wake-ups (an IPI each on a VM), about
//! 25 us of CPU against a chain walk of well under 1 us. Spinning threads
//! never sleep, so the CPU clocks count work and spinning; with
//! `CONNECTIONS` requests in flight a thread finds work on most turns, so
//! the spinning shrinks and the path (veth, tc, netfilter, TCP) is most
//! of the CPU. The figure is transactions per CPU-second of both threads
//! (their CPU clocks; the veth receive path runs in the sending thread's
//! context, see the UDP figures).

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use ipwarden::netns::NetNs;

/// A port of each target Service, beside iperf3's.
pub const RR_PORT: u16 = 5202;
pub const MESSAGE: usize = 64;
/// Connections, each with one request in flight.
pub const CONNECTIONS: usize = 8;

/// One measurement.
#[derive(Clone, Copy)]
pub struct Rr {
    pub per_sec: f64,
    pub per_cpu_sec: f64,
}

/// A thread's CPU clock, readable from other threads.
fn own_clock() -> libc::clockid_t {
    let mut id: libc::clockid_t = 0;
    // SAFETY: pthread_self is this live thread; `id` is an out pointer.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
    assert_eq!(rc, 0, "pthread_getcpuclockid");
    id
}

/// One connection's message in progress: bytes moved of the current
/// request (client: written, then read back; server: read, then written).
struct Conn {
    stream: TcpStream,
    buf: [u8; MESSAGE],
    done: usize,
    /// Client: the request is written, the answer is being read. Server:
    /// the request is read, the answer is being written.
    turned: bool,
}

impl Conn {
    fn new(stream: TcpStream) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(Conn {
            stream,
            buf: [0x5a; MESSAGE],
            done: 0,
            turned: false,
        })
    }

    /// Moves what the socket takes or gives now; true when a message is
    /// complete (and the direction turns). Err on EOF or a socket error.
    fn step(&mut self, write: bool) -> io::Result<bool> {
        let rest = &mut self.buf[self.done..];
        let moved = if write {
            self.stream.write(rest)
        } else {
            self.stream.read(rest)
        };
        match moved {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                self.done += n;
                if self.done < MESSAGE {
                    return Ok(false);
                }
                self.done = 0;
                self.turned = !self.turned;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Answers each `MESSAGE`-byte request with as many bytes on every
/// connection, spinning, until every client closed.
fn serve(mut conns: Vec<Conn>) -> io::Result<()> {
    while !conns.is_empty() {
        let mut closed = None;
        for (i, c) in conns.iter_mut().enumerate() {
            // Not turned: reading the request; turned: writing it back.
            match c.step(c.turned) {
                Ok(_) => {}
                // A client that stopped with a request in flight closes
                // under the answer.
                Err(e) if closed_by_peer(&e) => closed = Some(i),
                Err(e) => return Err(e),
            }
        }
        if let Some(i) = closed {
            conns.swap_remove(i);
        }
    }
    Ok(())
}

fn closed_by_peer(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Sends requests and reads answers on every connection, spinning, until
/// `stop`, counting transactions.
fn ask(mut conns: Vec<Conn>, stop: &AtomicBool, done: &AtomicU64) -> io::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        for c in conns.iter_mut() {
            // Not turned: writing the request; turned: reading the answer.
            let answer = c.turned;
            if c.step(!answer)? && answer {
                done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Transactions to `dst` (in `receiver`) from `sender` over a `secs`
/// window after a short warm-up.
pub fn tcp_rr(sender: &NetNs, receiver: &NetNs, dst: Ipv4Addr, secs: f64, pin: bool) -> Rr {
    let listener = receiver
        .run(|| TcpListener::bind((dst, RR_PORT)))
        .expect("netns")
        .expect("bind the RR server");
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..CONNECTIONS {
        let client = sender
            .run(|| TcpStream::connect((dst, RR_PORT)))
            .expect("netns")
            .expect("connect the RR client");
        let (server, _) = listener.accept().expect("accept");
        clients.push(Conn::new(client).expect("RR client socket"));
        servers.push(Conn::new(server).expect("RR server socket"));
    }
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let clocks = [AtomicI32::new(i32::MIN), AtomicI32::new(i32::MIN)];
    std::thread::scope(|s| {
        s.spawn(|| {
            if pin {
                super::cpu::pin_to_cpu(1);
            }
            clocks[1].store(own_clock(), Ordering::Release);
            serve(servers).expect("RR server")
        });
        s.spawn(|| {
            if pin {
                super::cpu::pin_to_cpu(0);
            }
            clocks[0].store(own_clock(), Ordering::Release);
            // The clients' drop on return closes the connections, which
            // ends the server.
            ask(clients, &stop, &done).expect("RR client")
        });
        std::thread::sleep(Duration::from_millis(500));
        let ids: Vec<libc::clockid_t> = clocks
            .iter()
            .map(|c| loop {
                match c.load(Ordering::Acquire) {
                    i32::MIN => std::thread::sleep(Duration::from_millis(10)),
                    id => break id,
                }
            })
            .collect();
        let cpu = || {
            ids.iter()
                .map(|id| super::cpu::thread_cpu_ns(*id))
                .sum::<f64>()
        };
        let (t0, c0, n0) = (Instant::now(), cpu(), done.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_secs_f64(secs));
        let (t1, c1, n1) = (Instant::now(), cpu(), done.load(Ordering::Relaxed));
        stop.store(true, Ordering::Relaxed);
        let n = (n1 - n0) as f64;
        Rr {
            per_sec: n / (t1 - t0).as_secs_f64(),
            per_cpu_sec: n / ((c1 - c0) / 1e9).max(1e-9),
        }
    })
}
