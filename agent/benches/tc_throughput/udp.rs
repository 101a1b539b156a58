//! Small UDP datagrams: `sendmmsg` against a busy-polling `recvmmsg`.

use std::{
    io,
    mem::zeroed,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use ipwarden::{bpf::RunStats, netns::NetNs};

use super::{
    config::Receiver,
    cpu::{cpus, pin_to_cpu, thread_cpu_ns},
    BATCH, PAYLOAD, UDP_PORT,
};

/// One message header per buffer of `iov`, for `sendmmsg`/`recvmmsg`.
fn headers(iov: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iov.iter_mut()
        .map(|v| {
            // SAFETY: zeroed mmsghdr is valid (null name, no control data).
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect()
}

/// Sends `BATCH` datagrams per `sendmmsg` until `stop`, counting them.
fn udp_send(sock: &UdpSocket, stop: &AtomicBool, sent: &AtomicU64) {
    let payload = [0x5au8; PAYLOAD];
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: PAYLOAD,
        })
        .collect();
    let mut msgs = headers(&mut iov);
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs points at BATCH headers whose iovecs point at
        // `payload`, all alive for the call; the socket is connected.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Receives with non-blocking `recvmmsg` in a busy loop until `stop`,
/// counting datagrams. Spinning instead of sleeping keeps wake-ups (an IPI
/// per sleep on a VM) out of the figure: the sender's CPU, which also runs
/// the veth receive path (tc, netfilter, UDP), is then the bottleneck.
fn udp_recv(sock: &UdpSocket, stop: &AtomicBool, received: &AtomicU64) {
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let mut msgs = headers(&mut iov);
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs and their buffers stay alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            received.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// One UDP measurement: wall-clock rates, the sending thread's CPU time
/// per datagram (the veth receive path, tc, netfilter and UDP, runs in the
/// sender's context: softirq on the way out of its xmit; this kernel has
/// no IRQ time accounting, so that time is the path's cost per packet
/// whatever else the machine is running), and the program's time per run.
#[derive(Clone, Copy)]
pub struct Udp {
    pub sent_pps: f64,
    pub recv_pps: f64,
    pub cpu_ns_per_packet: f64,
    pub prog_ns_per_run: Option<f64>,
}

/// Datagram rates to `dst` over a `secs` window after a short warm-up.
/// With `stats` (the program's run statistics), the kernel's BPF
/// statistics are on for the window, which costs every program run two
/// clock reads: so only the windows that report the program's time have
/// them on, never those whose CPU time is compared.
pub fn udp_rate(
    sender: &NetNs,
    rx: &Receiver,
    dst: IpAddr,
    secs: f64,
    stats: Option<&dyn Fn() -> Option<RunStats>>,
) -> Udp {
    let _on =
        stats.map(|_| aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS"));
    let stats = || stats.and_then(|f| f());
    let rsock = rx
        .ns
        .run(|| UdpSocket::bind((dst, UDP_PORT)))
        .expect("netns")
        .expect("bind receiver");
    let ssock = sender
        .run(|| -> io::Result<UdpSocket> {
            let any: IpAddr = if dst.is_ipv6() {
                Ipv6Addr::UNSPECIFIED.into()
            } else {
                Ipv4Addr::UNSPECIFIED.into()
            };
            let s = UdpSocket::bind((any, 0))?;
            s.connect(SocketAddr::from((dst, UDP_PORT)))?;
            Ok(s)
        })
        .expect("netns")
        .expect("sender socket");
    let stop = AtomicBool::new(false);
    let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
    let clock = AtomicI32::new(i32::MIN);
    let pin = cpus() >= 2;
    std::thread::scope(|s| {
        s.spawn(|| {
            if pin {
                pin_to_cpu(1);
            }
            udp_recv(&rsock, &stop, &received)
        });
        s.spawn(|| {
            if pin {
                pin_to_cpu(0);
            }
            let mut id: libc::clockid_t = 0;
            // SAFETY: pthread_self is this live thread; `id` is an out pointer.
            let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
            assert_eq!(rc, 0, "pthread_getcpuclockid");
            clock.store(id, Ordering::Release);
            udp_send(&ssock, &stop, &sent)
        });
        std::thread::sleep(Duration::from_millis(500));
        let clock = loop {
            match clock.load(Ordering::Acquire) {
                i32::MIN => std::thread::sleep(Duration::from_millis(10)),
                id => break id,
            }
        };
        let snapshot = || {
            (
                Instant::now(),
                thread_cpu_ns(clock),
                sent.load(Ordering::Relaxed),
                received.load(Ordering::Relaxed),
                stats(),
            )
        };
        let (t0, c0, s0, r0, p0) = snapshot();
        std::thread::sleep(Duration::from_secs_f64(secs));
        let (t1, c1, s1, r1, p1) = snapshot();
        stop.store(true, Ordering::Relaxed);
        let dt = (t1 - t0).as_secs_f64();
        Udp {
            sent_pps: (s1 - s0) as f64 / dt,
            recv_pps: (r1 - r0) as f64 / dt,
            cpu_ns_per_packet: (c1 - c0) / (s1 - s0).max(1) as f64,
            prog_ns_per_run: p1.zip(p0).and_then(|(b, a)| b.ns_per_run_since(&a)),
        }
    })
}
