//! The daemon on the API server, inside the IPVS VM: the agent binary runs
//! in the lab's node namespace with `--kubeconfig`, its real kube client
//! talking to the fake API server (tests/support/fake_apiserver.rs), which
//! this process serves on the node namespace's loopback. Oracles: ipvsadm,
//! ipset, ip, iptables-save, the agent's /metrics and /readyz, and real
//! TCP connections from the lab's client.
//!
//! - nothing is programmed (and /readyz fails) while one kind's list is
//!   held; everything once it is released;
//! - a Service added, edited (port, externalIP) and deleted reaches IPVS,
//!   `ipwarden-svip-prt` and `ipwarden0` through watch events;
//! - the server gone leaves the kernel as it was; an object deleted during
//!   the outage (history compacted: 410 Gone) is removed after the relist;
//! - SIGTERM leaves IPVS, the sets and the chains in place;
//! - kube-router #1732 with the real controllers: Pods and NetworkPolicies
//!   churn (the policy controller writes its sets all the while) while a
//!   Service gains and loses a second ExternalIP; its first ExternalIP
//!   never leaves `ipwarden-svip-prt` and no connection to it fails.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "support/lab_apiserver.rs"]
mod lab_apiserver;
mod support;

use std::{
    collections::BTreeSet,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use fake_apiserver::Res;
use ipwarden::{
    kernel::ipset::{IpsetClient, SetName},
    netns::{checked_output, privileged},
};
use lab_apiserver::{is_list, Kube, WAIT};
use serde_json::{json, Value};
use support::*;

/// Short periods so full syncs come quickly; the debounce stays short; the
/// auditor (which would heal a lost member) stays out of the way.
const FAST: &[&str] = &[
    "--bpf-mode",
    "off",
    "--ipvs-sync-period",
    "2s",
    "--iptables-sync-period",
    "2s",
    "--min-sync-period",
    "100ms",
    "--audit-interval",
    "1h",
];

/// For the seed: full syncs every 10 s, partial ones in between (a sync
/// takes seconds under TCG, so with 2 s periods every sync would be full).
const SEED: &[&str] = &[
    "--bpf-mode",
    "off",
    "--ipvs-sync-period",
    "10s",
    "--iptables-sync-period",
    "10s",
    "--min-sync-period",
    "100ms",
    "--audit-interval",
    "1h",
];

const NS: &str = "shop";
const SVIP_PRT: &str = "ipwarden-svip-prt";

/// A query parameter of a logged request.
fn param(request: &str, name: &str) -> Option<String> {
    let query = request.split_once('?')?.1;
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

fn is_watch(request: &str, res: Res) -> bool {
    request.starts_with(&format!("GET {}?", res.path())) && request.contains("watch=true")
}

// ---------------------------------------------------------------------
// Objects, as a user writes them; the server adds the rest.

fn namespace() -> Value {
    json!({"metadata": {"name": NS, "labels": {"kubernetes.io/metadata.name": NS}}})
}

fn node() -> Value {
    json!({"metadata": {"name": "node-a"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.1.1"}]}})
}

fn service(name: &str, cluster_ip: &str, external_ips: &[&str], port: u16) -> Value {
    json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
            "externalIPs": external_ips,
            "ports": [{"name": "http", "port": port, "targetPort": 8080, "protocol": "TCP"}]}
    })
}

/// The slice of `service`: both lab backends.
fn slice(service: &str) -> Value {
    json!({
        "metadata": {"name": format!("{service}-1"), "namespace": NS,
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.1.2"], "conditions": {"ready": true}, "nodeName": "node-a"},
            {"addresses": ["10.244.2.2"], "conditions": {"ready": true}, "nodeName": "node-a"}]
    })
}

/// A running pod. None of them is a lab backend: the policies below must
/// not isolate the pods the Services send traffic to.
fn pod(name: &str, ip: &str, node: &str, labels: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    })
}

/// Ingress to the `app=db` pods from the `role=client` pods on `port`:
/// one chain and one source set (`IPW-SRC-…`) of its own.
fn policy(name: &str, port: u16) -> Value {
    json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                "ports": [{"protocol": "TCP", "port": port}]}]}
    })
}

/// A db pod on this node (isolated by the policies; no interface behind
/// its address).
fn db_pod(i: usize) -> Value {
    pod(
        &format!("db-{i}"),
        &format!("10.244.9.{}", 10 + i),
        "node-a",
        json!({"app": "db"}),
    )
}

/// A client pod on another node, with or without `role=client`.
fn client_pod(i: usize, client: bool) -> Value {
    let labels = if client {
        json!({"app": "client", "role": "client"})
    } else {
        json!({"app": "client"})
    };
    pod(
        &format!("client-{i}"),
        &format!("10.244.8.{}", 10 + i),
        "node-b",
        labels,
    )
}

/// The namespace, the Node, and Service `web` (ClusterIP 10.96.0.10,
/// externalIP 203.0.113.10, TCP 80 -> both backends on 8080).
fn cluster(kube: &Kube) {
    kube.apply(Res::Namespaces, namespace());
    kube.apply(Res::Nodes, node());
    kube.apply(
        Res::Services,
        service("web", "10.96.0.10", &["203.0.113.10"], 80),
    );
    kube.apply(Res::EndpointSlices, slice("web"));
}

/// One policy isolating one db pod, a client pod it admits: policy sets
/// and chains to see.
fn policies(kube: &Kube) {
    kube.apply(Res::Pods, db_pod(0));
    kube.apply(Res::Pods, client_pod(0, true));
    kube.apply(Res::NetworkPolicies, policy("np-0", 5000));
}

// ---------------------------------------------------------------------
// The kernel, read with the standard tools.

/// `program args` in the node namespace, started from a thread inside it
/// (cheaper than `ip netns exec` under TCG, and these tools need no /sys).
fn tool(lab: &Lab, program: &str, args: &[&str]) -> std::io::Result<String> {
    lab.node
        .run(|| checked_output(Command::new(program).args(args)))?
}

/// `ipvsadm -Ln`, each line's words, without the connection counters
/// (traffic changes them).
fn ipvs_table(lab: &Lab) -> String {
    let out = tool(lab, "ipvsadm", &["-Ln"]).unwrap();
    out.lines()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let keep = if words.first() == Some(&"->") {
                4
            } else {
                words.len()
            };
            words[..keep.min(words.len())].join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The virtual services: "TCP 203.0.113.10:80".
fn ipvs_services(lab: &Lab) -> BTreeSet<String> {
    ipvs_table(lab)
        .lines()
        .filter(|l| l.starts_with("TCP ") || l.starts_with("UDP "))
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// The output of `program args`, empty when it failed saying
/// `absent` (no such set, no such device); any other failure panics, so
/// that a broken tool never reads as "gone".
fn tool_or_absent(lab: &Lab, program: &str, args: &[&str], absent: &str) -> String {
    match tool(lab, program, args) {
        Ok(out) => out,
        Err(e) if e.to_string().contains(absent) => String::new(),
        Err(e) => panic!("{program} {args:?}: {e}"),
    }
}

/// `ipset save SET`'s members; empty when there is no such set.
fn members(lab: &Lab, set: &str) -> BTreeSet<String> {
    tool_or_absent(lab, "ipset", &["save", set], "does not exist")
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("add {set} ")))
        .map(str::to_string)
        .collect()
}

/// Names of the sets ipwarden owns (`ipwarden-*`, `IPW-*`, their v6 twins).
fn our_sets(lab: &Lab) -> Vec<String> {
    tool(lab, "ipset", &["list", "-n"])
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches("inet6:"))
        .filter(|l| l.starts_with("ipwarden") || l.starts_with("IPW-"))
        .map(str::to_string)
        .collect()
}

/// `ipset save` of ipwarden's sets, sorted.
fn our_sets_saved(lab: &Lab) -> Vec<String> {
    let mut lines: Vec<String> = tool(lab, "ipset", &["save"])
        .unwrap()
        .lines()
        .filter(|l| l.contains(" ipwarden") || l.contains(" IPW-") || l.contains(" inet6:"))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// `iptables-save` of filter and nat, without comments and counters.
fn rules(lab: &Lab) -> String {
    let mut out = String::new();
    for table in ["filter", "nat"] {
        let save = tool(lab, "iptables-save", &["-t", table]).unwrap();
        for l in save.lines().filter(|l| !l.starts_with('#')) {
            let l = match l.strip_prefix(':') {
                Some(chain) => format!(":{}", chain.split(" [").next().unwrap_or(chain)),
                None => l.to_string(),
            };
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

/// Everything the agent programs, as the tools print it.
#[derive(Debug, PartialEq, Eq)]
struct Programmed {
    ipvs: String,
    sets: Vec<String>,
    vips: BTreeSet<String>,
    rules: String,
}

impl Programmed {
    fn read(lab: &Lab) -> Programmed {
        Programmed {
            ipvs: ipvs_table(lab),
            sets: our_sets_saved(lab),
            vips: support::vip_routes(lab),
            rules: rules(lab),
        }
    }
}

/// `ip:port` is a virtual service, a member of svip-prt and `ip` a VIP.
fn frontend_programmed(lab: &Lab, ip: &str, port: u16) -> bool {
    ipvs_services(lab).contains(&format!("TCP {ip}:{port}"))
        && members(lab, SVIP_PRT).contains(&format!("{ip},tcp:{port}"))
        && support::vip_routes(lab).contains(ip)
}

/// No virtual service, svip-prt member or VIP for `ip` is left.
fn ip_gone(lab: &Lab, ip: &str) -> bool {
    !ipvs_services(lab)
        .iter()
        .any(|s| s.contains(&format!(" {ip}:")))
        && !members(lab, SVIP_PRT)
            .iter()
            .any(|m| m.starts_with(&format!("{ip},")))
        && !support::vip_routes(lab).contains(ip)
}

fn connects(lab: &Lab, ip: &str, port: u16) -> bool {
    tcp_answer(lab, addr(ip, port)).is_ok_and(|a| a == "pod1" || a == "pod2")
}

// ---------------------------------------------------------------------
// /metrics.

fn metrics(lab: &Lab) -> String {
    http_get(lab, "/metrics")
}

/// The value of one series (name and labels exactly); 0 when absent.
fn series(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let (s, v) = l.rsplit_once(' ')?;
            (s == name).then(|| v.parse::<f64>().ok())?
        })
        .map_or(0, |v| v as u64)
}

/// The sum of every series whose name and labels start with `prefix`.
fn sum(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The sum of the (fractional) series starting with `prefix`.
fn seconds(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn syncs(controller: &str) -> String {
    format!("ipwarden_syncs_total{{controller=\"{controller}\",")
}

fn full_ok(controller: &str) -> String {
    format!("ipwarden_syncs_total{{controller=\"{controller}\",kind=\"full\",result=\"ok\"}}")
}

fn failing(resource: &str) -> String {
    format!("ipwarden_source_failing{{resource=\"{resource}\"}}")
}

const RESOURCES: [&str; 6] = [
    "services",
    "endpointslices.discovery.k8s.io",
    "pods",
    "namespaces",
    "networkpolicies.networking.k8s.io",
    "nodes",
];

/// Prints how long a test took (stderr, shown with --nocapture).
struct Timed(&'static str, Instant);

impl Timed {
    fn new(test: &'static str) -> Timed {
        Timed(test, Instant::now())
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        eprintln!("{}: {:.1} s", self.0, self.1.elapsed().as_secs_f64());
    }
}

/// Asserts `check` on every look during `window`: an observation window
/// for something that must not happen, not a wait for something that must.
/// Looks at least `MIN_LOOKS` times however long each takes, so that a
/// slow VM cannot turn the window into a single glance.
fn holds_throughout(window: Duration, mut check: impl FnMut()) -> usize {
    const MIN_LOOKS: usize = 3;
    let end = Instant::now() + window;
    let mut looks = 0;
    while Instant::now() < end || looks < MIN_LOOKS {
        check();
        looks += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    looks
}

// ---------------------------------------------------------------------
// 1. No pass before every list is done.

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_kube_nothing_is_programmed_before_every_kind_is_listed() {
    if !privileged("vm_kube_nothing_is_programmed_before_every_kind_is_listed") {
        return;
    }
    let _timed = Timed::new("vm_kube_nothing_is_programmed_before_every_kind_is_listed");
    let lab = lab();
    let kube = Kube::serve(&lab);
    cluster(&kube);
    policies(&kube);
    kube.hold_lists(Res::NetworkPolicies);
    let mut agent = Agent::spawn_kube(&lab, &kube.kubeconfig, FAST);

    // Every other kind is listed (its watch started); the policies' list
    // waits on the server.
    for res in [
        Res::Services,
        Res::EndpointSlices,
        Res::Pods,
        Res::Namespaces,
        Res::Nodes,
    ] {
        kube.wait_request(&format!("a watch of {res:?}"), |r| is_watch(r, res));
    }
    kube.wait_request("the NetworkPolicy list", |r| {
        is_list(r, Res::NetworkPolicies)
    });
    wait_until("the agent's API", WAIT, || {
        try_http_get(&lab, "/readyz").is_ok()
    });
    // Long enough for many debounces (100 ms) and a full period (2 s):
    // had a controller been woken on a partial cache, it would show.
    let looks = holds_throughout(Duration::from_secs(4), || {
        assert_eq!(ipvs_services(&lab), BTreeSet::new(), "IPVS programmed");
        assert_eq!(our_sets(&lab), Vec::<String>::new(), "sets programmed");
        let ready = http_get(&lab, "/readyz");
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        assert!(!agent.is_ready(), "the ready file was written");
        let m = metrics(&lab);
        assert_eq!(sum(&m, "ipwarden_syncs_total"), 0, "a sync ran:\n{m}");
    });
    assert!(
        support::vip_routes(&lab).is_empty(),
        "VIPs programmed: {:?}",
        support::vip_routes(&lab)
    );
    eprintln!("nothing programmed over {looks} looks while the policies' list was held");

    kube.release(Res::NetworkPolicies);
    agent.wait_ready(WAIT);
    assert!(http_get(&lab, "/readyz").starts_with("HTTP/1.1 200"));
    assert!(frontend_programmed(&lab, "203.0.113.10", 80));
    assert!(frontend_programmed(&lab, "10.96.0.10", 80));
    assert!(
        our_sets(&lab).iter().any(|s| s.starts_with("IPW-SRC-")),
        "{:?}",
        our_sets(&lab)
    );
    assert!(
        rules(&lab).contains("-g IPW-POD-FW-"),
        "the db pod's chain: {}",
        rules(&lab)
    );
    assert!(connects(&lab, "203.0.113.10", 80));
}

// ---------------------------------------------------------------------
// 2. Watch events reach the kernel.

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_kube_a_service_added_edited_and_deleted_reaches_the_kernel() {
    if !privileged("vm_kube_a_service_added_edited_and_deleted_reaches_the_kernel") {
        return;
    }
    let _timed = Timed::new("vm_kube_a_service_added_edited_and_deleted_reaches_the_kernel");
    let lab = lab();
    let kube = Kube::serve(&lab);
    cluster(&kube);
    let _agent = Agent::start_kube(&lab, &kube.kubeconfig, FAST);
    assert!(connects(&lab, "203.0.113.10", 80));
    let lists = kube.lists(Res::Services);

    // Added.
    kube.apply(
        Res::Services,
        service("extra", "10.96.0.30", &["203.0.113.20"], 80),
    );
    kube.apply(Res::EndpointSlices, slice("extra"));
    wait_until("the new Service programmed", WAIT, || {
        frontend_programmed(&lab, "203.0.113.20", 80) && frontend_programmed(&lab, "10.96.0.30", 80)
    });
    assert!(connects(&lab, "203.0.113.20", 80), "after the add");

    // Its port edited: 80 -> 81.
    kube.apply(
        Res::Services,
        service("extra", "10.96.0.30", &["203.0.113.20"], 81),
    );
    wait_until("the new port programmed, the old one gone", WAIT, || {
        frontend_programmed(&lab, "203.0.113.20", 81)
            && !ipvs_services(&lab).contains("TCP 203.0.113.20:80")
            && !members(&lab, SVIP_PRT).contains("203.0.113.20,tcp:80")
    });
    assert!(connects(&lab, "203.0.113.20", 81), "on the new port");
    assert!(
        tcp_answer(&lab, addr("203.0.113.20", 80)).is_err(),
        "the old port still answers"
    );

    // Its externalIP edited: .20 -> .21.
    kube.apply(
        Res::Services,
        service("extra", "10.96.0.30", &["203.0.113.21"], 81),
    );
    wait_until(
        "the new externalIP programmed, the old one gone",
        WAIT,
        || frontend_programmed(&lab, "203.0.113.21", 81) && ip_gone(&lab, "203.0.113.20"),
    );
    assert!(connects(&lab, "203.0.113.21", 81), "on the new externalIP");
    assert!(
        tcp_answer(&lab, addr("203.0.113.20", 81)).is_err(),
        "the old externalIP still answers"
    );

    // Deleted.
    kube.delete(Res::Services, NS, "extra");
    kube.delete(Res::EndpointSlices, NS, "extra-1");
    wait_until("the Service gone from the kernel", WAIT, || {
        ip_gone(&lab, "203.0.113.21") && ip_gone(&lab, "10.96.0.30")
    });
    assert!(
        tcp_answer(&lab, addr("203.0.113.21", 81)).is_err(),
        "a deleted Service still answers"
    );
    assert!(connects(&lab, "203.0.113.10", 80), "web untouched");
    assert_eq!(
        kube.lists(Res::Services),
        lists,
        "every change came by a watch event, without a relist"
    );
}

// ---------------------------------------------------------------------
// 3. The server gone, a deletion missed, the relist.

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_kube_an_outage_keeps_the_kernel_and_the_relist_removes_what_went_meanwhile() {
    if !privileged("vm_kube_an_outage_keeps_the_kernel_and_the_relist_removes_what_went_meanwhile")
    {
        return;
    }
    let _timed =
        Timed::new("vm_kube_an_outage_keeps_the_kernel_and_the_relist_removes_what_went_meanwhile");
    let lab = lab();
    let kube = Kube::serve(&lab);
    cluster(&kube);
    policies(&kube);
    kube.apply(
        Res::Services,
        service("extra", "10.96.0.30", &["203.0.113.20"], 80),
    );
    kube.apply(Res::EndpointSlices, slice("extra"));
    let _agent = Agent::start_kube(&lab, &kube.kubeconfig, FAST);
    assert!(frontend_programmed(&lab, "203.0.113.20", 80));
    let before = Programmed::read(&lab);

    // The server gone: reported, and full syncs (every 2 s) keep
    // everything.
    kube.set_down(true);
    wait_until("the source failure in /metrics", WAIT, || {
        let m = metrics(&lab);
        RESOURCES.iter().all(|r| series(&m, &failing(r)) == 1)
    });
    let m = metrics(&lab);
    let (services, policies) = (
        series(&m, &full_ok("services")),
        series(&m, &full_ok("policies")),
    );
    wait_until("two full syncs of each controller while down", WAIT, || {
        let m = metrics(&lab);
        series(&m, &full_ok("services")) >= services + 2
            && series(&m, &full_ok("policies")) >= policies + 2
    });
    assert_eq!(
        Programmed::read(&lab),
        before,
        "the server gone changed the kernel"
    );
    assert!(connects(&lab, "203.0.113.20", 80), "during the outage");

    // Meanwhile `extra` is deleted and the history compacted: the watch
    // resumes from a resourceVersion the server no longer has (410), so
    // the agent must list again to learn of the deletion.
    kube.delete(Res::Services, NS, "extra");
    let compacted = kube.delete(Res::EndpointSlices, NS, "extra-1");
    kube.compact();
    // Requests are logged only while the server is up.
    let seen = kube.requests().len();
    kube.set_down(false);
    wait_until("the deleted Service gone after the relist", WAIT, || {
        ip_gone(&lab, "203.0.113.20") && ip_gone(&lab, "10.96.0.30")
    });
    // What the Service reflector asked once the server was back: a watch
    // from before the compaction (answered 410 Expired), then a list.
    let after: Vec<String> = kube.requests()[seen..]
        .iter()
        .filter(|r| r.starts_with(&format!("GET {}?", Res::Services.path())))
        .cloned()
        .collect();
    let stale_watch = after.iter().position(|r| {
        is_watch(r, Res::Services)
            && param(r, "resourceVersion")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|rv| rv < compacted)
    });
    assert!(
        stale_watch.is_some_and(|i| after[i..].iter().any(|r| is_list(r, Res::Services))),
        "no watch from before the compaction followed by a list: {after:#?}"
    );
    wait_until("every source failure cleared", WAIT, || {
        let m = metrics(&lab);
        RESOURCES.iter().all(|r| series(&m, &failing(r)) == 0)
    });
    assert!(frontend_programmed(&lab, "203.0.113.10", 80));
    assert!(connects(&lab, "203.0.113.10", 80), "web after the outage");
    assert!(
        tcp_answer(&lab, addr("203.0.113.20", 80)).is_err(),
        "the deleted Service still answers"
    );
}

// ---------------------------------------------------------------------
// 4. SIGTERM.

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_kube_sigterm_leaves_the_data_plane_in_place() {
    if !privileged("vm_kube_sigterm_leaves_the_data_plane_in_place") {
        return;
    }
    let _timed = Timed::new("vm_kube_sigterm_leaves_the_data_plane_in_place");
    let lab = lab();
    let kube = Kube::serve(&lab);
    cluster(&kube);
    policies(&kube);
    let agent = Agent::start_kube(&lab, &kube.kubeconfig, FAST);
    let before = Programmed::read(&lab);
    assert!(before.ipvs.contains("TCP 203.0.113.10:80 rr"), "{before:?}");
    assert!(
        before.sets.iter().any(|l| l.starts_with("create IPW-SRC-")),
        "{before:?}"
    );
    assert!(before.rules.contains("-j IPWARDEN-SERVICES"), "{before:?}");
    assert!(before.rules.contains("-g IPW-POD-FW-"), "{before:?}");

    let status = agent.terminate();
    assert!(status.success(), "{status}");
    assert_eq!(
        Programmed::read(&lab),
        before,
        "SIGTERM changed the data plane"
    );
    assert!(connects(&lab, "203.0.113.10", 80), "the externalIP");
    assert!(connects(&lab, "10.96.0.10", 80), "the ClusterIP");
}

// ---------------------------------------------------------------------
// 5. The seed: kube-router #1732 with the real controllers.

const FIRST: &str = "203.0.113.10";
const FIRST_MEMBER: &str = "203.0.113.10,tcp:80";
const SECOND: &str = "203.0.113.11";
const SECOND_MEMBER: &str = "203.0.113.11,tcp:80";
/// How long the churn runs, and how often a round of changes comes.
const CHURN: Duration = Duration::from_secs(30);

/// A controller's (syncs, syncs that started while the other controller's
/// ran) between two /metrics texts.
fn during_churn(before: &str, now: &str, controller: &str) -> (u64, u64) {
    let overlaps = format!("ipwarden_sync_overlaps_total{{controller=\"{controller}\"}}");
    (
        sum(now, &syncs(controller)) - sum(before, &syncs(controller)),
        series(now, &overlaps) - series(before, &overlaps),
    )
}

/// The churn exercised what it claims: each controller synced at least
/// twice, and one sync started while the other controller's ran.
fn churn_happened(before: &str, now: &str) -> bool {
    let (services, policies) = (
        during_churn(before, now, "services"),
        during_churn(before, now, "policies"),
    );
    services.0 >= 2 && policies.0 >= 2 && services.1 + policies.1 > 0
}
const ROUND_EVERY: Duration = Duration::from_millis(200);
const DB_PODS: usize = 4;
const CLIENT_PODS: usize = 12;
const POLICIES: usize = 6;

/// What an observer of `ipwarden-svip-prt` saw.
#[derive(Default)]
struct Looks {
    dumps: AtomicU64,
    /// Dumps without FIRST_MEMBER (or without the set).
    misses: AtomicU64,
    /// Dumps with SECOND_MEMBER: the churn did reach the set.
    second: AtomicU64,
    first_miss: Mutex<Option<String>>,
}

impl Looks {
    fn saw(&self, members: Result<BTreeSet<String>, String>) {
        self.dumps.fetch_add(1, Ordering::Relaxed);
        match members {
            Ok(m) if m.contains(FIRST_MEMBER) => {
                if m.contains(SECOND_MEMBER) {
                    self.second.fetch_add(1, Ordering::Relaxed);
                }
            }
            other => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_miss.lock().unwrap();
                first.get_or_insert_with(|| format!("{other:?}"));
            }
        }
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{name}: {} dumps, {} without {FIRST_MEMBER}, {} with {SECOND_MEMBER}",
            self.dumps.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.second.load(Ordering::Relaxed),
        )
    }
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_kube_the_seed_churn_never_loses_the_first_external_ip() {
    if !privileged("vm_kube_the_seed_churn_never_loses_the_first_external_ip") {
        return;
    }
    let _timed = Timed::new("vm_kube_the_seed_churn_never_loses_the_first_external_ip");
    let lab = lab();
    let kube = Kube::serve(&lab);
    cluster(&kube);
    for i in 0..DB_PODS {
        kube.apply(Res::Pods, db_pod(i));
    }
    let mut client_role = [false; CLIENT_PODS];
    for (i, role) in client_role.iter_mut().enumerate() {
        *role = i.is_multiple_of(2);
        kube.apply(Res::Pods, client_pod(i, *role));
    }
    let mut present = [false; POLICIES];
    for (k, p) in present.iter_mut().enumerate().step_by(2) {
        kube.apply(
            Res::NetworkPolicies,
            policy(&format!("np-{k}"), 5000 + k as u16),
        );
        *p = true;
    }
    let _agent = Agent::start_kube(&lab, &kube.kubeconfig, SEED);
    assert!(frontend_programmed(&lab, FIRST, 80));
    assert!(connects(&lab, FIRST, 80));

    let stop = AtomicBool::new(false);
    let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let first_failure = Mutex::new(None::<String>);
    let (netlink, cli) = (Looks::default(), Looks::default());
    let mut rounds = 0u64;
    // /metrics as the churn starts and once its last round is programmed.
    let (mut before, mut after) = (String::new(), String::new());
    std::thread::scope(|s| {
        // The client: one connection after another to the first ExternalIP.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match tcp_answer(&lab, addr(FIRST, 80)) {
                    Ok(a) if a == "pod1" || a == "pod2" => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_failure
                            .lock()
                            .unwrap()
                            .get_or_insert_with(|| format!("{other:?}"));
                    }
                }
            }
        });
        // Observers of svip-prt: our netlink client in the node
        // namespace (many dumps a second), and the ipset CLI.
        s.spawn(|| {
            lab.node
                .run(|| {
                    let mut ipset = IpsetClient::new().unwrap();
                    let name = SetName::new(SVIP_PRT).unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        netlink.saw(
                            ipset
                                .list(&name)
                                .map(|set| {
                                    set.members.iter().map(|e| e.entry.to_string()).collect()
                                })
                                .map_err(|e| e.to_string()),
                        );
                        // Pacing, so the agent keeps its CPU time.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
                .unwrap()
        });
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                cli.saw(
                    tool(&lab, "ipset", &["list", SVIP_PRT])
                        .map(|out| {
                            out.lines()
                                .skip_while(|l| !l.starts_with("Members:"))
                                .skip(1)
                                .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
                                .collect()
                        })
                        .map_err(|e| e.to_string()),
                );
            }
        });

        // The churn: each round the Service gains or loses its second
        // ExternalIP, a client pod gains or loses `role=client` (every
        // present policy's source set changes), and a policy comes or
        // goes (its sets and chain with it). Rounds come at a steady pace
        // (a load generator: the syncs coalesce what arrives meanwhile).
        before = metrics(&lab);
        let end = Instant::now() + CHURN;
        // Past CHURN, the churn goes on (up to three times as long) until
        // the scenario has happened: how fast the VM runs changes how long
        // that takes, not whether the test can pass.
        let bound = Instant::now() + 3 * CHURN;
        let happened = || churn_happened(&before, &metrics(&lab));
        while Instant::now() < end || (Instant::now() < bound && !happened()) {
            let r = rounds as usize;
            let external: &[&str] = if r.is_multiple_of(2) {
                &[FIRST, SECOND]
            } else {
                &[FIRST]
            };
            kube.apply(Res::Services, service("web", "10.96.0.10", external, 80));
            let c = r % CLIENT_PODS;
            client_role[c] = !client_role[c];
            kube.apply(Res::Pods, client_pod(c, client_role[c]));
            let k = r % POLICIES;
            if present[k] {
                kube.delete(Res::NetworkPolicies, NS, &format!("np-{k}"));
            } else {
                kube.apply(
                    Res::NetworkPolicies,
                    policy(&format!("np-{k}"), 5000 + k as u16),
                );
            }
            present[k] = !present[k];
            rounds += 1;
            std::thread::sleep(ROUND_EVERY);
        }
        // The last round reaches the kernel while everyone still looks.
        let second_wanted = !rounds.is_multiple_of(2);
        wait_until("the last round programmed", WAIT, || {
            members(&lab, SVIP_PRT).contains(SECOND_MEMBER) == second_wanted
        });
        after = metrics(&lab);
        stop.store(true, Ordering::Relaxed);
    });

    let m = &after;
    let during = |c: &str| during_churn(&before, m, c);
    let (ok, failed) = (ok.into_inner(), failed.into_inner());
    eprintln!("seed churn over {CHURN:?}: {rounds} rounds");
    eprintln!("client: {ok} connections answered, {failed} refused or failed");
    eprintln!("{}", netlink.line("netlink observer"));
    eprintln!("{}", cli.line("ipset CLI observer"));
    for c in ["services", "policies"] {
        let (took, count) = (
            seconds(
                m,
                &format!("ipwarden_sync_duration_seconds_sum{{controller=\"{c}\""),
            ),
            sum(
                m,
                &format!("ipwarden_sync_duration_seconds_count{{controller=\"{c}\""),
            ),
        );
        let (n, overlapping) = during(c);
        eprintln!(
            "{c}: {n} syncs ended during the churn, {overlapping} started while the other controller's sync ran; {:.2} s a sync on average",
            took / count.max(1) as f64
        );
    }
    for l in m.lines().filter(|l| l.starts_with("ipwarden_syncs_total")) {
        eprintln!("{l}");
    }
    assert_eq!(
        failed,
        0,
        "connections to {FIRST} failed; the first: {:?}",
        first_failure.into_inner().unwrap()
    );
    for (name, looks) in [("netlink", &netlink), ("ipset CLI", &cli)] {
        assert_eq!(
            looks.misses.load(Ordering::Relaxed),
            0,
            "the {name} observer saw {FIRST_MEMBER} missing; the first time: {:?}",
            looks.first_miss.lock().unwrap()
        );
        assert!(looks.dumps.load(Ordering::Relaxed) > 0, "{name}: no dump");
        assert!(
            looks.second.load(Ordering::Relaxed) > 0,
            "{name}: never saw {SECOND_MEMBER}: the churn did not reach the set"
        );
    }
    assert!(ok > 0, "no connection made");
    let (services, policies) = (during("services"), during("policies"));
    for (c, (n, _)) in [("services", services), ("policies", policies)] {
        assert!(n >= 2, "{c} synced only {n} times during the churn");
    }
    assert!(
        services.1 + policies.1 > 0,
        "no sync of one controller started while the other's ran: no concurrent writers"
    );
}
