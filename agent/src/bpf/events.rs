//! The classifier's events: read from the ring buffer, logged with the
//! 5-tuple, handed to an [`EventSink`] (the metrics count them), and
//! optionally appended to a JSON-lines file.

use std::{fmt, io::Write, net::IpAddr, os::fd::AsRawFd, path::PathBuf, sync::Arc};

use aya::maps::{MapData, RingBuf};
use ipwarden_common::{
    maps::{EVENT_RESCUED, EVENT_WOULD_REJECT, FAMILY_V4},
    Event,
};

/// What the classifier saw, as the metrics count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Traffic to a mirrored member the kernel set lacks, refused (log mode).
    WouldBeRejected,
    /// The same traffic, accepted thanks to the mark (allow mode).
    Rescued,
}

impl EventKind {
    /// An unknown kind counts as a refusal: the safe reading of an event
    /// from a newer program.
    fn of(e: &Event) -> Self {
        match e.kind {
            EVENT_RESCUED => EventKind::Rescued,
            _ => EventKind::WouldBeRejected,
        }
    }
}

/// Where the event reader reports each event. The reader calls it, so this
/// layer owns the trait; api/ implements it and cli/ wires it in, so bpf/
/// never imports api/.
pub trait EventSink: Send + Sync + fmt::Debug {
    fn event(&self, kind: EventKind);
}

/// One event in readable form (also the JSON line).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EventRecord {
    pub kind: &'static str,
    pub proto: u8,
    pub source: String,
    pub destination: String,
    pub ifindex: u32,
}

fn addr(family: u8, raw: [u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::from([raw[0], raw[1], raw[2], raw[3]])
    } else {
        IpAddr::from(raw)
    }
}

fn sock(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

pub fn record(e: &Event) -> EventRecord {
    EventRecord {
        kind: match e.kind {
            EVENT_RESCUED => "rescued",
            EVENT_WOULD_REJECT => "would_be_rejected",
            _ => "unknown",
        },
        proto: e.proto,
        source: sock(addr(e.family, e.saddr), e.sport),
        destination: sock(addr(e.family, e.daddr), e.dport),
        ifindex: e.ifindex,
    }
}

/// Reads events until the process ends, on a thread of its own.
pub fn spawn_reader(
    mut ring: RingBuf<MapData>,
    sink: Arc<dyn EventSink>,
    log_file: Option<PathBuf>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || loop {
        let mut pfd = libc::pollfd {
            fd: ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a timeout keeps the loop responsive.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
        while let Some(item) = ring.next() {
            if item.len() < std::mem::size_of::<Event>() {
                continue;
            }
            // SAFETY: the program writes exactly one Event per entry.
            let e: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let r = record(&e);
            sink.event(EventKind::of(&e));
            tracing::warn!(
                kind = r.kind,
                proto = r.proto,
                source = %r.source,
                destination = %r.destination,
                "traffic to a service port the ipset lacks"
            );
            if let Some(path) = &log_file {
                let line = serde_json::to_string(&r).unwrap_or_default();
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                {
                    let _ = writeln!(f, "{line}");
                }
            }
        }
    })
}
