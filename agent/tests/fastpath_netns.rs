//! The mark ACCEPT first in INPUT, on real connections (allow mode, the
//! shipped rules written by both controllers, the program attached to the
//! node's pod-facing veths): an egress-isolated local pod cannot reach a
//! mirrored ExternalIP outside the service ranges unless a policy allows
//! it, a pod that is not isolated can, a source outside
//! `loadBalancerSourceRanges` is refused and one inside is not; with the
//! member in `ipwarden-svip-prt` and flushed from it (then only the marks
//! accept), and the same after the agent's maps and program are reloaded
//! from their pins. INPUT decides here, so the VIPs are held on
//! `ipwarden0` with a listener on the node and no IPVS is needed.

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    time::Duration,
};

use ipwarden::{
    bpf::{PinLayout, ProgramLogLevel, TcProgram},
    cluster::{manifests, HostInfo, Snapshot},
    controllers::{policies, services},
    desired::Table,
    kernel::{ipset::IpsetClient, iptables},
    netns::{privileged, BpfFs, NetNs},
    reconcile::{policies as reconcile_policies, services_owner, SERVICES_OWNER},
    store::SetStore,
};
use ipwarden_common::{names::DEFAULT_MARK, Mode};

const EXTERNAL: &str = "192.0.2.10:80";
const LOAD_BALANCER: &str = "198.51.100.7:80";

/// Pods a (isolated by `egress`) and b on this node, a Service with an
/// ExternalIP outside the service ranges and a LoadBalancer restricted to
/// 203.0.113.0/24.
fn cluster(egress: &str) -> Snapshot {
    let yaml = format!(
        r#"
apiVersion: v1
kind: Node
metadata: {{name: node-a}}
status: {{addresses: [{{type: InternalIP, address: 10.244.1.1}}]}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: x}}
---
apiVersion: v1
kind: Pod
metadata: {{name: a, namespace: x, labels: {{app: a}}}}
spec: {{nodeName: node-a, containers: [{{name: c}}]}}
status: {{phase: Running, podIP: 10.244.1.2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: b, namespace: x, labels: {{app: b}}}}
spec: {{nodeName: node-a, containers: [{{name: c}}]}}
status: {{phase: Running, podIP: 10.244.2.2}}
---
apiVersion: v1
kind: Service
metadata: {{name: ext, namespace: x}}
spec: {{clusterIP: 10.96.0.10, externalIPs: [192.0.2.10], ports: [{{name: http, port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: lb, namespace: x}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  loadBalancerSourceRanges: [203.0.113.0/24]
  ports: [{{name: http, port: 80, nodePort: 30080}}]
status: {{loadBalancer: {{ingress: [{{ip: 198.51.100.7}}]}}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: ext-1, namespace: x, labels: {{kubernetes.io/service-name: ext}}}}
addressType: IPv4
ports: [{{name: http, port: 80, protocol: TCP}}]
endpoints: [{{addresses: [10.244.9.9], conditions: {{ready: true}}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: lb-1, namespace: x, labels: {{kubernetes.io/service-name: lb}}}}
addressType: IPv4
ports: [{{name: http, port: 80, protocol: TCP}}]
endpoints: [{{addresses: [10.244.9.9], conditions: {{ready: true}}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: a-out, namespace: x}}
spec: {{podSelector: {{matchLabels: {{app: a}}}}, policyTypes: [Egress], egress: {egress}}}
"#
    );
    let mut loaded = manifests::Loaded::default();
    manifests::parse_text(Path::new("case.yaml"), &yaml, &mut loaded);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let host = HostInfo {
        node_name: "node-a".into(),
        local_addresses: ["10.244.1.1", "10.244.2.1", "203.0.113.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect(),
    };
    Snapshot::from_objects(loaded.objects, host)
}

const DENY_ALL: &str = "[]";
const ALLOW_EXTERNAL: &str = "[{to: [{ipBlock: {cidr: 192.0.2.10/32}}], ports: [{port: 80}]}]";

/// The node, its three client namespaces (pod a, pod b, a client in the
/// LoadBalancer's source range) and the pins.
struct Lab {
    node: NetNs,
    a: NetNs,
    b: NetNs,
    in_range: NetNs,
    _fs: BpfFs,
    pins: PinLayout,
    _listener: TcpListener,
}

fn lab() -> Lab {
    let node = NetNs::new("ipw-fp").unwrap();
    let mut clients = Vec::new();
    for (i, (here, there)) in [
        ("10.244.1.1", "10.244.1.2"),
        ("10.244.2.1", "10.244.2.2"),
        ("203.0.113.1", "203.0.113.5"),
    ]
    .into_iter()
    .enumerate()
    {
        let ns = NetNs::new("ipw-fp-client").unwrap();
        node.veth_to(
            &ns,
            (&format!("v{i}"), &[&format!("{here}/24")]),
            ("eth0", &[&format!("{there}/24")]),
        )
        .unwrap();
        ns.ip(&["route", "add", "default", "via", here]).unwrap();
        clients.push(ns);
    }
    // A port-less bridge, as the agent makes where the dummy driver is
    // missing, holding the VIPs.
    node.ip(&["link", "add", "ipwarden0", "type", "bridge"])
        .unwrap();
    for vip in ["192.0.2.10/32", "198.51.100.7/32"] {
        node.ip(&["addr", "add", vip, "dev", "ipwarden0"]).unwrap();
    }
    node.ip(&["link", "set", "ipwarden0", "up"]).unwrap();
    let listener = node
        .run(|| TcpListener::bind("0.0.0.0:80"))
        .unwrap()
        .unwrap();
    let fs = BpfFs::new("fastpath").unwrap();
    let pins = PinLayout::new(fs.path());
    let in_range = clients.pop().unwrap();
    let b = clients.pop().unwrap();
    let a = clients.pop().unwrap();
    Lab {
        node,
        a,
        b,
        in_range,
        _fs: fs,
        pins,
        _listener: listener,
    }
}

/// An agent's start: the maps adopted from the pins (or created), the
/// program attached to the client-facing veths (a pinned attachment
/// replaced make-before-break), the store with the mirror and the sources.
fn start(lab: &Lab) -> (TcProgram, SetStore) {
    lab.node
        .run(|| {
            let (mut dp, _) = TcProgram::load_persistent(
                &ipwarden::bpf::object_path_from_env(),
                ProgramLogLevel::Info,
                &lab.pins,
            )
            .unwrap();
            dp.configure(Mode::Allow, DEFAULT_MARK).unwrap();
            let store = SetStore::new(IpsetClient::new().unwrap());
            store.register(services_owner()).unwrap();
            store
                .register(reconcile_policies::policies_owner())
                .unwrap();
            store.set_mirror(Box::new(dp.take_mirror().unwrap()));
            store.set_source_sink(Box::new(dp.take_sources().unwrap()));
            for iface in ["v0", "v1", "v2"] {
                dp.attach_ingress_persistent(iface, &lab.pins).unwrap();
            }
            (dp, store)
        })
        .unwrap()
}

/// One pass of both controllers, in a pass's order.
fn pass(lab: &Lab, store: &SetStore, snap: &Snapshot) {
    let svc = services::desired_with(
        snap,
        &services::Options {
            bpf: Some(services::BpfRules {
                mode: Mode::Allow,
                mark: DEFAULT_MARK,
            }),
            ..Default::default()
        },
    );
    assert!(svc.problems.is_empty(), "{:?}", svc.problems);
    let pol = policies::desired(snap, &policies::Options::default());
    assert!(pol.problems.is_empty(), "{:?}", pol.problems);
    lab.node
        .run(|| {
            store
                .apply_with_services(
                    SERVICES_OWNER,
                    svc.sets.clone(),
                    svc.member_services.clone(),
                )
                .unwrap();
            for plan in svc.iptables.iter().filter(|p| p.table == Table::Filter) {
                iptables::apply(plan).unwrap();
            }
            reconcile_policies::apply(store, &pol).unwrap();
        })
        .unwrap();
}

/// Connects from `client` to `to`: true if accepted, false if refused.
fn reaches(client: &NetNs, to: &str) -> bool {
    let to: SocketAddr = to.parse().unwrap();
    let result = client
        .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(10)))
        .unwrap();
    match result {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => false,
        Err(e) => panic!("neither accepted nor refused: {e}"),
    }
}

/// The whole truth table, as (case, expected, seen).
fn table(lab: &Lab, a_allowed: bool) -> Vec<(&'static str, bool, bool)> {
    vec![
        (
            "isolated pod a -> ExternalIP",
            a_allowed,
            reaches(&lab.a, EXTERNAL),
        ),
        ("pod b -> ExternalIP", true, reaches(&lab.b, EXTERNAL)),
        (
            "pod b (outside the ranges) -> LB",
            false,
            reaches(&lab.b, LOAD_BALANCER),
        ),
        (
            "isolated pod a -> LB",
            false,
            reaches(&lab.a, LOAD_BALANCER),
        ),
        (
            "client in range -> LB",
            true,
            reaches(&lab.in_range, LOAD_BALANCER),
        ),
    ]
}

fn check(lab: &Lab, a_allowed: bool, when: &str) {
    let t = table(lab, a_allowed);
    let wrong: Vec<_> = t.iter().filter(|(_, want, seen)| want != seen).collect();
    assert!(wrong.is_empty(), "{when}: {wrong:?}");
}

fn flush_members(lab: &Lab) {
    lab.node
        .output("ipset", &["flush", "ipwarden-svip-prt"])
        .unwrap();
}

/// Packets the first-rule mark ACCEPT took, from iptables-save -c.
fn fast_accepts(lab: &Lab) -> u64 {
    let save = lab
        .node
        .output("iptables-save", &["-c", "-t", "filter"])
        .unwrap();
    let line = save
        .lines()
        .find(|l| l.contains("ipwarden:first") && l.starts_with('['))
        .unwrap_or_else(|| panic!("no mark ACCEPT: {save}"));
    line.trim_start_matches('[')
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_fast_path_accepts_only_what_the_chains_would_before_and_after_a_restart() {
    if !privileged("the_fast_path_accepts_only_what_the_chains_would") {
        return;
    }
    let lab = lab();
    let (dp, store) = start(&lab);
    pass(&lab, &store, &cluster(DENY_ALL));
    check(&lab, false, "members intact");
    assert!(fast_accepts(&lab) > 0, "pod b's SYN took the first rule");
    flush_members(&lab);
    check(&lab, false, "members flushed: only the marks accept");

    // A policy lets a reach the ExternalIP: its packets pass its egress
    // rules, then the checked mark accepts them (flushed) or the set does.
    pass(&lab, &store, &cluster(ALLOW_EXTERNAL));
    check(&lab, true, "a allowed, members intact");
    flush_members(&lab);
    check(&lab, true, "a allowed, members flushed");

    // The agent goes away and comes back: its pinned program and maps
    // keep answering meanwhile, and adopted, before any pass.
    pass(&lab, &store, &cluster(DENY_ALL));
    flush_members(&lab);
    drop((dp, store));
    check(&lab, false, "no agent, flushed");
    let (_dp, store) = start(&lab);
    check(&lab, false, "restarted, before a pass, flushed");
    pass(&lab, &store, &cluster(DENY_ALL));
    flush_members(&lab);
    check(&lab, false, "restarted, after a pass, flushed");
}
