//! The set store against the real kernel, each test in its own network
//! namespace. Oracle: `ipset save` / `ipset list`.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use ipwarden::{
    desired::{Family, Member, MemberServices, SetDelta, SetSpec, SetType},
    kernel::ipset::{Element, IpsetClient},
    netns::{privileged, NetNs},
    store::{Claim, MirrorSink, Owner, SetStore, StoreError},
};

fn spec(name: &str, t: SetType, family: Family, members: &[&str]) -> SetSpec {
    SetSpec {
        name: name.into(),
        set_type: t,
        family,
        members: members.iter().map(|m| member(t, m)).collect(),
    }
}

/// A desired member written as `ipset save` writes it (read with the
/// kernel layer's parser, which the ipset tests check against `ipset`).
fn member(t: SetType, text: &str) -> Member {
    Element::parse(t, text).unwrap().to_desired().unwrap()
}

fn services_owner() -> Owner {
    Owner::new(
        "services",
        ["ipwarden-svip", "ipwarden-svip-prt", "ipwarden-local-ips"]
            .iter()
            .map(|n| Claim::Name(n.to_string()))
            .collect(),
    )
    .mirror(&["ipwarden-svip-prt"])
}

fn policies_owner() -> Owner {
    Owner::new("policies", vec![Claim::Prefix("IPW-".into())])
}

fn store_in(ns: &NetNs) -> SetStore {
    let store = ns
        .run(|| SetStore::new(IpsetClient::new().unwrap()))
        .unwrap();
    store.register(services_owner()).unwrap();
    store.register(policies_owner()).unwrap();
    store
}

fn services_sets(prt: &[&str]) -> Vec<SetSpec> {
    vec![
        spec(
            "ipwarden-svip",
            SetType::HashIp,
            Family::V4,
            &["10.96.0.10"],
        ),
        spec("ipwarden-svip-prt", SetType::HashIpPort, Family::V4, prt),
        spec(
            "inet6:ipwarden-svip-prt",
            SetType::HashIpPort,
            Family::V6,
            &["fd00::10,udp:53"],
        ),
        spec(
            "ipwarden-local-ips",
            SetType::HashIp,
            Family::V4,
            &["192.168.56.10"],
        ),
    ]
}

/// Members of `set` per `ipset save`.
fn members(ns: &NetNs, set: &str) -> BTreeSet<String> {
    ns.output("ipset", &["save", set])
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("add {set} ")).map(str::to_string))
        .collect()
}

fn set_of(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// One mirror call: (set, members) of each mirrored set.
type MirrorCall = Vec<(String, BTreeSet<String>)>;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<MirrorCall>>>);

impl MirrorSink for Recorder {
    fn mirror(&mut self, sets: &[&SetSpec], _services: &MemberServices) {
        self.0.lock().unwrap().push(
            sets.iter()
                .map(|s| {
                    let members = s.members.iter().map(Member::to_string).collect();
                    (s.name.clone(), members)
                })
                .collect(),
        );
    }

    /// Recorded as ("+member"/"-member") per set.
    fn mirror_changes(&mut self, deltas: &[&SetDelta], _services: &MemberServices) {
        self.0.lock().unwrap().push(
            deltas
                .iter()
                .map(|d| {
                    let added = d.add.iter().map(|m| format!("+{m}"));
                    let removed = d.del.iter().map(|m| format!("-{m}"));
                    (d.set.clone(), added.chain(removed).collect())
                })
                .collect(),
        );
    }
}

#[test]
fn apply_members_writes_only_the_named_members_and_recreates_a_lost_set() {
    if !privileged("apply_members_writes_only_the_named_members_and_recreates_a_lost_set") {
        return;
    }
    let ns = NetNs::new("ipw-store-members").unwrap();
    ns.run(|| {
        let store = store_in(&ns);
        let mirror = Recorder::default();
        store.set_mirror(Box::new(mirror.clone()));
        store
            .apply("services", services_sets(&["10.96.0.10,tcp:80"]))
            .unwrap();
        let prt = |m: &str| member(SetType::HashIpPort, m);
        // Drift elsewhere in the set is not this apply's business.
        ns.output("ipset", &["add", "ipwarden-svip-prt", "10.9.9.9,tcp:9"])
            .unwrap();
        // One member new, one already in the kernel (put there by another
        // process), one gone.
        ns.output("ipset", &["add", "ipwarden-svip-prt", "10.96.0.11,tcp:80"])
            .unwrap();
        let delta = SetDelta {
            set: "ipwarden-svip-prt".into(),
            add: vec![prt("203.0.113.10,tcp:80"), prt("10.96.0.11,tcp:80")],
            del: vec![prt("10.96.0.10,tcp:80")],
        };
        let r = store
            .apply_members(
                "services",
                std::slice::from_ref(&delta),
                &MemberServices::new(),
            )
            .unwrap();
        assert_eq!(
            (r.executed.members_added, r.executed.members_deleted),
            (1, 1),
            "{r:?}"
        );
        assert_eq!(
            members(&ns, "ipwarden-svip-prt"),
            set_of(&["203.0.113.10,tcp:80", "10.96.0.11,tcp:80", "10.9.9.9,tcp:9"])
        );
        let last = mirror.0.lock().unwrap().last().unwrap().clone();
        assert_eq!(
            last,
            vec![(
                "ipwarden-svip-prt".to_string(),
                set_of(&[
                    "+203.0.113.10,tcp:80",
                    "+10.96.0.11,tcp:80",
                    "-10.96.0.10,tcp:80"
                ])
            )]
        );
        // The desired state followed: a full apply of it deletes only the drift.
        let desired = store.desired();
        let prt_set = desired
            .iter()
            .find(|s| s.name == "ipwarden-svip-prt")
            .unwrap();
        assert_eq!(prt_set.members.len(), 2);

        // The set destroyed behind our back: applied whole.
        ns.output("ipset", &["destroy", "ipwarden-svip-prt"])
            .unwrap();
        let again = SetDelta {
            set: "ipwarden-svip-prt".into(),
            add: vec![prt("198.51.100.1,tcp:80")],
            del: vec![],
        };
        let r = store
            .apply_members("services", &[again], &MemberServices::new())
            .unwrap();
        assert_eq!(r.executed.created, vec!["ipwarden-svip-prt".to_string()]);
        assert_eq!(
            members(&ns, "ipwarden-svip-prt"),
            set_of(&[
                "203.0.113.10,tcp:80",
                "10.96.0.11,tcp:80",
                "198.51.100.1,tcp:80"
            ])
        );

        // A set the owner never applied is refused.
        let unknown = SetDelta {
            set: "ipwarden-svip".into(),
            ..SetDelta::default()
        };
        store.apply("services", vec![]).unwrap();
        assert!(matches!(
            store.apply_members("services", &[unknown], &MemberServices::new()),
            Err(StoreError::NotApplied { .. })
        ));
    })
    .unwrap();
}

#[test]
fn apply_writes_only_the_difference_and_starts_from_the_kernel() {
    if !privileged("apply_writes_only_the_difference_and_starts_from_the_kernel") {
        return;
    }
    let ns = NetNs::new("ipw-store").unwrap();
    // Everything in the namespace: the store runs iptables for set
    // replacements, and a child process inherits the calling thread's namespace.
    ns.run(|| {
        let store = store_in(&ns);
        let mirror = Recorder::default();
        store.set_mirror(Box::new(mirror.clone()));

        let r = store
            .apply(
                "services",
                services_sets(&["10.96.0.10,tcp:80", "203.0.113.10,tcp:443"]),
            )
            .unwrap();
        assert_eq!(r.executed.created.len(), 4);
        assert!(r.verified);
        assert_eq!(
            members(&ns, "ipwarden-svip-prt"),
            set_of(&["10.96.0.10,tcp:80", "203.0.113.10,tcp:443"])
        );
        assert_eq!(
            members(&ns, "inet6:ipwarden-svip-prt"),
            set_of(&["fd00::10,udp:53"])
        );

        // Same state: nothing written.
        let r = store
            .apply(
                "services",
                services_sets(&["10.96.0.10,tcp:80", "203.0.113.10,tcp:443"]),
            )
            .unwrap();
        assert!(!r.changed(), "{r:?}");

        // One member changes: one add, one delete.
        let r = store
            .apply(
                "services",
                services_sets(&["10.96.0.10,tcp:80", "203.0.113.10,tcp:8443"]),
            )
            .unwrap();
        assert_eq!(
            (r.executed.members_added, r.executed.members_deleted),
            (1, 1)
        );

        // Another process deletes a member: the next apply sees the kernel,
        // not a cached copy, and puts it back.
        ns.output("ipset", &["del", "ipwarden-svip-prt", "10.96.0.10,tcp:80"])
            .unwrap();
        let r = store
            .apply(
                "services",
                services_sets(&["10.96.0.10,tcp:80", "203.0.113.10,tcp:8443"]),
            )
            .unwrap();
        assert_eq!(r.executed.members_added, 1);
        assert!(members(&ns, "ipwarden-svip-prt").contains("10.96.0.10,tcp:80"));

        // Another process adds a member no desired member can stand for:
        // it is drift like any other, and deleted.
        ns.output(
            "ipset",
            &["add", "ipwarden-svip-prt", "10.96.0.10,icmp:echo-request"],
        )
        .unwrap();
        let r = store
            .apply(
                "services",
                services_sets(&["10.96.0.10,tcp:80", "203.0.113.10,tcp:8443"]),
            )
            .unwrap();
        assert_eq!(
            (r.executed.members_added, r.executed.members_deleted),
            (0, 1)
        );
        assert!(r.verified);
        assert_eq!(
            members(&ns, "ipwarden-svip-prt"),
            set_of(&["10.96.0.10,tcp:80", "203.0.113.10,tcp:8443"])
        );

        // The mirror got exactly the desired content of the mirrored sets, both families.
        let calls = mirror.0.lock().unwrap();
        let last = calls.last().unwrap();
        assert_eq!(last.len(), 2);
        assert_eq!(last[0].0, "inet6:ipwarden-svip-prt");
        assert_eq!(
            last[1].1,
            set_of(&["10.96.0.10,tcp:80", "203.0.113.10,tcp:8443"])
        );
    })
    .unwrap();
}

#[test]
fn owners_cannot_write_sets_they_do_not_own() {
    if !privileged("owners_cannot_write_sets_they_do_not_own") {
        return;
    }
    let ns = NetNs::new("ipw-store-own").unwrap();
    // Everything in the namespace: the store runs iptables for set
    // replacements, and a child process inherits the calling thread's namespace.
    ns.run(|| {
        let store = store_in(&ns);
        for name in ["IPW-SRC-ABC", "istio-ztunnel-pods"] {
            let err = store
                .apply(
                    "services",
                    vec![spec(name, SetType::HashIp, Family::V4, &[])],
                )
                .unwrap_err();
            assert!(matches!(err, StoreError::NotOwned { .. }), "{err}");
            assert!(err.to_string().contains(name));
        }
        assert!(matches!(
            store.apply("nobody", vec![]).unwrap_err(),
            StoreError::UnknownOwner(_)
        ));
        assert_eq!(ns.output("ipset", &["list", "-n"]).unwrap().trim(), "");
    })
    .unwrap();
}

#[test]
fn foreign_sets_are_byte_identical_after_a_thousand_applies() {
    if !privileged("foreign_sets_are_byte_identical_after_a_thousand_applies") {
        return;
    }
    let ns = NetNs::new("ipw-store-foreign").unwrap();
    // Everything in the namespace: the store runs iptables for set
    // replacements, and a child process inherits the calling thread's namespace.
    ns.run(|| {
        for cmd in [
            "create istio-ztunnel-pods hash:ip family inet hashsize 1024 maxelem 65536",
            "add istio-ztunnel-pods 10.244.1.5",
            "add istio-ztunnel-pods 10.244.1.6",
            "create KUBE-CLUSTER-IP hash:ip,port family inet",
            "add KUBE-CLUSTER-IP 10.96.0.1,tcp:443",
            // Named like a kube-router set, and like ours but unclaimed.
            "create kube-router-svip-prt hash:ip,port family inet",
            "add kube-router-svip-prt 10.96.0.10,tcp:80",
        ] {
            let args: Vec<&str> = cmd.split(' ').collect();
            ns.output("ipset", &args).unwrap();
        }
        let before = ns.output("ipset", &["save"]).unwrap();
        let store = store_in(&ns);
        for i in 0..1000 {
            let port = format!("10.96.0.10,tcp:{}", 1000 + i % 7);
            store.apply("services", services_sets(&[&port])).unwrap();
            let policy = spec(
                &format!("IPW-SRC-{}", i % 3),
                SetType::HashNet,
                Family::V4,
                &["10.244.0.0/16"],
            );
            store.apply("policies", vec![policy]).unwrap();
        }
        let after = ns.output("ipset", &["save"]).unwrap();
        let foreign = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| {
                    let name = l.split(' ').nth(1).unwrap_or_default();
                    !name.starts_with("ipwarden-")
                        && !name.starts_with("inet6:ipwarden-")
                        && !name.starts_with("IPW-")
                })
                .map(str::to_string)
                .collect()
        };
        assert_eq!(foreign(&after), foreign(&before));
        assert_eq!(foreign(&before).len(), 7);
        // The policy owner's stale sets were destroyed, the current one kept.
        let names = ns.output("ipset", &["list", "-n"]).unwrap();
        assert_eq!(
            names.lines().filter(|n| n.starts_with("IPW-")).count(),
            1,
            "{names}"
        );
    })
    .unwrap();
}

#[test]
fn a_type_change_is_built_aside_and_the_old_set_outlives_its_rules() {
    if !privileged("a_type_change_is_built_aside_and_the_old_set_outlives_its_rules") {
        return;
    }
    let ns = NetNs::new("ipw-store-type").unwrap();
    // Everything in the namespace: the store runs iptables for set
    // replacements, and a child process inherits the calling thread's namespace.
    ns.run(|| {
        let store = store_in(&ns);
        store
            .apply(
                "policies",
                vec![spec(
                    "IPW-DST-X",
                    SetType::HashIp,
                    Family::V4,
                    &["10.0.0.1"],
                )],
            )
            .unwrap();
        ns.output(
            "iptables",
            &[
                "-w",
                "-A",
                "INPUT",
                "-m",
                "set",
                "--match-set",
                "IPW-DST-X",
                "dst",
                "-j",
                "ACCEPT",
            ],
        )
        .unwrap();
        let r = store
            .apply(
                "policies",
                vec![spec(
                    "IPW-DST-X",
                    SetType::HashNet,
                    Family::V4,
                    &["10.0.0.0/8"],
                )],
            )
            .unwrap();
        assert_eq!(r.executed.replaced, ["IPW-DST-X"]);
        let save = ns.output("ipset", &["save", "IPW-DST-X"]).unwrap();
        assert!(
            save.starts_with("create IPW-DST-X hash:net family inet"),
            "{save}"
        );
        assert!(save.contains("add IPW-DST-X 10.0.0.0/8"));
        assert_eq!(
            ns.output("ipset", &["list", "-n"]).unwrap().trim(),
            "IPW-DST-X"
        );
        // The rule was moved away and back: it names the set and matches the new one.
        let rules = ns.output("iptables-save", &["-t", "filter"]).unwrap();
        assert!(
            rules.contains("-A INPUT -m set --match-set IPW-DST-X dst -j ACCEPT"),
            "{rules}"
        );
        let count = |ns: &NetNs| -> u64 {
            let out = ns
                .output("iptables", &["-w", "-L", "INPUT", "-v", "-x", "-n"])
                .unwrap();
            out.lines()
                .nth(2)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let before = count(&ns);
        // A packet to 10.1.2.3 (in 10.0.0.0/8, not the old 10.0.0.1) hits the rule.
        ns.ip(&["addr", "add", "10.1.2.3/32", "dev", "lo"]).unwrap();
        // Arrival at a socket is the synchronisation: INPUT has run.
        let rx = std::net::UdpSocket::bind("10.1.2.3:9").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", "10.1.2.3:9").unwrap();
        rx.recv(&mut [0u8; 8]).unwrap();
        assert!(
            count(&ns) > before,
            "the rule matches through the new hash:net set"
        );
    })
    .unwrap();
}

#[test]
fn the_auditor_counts_and_heals_outside_changes() {
    if !privileged("the_auditor_counts_and_heals_outside_changes") {
        return;
    }
    let ns = NetNs::new("ipw-store-audit").unwrap();
    // Everything in the namespace: the store runs iptables for set
    // replacements, and a child process inherits the calling thread's namespace.
    ns.run(|| {
        let store = store_in(&ns);
        store
            .apply(
                "services",
                services_sets(&["10.96.0.10,tcp:80", "10.96.0.10,tcp:443"]),
            )
            .unwrap();
        assert!(!store.audit().unwrap().drifted());

        ns.output("ipset", &["del", "ipwarden-svip-prt", "10.96.0.10,tcp:443"])
            .unwrap();
        ns.output("ipset", &["add", "ipwarden-svip-prt", "10.9.9.9,udp:9"])
            .unwrap();
        ns.output("ipset", &["destroy", "ipwarden-local-ips"])
            .unwrap();
        // With a heal delay the drift is reported and flagged, not healed.
        let hour = std::time::Duration::from_secs(3600);
        let report = store.audit_healing_after(hour).unwrap();
        assert_eq!(
            report.missing_mirrored["ipwarden-svip-prt"],
            [member(SetType::HashIpPort, "10.96.0.10,tcp:443")].into()
        );
        assert!(!members(&ns, "ipwarden-svip-prt").contains("10.96.0.10,tcp:443"));
        // At once: counted and healed.
        let report = store.audit().unwrap();
        assert_eq!(
            report.members_missing, 2,
            "one member and the destroyed set's one"
        );
        assert_eq!(report.members_unexpected, 1);
        assert_eq!(report.sets_missing, 1);
        assert!(
            report.missing_mirrored.is_empty(),
            "healed: nothing left flagged"
        );
        assert_eq!(
            members(&ns, "ipwarden-svip-prt"),
            set_of(&["10.96.0.10,tcp:80", "10.96.0.10,tcp:443"])
        );
        assert_eq!(
            members(&ns, "ipwarden-local-ips"),
            set_of(&["192.168.56.10"])
        );
        let drift = store.drift();
        assert_eq!(
            (drift.audits, drift.heals, drift.members_missing),
            (3, 1, 4)
        );
        assert!(!store.audit().unwrap().drifted());
    })
    .unwrap();
}

/// A node, a pod on it and a policy isolating it: the policy controller
/// owns one source set (`IPW-SRC-…`).
const ONE_POLICY: &str = "\
apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 10.0.1.1}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {kubernetes.io/metadata.name: x}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {nodeName: node-a, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-a, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {matchLabels: {app: a}}}]}]
";

/// An ipset LIST or SAVE request, as strace decodes it: the set it names
/// (IPSET_ATTR_SETNAME), and whether it asks for no member (IPSET_ATTR_FLAGS
/// with IPSET_FLAG_LIST_SETNAME or IPSET_FLAG_LIST_HEADER).
#[derive(Debug)]
struct Listing {
    set: Option<String>,
    no_members: bool,
}

/// The bytes of the first attribute of type `attr_type` in a strace line
/// (`[{nla_len=.., nla_type=TYPE}, "\x..\x.."]`).
fn attribute(line: &str, attr_type: &str) -> Option<Vec<u8>> {
    let at = line.find(&format!("nla_type={attr_type}}}, \""))?;
    let hex = line[at..].split('"').nth(1)?;
    hex.split("\\x")
        .filter(|b| !b.is_empty())
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect()
}

fn listings(trace: &str) -> Vec<Listing> {
    trace
        .lines()
        .filter(|l| l.contains("IPSET_CMD_LIST,") || l.contains("IPSET_CMD_SAVE,"))
        .map(|l| Listing {
            set: attribute(l, "0x2").map(|name| {
                String::from_utf8_lossy(&name)
                    .trim_end_matches('\0')
                    .to_string()
            }),
            // IPSET_FLAG_LIST_SETNAME or _HEADER, a u32 in network order.
            no_members: attribute(l, "NLA_F_NET_BYTEORDER|0x6")
                .is_some_and(|f| f.len() == 4 && f[3] & (2 | 4) != 0),
        })
        .collect()
}

/// `ipwarden run --once` (policy controller only) in `ns` on `cluster`,
/// under strace: the netlink requests it sent, as strace decodes them.
fn traced_run(ns: &NetNs, cluster: &str) -> String {
    let dir = std::env::temp_dir().join(format!("ipw-traced-{}", ns.name()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cluster.yaml"), cluster).unwrap();
    let trace = dir.join("strace.txt");
    let run = ns
        .command("strace")
        .args([
            "-f",
            "-xx",
            "-s",
            "4096",
            "-e",
            "trace=sendto,sendmsg",
            "-o",
        ])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_ipwarden"))
        .args([
            "run",
            "--once",
            "--run-service-proxy=false",
            "--bpf-mode",
            "off",
        ])
        .args(["--node-name", "node-a", "--manifests"])
        .arg(&dir)
        .output()
        .expect("strace (cargo xtask setup installs it)");
    let trace = std::fs::read_to_string(&trace).unwrap_or_default();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    trace
}

/// The ipset requests of a trace that write: "IPSET_CMD_ADD", ...
fn ipset_writes(trace: &str) -> Vec<&'static str> {
    const WRITES: [&str; 7] = [
        "IPSET_CMD_CREATE",
        "IPSET_CMD_DESTROY",
        "IPSET_CMD_FLUSH",
        "IPSET_CMD_RENAME",
        "IPSET_CMD_SWAP",
        "IPSET_CMD_ADD",
        "IPSET_CMD_DEL",
    ];
    trace
        .lines()
        .filter_map(|l| {
            WRITES
                .into_iter()
                .find(|w| l.contains(&format!("<<8|{w},")))
        })
        .collect()
}

/// Row "only the difference is written", with the requests the kernel
/// received as the witness: a second run on the same cluster sends no
/// ipset write at all, and a second client pod sends exactly one ADD.
#[test]
fn a_run_writes_only_the_difference_to_the_sets() {
    if !privileged("a_run_writes_only_the_difference_to_the_sets") {
        return;
    }
    let ns = NetNs::new("ipw-store-writes").unwrap();
    let first = traced_run(&ns, ONE_POLICY);
    assert!(
        ipset_writes(&first).contains(&"IPSET_CMD_CREATE"),
        "{first}"
    );
    let saved = ns.output("ipset", &["save"]).unwrap();

    let again = traced_run(&ns, ONE_POLICY);
    assert_eq!(ipset_writes(&again), Vec::<&str>::new());
    assert_eq!(ns.output("ipset", &["save"]).unwrap(), saved);

    let second_client = format!(
        "{ONE_POLICY}---
apiVersion: v1
kind: Pod
metadata: {{name: b, namespace: x, labels: {{app: a}}}}
spec: {{nodeName: node-b, containers: [{{name: c, image: i}}]}}
status: {{phase: Running, podIP: 10.244.2.10, podIPs: [{{ip: 10.244.2.10}}]}}
"
    );
    let changed = traced_run(&ns, &second_client);
    assert_eq!(ipset_writes(&changed), ["IPSET_CMD_ADD"]);
    let save = ns.output("ipset", &["save"]).unwrap();
    assert!(save.contains(" 10.244.2.10"), "{save}");
}

/// Row "a foreign set is never listed with its members", with the
/// kernel's side of the conversation as the witness: the agent
/// (`run --once`, policy controller only) under strace, in a namespace
/// holding a foreign set and a set of ours that this agent does not own
/// (the service proxy's, which does not run here). Every ipset LIST or
/// SAVE request it sends either asks for names or headers only or names a set of its
/// own; neither of the others is ever named, nor dumped unnamed.
#[test]
fn foreign_sets_are_never_listed_with_their_members() {
    if !privileged("foreign_sets_are_never_listed_with_their_members") {
        return;
    }
    let ns = NetNs::new("ipw-store-listing").unwrap();
    for cmd in [
        "create kube-foreign hash:ip",
        "add kube-foreign 10.1.2.3",
        "create ipwarden-svip-prt hash:ip,port",
        "add ipwarden-svip-prt 10.96.0.10,tcp:80",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        ns.output("ipset", &args).unwrap();
    }
    let trace = traced_run(&ns, ONE_POLICY);
    let listings = listings(&trace);
    let named: Vec<&String> = listings.iter().filter_map(|l| l.set.as_ref()).collect();
    assert!(
        named.iter().any(|n| n.starts_with("IPW-SRC-")),
        "the agent never listed its own set: {listings:?}"
    );
    for l in &listings {
        match &l.set {
            Some(name) => assert!(name.starts_with("IPW-"), "{name} listed: {listings:?}"),
            None => assert!(l.no_members, "every set dumped: {listings:?}"),
        }
    }
    assert_eq!(
        members(&ns, "kube-foreign"),
        set_of(&["10.1.2.3"]),
        "the foreign set changed"
    );
}

/// Row "make-before-break", observed while it happens: a sender keeps
/// sending to 10.0.0.1 (in the old hash:ip set and in every new one) while
/// the set changes type back and forth; our rule accepts what the set
/// matches and drops the rest, and the security table (after filter, and
/// never rewritten by the store) counts what got through: every packet
/// sent, once they have all been processed.
#[test]
fn a_type_change_keeps_the_rules_matching_while_it_happens() {
    if !privileged("a_type_change_keeps_the_rules_matching_while_it_happens") {
        return;
    }
    let ns = NetNs::new("ipw-store-mbb").unwrap();
    let ip = |t: SetType, m: &str| vec![spec("IPW-DST-X", t, Family::V4, &[m])];
    ns.run(|| {
        let store = store_in(&ns);
        store
            .apply("policies", ip(SetType::HashIp, "10.0.0.1"))
            .unwrap();
        ns.ip(&["addr", "add", "10.0.0.1/32", "dev", "lo"]).unwrap();
        for rule in [
            "-t filter -A INPUT -p udp --dport 9 -m set --match-set IPW-DST-X dst -j ACCEPT",
            "-t filter -A INPUT -p udp --dport 9 -j DROP",
            "-t security -A INPUT -p udp --dport 9",
        ] {
            let mut args = vec!["-w"];
            args.extend(rule.split(' '));
            ns.output("iptables", &args).unwrap();
        }
        let _rx = std::net::UdpSocket::bind("10.0.0.1:9").unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let sent = std::thread::scope(|s| {
            let sender = s.spawn(|| {
                let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let mut sent = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    sent += u64::from(tx.send_to(b"x", "10.0.0.1:9").is_ok());
                }
                sent
            });
            for round in 0..10 {
                let next = if round % 2 == 0 {
                    ip(SetType::HashNet, "10.0.0.0/8")
                } else {
                    ip(SetType::HashIp, "10.0.0.1")
                };
                let r = store.apply("policies", next).unwrap();
                assert_eq!(r.executed.replaced, ["IPW-DST-X"]);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            sender.join().unwrap()
        });
        assert!(sent > 0);
        let through = || -> u64 {
            let out = ns
                .output(
                    "iptables",
                    &["-w", "-t", "security", "-L", "INPUT", "-v", "-x", "-n"],
                )
                .unwrap();
            let line = out.lines().nth(2).unwrap();
            line.split_whitespace().next().unwrap().parse().unwrap()
        };
        let all_through =
            ipwarden::lab::wait_until(std::time::Duration::from_secs(10), || through() >= sent);
        assert!(
            all_through,
            "{} of {sent} packets sent during the replacements were dropped",
            sent - through()
        );
    })
    .unwrap();
}
