//! The reachability matrix, like the upstream e2e suite's truth tables:
//! every (from, to, traffic) cell is expected to connect or not; the
//! observation is compared cell by cell, and a mismatch prints the whole
//! table of each traffic class that differs.
//!
//! Sources are "node" (node-a itself) and every live pod; destinations are
//! the live pods. A pod never probes itself (loopback, which policies do not
//! govern, as upstream ignores it), and node-a does not probe its own
//! hostNetwork pods.
//!
//! Patterns name cells: `*` every pod (never "node"), `x/*` a namespace,
//! `*/a` a pod name in every namespace, `x/a` one pod, `node`, or a
//! comma-separated list of these. Traffic filters are tokens: `tcp`, `udp`,
//! `sctp`, a port, `v4`, `v6`, e.g. `"tcp/81"`, `"udp v6"`, `"sctp/80"`, `"*"`.
//!
//! A matrix probes TCP and UDP; SCTP only in the cases that ask for it
//! (`Case::sctp`), which run in the VM: this host's kernel has no SCTP.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::{self, Write},
};

pub const NODE: &str = "node";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// What every case probes; `Case::sctp` adds SCTP.
    pub const TCP_UDP: [Proto; 2] = [Proto::Tcp, Proto::Udp];

    /// "tcp", "udp", "sctp".
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

/// One traffic class: protocol, destination port, address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Traffic {
    pub family: Family,
    pub proto: Proto,
    pub port: u16,
}

impl fmt::Display for Traffic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = self.proto.name();
        let family = match self.family {
            Family::V4 => "v4",
            Family::V6 => "v6",
        };
        write!(f, "{proto}/{} {family}", self.port)
    }
}

/// `protos` x {80, 81} for each of `families`.
pub fn traffic(families: &[Family], protos: &[Proto]) -> Vec<Traffic> {
    let mut out = Vec::new();
    for &family in families {
        for &proto in protos {
            for port in super::manifest::PORTS {
                out.push(Traffic {
                    family,
                    proto,
                    port,
                });
            }
        }
    }
    out
}

/// A parsed traffic filter.
#[derive(Clone, Copy, Debug, Default)]
struct Filter {
    proto: Option<Proto>,
    port: Option<u16>,
    family: Option<Family>,
}

impl Filter {
    fn parse(spec: &str) -> Filter {
        let mut f = Filter::default();
        for token in spec
            .split(|c: char| c == '/' || c.is_whitespace())
            .filter(|t| !t.is_empty())
        {
            match token {
                "*" => {}
                "tcp" => f.proto = Some(Proto::Tcp),
                "udp" => f.proto = Some(Proto::Udp),
                "sctp" => f.proto = Some(Proto::Sctp),
                "v4" => f.family = Some(Family::V4),
                "v6" => f.family = Some(Family::V6),
                port => {
                    f.port = Some(port.parse().unwrap_or_else(|_| {
                        panic!("traffic filter {spec:?}: unknown token {token:?}")
                    }))
                }
            }
        }
        f
    }

    fn matches(&self, t: &Traffic) -> bool {
        self.proto.is_none_or(|p| p == t.proto)
            && self.port.is_none_or(|p| p == t.port)
            && self.family.is_none_or(|f| f == t.family)
    }
}

/// Does `pattern` name the endpoint `name`?
pub fn matches(pattern: &str, name: &str) -> bool {
    pattern.split(',').map(str::trim).any(|p| {
        if p == NODE || name == NODE {
            return p == name;
        }
        if p == "*" {
            return true;
        }
        let (pns, ppod) = p
            .split_once('/')
            .unwrap_or_else(|| panic!("pattern {p:?}: expected ns/pod, x/*, */a, * or node"));
        let (ns, pod) = name.split_once('/').expect("pod names are ns/pod");
        (pns == "*" || pns == ns) && (ppod == "*" || ppod == pod)
    })
}

/// What one probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Connected and the destination answered with its own name.
    Connected,
    /// Something answered, but not the destination (a harness bug).
    WrongAnswer(String),
    /// Connection refused / ICMP port unreachable (a REJECT).
    Refused,
    /// No answer within the probe timeout.
    Timeout,
    /// Any other error (host unreachable, ...).
    Error(String),
}

impl Outcome {
    pub fn connected(&self) -> bool {
        *self == Outcome::Connected
    }

    /// Does this observation agree with a cell expected to connect
    /// (`allowed`) or to be blocked? The agent blocks with a REJECT, which
    /// refuses TCP and UDP at once: a timeout or another error there is a
    /// broken route or a missing answer, not a policy. SCTP reports some
    /// refusals as a timeout (netpol/sctp.rs), so any failure counts there.
    /// A ClusterNetworkPolicy Deny drops (`may_drop`): a timeout is a
    /// denial there too (which rule decided is checked where it matters,
    /// in cnp_netns's drop-versus-refuse test).
    pub fn agrees(&self, allowed: bool, proto: Proto, may_drop: bool) -> bool {
        match (allowed, proto) {
            (true, _) => self.connected(),
            (false, Proto::Sctp) => !self.connected() && !matches!(self, Outcome::WrongAnswer(_)),
            (false, Proto::Tcp | Proto::Udp) => {
                *self == Outcome::Refused || (may_drop && *self == Outcome::Timeout)
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Connected => write!(f, "connected"),
            Outcome::WrongAnswer(a) => write!(f, "answered by {a:?}"),
            Outcome::Refused => write!(f, "refused"),
            Outcome::Timeout => write!(f, "no answer (timeout)"),
            Outcome::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Observed outcomes by (source index, destination index, traffic).
pub type Observed = BTreeMap<(usize, usize, Traffic), Outcome>;

/// The expected truth table.
#[derive(Clone, Debug)]
pub struct Reachability {
    pub sources: Vec<String>,
    pub targets: Vec<String>,
    pub traffic: Vec<Traffic>,
    /// Pairs that are not probed (a pod to itself, node-a to its hostNetwork pods).
    pub skipped: BTreeSet<(usize, usize)>,
    expected: BTreeMap<(usize, usize, Traffic), bool>,
    /// Blocked cells may time out as well as be refused (a
    /// ClusterNetworkPolicy Deny drops).
    pub denials_may_drop: bool,
}

impl Reachability {
    /// Everything allowed.
    pub fn new(
        sources: Vec<String>,
        targets: Vec<String>,
        traffic: Vec<Traffic>,
        skipped: BTreeSet<(usize, usize)>,
    ) -> Reachability {
        let mut expected = BTreeMap::new();
        for s in 0..sources.len() {
            for t in 0..targets.len() {
                for &tr in &traffic {
                    expected.insert((s, t, tr), true);
                }
            }
        }
        Reachability {
            sources,
            targets,
            traffic,
            skipped,
            expected,
            denials_may_drop: false,
        }
    }

    /// Every pod-to-pod cell to `allowed` (the node row stays allowed:
    /// traffic from the node to its pods is always allowed).
    pub fn all(&mut self, allowed: bool) -> &mut Self {
        self.expect("*", "*", allowed)
    }

    /// Every cell from `from` to `to`, all traffic.
    pub fn expect(&mut self, from: &str, to: &str, allowed: bool) -> &mut Self {
        self.expect_on(from, to, "*", allowed)
    }

    /// Every cell from `from` to `to` for the traffic matching `on`.
    pub fn expect_on(&mut self, from: &str, to: &str, on: &str, allowed: bool) -> &mut Self {
        let filter = Filter::parse(on);
        let mut hit = false;
        for (&(s, t, tr), v) in self.expected.iter_mut() {
            if matches(from, &self.sources[s])
                && matches(to, &self.targets[t])
                && filter.matches(&tr)
            {
                *v = allowed;
                hit = true;
            }
        }
        assert!(
            hit,
            "expectation {from} -> {to} on {on:?} names no cell of the matrix"
        );
        self
    }

    /// Nothing reaches `to` (ingress isolation without any allowed peer).
    pub fn deny_to(&mut self, to: &str) -> &mut Self {
        self.expect("*", to, false)
    }

    /// `from` reaches nothing (egress isolation without any allowed peer).
    pub fn deny_from(&mut self, from: &str) -> &mut Self {
        self.expect(from, "*", false)
    }

    /// `from` reaches `to` (all traffic).
    pub fn allow(&mut self, from: &str, to: &str) -> &mut Self {
        self.expect(from, to, true)
    }

    pub fn expected(&self, s: usize, t: usize, tr: Traffic) -> bool {
        self.expected[&(s, t, tr)]
    }

    /// The cells that are probed.
    pub fn cells(&self) -> impl Iterator<Item = (usize, usize, Traffic)> + '_ {
        self.expected
            .keys()
            .copied()
            .filter(|(s, t, _)| !self.skipped.contains(&(*s, *t)))
    }

    /// Cells where the observation differs from the expectation.
    pub fn mismatches(&self, observed: &Observed) -> Vec<(usize, usize, Traffic)> {
        self.cells()
            .filter(|&cell| {
                let seen = observed
                    .get(&cell)
                    .unwrap_or_else(|| panic!("cell {cell:?} was not probed"));
                !seen.agrees(self.expected[&cell], cell.2.proto, self.denials_may_drop)
            })
            .collect()
    }

    /// Ok, or the report: for each traffic class with a mismatch the
    /// expected, observed and comparison tables, then every mismatch.
    pub fn compare(&self, observed: &Observed) -> Result<(), String> {
        let wrong = self.mismatches(observed);
        let mut out = String::new();
        let strange: Vec<_> = observed
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::WrongAnswer(_)))
            .collect();
        if wrong.is_empty() && strange.is_empty() {
            return Ok(());
        }
        let classes: BTreeSet<Traffic> = wrong.iter().map(|c| c.2).collect();
        let _ = writeln!(
            out,
            "{} of {} probes differ from the expected truth table \
             (rows: from, columns: to; '-' not probed)",
            wrong.len(),
            self.cells().count()
        );
        for tr in classes {
            let _ = writeln!(out, "\n=== {tr} ===");
            let _ = writeln!(out, "expected ('.' connects, 'X' blocked):");
            out.push_str(&self.table(|s, t| if self.expected(s, t, tr) { '.' } else { 'X' }));
            let _ = writeln!(
                out,
                "observed ('.' connected, 'X' refused, 'T' timeout, '?' other):"
            );
            out.push_str(&self.table(|s, t| match observed[&(s, t, tr)] {
                Outcome::Connected => '.',
                Outcome::Refused => 'X',
                Outcome::Timeout => 'T',
                Outcome::WrongAnswer(_) | Outcome::Error(_) => '?',
            }));
            let _ = writeln!(out, "comparison ('.' as expected, 'X' mismatch):");
            out.push_str(&self.table(|s, t| {
                if observed[&(s, t, tr)].agrees(
                    self.expected(s, t, tr),
                    tr.proto,
                    self.denials_may_drop,
                ) {
                    '.'
                } else {
                    'X'
                }
            }));
        }
        const LISTED: usize = 40;
        let _ = writeln!(out, "\nmismatches:");
        if wrong.len() > LISTED {
            let _ = writeln!(out, "  (the first {LISTED} of {})", wrong.len());
        }
        for (s, t, tr) in wrong.iter().take(LISTED) {
            let _ = writeln!(
                out,
                "  {} -> {} {tr}: expected {}, observed {}",
                self.sources[*s],
                self.targets[*t],
                match (self.expected(*s, *t, *tr), tr.proto) {
                    (true, _) => "to connect",
                    (false, Proto::Sctp) => "blocked",
                    (false, _) if self.denials_may_drop => "refused or dropped",
                    (false, _) => "refused",
                },
                observed[&(*s, *t, *tr)]
            );
        }
        for ((s, t, tr), o) in strange {
            let _ = writeln!(
                out,
                "  harness: {} -> {} {tr} {o}",
                self.sources[*s], self.targets[*t]
            );
        }
        Err(out)
    }

    /// One table; `cell` gives the character of each probed cell.
    pub fn table(&self, cell: impl Fn(usize, usize) -> char) -> String {
        let width = self
            .sources
            .iter()
            .chain(&self.targets)
            .map(String::len)
            .max()
            .unwrap_or(1)
            + 1;
        let mut out = format!("{:width$}", "");
        for t in &self.targets {
            let _ = write!(out, "{t:>width$}");
        }
        out.push('\n');
        for (s, name) in self.sources.iter().enumerate() {
            let _ = write!(out, "{name:width$}");
            for t in 0..self.targets.len() {
                let c = if self.skipped.contains(&(s, t)) {
                    '-'
                } else {
                    cell(s, t)
                };
                let _ = write!(out, "{c:>width$}");
            }
            out.push('\n');
        }
        out
    }
}
