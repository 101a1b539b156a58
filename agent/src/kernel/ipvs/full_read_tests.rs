use super::*;
use crate::desired::{Forward, Protocol, RealServer, ServiceFlags, ServiceRef, VsKey};

/// As a 6.1 kernel prints two services, the first with traffic.
const TEXT: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A000001:0050 rr 
  -> 0A010002:1F90      Masq    1      4          7         
  -> 0A010001:1F90      Masq    1      0          2         
UDP  0A000002:0035 wrr 
  -> 0A010004:0035      Masq    2      0          0         
";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn the_text_fingerprint_ignores_the_counters_only() {
    let quiet = TEXT.replace(" 4          7 ", " 0          0 ");
    assert_eq!(text_fingerprint(TEXT), text_fingerprint(&quiet));
    let drifts = [
        ("a destination deleted", TEXT.replace("  -> 0A010001:1F90      Masq    1      0          2         \n", "")),
        ("a destination reweighted", TEXT.replace("0A010001:1F90      Masq    1", "0A010001:1F90      Masq    9")),
        ("a destination forwarded otherwise", TEXT.replace("0A010004:0035      Masq", "0A010004:0035      Route")),
        ("a destination moved", TEXT.replace("0A010004:0035", "0A010005:0035")),
        ("a scheduler changed", TEXT.replace("0A000001:0050 rr", "0A000001:0050 lc")),
        ("a flag set", TEXT.replace("0A000002:0035 wrr ", "0A000002:0035 wrr ops ")),
        ("a service added", format!("{TEXT}TCP  0A000009:0050 rr \n")),
        ("a service deleted", TEXT.split("UDP").next().unwrap().to_string()),
        (
            "a destination under another service",
            TEXT.replace("  -> 0A010001:1F90      Masq    1      0          2         \nUDP  0A000002:0035 wrr \n", "UDP  0A000002:0035 wrr \n  -> 0A010001:1F90      Masq    1      0          2         \n"),
        ),
    ];
    for (drift, text) in drifts {
        assert_ne!(text, TEXT, "{drift}: the drift changes the text");
        assert_ne!(text_fingerprint(&text), text_fingerprint(TEXT), "{drift}");
    }
}

fn web() -> VirtualService {
    VirtualService {
        key: VsKey {
            addr: ip("10.0.0.1"),
            proto: Protocol::Tcp,
            port: 80,
        },
        scheduler: "rr".into(),
        flags: ServiceFlags::default(),
        timeout: 0,
        netmask_bits: 32,
        destinations: vec![RealServer {
            addr: ip("10.1.0.1"),
            port: 8080,
            weight: 1,
            forward: Forward::Masq,
        }],
        service: ServiceRef::default(),
        origin: String::new(),
        source_ranges: false,
    }
}

#[test]
fn the_desired_fingerprint_follows_every_field_a_plan_compares_and_the_scope() {
    let vips: BTreeSet<IpAddr> = [ip("10.0.0.1")].into();
    let node = [ip("192.168.0.1")];
    let base = desired_fingerprint(&[&web()], &vips, &node);
    let mut changed: Vec<(&str, VirtualService)> = Vec::new();
    let mut v = web();
    v.key.port = 81;
    changed.push(("port", v));
    let mut v = web();
    v.scheduler = "lc".into();
    changed.push(("scheduler", v));
    let mut v = web();
    v.flags.sched1 = true;
    changed.push(("flags", v));
    let mut v = web();
    v.timeout = 60;
    changed.push(("timeout", v));
    let mut v = web();
    v.netmask_bits = 24;
    changed.push(("netmask", v));
    let mut v = web();
    v.destinations[0].weight = 2;
    changed.push(("weight", v));
    let mut v = web();
    v.destinations.clear();
    changed.push(("destinations", v));
    for (field, v) in changed {
        assert_ne!(desired_fingerprint(&[&v], &vips, &node), base, "{field}");
    }
    assert_ne!(desired_fingerprint(&[], &vips, &node), base);
    assert_ne!(
        desired_fingerprint(&[&web()], &BTreeSet::new(), &node),
        base
    );
    assert_ne!(desired_fingerprint(&[&web()], &vips, &[]), base);
    // What the kernel never sees does not matter.
    let mut named = web();
    named.origin = "default/web".into();
    assert_eq!(desired_fingerprint(&[&named], &vips, &node), base);
}

#[test]
fn only_a_plan_that_wrote_nothing_is_remembered() {
    let now = Fingerprints {
        desired: 1,
        listing: 2,
    };
    let equal = IpvsReport {
        services_unchanged: 3,
        ..IpvsReport::default()
    };
    let wrote = IpvsReport {
        destinations_added: 1,
        ..IpvsReport::default()
    };
    let mut reads = FullRead {
        pending: Some(now),
        ..FullRead::default()
    };
    reads.planned(Some(&wrote));
    assert_eq!(reads.matched, None);
    reads.pending = Some(now);
    reads.planned(Some(&equal));
    assert_eq!(reads.matched, Some((now, 3)));
    // A netlink read that found the table equal keeps what /proc matched.
    reads.planned(Some(&equal));
    assert_eq!(reads.matched, Some((now, 3)));
    reads.pending = Some(now);
    reads.planned(None);
    assert_eq!(reads.matched, None);
}

#[test]
fn a_text_that_skipped_a_desired_service_is_not_complete() {
    let both: Vec<(Service, Vec<Destination>)> = [("10.0.0.1", 80), ("10.0.0.2", 53)]
        .iter()
        .map(|&(a, port)| {
            let mut v = web();
            v.key.addr = ip(a);
            v.key.port = port;
            sync::to_kernel(&v).unwrap()
        })
        .collect();
    let mut udp = both.clone();
    udp[1].0.key = ServiceKey::udp(ip("10.0.0.2"), 53);
    let text = |t: &str| Listing::Proc(t.to_string());
    assert!(lists_every(&text(TEXT), &udp));
    let skipped = TEXT.split("UDP").next().unwrap();
    assert!(!lists_every(&text(skipped), &udp));
    assert!(
        !lists_every(&text(TEXT), &both),
        "TCP 10.0.0.2:53 is not listed"
    );
    // getsockopt's listing skips nothing: a service it lacks is absent.
    let none = Listing::Sockopt {
        table: crate::kernel::ipvs::sockopt::Table::default(),
        ipv6: None,
    };
    assert!(lists_every(&none, &both));
}

#[test]
fn a_listing_fingerprint_tells_the_kinds_and_the_ipv6_services_apart() {
    let proc = Listing::Proc(TEXT.to_string());
    let sockopt = |ipv6| Listing::Sockopt {
        table: crate::kernel::ipvs::sockopt::Table {
            summary: crate::kernel::ipvs::sockopt::Summary {
                fingerprint: text_fingerprint(TEXT),
                ..Default::default()
            },
            ..Default::default()
        },
        ipv6,
    };
    let v4_only = listing_fingerprint(&sockopt(None));
    assert_ne!(listing_fingerprint(&proc), v4_only);
    // An IPv6 service appearing moves it.
    let none = listing_fingerprint(&sockopt(Some(vec![])));
    let one = listing_fingerprint(&sockopt(Some(vec![ServiceKey::tcp(ip("fd00::9"), 80)])));
    assert_ne!(none, one);
}

#[test]
fn a_glance_gives_the_fingerprint_of_the_listing_it_summarises() {
    let summary = crate::kernel::ipvs::sockopt::Summary {
        fingerprint: text_fingerprint(TEXT),
        ..Default::default()
    };
    for ipv6 in [None, Some(vec![ServiceKey::tcp(ip("fd00::9"), 80)])] {
        let listing = Listing::Sockopt {
            table: crate::kernel::ipvs::sockopt::Table {
                summary: summary.clone(),
                ..Default::default()
            },
            ipv6: ipv6.clone(),
        };
        assert_eq!(
            sockopt_fingerprint(&summary, &ipv6),
            listing_fingerprint(&listing)
        );
    }
}
