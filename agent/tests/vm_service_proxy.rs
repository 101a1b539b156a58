//! The service proxy with real traffic, inside the IPVS VM: a client
//! namespace, two backend "pods" behind veths, and `ipwarden run --once`
//! in the node namespace. Oracles: the bytes the backends answer with,
//! `ipvsadm -Ln` (with `--stats`: a service deleted and re-added starts
//! counting again from zero), `ipset list`, `iptables-save -c`. IPVS
//! services made by someone else (ipvsadm) share the table throughout.
//! README's service-proxy example and its `bpf dump` run as written.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use ipwarden::netns::{checked_output, privileged, NetNs};

mod support;

use support::*;

fn is_service_line(l: &str) -> bool {
    ["TCP ", "UDP ", "SCTP ", "FWM "]
        .iter()
        .any(|p| l.starts_with(p))
}

/// `ipvsadm -Ln --stats --exact`: the connections each service counted,
/// by "TCP 10.96.0.10:80" (or "FWM 7").
fn ipvs_conns(lab: &Lab) -> BTreeMap<String, u64> {
    let out = lab
        .node
        .output("ipvsadm", &["-Ln", "--stats", "--exact"])
        .unwrap();
    out.lines()
        .filter(|l| is_service_line(l))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (format!("{} {}", w[0], w[1]), w[2].parse().unwrap())
        })
        .collect()
}

/// `ipvsadm -Ln --exact`: each service's line and its destinations
/// (address, forwarding, weight; not the connection counts, which expire).
fn ipvs_table(lab: &Lab) -> BTreeMap<String, Vec<String>> {
    let out = lab.node.output("ipvsadm", &["-Ln", "--exact"]).unwrap();
    let mut table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if is_service_line(line) {
            let key = format!("{} {}", w[0], w[1]);
            table.insert(key.clone(), vec![w.join(" ")]);
            current = Some(key);
        } else if let (Some(key), Some(&"->")) = (&current, w.first()) {
            if w.get(1) != Some(&"RemoteAddress:Port") {
                table
                    .get_mut(key)
                    .unwrap()
                    .push(w[..4.min(w.len())].join(" "));
            }
        }
    }
    table
}

/// The members of `ipwarden-svip-prt` and its IPv6 twin as `ipset save`
/// prints them ("10.96.0.10,tcp:80").
fn svip_prt_members(lab: &Lab) -> BTreeSet<String> {
    ["ipwarden-svip-prt", "inet6:ipwarden-svip-prt"]
        .iter()
        .flat_map(|set| {
            let saved = lab.node.output("ipset", &["save", set]).unwrap();
            saved
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("add {set} ")))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The keys of the pinned mirror `IPW_SVC_PORTS`, as bpftool dumps them,
/// written the way `ipset save` writes a member.
fn mirror_members(lab: &Lab) -> BTreeSet<String> {
    let dump = dump_pinned(lab, "IPW_SVC_PORTS");
    dump.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let k = &e["formatted"]["key"];
            let byte = |i: usize| k["addr"][i].as_u64().unwrap() as u8;
            let octets: [u8; 16] = std::array::from_fn(byte);
            let addr: IpAddr = match k["family"].as_u64() {
                Some(2) => [octets[0], octets[1], octets[2], octets[3]].into(),
                _ => octets.into(),
            };
            let proto = match k["proto"].as_u64() {
                Some(6) => "tcp",
                Some(17) => "udp",
                Some(132) => "sctp",
                other => panic!("protocol {other:?} in {k}"),
            };
            format!("{addr},{proto}:{}", k["port"])
        })
        .collect()
}

/// The mirror holds exactly the service ports the kernel's sets hold.
fn assert_mirror_is_the_set(lab: &Lab, when: &str) {
    let set = svip_prt_members(lab);
    assert!(!set.is_empty(), "{when}: ipwarden-svip-prt is empty");
    assert_eq!(
        mirror_members(lab),
        set,
        "{when}: IPW_SVC_PORTS against ipset save"
    );
}

/// IPVS services of someone else's: one with a destination and traffic on
/// an address of the node's own, one on the node's address outside the
/// NodePort range, one by firewall mark.
const FOREIGN: [&str; 3] = ["TCP 172.16.0.1:80", "TCP 10.0.1.1:8080", "FWM 7"];

fn add_foreign_ipvs_services(lab: &Lab) {
    lab.node
        .output("ip", &["addr", "add", "172.16.0.1/32", "dev", "lo"])
        .unwrap();
    for args in [
        &["-A", "-t", "172.16.0.1:80", "-s", "rr"][..],
        &["-a", "-t", "172.16.0.1:80", "-r", "10.244.1.2:8080", "-m"],
        &["-A", "-t", "10.0.1.1:8080", "-s", "wlc"],
        &["-A", "-f", "7", "-s", "rr"],
    ] {
        lab.node.output("ipvsadm", args).unwrap();
    }
}

/// The foreign services as they were, and the connection they counted
/// still counted (a delete and re-add would start again from zero).
fn assert_foreign_untouched(lab: &Lab, as_added: &BTreeMap<String, Vec<String>>, when: &str) {
    let table = ipvs_table(lab);
    for key in FOREIGN {
        assert_eq!(table.get(key), as_added.get(key), "{when}: {key}");
    }
    assert!(
        ipvs_conns(lab)["TCP 172.16.0.1:80"] >= 1,
        "{when}: the foreign service was re-created"
    );
}

/// None of our services with traffic was deleted and re-added: each
/// counts at least what it counted `before`.
fn assert_counts_kept(lab: &Lab, before: &BTreeMap<String, u64>, when: &str) {
    let after = ipvs_conns(lab);
    for (key, conns) in before {
        let now = after.get(key).copied().unwrap_or(0);
        assert!(
            now >= *conns,
            "{when}: {key} counts {now} connections, {conns} before: re-created"
        );
    }
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_services_carry_real_traffic_and_the_firewall_refuses_other_ports() {
    if !privileged("vm_services_carry_real_traffic_and_the_firewall_refuses_other_ports") {
        return;
    }
    let lab = lab();
    add_foreign_ipvs_services(&lab);
    let foreign = ipvs_table(&lab);
    let report = run_once(&lab);
    // web: 2 ports x (ClusterIP, NodePort, externalIP); sticky: 1.
    assert_eq!(report["virtual_services"], 7, "{report}");
    assert_eq!(report["ipvs"]["services_added"], 7);
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("Service shop/broken field spec.ports[0].protocol"),
        "{problems}"
    );

    // What the kernel holds, per the tools nobody here wrote.
    let ipvs = lab.node.output("ipvsadm", &["-Ln"]).unwrap();
    for needle in [
        "TCP  10.96.0.10:80 rr",
        "UDP  10.96.0.10:53 rr",
        "TCP  10.0.1.1:30080 rr",
        "TCP  203.0.113.10:80 rr",
        "TCP  10.96.0.20:80 rr persistent 300",
        "-> 10.244.1.2:8080",
        "-> 10.244.2.2:5353",
    ] {
        assert!(ipvs.contains(needle), "{needle} missing from\n{ipvs}");
    }
    let sets = lab
        .node
        .output("ipset", &["list", "ipwarden-svip-prt"])
        .unwrap();
    for m in [
        "10.96.0.10,tcp:80",
        "10.96.0.10,udp:53",
        "203.0.113.10,tcp:80",
        "10.0.1.1,tcp:30080",
    ] {
        assert!(sets.contains(m), "{m} missing from\n{sets}");
    }
    assert!(
        !sets.contains("10.96.0.99"),
        "the broken service is skipped"
    );
    let rules = lab.node.output("iptables-save", &["-t", "filter"]).unwrap();
    assert!(rules.contains("-A INPUT -m set --match-set ipwarden-svip dst -m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES"), "{rules}");

    // Traffic: ClusterIP (both backends over a few connections), UDP,
    // NodePort, externalIP.
    let seen: BTreeSet<String> = (0..4)
        .map(|_| tcp_answer(&lab, addr("10.96.0.10", 80)).unwrap())
        .collect();
    assert_eq!(
        seen,
        ["pod1", "pod2"].iter().map(|s| s.to_string()).collect()
    );
    assert!(udp_answer(&lab, addr("10.96.0.10", 53)).starts_with("pod"));
    assert!(tcp_answer(&lab, addr("10.0.1.1", 30080))
        .unwrap()
        .starts_with("pod"));
    assert!(tcp_answer(&lab, addr("203.0.113.10", 80))
        .unwrap()
        .starts_with("pod"));

    // Session affinity: one client, one backend.
    let sticky: BTreeSet<String> = (0..6)
        .map(|_| tcp_answer(&lab, addr("10.96.0.20", 80)).unwrap())
        .collect();
    assert_eq!(sticky.len(), 1, "{sticky:?}");
    // Our rules leave the foreign service working.
    assert_eq!(tcp_answer(&lab, addr("172.16.0.1", 80)).unwrap(), "pod1");
    // The kernel folds its per-CPU counters into what ipvsadm shows every
    // two seconds.
    wait_until("IPVS to count the foreign connection", VM_WAIT, || {
        ipvs_conns(&lab)["TCP 172.16.0.1:80"] >= 1
    });
    assert_foreign_untouched(&lab, &foreign, "after the first run");
    assert_mirror_is_the_set(&lab, "after the first run");

    // A VIP port that is no service port is refused by the firewall.
    let before = chain_counter(&lab, "-j REJECT");
    assert!(tcp_answer(&lab, addr("10.96.0.10", 81)).is_err());
    assert!(
        chain_counter(&lab, "-j REJECT") > before,
        "the REJECT rule did not fire"
    );

    // Unchanged manifests: nothing is written.
    wait_until("IPVS to count web's connections", VM_WAIT, || {
        ipvs_conns(&lab)["TCP 10.96.0.10:80"] >= 4
    });
    let counted = ipvs_conns(&lab);
    let again = run_once(&lab);
    assert_counts_kept(&lab, &counted, "an unchanged run");
    assert_foreign_untouched(&lab, &foreign, "an unchanged run");
    assert_mirror_is_the_set(&lab, "an unchanged run");
    assert_eq!(again["ipvs"]["services_unchanged"], 7, "{again}");
    assert_eq!(again["ipvs"]["destinations_added"], 0);
    assert_eq!(again["sets"]["members_added"], 0);
    assert_eq!(
        again["chains_written"].as_array().unwrap().len(),
        0,
        "{again}"
    );

    // pod2 leaves web: only web's destinations change.
    let changed = CLUSTER.replacen(
        "- {addresses: [10.244.2.2], conditions: {ready: true}, nodeName: node-a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: sticky",
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: sticky",
        1,
    );
    assert_ne!(changed, CLUSTER);
    std::fs::write(lab.manifests.join("cluster.yaml"), changed).unwrap();
    let diff = run_once(&lab);
    assert_counts_kept(&lab, &counted, "an edit of web's endpoints");
    assert_foreign_untouched(&lab, &foreign, "an edit of web's endpoints");
    assert_mirror_is_the_set(&lab, "an edit of web's endpoints");
    assert_eq!(diff["ipvs"]["destinations_removed"], 6, "{diff}");
    assert_eq!(diff["ipvs"]["services_added"], 0);
    assert_eq!(diff["ipvs"]["services_removed"], 0);
    assert_eq!(diff["ipvs"]["services_unchanged"], 1, "sticky untouched");
    assert_eq!(diff["sets"]["members_added"], 0);
    assert_eq!(diff["sets"]["members_deleted"], 0);
    let after: BTreeSet<String> = (0..3)
        .map(|_| tcp_answer(&lab, addr("10.96.0.10", 80)).unwrap())
        .collect();
    assert_eq!(after, ["pod1".to_string()].into());
}

/// --sysctl-dir, the DaemonSet's way without `privileged`: the IPVS
/// sysctls written through /proc/sys/net mounted elsewhere (a bind mount
/// here, as a hostPath is) reach the agent's network namespace; the rate
/// estimator is left as the node has it unless --ipvs-rate-estimation
/// says otherwise.
#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_ipvs_sysctls_are_written_through_a_mounted_proc_sys_net() {
    if !privileged("vm_ipvs_sysctls_are_written_through_a_mounted_proc_sys_net") {
        return;
    }
    let lab = lab();
    let conntrack = "/proc/sys/net/ipv4/vs/conntrack";
    lab.node
        .output("sh", &["-c", &format!("echo 0 > {conntrack}")])
        .unwrap();
    let root =
        std::path::PathBuf::from(format!("/run/ipwarden-test-sysctl-{}", std::process::id()));
    let net = root.join("net");
    std::fs::create_dir_all(&net).unwrap();
    checked_output(
        std::process::Command::new("mount")
            .args(["--bind", "/proc/sys/net"])
            .arg(&net),
    )
    .unwrap();
    let estimation = "/proc/sys/net/ipv4/vs/run_estimation";
    lab.node
        .output("sh", &["-c", &format!("echo 0 > {estimation}")])
        .unwrap();
    let once_with = |sysctl_dir: &std::path::Path, extra: &[&str]| {
        lab.node
            .command(env!("CARGO_BIN_EXE_ipwarden"))
            .args(["run", "--once", "--node-name", "node-a", "--bpf-mode=off"])
            .arg("--manifests")
            .arg(&lab.manifests)
            .arg(format!("--sysctl-dir={}", sysctl_dir.display()))
            .args(extra)
            .output()
            .unwrap()
    };
    let once = |sysctl_dir: &std::path::Path| once_with(sysctl_dir, &[]);
    // The flag is followed: a directory without them is an error naming it.
    let elsewhere = root.join("elsewhere");
    let refused = once(&elsewhere);
    let refusal = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && refusal.contains(&format!(
                "sysctl {}/net/ipv4/vs/conntrack=1",
                elsewhere.display()
            )),
        "{refusal}"
    );
    let out = once(&root);
    let now = lab.node.output("cat", &[conntrack]).unwrap();
    let estimation_left = lab.node.output("cat", &[estimation]).unwrap();
    let turned_on = once_with(&root, &["--ipvs-rate-estimation"]);
    let estimation_on = lab.node.output("cat", &[estimation]).unwrap();
    let turned_off = once_with(&root, &["--ipvs-rate-estimation=false"]);
    let estimation_off = lab.node.output("cat", &[estimation]).unwrap();
    let _ = std::process::Command::new("umount").arg(&net).output();
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        now.trim(),
        "1",
        "net.ipv4.vs.conntrack in the node namespace"
    );
    // The rate estimator: the node's setting by default, then as asked.
    assert_eq!(estimation_left.trim(), "0", "run_estimation left alone");
    assert!(
        turned_on.status.success(),
        "{}",
        String::from_utf8_lossy(&turned_on.stderr)
    );
    assert_eq!(
        estimation_on.trim(),
        "1",
        "run_estimation with --ipvs-rate-estimation"
    );
    assert!(
        turned_off.status.success(),
        "{}",
        String::from_utf8_lossy(&turned_off.stderr)
    );
    assert_eq!(
        estimation_off.trim(),
        "0",
        "run_estimation with --ipvs-rate-estimation=false"
    );
}

/// --service-tcp-timeout and the other two (kube-router's flags) set
/// IPVS's connection timeouts as `ipvsadm -L --timeout` shows them, each
/// not given kept as it was; without them an operator's `ipvsadm --set`
/// holds; kube-proxy's names are aliases; a value the kernel refuses stops
/// the start with the kernel's message and changes nothing. The values
/// before differ from the kernel's defaults (900 120 300), so a flag
/// ignored cannot pass.
#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_ipvs_timeouts_are_set_as_the_flags_say() {
    if !privileged("vm_ipvs_timeouts_are_set_as_the_flags_say") {
        return;
    }
    let lab = lab();
    let shown = || ipvs_timeouts(&lab);
    let set = |tcp_tcpfin_udp| set_ipvs_timeouts(&lab, tcp_tcpfin_udp);
    let once = |extra: &[&str]| {
        lab.node
            .command(env!("CARGO_BIN_EXE_ipwarden"))
            .args(["run", "--once", "--node-name", "node-a", "--bpf-mode=off"])
            .arg("--manifests")
            .arg(&lab.manifests)
            .args(extra)
            .output()
            .unwrap()
    };
    let succeeded = |out: &std::process::Output, what: &str| {
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    set(["100", "50", "20"]);
    let given = once(&["--service-tcp-timeout=900s", "--service-udp-timeout=30s"]);
    succeeded(&given, "with tcp and udp given");
    assert_eq!(
        shown(),
        "Timeout (tcp tcpfin udp): 900 50 30",
        "tcp and udp as given, tcpfin kept"
    );

    set(["111", "55", "33"]);
    let without = once(&[]);
    succeeded(&without, "without the flags");
    assert_eq!(
        shown(),
        "Timeout (tcp tcpfin udp): 111 55 33",
        "without the flags the node's timeouts are left alone"
    );

    let aliased = once(&["--ipvs-tcpfin-timeout=1m"]);
    succeeded(&aliased, "kube-proxy's name");
    assert_eq!(shown(), "Timeout (tcp tcpfin udp): 111 60 33");

    // Past INT_MAX / HZ seconds the kernel says EINVAL (ip_vs_set_timeout).
    let refused = once(&[
        "--service-tcp-timeout=300s",
        "--service-udp-timeout=4000000000s",
    ]);
    let refusal = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{refusal}");
    assert!(
        refusal.contains(
            "IPVS refused --service-tcp-timeout=300s --service-udp-timeout=4000000000s: \
             set timeouts tcp 300 tcpfin 0 udp 4000000000"
        ) && refusal.contains("Invalid argument")
            && refusal.contains("at most INT_MAX/HZ seconds"),
        "{refusal}"
    );
    assert_eq!(shown(), "Timeout (tcp tcpfin udp): 111 60 33");
}

const AGENT: &str = env!("CARGO_BIN_EXE_ipwarden");

/// The agent as README writes it, from the repository's root, with no
/// IPWARDEN_BPF_OBJECT (the object is found where `cargo xtask build-ebpf`
/// puts it). `ip netns exec` remounts /sys, so the node's /sys/fs/bpf is
/// not there: the pins go to a bpffs of the test's own, through
/// IPWARDEN_BPF_PIN_DIR, which every subcommand reads.
fn readme_command(ns: &NetNs, pins: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = ns.command(AGENT);
    cmd.args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env_remove("IPWARDEN_BPF_OBJECT")
        .env("IPWARDEN_BPF_PIN_DIR", pins);
    cmd
}

/// The README's service-proxy example: `ipwarden run` on its manifests.
const README_RUN: [&str; 5] = [
    "run",
    "--manifests",
    "deploy/examples/web.yaml",
    "--node-name",
    "node-a",
];

/// Runs it; stdout, and stderr, asserting success.
fn readme_run(ns: &NetNs, pins: &Path, args: &[&str]) -> (String, String) {
    let out = readme_command(ns, pins, args).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "ipwarden {args:?}: {stdout}{stderr}");
    (stdout, stderr)
}

/// The members of `ipwarden bpf dump`'s table with their Service column.
fn dump_rows(dump: &str) -> Vec<(String, String)> {
    dump.lines()
        .filter(|l| l.contains(",tcp:"))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            (words[0].to_string(), words[1].to_string())
        })
        .collect()
}

/// README, "Running the service proxy" and "Inspecting a node": the
/// commands as written; their output is what README shows.
#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_the_readme_service_proxy_example_runs_as_written() {
    if !privileged("vm_the_readme_service_proxy_example_runs_as_written") {
        return;
    }
    let ns = NetNs::new("ipw-readme").unwrap();
    let bpffs = ipwarden::netns::BpfFs::new("ipw-readme").unwrap();
    let pins = bpffs.path().join("ipwarden");
    let (stdout, _) = readme_run(&ns, &pins, &[&README_RUN[..], &["--once"]].concat());
    println!(
        "$ ipwarden run --manifests deploy/examples/web.yaml --node-name node-a --once\n{stdout}"
    );
    assert!(
        stdout.starts_with(
            "3 virtual services; ipvs +3 ~0 -0 services, +6 ~0 -0 destinations; sets +8 -0 members; addresses +2 -0; "
        ),
        "{stdout}"
    );
    let ipvs = ns.output("ipvsadm", &["-Ln"]).unwrap();
    println!("$ ipvsadm -Ln\n{ipvs}");
    for line in [
        "TCP  203.0.113.10:80 lc",
        "TCP  10.0.1.1:30080 lc",
        "TCP  10.96.0.10:80 lc",
    ] {
        assert!(ipvs.contains(line), "{ipvs}");
    }
    for (cmd, args) in [
        ("ipset", &["list", "ipwarden-svip-prt"][..]),
        ("iptables-save", &["-t", "filter"][..]),
        ("iptables-save", &["-t", "nat"][..]),
    ] {
        println!(
            "$ {cmd} {}\n{}",
            args.join(" "),
            ns.output(cmd, args).unwrap()
        );
    }

    // `--once` leaves its pins: the mirror is there after it exits, each
    // member shown by its Service's hash (no agent answers for names).
    let members = [
        "10.0.1.1,tcp:30080",
        "10.96.0.10,tcp:80",
        "203.0.113.10,tcp:80",
    ];
    let (dump, why) = readme_run(&ns, &pins, &["bpf", "dump"]);
    let layout = format!("layout {}", ipwarden_common::maps::LAYOUT_VERSION);
    assert!(
        dump.starts_with("mode log, mark 0x400000, ") && dump.contains(&layout),
        "{dump}"
    );
    let rows = dump_rows(&dump);
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        members,
        "{dump}"
    );
    assert!(why.contains("Services shown by hash"), "{why}");

    // Where nothing is pinned, `bpf dump` says why, in words.
    let nowhere = readme_command(&ns, &bpffs.path().join("none"), &["bpf", "dump"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&nowhere.stderr);
    assert!(
        !nowhere.status.success() && said.contains("no agent has pinned the eBPF maps"),
        "{said}"
    );
    let hidden = ns
        .command(AGENT)
        .args(["bpf", "dump"])
        .env_remove("IPWARDEN_BPF_PIN_DIR")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&hidden.stderr);
    assert!(
        !hidden.status.success() && said.contains("no bpffs is mounted there"),
        "{said}"
    );

    // With the agent running, each member is named by its Service.
    let ready = std::env::temp_dir().join(format!("ipw-readme-ready-{}", ns.name()));
    let mut daemon = readme_command(&ns, &pins, &README_RUN)
        .arg("--ready-file")
        .arg(&ready)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    wait_until("the daemon's first sync", VM_WAIT, || ready.exists());
    let (dump, _) = readme_run(&ns, &pins, &["bpf", "dump"]);
    let bpftool = ns
        .output(
            "bpftool",
            &[
                "map",
                "dump",
                "pinned",
                &pins.join("maps/IPW_SVC_PORTS").to_string_lossy(),
            ],
        )
        .unwrap();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_file(&ready);
    println!("$ ipwarden bpf dump\n{dump}");
    println!("$ bpftool map dump pinned /sys/fs/bpf/ipwarden/maps/IPW_SVC_PORTS\n{bpftool}");
    let rows = dump_rows(&dump);
    assert_eq!(rows.len(), members.len(), "{dump}");
    assert!(
        rows.iter().all(|(_, service)| service == "shop/web"),
        "{dump}"
    );
    assert!(bpftool.contains("\"service_id\""), "{bpftool}");

    let cleanup = readme_command(&ns, &pins, &["cleanup"]).output().unwrap();
    assert!(cleanup.status.success(), "{cleanup:?}");
}
