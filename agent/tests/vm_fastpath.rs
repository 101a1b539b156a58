//! The tc fast path's truth table inside the IPVS VM: the agent in allow
//! mode programs real IPVS services, and real connections go through IPVS
//! to a backend pod. An egress-isolated local pod cannot reach a mirrored
//! ExternalIP (outside the service ranges) unless a policy allows it; a
//! pod that is not isolated can; a source outside the LoadBalancer's
//! `loadBalancerSourceRanges` is refused and one inside is not; each with
//! the `ipwarden-svip-prt` member present and flushed, with no agent
//! running (the pinned program and maps alone) and after a restart.
//! Every cell is checked by the answer (the backend's name, or a refusal,
//! never a timeout) and by IPVS's connection entries (`ipvsadm -Lnc`): an
//! answered connection has one from its source port, a refused one made
//! none. (`ipvsadm -Ln --stats` lags: kernel 6.1 folds the per-CPU
//! counters into it only every two seconds.) Beside it, the
//! egress map's named fields as bpftool and `ipwarden bpf dump` show
//! them, and a real ICMPv6 Packet Too Big to an IPv6 VIP that IPVS serves.

use std::{
    collections::BTreeSet,
    io::{ErrorKind, Read},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    sync::atomic::{AtomicU16, Ordering},
    time::Duration,
};

#[path = "support/icmp6.rs"]
mod icmp6;
use icmp6::send_packet_too_big;
use ipwarden::{
    bpf::sources::{bit_of, source_key},
    lab::Lab,
    netns::{privileged, NetNs},
};
use ipwarden_common::names;

mod support;

use support::*;

const EXTERNAL: &str = "203.0.113.10:80";
const LOAD_BALANCER: &str = "198.51.100.7:80";
/// The isolated pod (the lab's pod1) and a pod that is not (added here).
const POD_A: &str = "10.244.1.2";
const POD_B: &str = "10.244.3.2";

/// Pods a (pod1, isolated by `egress`), b (pod3) and backend (pod2) on
/// node-a; an ExternalIP Service and a LoadBalancer restricted to the
/// lab client's subnet, both served by the backend only.
fn cluster(egress: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Node
metadata: {{name: node-a}}
status: {{addresses: [{{type: InternalIP, address: 10.0.1.1}}]}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: x}}
---
apiVersion: v1
kind: Pod
metadata: {{name: a, namespace: x, labels: {{app: a}}}}
spec: {{nodeName: node-a, containers: [{{name: c}}]}}
status: {{phase: Running, podIP: {POD_A}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: backend, namespace: x, labels: {{app: backend}}}}
spec: {{nodeName: node-a, containers: [{{name: c}}]}}
status: {{phase: Running, podIP: 10.244.2.2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: b, namespace: x, labels: {{app: b}}}}
spec: {{nodeName: node-a, containers: [{{name: c}}]}}
status: {{phase: Running, podIP: {POD_B}}}
---
apiVersion: v1
kind: Service
metadata: {{name: ext, namespace: x}}
spec:
  clusterIP: 10.96.0.10
  externalIPs: [203.0.113.10]
  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: lb, namespace: x}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  loadBalancerSourceRanges: [10.0.1.0/24]
  ports: [{{name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}}]
status: {{loadBalancer: {{ingress: [{{ip: 198.51.100.7}}]}}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: ext-1, namespace: x, labels: {{kubernetes.io/service-name: ext}}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints: [{{addresses: [10.244.2.2], conditions: {{ready: true}}, nodeName: node-a}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: lb-1, namespace: x, labels: {{kubernetes.io/service-name: lb}}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints: [{{addresses: [10.244.2.2], conditions: {{ready: true}}, nodeName: node-a}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: a-out, namespace: x}}
spec: {{podSelector: {{matchLabels: {{app: a}}}}, policyTypes: [Egress], egress: {egress}}}
"#
    )
}

const DENY_ALL: &str = "[]";
/// The ExternalIP at the VIP (INPUT), and the backend it is sent to after
/// IPVS (OUTPUT): pod egress is checked at both, as in kube-router.
const ALLOW_EXTERNAL: &str = "[{to: [{ipBlock: {cidr: 203.0.113.10/32}}], ports: [{port: 80}]}, \
     {to: [{podSelector: {matchLabels: {app: backend}}}], ports: [{port: 8080}]}]";

/// The backend but not the VIP: after IPVS, OUTPUT's check of a's egress
/// passes, so only INPUT's check at the VIP refuses a's connection; a
/// mark that skipped it would let a through to the backend.
const ALLOW_BACKEND_ONLY: &str =
    "[{to: [{podSelector: {matchLabels: {app: backend}}}], ports: [{port: 8080}]}]";

/// The lab with a third pod namespace (b, on vp3) as a client, and the
/// cluster's manifests written for `egress`.
struct FastLab {
    lab: Lab,
    pod_b: NetNs,
}

fn fast_lab(egress: &str) -> FastLab {
    let lab = Lab::new(&cluster(egress)).unwrap();
    let pod_b = NetNs::new("pod3").unwrap();
    lab.node
        .veth_to(
            &pod_b,
            ("vp3", &["10.244.3.1/24"]),
            ("eth0", &[&format!("{POD_B}/24")]),
        )
        .unwrap();
    pod_b
        .ip(&["route", "add", "default", "via", "10.244.3.1"])
        .unwrap();
    FastLab { lab, pod_b }
}

impl FastLab {
    fn set_policy(&self, egress: &str) {
        std::fs::write(self.lab.manifests.join("cluster.yaml"), cluster(egress)).unwrap();
    }

    /// The agent in allow mode, with no resync, audit or heal while a
    /// test runs (a flushed member stays flushed); after its first pass.
    fn agent(&self) -> Agent {
        Agent::start(
            &self.lab,
            &[
                "--bpf-mode",
                "allow",
                "--audit-interval",
                "1h",
                "--ipvs-sync-period",
                "1h",
                "--iptables-sync-period",
                "1h",
            ],
        )
    }

    fn flush_members(&self) {
        self.lab
            .node
            .output("ipset", &["flush", "ipwarden-svip-prt"])
            .unwrap();
    }
}

/// What the node holds, for a failure's message.
fn node_state(lab: &Lab) -> String {
    [
        ("ipvsadm", &["-Ln"][..]),
        ("ipvsadm", &["-Lnc"]),
        ("ipset", &["list", "-t"]),
        ("iptables-save", &["-c", "-t", "filter"]),
        ("ip6tables-save", &["-c", "-t", "filter"]),
        (
            "ip",
            &["route", "show", "table", "local", "dev", "ipwarden0"],
        ),
    ]
    .iter()
    .map(|(cmd, args)| {
        let out = lab.node.output(cmd, args).unwrap_or_else(|e| e.to_string());
        format!("$ {cmd} {}\n{out}", args.join(" "))
    })
    .collect::<Vec<_>>()
    .join("\n")
}

/// The sources of IPVS's connection entries for the virtual service `vip`
/// (`ipvsadm -Lnc`: an entry is made when IPVS schedules the SYN, and
/// stays for a while after the close).
fn ipvs_sources(lab: &Lab, vip: &str) -> BTreeSet<String> {
    let out = lab.node.output("ipvsadm", &["-Lnc"]).unwrap();
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 6 && f[0] == "TCP" && f[4] == vip).then(|| f[3].to_string())
        })
        .collect()
}

/// A client port that none of IPVS's entries for the VIP uses: a reused
/// port would renew an old entry, and the new connection would leave no
/// new one to see.
fn unused_source_port(entries: &BTreeSet<String>) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(20_000);
    loop {
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        let suffix = format!(":{port}");
        if !entries.iter().any(|e| e.ends_with(&suffix)) {
            return port;
        }
    }
}

/// A TCP connection to `to` from the local port `port` (10 s to connect:
/// Linux bounds a blocking connect by the send timeout).
fn connect_from(port: u16, to: SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
        SockaddrStorage,
    };
    use std::os::fd::AsRawFd;
    let (family, any) = match to {
        SocketAddr::V4(_) => (AddressFamily::Inet, Ipv4Addr::UNSPECIFIED.into()),
        SocketAddr::V6(_) => (AddressFamily::Inet6, Ipv6Addr::UNSPECIFIED.into()),
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let timeout = nix::sys::time::TimeVal::new(10, 0);
    setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
    bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(any, port)),
    )?;
    connect(fd.as_raw_fd(), &SockaddrStorage::from(to))?;
    Ok(TcpStream::from(fd))
}

/// One connection from `client` to `to`: true when the backend answered
/// (and IPVS has the connection's entry), false when refused (and IPVS
/// made no new entry for it). Anything else (a timeout) fails the test:
/// a blocked cell must be refused, as the REJECT does.
fn reaches(lab: &Lab, client: &NetNs, to: &str) -> bool {
    let before = ipvs_sources(lab, to);
    let addr: SocketAddr = to.parse().unwrap();
    let port = unused_source_port(&before);
    let attempt = client
        .run(|| -> std::io::Result<(String, SocketAddr)> {
            let mut s = connect_from(port, addr)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok((answer, s.local_addr()?))
        })
        .unwrap();
    let new: Vec<String> = ipvs_sources(lab, to).difference(&before).cloned().collect();
    match attempt {
        Ok((answer, local)) => {
            assert_eq!(answer, "pod2", "{to} answered by the backend");
            assert!(
                new.contains(&local.to_string()),
                "{to}: answered, but IPVS has no entry from {local}: {}",
                node_state(lab)
            );
            true
        }
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            assert!(new.is_empty(), "{to}: refused, but IPVS scheduled {new:?}");
            false
        }
        Err(e) => panic!(
            "{to}: neither answered nor refused: {e}\n{}",
            node_state(lab)
        ),
    }
}

/// The truth table; fails naming every wrong cell.
fn check(fl: &FastLab, a_allowed: bool, when: &str) {
    let lab = &fl.lab;
    let cells = [
        (
            "isolated pod a -> ExternalIP",
            a_allowed,
            lab.pod(1),
            EXTERNAL,
        ),
        ("pod b -> ExternalIP", true, &fl.pod_b, EXTERNAL),
        (
            "pod b (outside the ranges) -> LB",
            false,
            &fl.pod_b,
            LOAD_BALANCER,
        ),
        ("isolated pod a -> LB", false, lab.pod(1), LOAD_BALANCER),
        ("client in range -> LB", true, &lab.client, LOAD_BALANCER),
    ];
    let wrong: Vec<_> = cells
        .iter()
        .map(|(case, want, from, to)| (case, *want, reaches(lab, from, to)))
        .filter(|(_, want, seen)| want != seen)
        .collect();
    assert!(
        wrong.is_empty(),
        "{when}: (case, expected, seen) {wrong:?}\n{}",
        node_state(lab)
    );
}

/// Packets the first rule of INPUT (the mark ACCEPT) took.
fn fast_accepts(lab: &Lab) -> u64 {
    let save = lab
        .node
        .output("iptables-save", &["-c", "-t", "filter"])
        .unwrap();
    let line = save
        .lines()
        .find(|l| l.contains("ipwarden:first") && l.starts_with('['))
        .unwrap_or_else(|| panic!("no mark ACCEPT: {save}"));
    line[1..].split(':').next().unwrap().parse().unwrap()
}

/// IPW_EGRESS_SRC with bpftool's BTF names: exactly pod a, as
/// {key: {family, _pad, addr}, value: {reasons}}; its bit set in
/// IPW_SRC_BITS.
fn check_egress_map_by_bpftool(lab: &Lab) {
    let dump = dump_pinned(lab, names::MAP_EGRESS_SOURCES);
    let entries = dump.as_array().unwrap();
    assert_eq!(entries.len(), 1, "only pod a is restricted: {dump}");
    let f = &entries[0]["formatted"];
    let fields = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(fields(&f["key"]), ["_pad", "addr", "family"], "{f}");
    assert_eq!(fields(&f["value"]), ["reasons"], "{f}");
    assert_eq!(f["key"]["family"], 2, "AF_INET: {f}");
    let addr: Vec<u64> = f["key"]["addr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    assert_eq!(addr[..4], [10, 244, 1, 2], "{f}");
    assert!(addr[4..].iter().all(|b| *b == 0), "{f}");
    assert_eq!(f["value"]["reasons"], 1, "egress restricted: {f}");

    let (word, bit) = bit_of(&source_key(&POD_A.parse().unwrap()));
    let path = lab.bpffs.path().join("maps").join(names::MAP_SOURCE_BITS);
    let mut args = vec![
        "-j",
        "map",
        "lookup",
        "pinned",
        path.to_str().unwrap(),
        "key",
    ];
    let key: Vec<String> = word.to_le_bytes().iter().map(|b| b.to_string()).collect();
    args.extend(key.iter().map(String::as_str));
    let out = lab.node.output("bpftool", &args).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bits = v["formatted"]["value"]
        .as_u64()
        .or_else(|| v["value"].as_u64())
        .unwrap_or_else(|| panic!("no word {word}: {v}"));
    assert_eq!((bits >> bit) & 1, 1, "pod a's bit {word}/{bit}: {v}");
}

/// `ipwarden bpf dump --json`: the restricted sources by address, and the
/// two members by name, the LoadBalancer's left to the chain.
fn check_bpf_dump(lab: &Lab) {
    let dump = bpf_dump(lab);
    assert_eq!(dump["mode"], "allow", "{dump}");
    assert_eq!(
        dump["egress_restricted_sources"],
        serde_json::json!([POD_A]),
        "{dump}"
    );
    let row = |member: &str| {
        dump["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["member"] == member)
            .unwrap_or_else(|| panic!("{member} not in {dump}"))
            .clone()
    };
    let ext = row("203.0.113.10,tcp:80");
    assert_eq!(ext["service"], "x/ext", "{ext}");
    assert_eq!(ext["chain_decides"], false, "{ext}");
    let lb = row("198.51.100.7,tcp:80");
    assert_eq!(lb["service"], "x/lb", "{lb}");
    assert_eq!(lb["chain_decides"], true, "{lb}");
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_the_fast_path_accepts_only_what_the_chains_would_through_ipvs() {
    if !privileged("vm_the_fast_path_accepts_only_what_the_chains_would_through_ipvs") {
        return;
    }
    let fl = fast_lab(DENY_ALL);
    let agent = fl.agent();
    let first = fast_accepts(&fl.lab);
    check(&fl, false, "members intact");
    assert!(
        fast_accepts(&fl.lab) > first,
        "pod b's and the client's packets took the first rule"
    );
    check_egress_map_by_bpftool(&fl.lab);
    check_bpf_dump(&fl.lab);
    fl.flush_members();
    check(&fl, false, "members flushed: only the marks accept");

    // No agent: the pinned program and maps alone, the member still
    // flushed.
    agent.kill();
    check(&fl, false, "no agent, flushed");

    // A policy lets a reach the ExternalIP: its packets pass its egress
    // rules, then the checked mark (flushed) or the set (intact) accepts.
    fl.set_policy(ALLOW_EXTERNAL);
    let agent = fl.agent();
    check(&fl, true, "a allowed, restarted, members intact");
    fl.flush_members();
    check(&fl, true, "a allowed, members flushed");

    // Across another restart, a policy that allows the backend but not
    // the VIP: the adopted maps never let a's traffic take the first rule,
    // which would skip the one check that refuses it.
    agent.kill();
    fl.set_policy(ALLOW_BACKEND_ONLY);
    let _agent = fl.agent();
    check(&fl, false, "restarted, members intact");
    fl.flush_members();
    check(&fl, false, "restarted, members flushed");
    check_egress_map_by_bpftool(&fl.lab);
}

/// An IPv6 Service with an ExternalIP, served by pod2 over IPv6 on the
/// lab's port that answers with the peer's address (the one listening on
/// IPv6).
const V6_CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 10.0.1.1}, {type: InternalIP, address: "fd00:1::1"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web6, namespace: shop}
spec:
  clusterIP: "fd00:96::10"
  clusterIPs: ["fd00:96::10"]
  ipFamilies: [IPv6]
  externalIPs: ["2001:db8:10::10"]
  ports: [{name: http, port: 80, targetPort: 8081, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web6-1, namespace: shop, labels: {kubernetes.io/service-name: web6}}
addressType: IPv6
ports: [{name: http, port: 8081, protocol: TCP}]
endpoints: [{addresses: ["fd00:244:2::2"], conditions: {ready: true}, nodeName: node-a}]
"#;

/// Packets of the IPWARDEN-SERVICES rule of `ip6tables-save -c` that
/// contains `matches`.
fn services_packets(save: &str, matches: &str) -> u64 {
    let line = save
        .lines()
        .find(|l| l.contains("-A IPWARDEN-SERVICES") && l.contains(matches))
        .unwrap_or_else(|| panic!("no service rule with {matches}: {save}"));
    line[1..].split(':').next().unwrap().parse().unwrap()
}

/// Path MTU discovery to an IPv6 ExternalIP that IPVS serves: a real
/// Packet Too Big from the client meets the service chain's ICMPv6
/// accept, not its REJECT.
#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_a_packet_too_big_to_an_ipv6_vip_served_by_ipvs_is_accepted() {
    if !privileged("vm_a_packet_too_big_to_an_ipv6_vip_served_by_ipvs_is_accepted") {
        return;
    }
    let lab = Lab::dual_stack(V6_CLUSTER).unwrap();
    let _agent = Agent::start(&lab, &["--bpf-mode", "allow"]);
    let vip = "[2001:db8:10::10]:80";
    let answer = tcp_answer(&lab, vip.parse().unwrap());
    assert!(
        answer.as_ref().is_ok_and(|a| !a.is_empty()),
        "{answer:?}\n{}",
        node_state(&lab)
    );
    let sources = ipvs_sources(&lab, vip);
    assert!(
        sources.iter().any(|s| s.starts_with("[fd00:1::2]:")),
        "IPVS served the client: {sources:?}"
    );

    let save = |lab: &Lab| {
        lab.node
            .output("ip6tables-save", &["-c", "-t", "filter"])
            .unwrap()
    };
    let reject = "-j REJECT";
    let ptb = "--icmpv6-type 2 -j ACCEPT";
    let before = save(&lab);
    lab.client
        .run(|| {
            send_packet_too_big(
                "fd00:1::2".parse().unwrap(),
                "2001:db8:10::10".parse().unwrap(),
            )
        })
        .unwrap();
    let after = save(&lab);
    assert_eq!(
        services_packets(&after, ptb),
        services_packets(&before, ptb) + 1,
        "the Packet Too Big is accepted: {after}"
    );
    assert_eq!(
        services_packets(&after, reject),
        services_packets(&before, reject),
        "and not refused: {after}"
    );
}
