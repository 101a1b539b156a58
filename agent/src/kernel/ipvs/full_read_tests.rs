use super::*;
use crate::kernel::ipvs::{
    sockopt::Summary,
    sync::tests::{ip, vs},
};

fn web() -> VirtualService {
    vs("10.0.0.1", 80, &[("10.1.0.1", 1)])
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
    // A netlink read that found the table equal keeps what the listing matched.
    reads.planned(Some(&equal));
    assert_eq!(reads.matched, Some((now, 3)));
    reads.pending = Some(now);
    reads.planned(None);
    assert_eq!(reads.matched, None);
}

#[test]
fn an_ipv6_service_appearing_moves_the_listing_fingerprint() {
    let glance = |ipv6| Glance {
        summary: Summary::default(),
        ipv6,
    };
    let none = glance(Some(vec![])).fingerprint();
    let one = glance(Some(vec![ServiceKey::tcp(ip("fd00::9"), 80)])).fingerprint();
    assert_ne!(none, one);
    assert_ne!(glance(None).fingerprint(), none);
}
