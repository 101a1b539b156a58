//! The dummy interface and its VIPs (local routes of protocol 211) over
//! rtnetlink, checked with `ip -j`.

use std::{collections::BTreeSet, net::IpAddr};

use ipwarden::{
    kernel::link::LinkClient,
    netns::{privileged, NetNs},
};

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

/// (address/prefix) strings and flags of `dev` per `ip -j addr show`.
fn shown(ns: &NetNs, dev: &str) -> (BTreeSet<String>, Vec<String>) {
    let out = ns
        .output("ip", &["-j", "addr", "show", "dev", dev])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let link = &v[0];
    let addrs = link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] != "link")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    let flags = link["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    (addrs, flags)
}

/// The destinations (`/32` or `/128` spelled out) of the local routes of
/// protocol 211 through `dev`, both families, per `ip -j route show`.
fn routed(ns: &NetNs, dev: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for family in ["-4", "-6"] {
        let json = ns
            .output(
                "ip",
                &[
                    "-j", family, "route", "show", "table", "local", "proto", "211", "dev", dev,
                ],
            )
            .unwrap();
        let routes: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        for r in routes {
            assert_eq!(r["type"], "local", "{r}");
            let dst = r["dst"].as_str().unwrap();
            let full = match (dst.contains('/'), family) {
                (true, _) => dst.to_string(),
                (false, "-4") => format!("{dst}/32"),
                (false, _) => format!("{dst}/128"),
            };
            out.insert(full);
        }
    }
    out
}

/// The node's NIC, `eth9` with 192.168.56.10/24: a veth (this host kernel
/// has no dummy driver).
fn add_nic(ns: &NetNs) {
    ns.ip(&[
        "link", "add", "eth9", "type", "veth", "peer", "name", "eth9p",
    ])
    .unwrap();
    ns.ip(&["addr", "add", "192.168.56.10/24", "dev", "eth9"])
        .unwrap();
}

#[test]
fn vips_are_synced_onto_a_dummy_interface() {
    if !privileged("vips_are_synced_onto_a_dummy_interface") {
        return;
    }
    let ns = NetNs::new("ipw-link").unwrap();
    add_nic(&ns);
    let client = ns.run(LinkClient::connect).unwrap().unwrap();

    let want = ips(&["10.96.0.10", "203.0.113.10", "fd00:96::20"]);
    let report = ns
        .run(|| client.sync_vips("ipwarden0", &want))
        .unwrap()
        .unwrap();
    assert!(report.created_link);
    assert_eq!(report.added.len(), 3);
    let (addrs, flags) = shown(&ns, "ipwarden0");
    assert_eq!(
        routed(&ns, "ipwarden0"),
        ["10.96.0.10/32", "203.0.113.10/32", "fd00:96::20/128"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert!(
        addrs.is_empty(),
        "VIPs are routes, not addresses: {addrs:?}"
    );
    assert!(flags.contains(&"UP".to_string()), "{flags:?}");
    // The kernel takes them for local addresses (what IPVS needs).
    let got = ns
        .output("ip", &["-j", "route", "get", "10.96.0.10"])
        .unwrap();
    assert!(got.contains("\"type\":\"local\""), "{got}");

    let again = ns
        .run(|| client.sync_vips("ipwarden0", &want))
        .unwrap()
        .unwrap();
    assert_eq!(again, Default::default(), "nothing to do the second time");

    let fewer = ips(&["10.96.0.10"]);
    let report = ns
        .run(|| client.sync_vips("ipwarden0", &fewer))
        .unwrap()
        .unwrap();
    assert_eq!(report.removed, vec![ip("203.0.113.10"), ip("fd00:96::20")]);
    assert_eq!(
        routed(&ns, "ipwarden0"),
        ["10.96.0.10/32".to_string()].into()
    );

    // The node's own addresses, without the VIPs.
    let local = ns
        .run(|| client.local_addresses("ipwarden0"))
        .unwrap()
        .unwrap();
    assert!(local.contains(&ip("192.168.56.10")) && local.contains(&ip("127.0.0.1")));
    assert!(!local.contains(&ip("10.96.0.10")));

    assert!(ns.run(|| client.delete("ipwarden0")).unwrap().unwrap());
    assert!(ns.output("ip", &["link", "show", "ipwarden0"]).is_err());
    assert!(!ns.run(|| client.delete("ipwarden0")).unwrap().unwrap());
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn watched_node_addresses_follow_changes_on_other_interfaces_only() {
    if !privileged("watched_node_addresses_follow_changes_on_other_interfaces_only") {
        return;
    }
    use ipwarden::kernel::link::AddressWatch;
    let ns = NetNs::new("ipw-watch").unwrap();
    add_nic(&ns);
    let (client, mut watch) = ns
        .run(|| {
            (
                LinkClient::connect().unwrap(),
                AddressWatch::subscribe("ipwarden0").unwrap(),
            )
        })
        .unwrap();
    // Loopback's addresses are the node's too.
    let read = |watch: &mut AddressWatch| -> BTreeSet<IpAddr> {
        let mut all: BTreeSet<IpAddr> = client
            .watched_addresses(watch)
            .unwrap()
            .into_iter()
            .collect();
        all.retain(|a| !a.is_loopback());
        all
    };
    assert_eq!(read(&mut watch), ips(&["192.168.56.10"]));
    ns.run(|| client.sync_vips("ipwarden0", &ips(&["10.96.0.10"])))
        .unwrap()
        .unwrap();
    assert_eq!(
        read(&mut watch),
        ips(&["192.168.56.10"]),
        "VIPs are not node addresses"
    );
    ns.ip(&["addr", "add", "fd00:56::10/64", "dev", "eth9", "nodad"])
        .unwrap();
    ns.ip(&["addr", "del", "192.168.56.10/24", "dev", "eth9"])
        .unwrap();
    assert_eq!(
        read(&mut watch),
        ips(&["fd00:56::10"]),
        "as `ip addr` changed them"
    );
    let listed = ns
        .output("ip", &["-j", "addr", "show", "dev", "eth9"])
        .unwrap();
    assert!(listed.contains("fd00:56::10") && !listed.contains("192.168.56.10"));
}

/// Thousands of VIPs in one full sync, then in one partial change: their
/// acks once overflowed the socket's receive buffer (ENOBUFS after about
/// 300 of them) and failed the whole sync; `ip route` must show every one.
#[test]
fn thousands_of_vips_are_added_and_removed_in_one_sync() {
    if !privileged("thousands_of_vips_are_added_and_removed_in_one_sync") {
        return;
    }
    let ns = NetNs::new("ipw-link-many").unwrap();
    let client = ns.run(LinkClient::connect).unwrap().unwrap();
    let vip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a60_0000 + i));
    let want: BTreeSet<IpAddr> = (0..2000).map(vip).collect();
    let report = ns
        .run(|| client.sync_vips("ipwarden0", &want))
        .unwrap()
        .unwrap();
    assert_eq!(report.added.len(), 2000);
    let expected = |set: &BTreeSet<IpAddr>| -> BTreeSet<String> {
        set.iter().map(|a| format!("{a}/32")).collect()
    };
    assert_eq!(routed(&ns, "ipwarden0"), expected(&want));

    let del: BTreeSet<IpAddr> = (0..1000).map(vip).collect();
    let add: BTreeSet<IpAddr> = (2000..3000).map(vip).collect();
    let report = ns
        .run(|| client.change_vips("ipwarden0", &add, &del))
        .unwrap()
        .unwrap();
    assert_eq!((report.added.len(), report.removed.len()), (1000, 1000));
    let now: BTreeSet<IpAddr> = (1000..3000).map(vip).collect();
    assert_eq!(routed(&ns, "ipwarden0"), expected(&now));
}

/// Only our routes are ours: a VIP that is a node address keeps the
/// kernel's route (never replaced, never deleted), a local route someone
/// else put on the dummy stays, and the addresses an older agent left on
/// the dummy give way to routes.
#[test]
fn a_full_sync_takes_only_its_own_routes_and_replaces_old_addresses() {
    if !privileged("a_full_sync_takes_only_its_own_routes_and_replaces_old_addresses") {
        return;
    }
    let ns = NetNs::new("ipw-link-own").unwrap();
    add_nic(&ns);
    let client = ns.run(LinkClient::connect).unwrap().unwrap();
    ns.run(|| client.ensure_dummy("ipwarden0"))
        .unwrap()
        .unwrap();
    for old in ["10.96.0.10/32", "10.96.0.11/32"] {
        ns.ip(&["addr", "add", old, "dev", "ipwarden0"]).unwrap();
    }
    let before = ns.run(|| client.vips("ipwarden0")).unwrap().unwrap();
    assert_eq!(
        before,
        ips(&["10.96.0.10", "10.96.0.11"]),
        "old addresses count as ours"
    );
    let want = ips(&["10.96.0.10", "192.168.56.10"]);
    let report = ns
        .run(|| client.sync_vips("ipwarden0", &want))
        .unwrap()
        .unwrap();
    assert_eq!(
        report.added,
        vec![ip("10.96.0.10")],
        "the node address is local already"
    );
    assert_eq!(report.removed, vec![ip("10.96.0.11")]);
    assert!(shown(&ns, "ipwarden0").0.is_empty());
    assert_eq!(
        routed(&ns, "ipwarden0"),
        ["10.96.0.10/32".to_string()].into()
    );

    // After the old addresses went: deleting an interface's last IPv4
    // address flushes every route through it (the kernel's doing).
    ns.ip(&[
        "route",
        "add",
        "local",
        "10.96.0.99",
        "dev",
        "ipwarden0",
        "table",
        "local",
    ])
    .unwrap();
    ns.run(|| client.sync_vips("ipwarden0", &BTreeSet::new()))
        .unwrap()
        .unwrap();
    assert!(routed(&ns, "ipwarden0").is_empty());
    let local = ns
        .output("ip", &["-j", "route", "show", "table", "local"])
        .unwrap();
    assert!(
        local.contains("\"dst\":\"192.168.56.10\"") && local.contains("\"dst\":\"10.96.0.99\""),
        "the node's own route and the foreign one stay: {local}"
    );
}

/// A partial sync writes at the dummy's known index, one route request per
/// VIP and no dump; once the dummy is gone the kernel answers ENODEV (the
/// dataplane then makes it again), never a route on another interface.
#[test]
fn vips_changed_at_a_known_index_until_the_dummy_is_gone() {
    if !privileged("vips_changed_at_a_known_index_until_the_dummy_is_gone") {
        return;
    }
    let ns = NetNs::new("ipw-link-at").unwrap();
    add_nic(&ns);
    let client = ns.run(LinkClient::connect).unwrap().unwrap();
    ns.run(|| client.sync_vips("ipwarden0", &ips(&["10.96.0.10"])))
        .unwrap()
        .unwrap();
    let index = ns
        .run(|| client.index_of("ipwarden0"))
        .unwrap()
        .unwrap()
        .unwrap();
    let report = ns
        .run(|| {
            client.change_vips_at(
                index,
                &ips(&["10.96.0.11", "fd00::11"]),
                &ips(&["10.96.0.10"]),
            )
        })
        .unwrap()
        .unwrap();
    assert_eq!(report.added, vec![ip("10.96.0.11"), ip("fd00::11")]);
    assert_eq!(report.removed, vec![ip("10.96.0.10")]);
    assert_eq!(
        routed(&ns, "ipwarden0"),
        ["10.96.0.11/32", "fd00::11/128"].map(String::from).into()
    );
    ns.ip(&["link", "del", "ipwarden0"]).unwrap();
    let gone = ns
        .run(|| client.change_vips_at(index, &ips(&["10.96.0.12"]), &BTreeSet::new()))
        .unwrap();
    assert!(
        matches!(
            gone,
            Err(ipwarden::kernel::link::LinkError::Netlink {
                errno: Some(libc::ENODEV),
                ..
            })
        ),
        "{gone:?}"
    );
    let local = ns
        .output(
            "ip",
            &["-j", "route", "show", "table", "local", "proto", "211"],
        )
        .unwrap();
    assert!(!local.contains("10.96.0.12"), "{local}");
}

/// The watch hears links come and go: the tc attachments look at the
/// links only then, not on every partial sync.
#[test]
fn the_watch_hears_links_come_and_go() {
    if !privileged("the_watch_hears_links_come_and_go") {
        return;
    }
    use ipwarden::kernel::link::AddressWatch;
    let ns = NetNs::new("ipw-watch-links").unwrap();
    let mut watch = ns
        .run(|| AddressWatch::subscribe("ipwarden0").unwrap())
        .unwrap();
    assert!(watch.take_links_changed(), "never looked: changed");
    assert!(!watch.take_links_changed(), "nothing since");
    add_nic(&ns);
    assert!(watch.take_links_changed(), "a veth pair came");
    ns.ip(&["link", "del", "eth9"]).unwrap();
    assert!(watch.take_links_changed(), "and went");
    assert!(!watch.take_links_changed(), "nothing since");
}
