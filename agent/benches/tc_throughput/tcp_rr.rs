//! TCP request/response: 64-byte requests answered with 64 bytes on one
//! connection, one at a time (netperf's TCP_RR), client and server
//! threads pinned to CPUs 0 and 1, blocking I/O.
//!
//! Why beside iperf3's stream: a bulk stream crosses the veth in
//! TSO-sized segments (about 59 KB per skb through INPUT here), so
//! netfilter's per-packet chain walk is paid once per 40-odd MTUs and the
//! stream's CPU goes to copying; no INPUT rule order can move it. Here
//! every request is one segment through the receiver's INPUT (and every
//! answer one through its OUTPUT), as in the service traffic of
//! small RPCs, so the chain walk is a share of the work per transaction.
//! The figure is transactions per CPU-second of both threads (their
//! CPU clocks; the veth receive path runs in the sending thread's
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

/// Answers each `MESSAGE`-byte request with as many bytes until EOF.
fn serve(mut conn: TcpStream) -> io::Result<()> {
    let mut buf = [0u8; MESSAGE];
    loop {
        match conn.read_exact(&mut buf) {
            Ok(()) => conn.write_all(&buf)?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Sends requests and reads answers until `stop`, counting transactions.
fn ask(mut conn: TcpStream, stop: &AtomicBool, done: &AtomicU64) -> io::Result<()> {
    let mut buf = [0x5au8; MESSAGE];
    while !stop.load(Ordering::Relaxed) {
        conn.write_all(&buf)?;
        conn.read_exact(&mut buf)?;
        done.fetch_add(1, Ordering::Relaxed);
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
    let client = sender
        .run(|| TcpStream::connect((dst, RR_PORT)))
        .expect("netns")
        .expect("connect the RR client");
    client.set_nodelay(true).expect("TCP_NODELAY");
    let (server, _) = listener.accept().expect("accept");
    server.set_nodelay(true).expect("TCP_NODELAY");
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let clocks = [AtomicI32::new(i32::MIN), AtomicI32::new(i32::MIN)];
    std::thread::scope(|s| {
        s.spawn(|| {
            if pin {
                super::pin_to_cpu(1);
            }
            clocks[1].store(own_clock(), Ordering::Release);
            serve(server).expect("RR server")
        });
        s.spawn(|| {
            if pin {
                super::pin_to_cpu(0);
            }
            clocks[0].store(own_clock(), Ordering::Release);
            // The client's drop on return closes the connection, which
            // ends the server.
            ask(client, &stop, &done).expect("RR client")
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
        let cpu = || ids.iter().map(|id| super::thread_cpu_ns(*id)).sum::<f64>();
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
