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
//! The eBPF modes (log, allow) add BPF and PERFMON, and need a seccomp
//! profile that lets bpf(2) through for CAP_BPF (containerd's does,
//! podman's does not) and the host's bpffs: the maps they pin there are
//! read with bpftool from the host. This kernel has no IPVS, so those runs
//! end at the service proxy's IPVS socket, after the eBPF start; the VM
//! suites attach the program.
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

use ipwarden::{
    bpf::PinLayout,
    netns::{checked_output, privileged, BpfFs, NetNs},
};
use ipwarden_common::names;

/// The tests load and remove the same image: one at a time.
static PODMAN: std::sync::Mutex<()> = std::sync::Mutex::new(());

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

/// What the eBPF modes need: BPF to create maps and load the program,
/// PERFMON for what the verifier allows only to it (the program's pointer
/// arithmetic), NET_ADMIN to load and attach a tc program; with
/// [`FIREWALL_CAPS`] for the rest of the run. Found by dropping each (the
/// test does): every one missing fails the eBPF start.
const BPF_NEEDS: [&str; 3] = ["NET_ADMIN", "BPF", "PERFMON"];
const BPF_CAPS: [&str; 4] = ["NET_ADMIN", "NET_RAW", "BPF", "PERFMON"];

/// `podman run` of the image in `ns`, every capability dropped but
/// [`FIREWALL_CAPS`].
fn podman_run(ns: &NetNs, image: &str, volumes: &[(&Path, &str)], args: &[&str]) -> Command {
    podman_run_with(ns, image, &FIREWALL_CAPS, &[], volumes, args)
}

/// `podman run` of the image in `ns`, every capability dropped but `caps`;
/// `options` go to podman (a seccomp profile, a writable bpffs).
fn podman_run_with(
    ns: &NetNs,
    image: &str,
    caps: &[&str],
    options: &[String],
    volumes: &[(&Path, &str)],
    args: &[&str],
) -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc", "run", "--rm", "--cap-drop=all"]);
    for cap in caps {
        cmd.arg(format!("--cap-add={cap}"));
    }
    cmd.args(options);
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

/// The image loaded into podman (removed on drop), or None when the test
/// is skipped.
fn load_image(test: &str) -> Option<(String, Loaded)> {
    if !privileged(test) {
        return None;
    }
    let Some(archive) = std::env::var_os("IPWARDEN_IMAGE_ARCHIVE").map(PathBuf::from) else {
        assert!(
            !demanded(),
            "{test}: IPWARDEN_IMAGE_ARCHIVE is not set (cargo xtask test builds the image)"
        );
        eprintln!("{test}: skipped, no IPWARDEN_IMAGE_ARCHIVE (cargo xtask image; cargo xtask test sets it)");
        return None;
    };
    let image = std::env::var("IPWARDEN_IMAGE")
        .unwrap_or_else(|_| format!("localhost/ipwarden:{}", env!("CARGO_PKG_VERSION")));
    let loaded = run(Command::new("podman")
        .args(["load", "-q", "-i"])
        .arg(&archive));
    assert!(
        stdout(&loaded).contains(&image),
        "podman load named it otherwise: {}",
        stdout(&loaded)
    );
    let guard = Loaded(image.clone());
    Some((image, guard))
}

fn netpol_yaml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples/netpol.yaml")
        .canonicalize()
        .unwrap()
}

#[test]
fn the_image_enforces_a_network_policy_under_podman() {
    let _serial = PODMAN.lock().unwrap_or_else(|e| e.into_inner());
    let Some((image, _loaded)) = load_image(TEST) else {
        return;
    };

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

    let netpol = netpol_yaml();
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
        "-A IPW-TO-POD-10 -d 10.244.1.10/32 -g IPW-POD-FW-",
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

/// Podman's default seccomp profile lets `bpf` and `perf_event_open`
/// through only for CAP_SYS_ADMIN; containerd's (Kubernetes'
/// RuntimeDefault) also for CAP_BPF and CAP_PERFMON. This is podman's with
/// containerd's rule, written to a file of this process.
fn seccomp_as_containerd() -> PathBuf {
    const GUARDED: [(&str, &str); 2] = [("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")];
    let default = std::fs::read("/usr/share/containers/seccomp.json")
        .expect("podman's default seccomp profile");
    let mut profile: serde_json::Value = serde_json::from_slice(&default).unwrap();
    let rules = profile["syscalls"].as_array_mut().unwrap();
    for rule in rules.iter_mut() {
        let names = rule["names"].as_array_mut().unwrap();
        names.retain(|n| !GUARDED.iter().any(|(call, _)| n == call));
    }
    rules.retain(|r| !r["names"].as_array().unwrap().is_empty());
    for (call, cap) in GUARDED {
        for cap in [cap, "CAP_SYS_ADMIN"] {
            rules.push(serde_json::json!({
                "names": [call],
                "action": "SCMP_ACT_ALLOW",
                "includes": {"caps": [cap]},
            }));
        }
    }
    let path = std::env::temp_dir().join(format!("ipwarden-seccomp-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec_pretty(&profile).unwrap()).unwrap();
    path
}

/// `run --once` of an eBPF mode with the service proxy (the eBPF data plane
/// is the proxy's), the host's bpffs at /sys/fs/bpf unless `bpffs` is None.
fn ebpf_once(
    ns: &NetNs,
    image: &str,
    caps: &[&str],
    seccomp: &Path,
    bpffs: Option<&BpfFs>,
    mode: &str,
) -> Output {
    let mut options = vec![format!("--security-opt=seccomp={}", seccomp.display())];
    if let Some(fs) = bpffs {
        options.push(format!("--volume={}:/sys/fs/bpf", fs.path().display()));
    }
    let netpol = netpol_yaml();
    let mode = format!("--bpf-mode={mode}");
    podman_run_with(
        ns,
        image,
        caps,
        &options,
        &[(&netpol, "/etc/ipwarden/netpol.yaml")],
        &[
            "run",
            "--once",
            "--manifests",
            "/etc/ipwarden/netpol.yaml",
            "--node-name",
            "node-a",
            &mode,
            "--bpf-pin-dir=/sys/fs/bpf/ipwarden",
        ],
    )
    .output()
    .unwrap()
}

/// The eBPF start (object loaded, maps created, pinned and configured) got
/// past every permission: what stops the run on this host is IPVS, which
/// only the VM's kernel has.
fn started_ebpf(out: &Output) -> bool {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.contains("IPVS") && !stderr.contains("eBPF")
}

#[test]
fn the_image_runs_the_ebpf_modes_with_bpf_and_perfmon_under_podman() {
    const TEST: &str = "the_image_runs_the_ebpf_modes_with_bpf_and_perfmon_under_podman";
    let _serial = PODMAN.lock().unwrap_or_else(|e| e.into_inner());
    let Some((image, _loaded)) = load_image(TEST) else {
        return;
    };
    let seccomp = seccomp_as_containerd();
    for (mode, number) in [("log", 1), ("allow", 2)] {
        let ns = NetNs::new("ipw-imgbpf").unwrap();
        let bpffs = BpfFs::new("ipw-img").unwrap();
        let out = ebpf_once(&ns, &image, &BPF_CAPS, &seccomp, Some(&bpffs), mode);
        assert!(
            started_ebpf(&out),
            "{mode}: the eBPF start failed under {BPF_CAPS:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The host's bpftool reads what the container pinned.
        let pins = PinLayout::new(bpffs.path().join("ipwarden"));
        for map in names::PINNED_MAPS {
            let path = pins.map(map);
            checked_output(
                Command::new("bpftool")
                    .args(["-j", "map", "show", "pinned"])
                    .arg(&path),
            )
            .unwrap_or_else(|e| panic!("{mode}: {map} not pinned: {e}"));
        }
        let config = checked_output(
            Command::new("bpftool")
                .args(["-j", "map", "dump", "pinned"])
                .arg(pins.map(names::MAP_CONFIG)),
        )
        .unwrap();
        let config: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert_eq!(
            config[0]["formatted"]["value"]["mode"], number,
            "{mode}: {config}"
        );
    }

    // Each capability is needed: without it the eBPF start fails.
    for dropped in BPF_NEEDS {
        let caps: Vec<&str> = BPF_CAPS.into_iter().filter(|c| *c != dropped).collect();
        let ns = NetNs::new("ipw-imgbpf").unwrap();
        let bpffs = BpfFs::new("ipw-img").unwrap();
        let out = ebpf_once(&ns, &image, &caps, &seccomp, Some(&bpffs), "log");
        assert!(
            !out.status.success() && !started_ebpf(&out),
            "the eBPF start passed without {dropped}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Podman's own profile refuses bpf(2) to CAP_BPF: the profile matters.
    let ns = NetNs::new("ipw-imgbpf").unwrap();
    let bpffs = BpfFs::new("ipw-img").unwrap();
    let podman_default = Path::new("/usr/share/containers/seccomp.json");
    let out = ebpf_once(&ns, &image, &BPF_CAPS, podman_default, Some(&bpffs), "log");
    assert!(
        !started_ebpf(&out),
        "bpf(2) passed podman's default profile"
    );

    // Without the host's bpffs the agent cannot mount one (no
    // CAP_SYS_ADMIN) and says what to mount.
    let out = ebpf_once(&ns, &image, &BPF_CAPS, &seccomp, None, "log");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("mount the host's bpffs"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(seccomp);
}

/// Why the service proxy needs no `privileged`: its IPVS sysctls are
/// written through the host's /proc/sys/net mounted elsewhere
/// (--sysctl-dir), which a container without privileges may write while
/// its own /proc/sys is read-only. The writes land in the container's
/// network namespace (the node's, with hostNetwork). The image has no
/// shell: the host's static busybox writes, as the agent would (this
/// kernel has no IPVS, the VM's has).
#[test]
fn a_mounted_proc_sys_net_is_writable_without_privileges() {
    const TEST: &str = "a_mounted_proc_sys_net_is_writable_without_privileges";
    let _serial = PODMAN.lock().unwrap_or_else(|e| e.into_inner());
    let Some((image, _loaded)) = load_image(TEST) else {
        return;
    };
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "{TEST}: needs a static busybox");
    let ns = NetNs::new("ipw-imgsys").unwrap();
    let before = ns
        .output("cat", &["/proc/sys/net/ipv4/ip_forward"])
        .unwrap();
    let flipped = if before.trim() == "1" { "0" } else { "1" };
    let write = |file: &str| {
        let script = format!("echo {flipped} > {file}/net/ipv4/ip_forward");
        let options = [
            "--entrypoint=/busybox".to_string(),
            "--volume=/proc/sys/net:/host/proc/sys/net".to_string(),
        ];
        podman_run_with(
            &ns,
            &image,
            &FIREWALL_CAPS,
            &options,
            &[(busybox, "/busybox")],
            &["sh", "-c", &script],
        )
        .output()
        .unwrap()
    };
    let own = write("/proc/sys");
    assert!(
        String::from_utf8_lossy(&own.stderr).contains("Read-only file system"),
        "the container's own /proc/sys was writable: {own:?}"
    );
    let mounted = write("/host/proc/sys");
    assert!(mounted.status.success(), "{mounted:?}");
    let after = ns
        .output("cat", &["/proc/sys/net/ipv4/ip_forward"])
        .unwrap();
    assert_eq!(
        after.trim(),
        flipped,
        "the write did not reach the namespace"
    );
}
