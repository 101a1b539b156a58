//! The dummy interface and its VIPs over rtnetlink, checked with `ip -j`.

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

#[test]
fn vips_are_synced_onto_a_dummy_interface() {
    if !privileged("vips_are_synced_onto_a_dummy_interface") {
        return;
    }
    let ns = NetNs::new("ipw-link").unwrap();
    // A veth stands for the node's NIC (this host kernel has no dummy driver).
    ns.ip(&[
        "link", "add", "eth9", "type", "veth", "peer", "name", "eth9p",
    ])
    .unwrap();
    ns.ip(&["addr", "add", "192.168.56.10/24", "dev", "eth9"])
        .unwrap();
    let client = ns.run(LinkClient::connect).unwrap().unwrap();

    let want = ips(&["10.96.0.10", "203.0.113.10", "fd00:96::20"]);
    let report = ns
        .run(|| client.sync_addresses("ipwarden0", &want))
        .unwrap()
        .unwrap();
    assert!(report.created_link);
    assert_eq!(report.added.len(), 3);
    let (addrs, flags) = shown(&ns, "ipwarden0");
    assert_eq!(
        addrs,
        ["10.96.0.10/32", "203.0.113.10/32", "fd00:96::20/128"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert!(flags.contains(&"UP".to_string()), "{flags:?}");

    let again = ns
        .run(|| client.sync_addresses("ipwarden0", &want))
        .unwrap()
        .unwrap();
    assert_eq!(again, Default::default(), "nothing to do the second time");

    let fewer = ips(&["10.96.0.10"]);
    let report = ns
        .run(|| client.sync_addresses("ipwarden0", &fewer))
        .unwrap()
        .unwrap();
    assert_eq!(report.removed, vec![ip("203.0.113.10"), ip("fd00:96::20")]);
    assert_eq!(
        shown(&ns, "ipwarden0").0,
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
    ns.ip(&[
        "link", "add", "eth9", "type", "veth", "peer", "name", "eth9p",
    ])
    .unwrap();
    ns.ip(&["addr", "add", "192.168.56.10/24", "dev", "eth9"])
        .unwrap();
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
    ns.run(|| client.sync_addresses("ipwarden0", &ips(&["10.96.0.10"])))
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
/// 300 of them) and failed the whole sync; `ip` must show every one.
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
        .run(|| client.sync_addresses("ipwarden0", &want))
        .unwrap()
        .unwrap();
    assert_eq!(report.added.len(), 2000);
    let expected = |set: &BTreeSet<IpAddr>| -> BTreeSet<String> {
        set.iter().map(|a| format!("{a}/32")).collect()
    };
    assert_eq!(shown(&ns, "ipwarden0").0, expected(&want));

    let del: BTreeSet<IpAddr> = (0..1000).map(vip).collect();
    let add: BTreeSet<IpAddr> = (2000..3000).map(vip).collect();
    let report = ns
        .run(|| client.change_addresses("ipwarden0", &add, &del))
        .unwrap()
        .unwrap();
    assert_eq!((report.added.len(), report.removed.len()), (1000, 1000));
    let now: BTreeSet<IpAddr> = (1000..3000).map(vip).collect();
    assert_eq!(shown(&ns, "ipwarden0").0, expected(&now));
}
