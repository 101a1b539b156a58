//! Inside the IPVS VM: a manifests file rewritten in place never empties
//! IPVS, and README's first service-proxy example runs as written.
//! Oracle: `ipvsadm -Ln`.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use ipwarden::netns::{privileged, NetNs};

mod support;

use support::*;

const AGENT: &str = env!("CARGO_BIN_EXE_ipwarden");

/// Services of the bulk file (one port and one endpoint each), beside the
/// lab's own: enough that reading and programming them keeps the agent
/// busy while the file is rewritten.
const BULK: usize = 150;
/// Rewrites of the bulk file while the agent runs.
const REWRITES: usize = 8;

/// `BULK` ClusterIP Services with their EndpointSlices.
fn bulk_manifests() -> String {
    let mut out = String::new();
    for i in 0..BULK {
        let (hi, lo) = (i / 200, i % 200 + 1);
        out.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: bulk}}\n\
             spec:\n  clusterIP: 10.96.{}.{lo}\n  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: s{i}-1, namespace: bulk, labels: {{kubernetes.io/service-name: s{i}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\n\
             endpoints: [{{addresses: [10.244.9.{lo}], conditions: {{ready: true}}}}]\n---\n",
            10 + hi
        ));
    }
    out
}

/// IPVS services (not destinations) in the node namespace.
fn ipvs_services(ns: &NetNs) -> usize {
    ns.output("ipvsadm", &["-Ln"])
        .unwrap()
        .lines()
        .filter(|l| ["TCP ", "UDP ", "SCTP "].iter().any(|p| l.starts_with(p)))
        .count()
}

/// Rewrites `file` in place as `kubectl get -o yaml > file` does: the
/// shell truncates it, then the writer (kubectl waiting on the API server;
/// `sleep` here) writes the whole content a moment later.
fn rewrite_in_place(ns: &NetNs, file: &Path, content: &Path) {
    ns.output(
        "sh",
        &[
            "-c",
            "exec > \"$1\"; sleep 1.5; cat \"$2\"",
            "sh",
            &file.to_string_lossy(),
            &content.to_string_lossy(),
        ],
    )
    .unwrap();
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_a_file_rewritten_in_place_never_empties_ipvs() {
    if !privileged("vm_a_file_rewritten_in_place_never_empties_ipvs") {
        return;
    }
    let lab = lab();
    let bulk = lab.manifests.join("bulk.yaml");
    let source = std::env::temp_dir().join(format!("{}-bulk.yaml", lab.node.name()));
    std::fs::write(&source, bulk_manifests()).unwrap();
    std::fs::copy(&source, &bulk).unwrap();
    let _agent = Agent::start(&lab, &["--bpf-mode", "off", "--min-sync-period", "100ms"]);
    let programmed = ipvs_services(&lab.node);
    assert!(programmed > BULK, "{programmed} IPVS services");

    // Sample ipvsadm the whole time the file is being rewritten.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, ns) = (done.clone(), lab.node.name().to_string());
        std::thread::spawn(move || {
            let mut fewest = usize::MAX;
            let mut samples = 0;
            while !done.load(Ordering::SeqCst) {
                let out = std::process::Command::new("ip")
                    .args(["netns", "exec", &ns, "ipvsadm", "-Ln"])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                let n = text
                    .lines()
                    .filter(|l| ["TCP ", "UDP ", "SCTP "].iter().any(|p| l.starts_with(p)))
                    .count();
                fewest = fewest.min(n);
                samples += 1;
            }
            (fewest, samples)
        })
    };
    for _ in 0..REWRITES {
        rewrite_in_place(&lab.node, &bulk, &source);
    }
    done.store(true, Ordering::SeqCst);
    let (fewest, samples) = sampler.join().unwrap();
    assert!(samples > REWRITES, "only {samples} samples");
    assert_eq!(
        fewest, programmed,
        "IPVS lost Services while the file was rewritten ({samples} samples)"
    );
    // The last rewrite's final read may still be on its way.
    wait_until("the same IPVS services after the rewrites", VM_WAIT, || {
        ipvs_services(&lab.node) == programmed
    });

    // The window was really hit: status counts the reads it held.
    let status = lab.node.output(AGENT, &["status"]).unwrap();
    assert!(
        status.contains("held at its last good content"),
        "no shrink was held, the rewrites never caught the agent: {status}"
    );
}

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
    let (stdout, _) = readme_run(
        &ns,
        &pins,
        &[
            "run",
            "--manifests",
            "deploy/examples/web.yaml",
            "--node-name",
            "node-a",
            "--once",
        ],
    );
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
    let mut daemon = readme_command(
        &ns,
        &pins,
        &[
            "run",
            "--manifests",
            "deploy/examples/web.yaml",
            "--node-name",
            "node-a",
        ],
    )
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
