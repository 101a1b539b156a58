//! The prober: every probed cell of a matrix, in parallel on a bounded pool
//! of threads. A worker enters the source's network namespace (setns on
//! its own thread) and connects from there; a cell connects when the
//! destination answers with its own name within the timeout.
//!
//! TCP: connect, read the answer to EOF. UDP: a connected socket (so an
//! ICMP port unreachable comes back as ECONNREFUSED at once) sends one
//! datagram and waits for the answer. SCTP (netpol/sctp.rs, only in the
//! cases that ask for it): associate, ask, read the answer to EOF; a
//! REJECT's ICMP error fails the connect at once, and no answer within
//! `SCTP_TIMEOUT` is blocked too.

use std::{
    fs::File,
    io::{self, Read},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::Duration,
};

use nix::sched::{setns, CloneFlags};

use super::{
    matrix::{Family, Observed, Outcome, Proto, Reachability, Traffic},
    sctp,
};

/// How long a TCP or UDP probe waits for an answer. A REJECT refuses at
/// once and a blocked TCP or UDP cell must be refused, so a timeout is a
/// failure and this wait costs nothing when a case passes: it is sized for
/// a connection on a loaded host (TCG in the VM, two cases at a time).
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The same for SCTP, which runs only in the VM: under TCG, with two
/// cases probing at once, an association (four-way handshake) and the
/// question and answer took up to 0.6 s on a quiet host, 1 s was seen to
/// run out, and 2 s too (11 of 1080 allowed cells of the baseline, the
/// host busy with other VMs). A REJECT still fails at once, but for the
/// few refusals the kernel keeps as a soft error (netpol/sctp.rs), which
/// wait this long.
pub const SCTP_TIMEOUT: Duration = Duration::from_secs(6);
/// Worker threads per matrix.
pub const WORKERS: usize = 48;

/// Where a source's probes start: a network namespace by its /run/netns path.
pub struct Source {
    pub netns: PathBuf,
}

/// A destination's addresses and the name it answers with.
pub struct Target {
    pub name: String,
    pub v4: IpAddr,
    pub v6: IpAddr,
}

/// Probes every cell `matrix` does not skip.
pub fn probe_all(matrix: &Reachability, sources: &[Source], targets: &[Target]) -> Observed {
    assert_eq!(matrix.sources.len(), sources.len());
    assert_eq!(matrix.targets.len(), targets.len());
    let handles: Vec<File> = sources
        .iter()
        .map(|s| File::open(&s.netns).unwrap_or_else(|e| panic!("{}: {e}", s.netns.display())))
        .collect();
    let cells: Vec<(usize, usize, Traffic)> = matrix.cells().collect();
    let next = AtomicUsize::new(0);
    let observed = Mutex::new(Observed::new());
    std::thread::scope(|scope| {
        for _ in 0..WORKERS.min(cells.len()) {
            scope.spawn(|| {
                let mut entered = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(s, t, tr)) = cells.get(i) else {
                        return;
                    };
                    if entered != Some(s) {
                        setns(&handles[s], CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| {
                            panic!("setns {}: {e}", sources[s].netns.display())
                        });
                        entered = Some(s);
                    }
                    let target = &targets[t];
                    let ip = match tr.family {
                        Family::V4 => target.v4,
                        Family::V6 => target.v6,
                    };
                    let outcome = probe(SocketAddr::new(ip, tr.port), tr.proto, &target.name);
                    observed.lock().unwrap().insert((s, t, tr), outcome);
                }
            });
        }
    });
    observed.into_inner().unwrap()
}

/// One probe from the calling thread's network namespace.
pub fn probe(to: SocketAddr, proto: Proto, expect: &str) -> Outcome {
    let answer = match proto {
        Proto::Tcp => tcp(to),
        Proto::Udp => udp(to),
        Proto::Sctp => sctp::connect_and_read(to, SCTP_TIMEOUT),
    };
    match answer {
        Ok(a) if a == expect => Outcome::Connected,
        Ok(a) => Outcome::WrongAnswer(a),
        Err(e) => match e.kind() {
            io::ErrorKind::ConnectionRefused => Outcome::Refused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Outcome::Timeout,
            _ => Outcome::Error(e.to_string()),
        },
    }
}

fn tcp(to: SocketAddr) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&to, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// UDP promises no delivery: a datagram, or the REJECT's ICMP error, lost
/// on a loaded host is sent again, as a UDP client would, before the probe
/// counts a timeout; the whole wait stays [`TIMEOUT`].
const UDP_SENDS: u32 = 2;

fn udp(to: SocketAddr) -> io::Result<String> {
    let any: SocketAddr = match to {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
        SocketAddr::V6(_) => "[::]:0".parse().unwrap(),
    };
    let socket = UdpSocket::bind(any)?;
    socket.connect(to)?;
    socket.set_read_timeout(Some(TIMEOUT / UDP_SENDS))?;
    let mut buf = [0u8; 512];
    let mut unanswered = None;
    for _ in 0..UDP_SENDS {
        socket.send(b"who are you?")?;
        match socket.recv(&mut buf) {
            Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                unanswered = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    Err(unanswered.expect("at least one send"))
}
