//! The daemon on the manifests source, inside the IPVS VM: a source that
//! fails never shrinks what is programmed, drift made by others (an
//! `ipvsadm -C`, a deleted set member, a flushed ipwarden0) is repaired by
//! the next full sync, an edit is programmed without a restart, and SIGTERM
//! leaves every kernel object in place. Oracles: ipvsadm, ipset, ip,
//! iptables-save and the agent's /metrics.

use ipwarden::netns::privileged;

mod support;

use support::*;

/// Short periods so full syncs come quickly; the debounce stays short.
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

/// `ipvsadm -Ln` without the destinations' connection counts: an
/// inactive connection stays counted until its timeouts expire, whatever
/// the agent does.
fn ipvs(lab: &ipwarden::lab::Lab) -> String {
    let out = lab.node.output("ipvsadm", &["-Ln"]).unwrap();
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

fn metric(lab: &ipwarden::lab::Lab, needle: &str) -> bool {
    http_get(lab, "/metrics")
        .lines()
        .any(|l| l.starts_with(needle))
}

/// The value of the first /metrics line that starts with `series`.
fn value(lab: &ipwarden::lab::Lab, series: &str) -> u64 {
    http_get(lab, "/metrics")
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

const FULL_SYNCS: &str =
    "ipwarden_syncs_total{controller=\"services\",kind=\"full\",result=\"ok\"}";

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_the_daemon_keeps_the_last_good_state_and_repairs_drift() {
    if !privileged("vm_the_daemon_keeps_the_last_good_state_and_repairs_drift") {
        return;
    }
    let lab = lab();
    let agent = Agent::start(&lab, FAST);
    let programmed = ipvs(&lab);
    assert!(
        programmed.contains("TCP 203.0.113.10:80 rr"),
        "{programmed}"
    );
    let file = lab.manifests.join("cluster.yaml");
    let good = std::fs::read_to_string(&file).unwrap();
    let source = format!("ipwarden_source_failing{{resource=\"{}\"}}", file.display());

    // A half-written save, then garbage: both reported, nothing removed.
    for bad in [good[..300].to_string(), "{{{ not yaml".to_string()] {
        std::fs::write(&file, &bad).unwrap();
        wait_until("the source failure in /metrics", VM_WAIT, || {
            metric(&lab, &format!("{source} 1"))
        });
        // A full sync has run since (periods of 2 s): still all there.
        let fulls = value(&lab, FULL_SYNCS);
        wait_until("a full sync after the failure", VM_WAIT, || {
            value(&lab, FULL_SYNCS) > fulls
        });
        assert_eq!(
            ipvs(&lab),
            programmed,
            "a failing source keeps its last good content"
        );
        std::fs::write(&file, &good).unwrap();
        wait_until("the source to recover", VM_WAIT, || {
            metric(&lab, &format!("{source} 0"))
        });
    }

    // Drift made by others, repaired by the periodic full sync.
    lab.node.output("ipvsadm", &["-C"]).unwrap();
    wait_until("IPVS repaired after ipvsadm -C", VM_WAIT, || {
        ipvs(&lab) == programmed
    });
    // A destination deleted or reweighted, and a service of nobody's on
    // our VIP: the full sync reads IPVS from /proc/net/ip_vs (and the
    // routes only because of the stray), and puts back what it programmed.
    let vs = "203.0.113.10:80";
    let listed = lab.node.output("ipvsadm", &["-Ln", "-t", vs]).unwrap();
    let reals: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-> "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|r| !r.starts_with("Remote"))
        .collect();
    assert!(!reals.is_empty(), "{listed}");
    lab.node
        .output("ipvsadm", &["-d", "-t", vs, "-r", reals[0]])
        .unwrap();
    if let Some(real) = reals.get(1) {
        lab.node
            .output("ipvsadm", &["-e", "-t", vs, "-r", real, "-m", "-w", "9"])
            .unwrap();
    }
    lab.node
        .output("ipvsadm", &["-A", "-t", "203.0.113.10:81", "-s", "rr"])
        .unwrap();
    wait_until(
        "IPVS repaired after a destination and a stray",
        VM_WAIT,
        || ipvs(&lab) == programmed,
    );
    lab.node
        .output(
            "ipset",
            &["del", "ipwarden-svip-prt", "203.0.113.10,tcp:80"],
        )
        .unwrap();
    wait_until("the set member put back", VM_WAIT, || {
        lab.node
            .output(
                "ipset",
                &["test", "ipwarden-svip-prt", "203.0.113.10,tcp:80"],
            )
            .is_ok()
    });
    let flush: Vec<&str> = ["route", "flush"].into_iter().chain(VIP_ROUTES).collect();
    lab.node.output("ip", &flush).unwrap();
    wait_until("the VIPs back on ipwarden0", VM_WAIT, || {
        vip_routes(&lab).contains("203.0.113.10")
    });
    assert_eq!(
        tcp_answer(&lab, addr("203.0.113.10", 80)).map(|_| ()).ok(),
        Some(())
    );

    // An edit: a new externalIP is programmed (by a partial sync, or by a
    // full one if a period fell due first).
    std::fs::write(
        &file,
        good.replace(
            "externalIPs: [203.0.113.10]",
            "externalIPs: [203.0.113.10, 203.0.113.11]",
        ),
    )
    .unwrap();
    wait_until("the new externalIP in IPVS", VM_WAIT, || {
        ipvs(&lab).contains("TCP 203.0.113.11:80 rr")
    });

    // SIGTERM: the agent exits and the data plane stays.
    let before = (
        ipvs(&lab),
        lab.node
            .output("ipset", &["list", "ipwarden-svip-prt"])
            .unwrap(),
    );
    let status = agent.terminate();
    assert!(status.success(), "{status}");
    let after = (
        ipvs(&lab),
        lab.node
            .output("ipset", &["list", "ipwarden-svip-prt"])
            .unwrap(),
    );
    assert_eq!(
        before, after,
        "SIGTERM leaves IPVS and the sets as they were"
    );
    let rules = lab.node.output("iptables-save", &["-t", "filter"]).unwrap();
    assert!(rules.contains("-j IPWARDEN-SERVICES"), "{rules}");
    assert_eq!(
        tcp_answer(&lab, addr("203.0.113.11", 80)).map(|_| ()).ok(),
        Some(())
    );
}

/// Full syncs only at start (and after a failure): every edit after the
/// first pass is programmed by a partial sync.
const PARTIAL_ONLY: &[&str] = &[
    "--bpf-mode",
    "off",
    "--ipvs-sync-period",
    "1h",
    "--iptables-sync-period",
    "1h",
    "--min-sync-period",
    "100ms",
    "--audit-interval",
    "1h",
];

const PARTIAL_SYNCS: &str =
    "ipwarden_syncs_total{controller=\"services\",kind=\"partial\",result=\"ok\"}";

/// `ipvsadm -Ln --stats --exact`: "TCP 10.96.0.10:80" -> (Conns, InPkts).
/// A service deleted and re-added counts again from zero.
fn ipvs_stats(lab: &ipwarden::lab::Lab) -> std::collections::BTreeMap<String, (u64, u64)> {
    let out = lab
        .node
        .output("ipvsadm", &["-Ln", "--stats", "--exact"])
        .unwrap();
    out.lines()
        .filter(|l| l.starts_with("TCP ") || l.starts_with("UDP "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| w[i].parse::<u64>().unwrap();
            (format!("{} {}", w[0], w[1]), (n(2), n(3)))
        })
        .collect()
}

/// The lines of `ipvs` (services and destinations, no counters) under the
/// service line that starts with `service`.
fn ipvs_block(table: &str, service: &str) -> Vec<String> {
    table
        .lines()
        .skip_while(|l| !l.starts_with(service))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with("->"))
        .map(|(_, l)| l.to_string())
        .collect()
}

/// `ipset save` lines of ipwarden's sets.
fn our_sets(lab: &ipwarden::lab::Lab) -> std::collections::BTreeSet<String> {
    let save = lab.node.output("ipset", &["save"]).unwrap();
    save.lines()
        .filter(|l| l.contains(" ipwarden-") || l.contains(" IPW-") || l.contains(" inet6:"))
        .map(str::to_string)
        .collect()
}

/// Each of our rules in filter and nat (`iptables-save -c`) with its
/// packet counter: a chain rewritten by iptables-restore counts from zero.
fn rule_counters(lab: &ipwarden::lab::Lab) -> std::collections::BTreeMap<String, u64> {
    let mut rules = std::collections::BTreeMap::new();
    for table in ["filter", "nat"] {
        let save = lab
            .node
            .output("iptables-save", &["-c", "-t", table])
            .unwrap();
        for l in save.lines().filter(|l| l.contains("IPW")) {
            let Some((counters, rule)) = l.strip_prefix('[').and_then(|l| l.split_once("] "))
            else {
                continue;
            };
            let packets = counters.split(':').next().unwrap().parse().unwrap();
            rules.insert(format!("{table} {rule}"), packets);
        }
    }
    rules
}

/// Row "a partial service sync writes only what moved", against the
/// kernel: Service `sticky` loses an endpoint and gains an externalIP; the
/// partial sync that follows adds exactly the new frontend's set members,
/// VIP and virtual service, edits sticky's destinations in place, and
/// leaves everything else as it was: `web`'s services and sticky's keep
/// their `--stats` (a delete and re-add restarts them), no other set line
/// moves, and every rule of ours keeps its counter (a rewritten chain
/// starts again from zero).
#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_a_partial_sync_writes_only_what_moved() {
    if !privileged("vm_a_partial_sync_writes_only_what_moved") {
        return;
    }
    let lab = lab();
    let _agent = Agent::start(&lab, PARTIAL_ONLY);
    for _ in 0..3 {
        for (vip, port) in [("10.96.0.10", 80), ("203.0.113.10", 80), ("10.96.0.20", 80)] {
            tcp_answer(&lab, addr(vip, port)).unwrap();
        }
    }
    // IPVS folds its per-CPU counters into what it reports every 2 s.
    let counted = [
        "TCP 10.96.0.10:80",
        "TCP 203.0.113.10:80",
        "TCP 10.96.0.20:80",
    ];
    wait_until("IPVS to report the connections", VM_WAIT, || {
        let stats = ipvs_stats(&lab);
        counted.iter().all(|s| stats[*s].0 > 0)
    });
    let stats = ipvs_stats(&lab);
    let (table, sets, rules, addresses) = (
        ipvs(&lab),
        our_sets(&lab),
        rule_counters(&lab),
        vip_routes(&lab),
    );
    assert!(
        rules.values().any(|&n| n > 0),
        "no rule of ours counted the traffic: {rules:#?}"
    );
    let (fulls, partials) = (value(&lab, FULL_SYNCS), value(&lab, PARTIAL_SYNCS));

    let file = lab.manifests.join("cluster.yaml");
    let cluster = std::fs::read_to_string(&file).unwrap();
    let edited = cluster
        .replace(
            "  clusterIP: 10.96.0.20\n",
            "  clusterIP: 10.96.0.20\n  externalIPs: [203.0.113.20]\n",
        )
        .replace(
            "- {addresses: [10.244.1.2], conditions: {ready: true}, nodeName: node-a}\n\
             - {addresses: [10.244.2.2], conditions: {ready: true}, nodeName: node-a}\n---\n\
             # A bad",
            "- {addresses: [10.244.1.2], conditions: {ready: true}, nodeName: node-a}\n---\n\
             # A bad",
        );
    assert_eq!(edited.matches("203.0.113.20").count(), 1);
    assert_eq!(edited.matches("10.244.2.2").count(), 1, "sticky's endpoint");
    std::fs::write(&file, edited).unwrap();
    wait_until("the partial sync", VM_WAIT, || {
        value(&lab, PARTIAL_SYNCS) > partials
            && ipvs(&lab).contains("TCP 203.0.113.20:80 rr")
            && ipvs_block(&ipvs(&lab), "TCP 10.96.0.20:80").len() == 2
    });
    assert_eq!(
        value(&lab, FULL_SYNCS),
        fulls,
        "a full sync ran: the edit must be programmed by partial syncs only"
    );

    // IPVS: the new frontend added; sticky edited in place; the rest as it was.
    let after = ipvs(&lab);
    for line in table.lines().filter(|l| !l.starts_with("->")) {
        let service = line.split(' ').take(2).collect::<Vec<_>>().join(" ");
        if service != "TCP 10.96.0.20:80" {
            assert_eq!(
                ipvs_block(&after, &service),
                ipvs_block(&table, &service),
                "{service} changed:\n{after}"
            );
        }
    }
    assert_eq!(
        ipvs_block(&after, "TCP 10.96.0.20:80")[1..],
        ["-> 10.244.1.2:8080 Masq 1".to_string()],
        "{after}"
    );
    let stats_after = ipvs_stats(&lab);
    for (service, &(conns, packets)) in &stats {
        let (c, p) = stats_after[service];
        assert!(
            c >= conns && p >= packets,
            "{service}'s stats restarted ({conns}, {packets}) -> ({c}, {p}): \
             deleted and re-added"
        );
    }
    // Sets: only the new frontend's members came; none went.
    let sets_after = our_sets(&lab);
    let gone: Vec<_> = sets.difference(&sets_after).collect();
    let came: Vec<_> = sets_after.difference(&sets).collect();
    assert_eq!(gone, Vec::<&String>::new(), "set lines removed");
    assert!(
        !came.is_empty() && came.iter().all(|l| l.contains("203.0.113.20")),
        "set lines added: {came:#?}"
    );
    // VIP routes: one more.
    let mut want = addresses.clone();
    want.insert("203.0.113.20".to_string());
    assert_eq!(vip_routes(&lab), want);
    // Rules: no chain of ours was rewritten.
    let rules_after = rule_counters(&lab);
    for (rule, &packets) in &rules {
        let now = rules_after.get(rule).copied();
        assert!(
            now.is_some_and(|n| n >= packets),
            "{rule}: {packets} packets before, {now:?} after: the chain was rewritten"
        );
    }
}

/// A Service, its EndpointSlice (stamped with the time of its change, as
/// the EndpointSlice controller does) and a Service with a bad field.
const ADDED: &str = "\
apiVersion: v1
kind: Service
metadata: {name: shop-api, namespace: shop}
spec:
  clusterIP: 10.96.0.30
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: shop-api-1
  namespace: shop
  labels: {kubernetes.io/service-name: shop-api}
  annotations: {endpoints.kubernetes.io/last-change-trigger-time: \"2026-01-01T00:00:00Z\"}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: [10.244.1.2], conditions: {ready: true}, nodeName: node-a}
---
apiVersion: v1
kind: Service
metadata: {name: shop-typo, namespace: shop}
spec:
  clusterIP: 10.96.0.31
  ports: [{name: x, port: 81, protocol: GRE}]
";

/// What a sync of the service proxy feeds: each must move when a Service
/// is added (a gauge changes, a counter or timestamp grows). The others
/// are fed by the auditor, the packet counters and the source, each
/// tested where that happens.
const FED_BY_A_SYNC: [&str; 11] = [
    "ipwarden_virtual_services",
    "ipwarden_ipvs_changes_total",
    "ipwarden_set_member_changes_total",
    "ipwarden_input_problems",
    "ipwarden_reconciles_total",
    "ipwarden_reconcile_duration_seconds_count",
    "ipwarden_syncs_total",
    "ipwarden_sync_duration_seconds_count",
    "ipwarden_sync_last_timestamp_seconds",
    "ipwarden_sync_last_queued_timestamp_seconds",
    "ipwarden_network_programming_duration_seconds_count",
];

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_every_sync_metric_moves_after_a_daemon_sync_and_parses_strictly() {
    use support::openmetrics::{scrape, total};
    if !privileged("vm_every_sync_metric_moves_after_a_daemon_sync_and_parses_strictly") {
        return;
    }
    let lab = lab();
    let _agent = Agent::start(&lab, FAST);
    let before = scrape(&lab);
    let moved = |now: &std::collections::BTreeMap<String, f64>| -> Vec<&str> {
        FED_BY_A_SYNC
            .into_iter()
            .filter(|name| total(now, name) != total(&before, name))
            .collect()
    };
    let ipvs_before = ipvs(&lab);

    let aside = lab.manifests.join("added.tmp");
    std::fs::write(&aside, ADDED).unwrap();
    std::fs::rename(&aside, lab.manifests.join("added.yaml")).unwrap();
    wait_until("every sync metric to move", VM_WAIT, || {
        moved(&scrape(&lab)).len() == FED_BY_A_SYNC.len()
    });

    let after = scrape(&lab);
    let grew = |name| total(&after, name).unwrap() - total(&before, name).unwrap();
    // One more IPVS service (the typo is skipped), one destination.
    assert_eq!(grew("ipwarden_virtual_services"), 1.0, "{after:#?}");
    assert!(grew("ipwarden_ipvs_changes_total") >= 2.0, "{after:#?}");
    // The typo, counted once a full sync has counted every Service again.
    let problems = total(&before, "ipwarden_input_problems").unwrap() + 1.0;
    wait_until("the typo counted in input_problems", VM_WAIT, || {
        total(&scrape(&lab), "ipwarden_input_problems") == Some(problems)
    });
    let ipvs_after = ipvs(&lab);
    assert!(
        !ipvs_before.contains("TCP 10.96.0.30:80") && ipvs_after.contains("TCP 10.96.0.30:80"),
        "{ipvs_after}"
    );
}

/// The daemon sets the timeout flags once it connects to IPVS, before its
/// first pass (kube-router's start), and a value the kernel refuses stops
/// the start before anything is programmed. The same write as `run
/// --once`'s (vm_service_proxy checks its message); this is the daemon's
/// path to it.
#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_the_daemon_sets_the_timeouts_at_start_and_a_refusal_stops_it() {
    if !privileged("vm_the_daemon_sets_the_timeouts_at_start_and_a_refusal_stops_it") {
        return;
    }
    let lab = lab();
    let timeouts = || ipvs_timeouts(&lab);
    // Not the kernel's defaults (900 120 300), so an ignored flag shows.
    set_ipvs_timeouts(&lab, ["100", "50", "20"]);

    let refused = ["--service-udp-timeout=4000000000s"];
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_ipwarden"));
    let start = ipwarden::lab::AgentProcess::start(&lab, bin, &[FAST, &refused[..]].concat());
    let error = start
        .err()
        .expect("the agent started with a refused timeout");
    assert!(error.to_string().contains("exited early"), "{error}");
    assert_eq!(timeouts(), "Timeout (tcp tcpfin udp): 100 50 20");
    let table = ipvs(&lab);
    assert!(
        !table.contains("203.0.113.10"),
        "nothing programmed after a refused start: {table}"
    );

    let given = ["--service-tcp-timeout=15m", "--ipvs-udp-timeout=45s"];
    let agent = Agent::start(&lab, &[FAST, &given[..]].concat());
    assert_eq!(
        timeouts(),
        "Timeout (tcp tcpfin udp): 900 50 45",
        "tcp and udp as given, tcpfin kept"
    );
    assert!(ipvs(&lab).contains("TCP 203.0.113.10:80 rr"));
    agent.kill();
}
