//! A full sync's IPVS read that skips the plan of an unchanged table
//! (`kernel::ipvs::full_read`): after a read that a plan found equal, the
//! same table reads as unchanged, and every drift made with ipvsadm after
//! it is read in full and repaired, as `ipvsadm -Ln` shows.
//!
//! Needs IPVS, which only the test VM has: `#[ignore]`d, run there
//! (`cargo xtask vm-test -- <this binary> --ignored`).

use std::{collections::BTreeSet, net::IpAddr};

use ipwarden::{
    desired::{Forward, Protocol, RealServer, ServiceFlags, ServiceRef, VirtualService, VsKey},
    kernel::{
        ipvs::{
            full_read::{FullRead, Table},
            IpvsClient, Request, ServiceFlagBits,
        },
        ipvs_sync::{self, IpvsReport, IpvsScope},
    },
    netns::NetNs,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn service(addr: &str, port: u16, reals: &[&str]) -> VirtualService {
    VirtualService {
        key: VsKey {
            addr: ip(addr),
            proto: Protocol::Tcp,
            port,
        },
        scheduler: "rr".into(),
        flags: ServiceFlags::default(),
        timeout: 0,
        netmask_bits: 32,
        destinations: reals
            .iter()
            .map(|a| RealServer {
                addr: ip(a),
                port: 8080,
                weight: 1,
                forward: Forward::Masq,
            })
            .collect(),
        service: ServiceRef::default(),
        origin: String::new(),
        source_ranges: false,
    }
}

/// A plain IPv4 service, a persistent one (both in the getsockopt listing)
/// and an IPv6 one (read by netlink).
fn desired() -> Vec<VirtualService> {
    let plain = service("10.96.0.1", 80, &["10.244.0.1", "10.244.0.2"]);
    let mut sticky = service("10.96.0.2", 443, &["10.244.0.3"]);
    sticky.flags.persistent = true;
    sticky.timeout = 600;
    let v6 = service("fd00::1", 80, &["fd00:1::1"]);
    vec![plain, sticky, v6]
}

/// How a full sync read the table, and what its plan wrote.
#[derive(Debug, PartialEq, Eq)]
enum Sync {
    Unchanged,
    Planned(IpvsReport),
}

struct Node {
    ns: NetNs,
    ipvs: IpvsClient,
    reads: FullRead,
    desired: Vec<VirtualService>,
}

impl Node {
    fn new() -> Self {
        let ns = NetNs::new("ipw-unch").unwrap();
        ns.output("ip", &["link", "set", "lo", "up"]).unwrap();
        ns.output("ip", &["link", "add", "d0", "type", "dummy"])
            .unwrap();
        ns.output("ip", &["link", "set", "d0", "up"]).unwrap();
        ns.output("ip", &["addr", "add", "10.244.255.254/16", "dev", "d0"])
            .unwrap();
        let ipvs = ns.run(IpvsClient::connect).unwrap().unwrap();
        Self {
            ns,
            ipvs,
            reads: FullRead::default(),
            desired: desired(),
        }
    }

    /// One full sync's IPVS step, as the dataplane runs it.
    fn sync(&mut self, deep: bool) -> Sync {
        let vips: BTreeSet<IpAddr> = self.desired.iter().map(|v| v.key.addr).collect();
        let Node {
            ns,
            ipvs,
            reads,
            desired,
        } = self;
        let desired: Vec<&VirtualService> = desired.iter().collect();
        let table = ns
            .run(|| reads.read(ipvs, &desired, &vips, &[], deep))
            .unwrap()
            .unwrap();
        match table {
            Table::Unchanged(_) => Sync::Unchanged,
            Table::Read { actual } => {
                let scope = IpvsScope {
                    vips,
                    ..IpvsScope::default()
                };
                let forms = ipvs_sync::kernel_forms(&desired);
                let report = ipvs_sync::apply_plan(ipvs, forms, &actual, &scope).unwrap();
                reads.planned(Some(&report));
                Sync::Planned(report)
            }
        }
    }

    fn ipvsadm(&self, args: &[&str]) -> String {
        self.ns.output("ipvsadm", args).unwrap()
    }

    /// `ipvsadm -Ln` and `-Ln --thresholds`, each service's destinations and the services sorted
    /// (a repaired destination comes back at another place in the list).
    fn listing(&self) -> Vec<Vec<String>> {
        let text = self.ipvsadm(&["-Ln"]) + &self.ipvsadm(&["-Ln", "--thresholds"]);
        let mut blocks: Vec<Vec<String>> = Vec::new();
        for line in text.lines().filter(|l| !is_header(l)) {
            match blocks.last_mut() {
                Some(block) if line.starts_with("  ->") => block.push(line.to_owned()),
                _ => blocks.push(vec![line.to_owned()]),
            }
        }
        for block in &mut blocks {
            block[1..].sort();
        }
        blocks.sort();
        blocks
    }

    /// A full sync (`deep` or not) that plans and writes what `wrote`
    /// accepts, then a settled table, listed as it was after the write,
    /// that the next full sync finds unchanged: that listing.
    fn repairs(
        &mut self,
        deep: bool,
        what: &str,
        wrote: impl Fn(&IpvsReport) -> bool,
    ) -> Vec<Vec<String>> {
        let repair = self.sync(deep);
        assert!(
            matches!(&repair, Sync::Planned(r) if wrote(r)),
            "{what}: {repair:?}"
        );
        let repaired = self.listing();
        assert_eq!(self.settle(), repaired, "{what} settled");
        assert_eq!(self.sync(false), Sync::Unchanged, "after {what}");
        repaired
    }

    /// Synced, then synced with nothing to write: what `ipvsadm -Ln` lists.
    fn settle(&mut self) -> Vec<Vec<String>> {
        self.sync(false);
        let again = self.sync(false);
        assert!(
            again == Sync::Unchanged || matches!(&again, Sync::Planned(r) if !r.changed()),
            "{again:?}"
        );
        self.listing()
    }
}

/// A line of `ipvsadm -Ln`'s three-line header.
fn is_header(line: &str) -> bool {
    ["IP Virtual Server", "Prot ", "  -> RemoteAddress"]
        .iter()
        .any(|h| line.starts_with(h))
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_an_unchanged_table_is_not_planned_and_every_drift_after_it_is_repaired() {
    let mut node = Node::new();
    let first = node.sync(false);
    assert!(
        matches!(&first, Sync::Planned(r) if r.services_added == 3),
        "{first:?}"
    );
    let programmed = node.settle();
    assert_eq!(node.sync(false), Sync::Unchanged);

    let drifts: [&[&str]; 10] = [
        &["-d", "-t", "10.96.0.1:80", "-r", "10.244.0.2:8080"],
        &[
            "-e",
            "-t",
            "10.96.0.1:80",
            "-r",
            "10.244.0.1:8080",
            "-m",
            "-w",
            "9",
        ],
        &["-a", "-t", "10.96.0.1:80", "-r", "10.244.0.9:8080", "-m"],
        &["-E", "-t", "10.96.0.1:80", "-s", "lc"],
        &["-D", "-t", "10.96.0.2:443"],
        &["-A", "-t", "10.96.0.1:8443", "-s", "rr"],
        &["-E", "-t", "[fd00::1]:80", "-s", "wrr"],
        // A threshold: the getsockopt listing shows it.
        &[
            "-e",
            "-t",
            "10.96.0.1:80",
            "-r",
            "10.244.0.1:8080",
            "-m",
            "-x",
            "100",
        ],
        // An IPv6 service we do not want: getsockopt does not show it; a
        // node with IPv6 services lists them by netlink.
        &["-A", "-t", "[fd00::1]:8443", "-s", "rr"],
        &["-a", "-t", "[fd00::1]:80", "-r", "[fd00:1::9]:8080", "-m"],
    ];
    for drift in drifts {
        node.ipvsadm(drift);
        assert_ne!(node.listing(), programmed, "{drift:?} drifted");
        let what = format!("{drift:?}");
        let repaired = node.repairs(false, &what, |r| r.changed());
        assert_eq!(repaired, programmed, "{what} repaired");
    }

    // A desired change with the table as it was: read and written.
    node.desired[0].destinations[0].weight = 3;
    node.repairs(false, "a desired weight", |r| r.destinations_edited == 1);
}

/// What the cheap listing shows is repaired at the next full sync: a
/// scheduler flag on the persistent service and on the plain one, both
/// shown by getsockopt. The deep read repairs the same drift too.
#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_a_scheduler_flag_is_repaired_at_the_next_full_sync_and_by_the_deep_read() {
    let mut node = Node::new();
    node.settle();
    let flag = |node: &mut Node, i: usize| {
        let (mut svc, _) = ipvs_sync::to_kernel(&node.desired[i]).unwrap();
        svc.flags |= ServiceFlagBits::SCHED1;
        node.ipvs.execute(&Request::EditService(svc)).unwrap();
    };
    for i in [1, 0] {
        flag(&mut node, i);
        node.repairs(false, &format!("service {i}"), |r| r.services_edited == 1);
    }
    flag(&mut node, 0);
    node.repairs(true, "the deep read", |r| r.services_edited == 1);
}
