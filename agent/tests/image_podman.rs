//! The OCI image of `cargo xtask image`, as a node runs it: loaded with
//! `podman load`, run with every capability dropped but NET_ADMIN and
//! NET_RAW in a network namespace of the test's own
//! (the node's, here), `ipwarden run --once` enforces
//! deploy/examples/netpol.yaml (mounted into the container; the service
//! proxy is off: IPVS needs the VM's kernel), and iptables-save and ipset
//! in that namespace, on the host, show what the image's iptables wrote.
//! A second run changes nothing: the image's iptables-save prints the rules
//! as the agent writes them.
//!
//! `cargo xtask test` builds the archive once (reused while the release
//! binary and the eBPF object are unchanged) and passes it in
//! $IPWARDEN_IMAGE_ARCHIVE. Needs root, podman and runc; skips without
//! them unless IPWARDEN_PRIVILEGED=1 makes that a failure.
//!
//! Podman runs with runc and explicit ulimits: on hosts whose cgroups are
//! hybrid (v1 controllers beside a cgroup2 mount), crun refuses to start
//! ("cgroups in hybrid mode not supported"), and podman's default
//! RLIMIT_NOFILE (1048576) is above the hard limit of a root without
//! CAP_SYS_RESOURCE (as in a sandbox). Neither matters on a node, where
//! the kubelet's runtime starts the pod.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use ipwarden::netns::{privileged, NetNs};

const TEST: &str = "the_image_enforces_a_network_policy_under_podman";

fn demanded() -> bool {
    std::env::var_os("IPWARDEN_PRIVILEGED").is_some_and(|v| v == "1")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the policy controller needs: NET_ADMIN for ipset, iptables and
/// netlink; NET_RAW for iptables' set match and iptables-legacy (a raw
/// socket). Found by dropping each: without NET_ADMIN `ipset list` is
/// refused, without NET_RAW iptables-restore "Can't open socket to ipset".
const FIREWALL_CAPS: [&str; 2] = ["NET_ADMIN", "NET_RAW"];

/// `podman run` of the image in `ns`, every capability dropped but
/// [`FIREWALL_CAPS`].
fn podman_run(ns: &NetNs, image: &str, volumes: &[(&Path, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc", "run", "--rm", "--cap-drop=all"]);
    for cap in FIREWALL_CAPS {
        cmd.arg(format!("--cap-add={cap}"));
    }
    cmd.args([
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
    ])
    .arg(format!("--network=ns:/run/netns/{}", ns.name()));
    for (host, inside) in volumes {
        cmd.arg("-v").arg(format!("{}:{inside}:ro", host.display()));
    }
    cmd.arg(image).args(args);
    cmd
}

/// Removes the loaded image on drop, even when the test fails.
struct Loaded(String);

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rmi", "--force", &self.0])
            .output();
    }
}

#[test]
fn the_image_enforces_a_network_policy_under_podman() {
    if !privileged(TEST) {
        return;
    }
    let Some(archive) = std::env::var_os("IPWARDEN_IMAGE_ARCHIVE").map(PathBuf::from) else {
        assert!(
            !demanded(),
            "{TEST}: IPWARDEN_IMAGE_ARCHIVE is not set (cargo xtask test builds the image)"
        );
        eprintln!("{TEST}: skipped, no IPWARDEN_IMAGE_ARCHIVE (cargo xtask image; cargo xtask test sets it)");
        return;
    };
    let image = std::env::var("IPWARDEN_IMAGE")
        .unwrap_or_else(|_| format!("localhost/ipwarden:{}", env!("CARGO_PKG_VERSION")));
    let loaded = run(Command::new("podman")
        .args(["load", "-q", "-i"])
        .arg(&archive));
    let _loaded = Loaded(image.clone());
    assert!(
        stdout(&loaded).contains(&image),
        "podman load named it otherwise: {}",
        stdout(&loaded)
    );

    // The eBPF object is where the agent reads it by default, as built.
    if let Some(object) = std::env::var_os("IPWARDEN_BPF_OBJECT") {
        let mount = run(Command::new("podman").args(["image", "mount", &image]));
        let root = PathBuf::from(stdout(&mount).trim());
        let inside = std::fs::read(root.join("usr/lib/ipwarden/ipwarden.bpf.o"));
        let _ = Command::new("podman")
            .args(["image", "unmount", &image])
            .output();
        assert!(
            inside.unwrap() == std::fs::read(object).unwrap(),
            "the image's /usr/lib/ipwarden/ipwarden.bpf.o is not the object just built"
        );
    }

    let ns = NetNs::new("ipw-img").unwrap();
    let version = run(&mut podman_run(&ns, &image, &[], &["--version"]));
    assert_eq!(
        stdout(&version).trim(),
        format!("ipwarden {}", env!("CARGO_PKG_VERSION"))
    );

    let netpol = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/netpol.yaml");
    let netpol = netpol.canonicalize().unwrap();
    let once = [
        "run",
        "--once",
        "--json",
        "--manifests",
        "/etc/ipwarden/netpol.yaml",
        "--node-name",
        "node-a",
        "--run-service-proxy=false",
    ];
    let first = run(&mut podman_run(
        &ns,
        &image,
        &[(&netpol, "/etc/ipwarden/netpol.yaml")],
        &once,
    ));
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert!(
        report["policies"]["chains_written"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{report}"
    );

    let save = ns.output("iptables-save", &["-t", "filter"]).unwrap();
    for rule in [
        "-A FORWARD -m comment --comment \"ipwarden:policies\" -j IPWARDEN-FORWARD",
        "-A IPWARDEN-FORWARD -d 10.244.1.10/32 -j IPW-POD-FW-",
        "-m mark ! --mark 0x10000/0x10000 -j REJECT --reject-with icmp-port-unreachable",
        "-m comment --comment \"ipwarden:denied shop/api-ingress ingress\"",
    ] {
        assert!(save.contains(rule), "no `{rule}` in:\n{save}");
    }
    let sets = ns.output("ipset", &["save"]).unwrap();
    for member in [
        "10.244.2.20",
        "192.168.0.0/16",
        "192.168.66.0/24 nomatch",
        "10.244.1.10,tcp:8080",
    ] {
        assert!(
            sets.lines()
                .any(|l| l.starts_with("add IPW-") && l.ends_with(member)),
            "no member {member} in:\n{sets}"
        );
    }

    // The kernel's word on the second run: nft numbers every rule it adds,
    // so a rewritten rule shows a new handle; the sets print the same.
    let kernel = || {
        (
            ns.output("nft", &["-a", "list", "ruleset"]).unwrap(),
            ns.output("ipset", &["save"]).unwrap(),
        )
    };
    let before = kernel();
    let second = run(&mut podman_run(
        &ns,
        &image,
        &[(&netpol, "/etc/ipwarden/netpol.yaml")],
        &once,
    ));
    assert!(before == kernel(), "the second run rewrote rules or sets");
    let report: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(
        report["policies"]["chains_written"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(report["policies"]["members_added"], 0, "{report}");
}
