//! Two nodes and their pods in throw-away network namespaces.
//!
//! node-a is where the agent runs. In `Mode::Bridge` (kube-router's layout)
//! it holds `kube-bridge` (10.244.1.1/24, fd00:10:244:1::1/64) with
//! `bridge-nf-call-iptables` and `-ip6tables` on (per network namespace on
//! this kernel), and each pod's veth is a bridge port; pods route by
//! default via the bridge addresses. In `Mode::Routed` (Calico's layout)
//! there is no bridge: each pod's veth stays in node-a with a /32 and /128
//! host route; the pod's default routes go to 169.254.1.1 (proxy ARP on the
//! node's veth) and fe80::1 (on the node's veth).
//!
//! node-b always uses a bridge (10.244.2.0/24, fd00:10:244:2::/64) and runs
//! no agent. The nodes are joined by a veth (192.168.56.10/.11,
//! fd00:192:168:56::10/::11) with routes to each other's pod CIDR.
//! hostNetwork pods get their listeners in their node's namespace.

use std::{io, path::PathBuf};

use ipwarden::netns::NetNs;

use super::{
    listen::Listeners,
    manifest::{Cluster, Node, PORTS},
    matrix::Proto,
};

pub const BRIDGE: &str = "kube-bridge";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bridge,
    Routed,
}

pub struct Topology {
    // Field order is drop order: servers stop before their namespaces go.
    listeners: Vec<Listeners>,
    /// Pods with a network namespace of their own, by id ("x/a").
    pub pods: Vec<(String, NetNs)>,
    pub node_a: NetNs,
    pub node_b: NetNs,
}

/// Writes sysctls (paths under /proc/sys) inside `ns`, in-process: /proc/sys/net
/// shows the network namespace of the thread that opens it.
fn sysctl(ns: &NetNs, settings: &[(&str, &str)]) -> io::Result<()> {
    ns.run(|| {
        for (key, value) in settings {
            std::fs::write(format!("/proc/sys/{key}"), value)
                .map_err(|e| io::Error::other(format!("sysctl {key}={value}: {e}")))?;
        }
        Ok(())
    })?
}

pub fn netns_path(ns: &NetNs) -> PathBuf {
    PathBuf::from(format!("/run/netns/{}", ns.name()))
}

fn node_setup(ns: &NetNs) -> io::Result<()> {
    sysctl(
        ns,
        &[
            // Before any interface exists: no duplicate address detection,
            // so IPv6 addresses (link-local ones too) are usable at once.
            ("net/ipv6/conf/default/accept_dad", "0"),
            ("net/ipv6/conf/all/accept_dad", "0"),
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv6/conf/all/forwarding", "1"),
            ("net/bridge/bridge-nf-call-iptables", "1"),
            ("net/bridge/bridge-nf-call-ip6tables", "1"),
            // A REJECT answers with ICMP errors, which the kernel rate
            // limits per destination (6 in a burst, then 1/s); a denied
            // probe must fail fast every time.
            ("net/ipv4/icmp_ratelimit", "0"),
            ("net/ipv4/icmp_msgs_per_sec", "100000"),
            ("net/ipv4/icmp_msgs_burst", "100000"),
            ("net/ipv6/icmp/ratelimit", "0"),
        ],
    )
}

/// A veth pair, `local` in `ns` and `remote` in `peer`: both ends up first,
/// then the addresses (IPv6 ones without duplicate address detection).
/// Not `NetNs::veth_to`, which brings each end up after giving it its
/// addresses: an IPv6 address added while its link has no carrier (the
/// peer still down) misses the first neighbour solicitation, and the first
/// connection to it waits for a retransmission (1 s) on this kernel.
fn veth(
    ns: &NetNs,
    local: (&str, &[&str]),
    peer: &NetNs,
    remote: (&str, &[&str]),
) -> io::Result<()> {
    ns.ip(&[
        "link",
        "add",
        local.0,
        "type",
        "veth",
        "peer",
        "name",
        remote.0,
        "netns",
        peer.name(),
    ])?;
    ns.ip(&["link", "set", local.0, "up"])?;
    peer.ip(&["link", "set", remote.0, "up"])?;
    for (ns, (dev, addrs)) in [(ns, local), (peer, remote)] {
        for addr in addrs {
            let mut args = vec!["addr", "add", addr, "dev", dev];
            if addr.contains(':') {
                args.push("nodad");
            }
            ns.ip(&args)?;
        }
    }
    Ok(())
}

fn bridge(node: &NetNs, which: Node) -> io::Result<()> {
    let n = which.subnet();
    node.ip(&[
        "link",
        "add",
        BRIDGE,
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ])?;
    node.ip(&["addr", "add", &format!("10.244.{n}.1/24"), "dev", BRIDGE])?;
    node.ip(&[
        "addr",
        "add",
        &format!("fd00:10:244:{n}::1/64"),
        "dev",
        BRIDGE,
        "nodad",
    ])?;
    node.ip(&["link", "set", BRIDGE, "up"])
}

impl Topology {
    /// The nodes, the pods, and in each probed pod servers of `protos`.
    pub fn build(cluster: &Cluster, mode: Mode, protos: &[Proto]) -> io::Result<Topology> {
        let node_a = NetNs::new("np-node-a")?;
        let node_b = NetNs::new("np-node-b")?;
        node_setup(&node_a)?;
        node_setup(&node_b)?;
        let (a4, a6) = (Node::A.host_v4(), Node::A.host_v6());
        let (b4, b6) = (Node::B.host_v4(), Node::B.host_v6());
        let a_addrs = [format!("{a4}/24"), format!("{a6}/64")];
        let b_addrs = [format!("{b4}/24"), format!("{b6}/64")];
        veth(
            &node_a,
            ("to-node-b", &[&a_addrs[0], &a_addrs[1]]),
            &node_b,
            ("to-node-a", &[&b_addrs[0], &b_addrs[1]]),
        )?;
        for (ns, peer4, peer6, subnet) in [(&node_a, b4, b6, 2), (&node_b, a4, a6, 1)] {
            ns.ip(&[
                "route",
                "add",
                &format!("10.244.{subnet}.0/24"),
                "via",
                &peer4.to_string(),
            ])?;
            ns.ip(&[
                "-6",
                "route",
                "add",
                &format!("fd00:10:244:{subnet}::/64"),
                "via",
                &peer6.to_string(),
            ])?;
        }
        bridge(&node_b, Node::B)?;
        match mode {
            Mode::Bridge => bridge(&node_a, Node::A)?,
            // Proxy ARP answers for 169.254.1.1 only if node-a routes it
            // elsewhere than back out the asking veth.
            Mode::Routed => node_a.ip(&["route", "add", "default", "via", &b4.to_string()])?,
        }

        let mut topo = Topology {
            listeners: Vec::new(),
            pods: Vec::new(),
            node_a,
            node_b,
        };
        for (i, pod) in cluster.pods.iter().enumerate() {
            let node = match pod.node {
                Node::A => &topo.node_a,
                Node::B => &topo.node_b,
            };
            if pod.host_network && pod.is_probed() {
                let addrs = [pod.v4.into(), pod.v6.into()];
                topo.listeners.push(Listeners::start_on(
                    node,
                    &pod.id(),
                    &addrs,
                    &PORTS,
                    protos,
                )?);
                continue;
            }
            if !pod.has_own_netns() {
                continue;
            }
            let ns = NetNs::new("np-pod")?;
            sysctl(
                &ns,
                &[
                    ("net/ipv6/conf/default/accept_dad", "0"),
                    ("net/ipv6/conf/all/accept_dad", "0"),
                ],
            )?;
            let veth_if = format!("veth{i}");
            let (v4, v6) = (pod.v4.to_string(), pod.v6.to_string());
            let routed = mode == Mode::Routed && pod.node == Node::A;
            if routed {
                let (a4, a6) = (format!("{v4}/32"), format!("{v6}/128"));
                veth(
                    node,
                    (&veth_if, &["fe80::1/64"]),
                    &ns,
                    ("eth0", &[&a4, &a6]),
                )?;
                let proxy_arp = format!("net/ipv4/conf/{veth_if}/proxy_arp");
                // Proxy ARP answers after a random delay up to 0.8 s by default.
                let proxy_delay = format!("net/ipv4/neigh/{veth_if}/proxy_delay");
                sysctl(node, &[(&proxy_arp, "1"), (&proxy_delay, "0")])?;
                node.ip(&["route", "add", &format!("{v4}/32"), "dev", &veth_if])?;
                node.ip(&["-6", "route", "add", &format!("{v6}/128"), "dev", &veth_if])?;
                ns.ip(&[
                    "route",
                    "add",
                    "169.254.1.1",
                    "dev",
                    "eth0",
                    "scope",
                    "link",
                ])?;
                ns.ip(&[
                    "route",
                    "add",
                    "default",
                    "via",
                    "169.254.1.1",
                    "dev",
                    "eth0",
                ])?;
                ns.ip(&[
                    "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
                ])?;
            } else {
                let n = pod.node.subnet();
                let (a4, a6) = (format!("{v4}/24"), format!("{v6}/64"));
                veth(node, (&veth_if, &[]), &ns, ("eth0", &[&a4, &a6]))?;
                node.ip(&["link", "set", &veth_if, "master", BRIDGE])?;
                ns.ip(&["route", "add", "default", "via", &format!("10.244.{n}.1")])?;
                ns.ip(&[
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("fd00:10:244:{n}::1"),
                ])?;
            }
            topo.listeners
                .push(Listeners::start(&ns, &pod.id(), &PORTS, protos)?);
            topo.pods.push((pod.id(), ns));
        }
        Ok(topo)
    }

    /// The network namespace of pod `id`, if it has one.
    pub fn pod_netns(&self, id: &str) -> Option<&NetNs> {
        self.pods.iter().find(|(p, _)| p == id).map(|(_, ns)| ns)
    }
}
