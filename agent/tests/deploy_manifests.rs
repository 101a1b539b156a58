//! deploy/ as a cluster would take it:
//!
//! - every manifest (examples included) validates against the OpenAPI
//!   schema of the Kubernetes that k8s-openapi targets, with
//!   kubernetes-validate (installed by `cargo xtask setup`), strictly (an
//!   unknown field is an error);
//! - the DaemonSet's arguments are flags of `ipwarden run` (they parse, with
//!   their values, and `ipwarden run --help` lists them), commented
//!   alternatives included;
//! - the container is not privileged: every capability dropped but the
//!   four the agent needs (tests/image_podman.rs finds them), the host's
//!   bpffs and /proc/sys/net mounted where its flags say;
//! - the ClusterRole grants get/list/watch on exactly the kinds the kube
//!   source watches, create/patch on events.k8s.io Events (the Warnings on
//!   skipped objects) and nothing else.
//!
//! No root needed. Without kubernetes-validate the schema test skips,
//! unless IPWARDEN_PRIVILEGED=1 (set by `cargo xtask test`) makes that a
//! failure.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use clap::Parser;
use ipwarden::cluster::Kind;
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use serde::Deserialize;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every YAML or JSON file under deploy/, sorted.
fn manifest_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&deploy_dir(), &mut files);
    files.sort();
    files
}

/// The documents of a multi-document YAML file, empty ones left out.
fn documents(path: &Path) -> Vec<serde_yaml_ng::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn one_of_kind<T: serde::de::DeserializeOwned>(file: &str, kind: &str) -> T {
    let docs = documents(&deploy_dir().join(file));
    let mut found = docs
        .into_iter()
        .filter(|d| d["kind"].as_str() == Some(kind));
    let doc = found
        .next()
        .unwrap_or_else(|| panic!("no {kind} in {file}"));
    assert!(found.next().is_none(), "several {kind} in {file}");
    serde_yaml_ng::from_value(doc).unwrap_or_else(|e| panic!("{file}: {kind}: {e}"))
}

/// The Kubernetes version k8s-openapi is built for: its `v1_NN` feature in
/// the workspace's Cargo.toml.
fn kubernetes_version() -> String {
    let cargo =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
            .unwrap();
    let line = cargo
        .lines()
        .find(|l| l.starts_with("k8s-openapi"))
        .expect("k8s-openapi in the workspace dependencies");
    let minor = line
        .split('"')
        .find_map(|w| w.strip_prefix("v1_"))
        .expect("a v1_NN feature of k8s-openapi");
    format!("1.{minor}.0")
}

/// kubernetes-validate: $IPWARDEN_KUBERNETES_VALIDATE, the venv of `cargo
/// xtask setup`, or on PATH.
fn validator() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IPWARDEN_KUBERNETES_VALIDATE") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from("/opt/ipwarden/kubernetes-validate/bin/kubernetes-validate");
    if venv.is_file() {
        return Some(venv);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubernetes-validate"))
        .find(|p| p.is_file())
}

fn validate(validator: &Path, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(validator)
        .args(["--kubernetes-version", &kubernetes_version(), "--strict"])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", validator.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_manifest_validates_against_the_kubernetes_openapi_schema() {
    let Some(validator) = validator() else {
        if std::env::var_os("IPWARDEN_PRIVILEGED").is_some_and(|v| v == "1") {
            panic!("kubernetes-validate is not installed (cargo xtask setup installs it)");
        }
        eprintln!("skipped: kubernetes-validate is not installed (cargo xtask setup)");
        return;
    };
    let files = manifest_files();
    for expected in [
        "daemonset.yaml",
        "rbac.yaml",
        "examples/netpol.yaml",
        "examples/web.yaml",
    ] {
        assert!(
            files.contains(&deploy_dir().join(expected)),
            "deploy/{expected} is missing: {files:?}"
        );
    }
    let (ok, text) = validate(&validator, &files);
    assert!(ok, "kubernetes-validate {}:\n{text}", kubernetes_version());
    // Every document was checked (none skipped as unknown): one "passed"
    // line each.
    let documents: usize = files.iter().map(|f| documents(f).len()).sum();
    let passed = text.lines().filter(|l| l.contains(" passed ")).count();
    assert_eq!(passed, documents, "{text}");

    // The validator does reject: an unknown field and a wrong type.
    let dir = std::env::temp_dir().join(format!("ipw-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    let daemonset = std::fs::read_to_string(deploy_dir().join("daemonset.yaml")).unwrap();
    std::fs::write(
        &bad,
        daemonset.replace(
            "hostNetwork: true",
            "hostNetwork: true\n      hostNetwrok: true",
        ),
    )
    .unwrap();
    let (ok, text) = validate(&validator, std::slice::from_ref(&bad));
    assert!(!ok && text.contains("hostNetwrok"), "{text}");
    std::fs::write(
        &bad,
        daemonset.replace("hostNetwork: true", "hostNetwork: \"yes\""),
    )
    .unwrap();
    let (ok, text) = validate(&validator, std::slice::from_ref(&bad));
    assert!(!ok, "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `ipwarden run`'s flags, for parsing the DaemonSet's arguments.
#[derive(Parser)]
struct Run {
    #[command(flatten)]
    args: ipwarden::cli::run::Args,
}

#[test]
fn the_daemonset_runs_flags_that_ipwarden_run_knows() {
    let ds: DaemonSet = one_of_kind("daemonset.yaml", "DaemonSet");
    let template = ds.spec.clone().unwrap().template;
    let pod = template.spec.unwrap();
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some(format!("localhost/ipwarden:{}", env!("CARGO_PKG_VERSION")).as_str()),
        "the name `cargo xtask image` gives the image"
    );
    assert!(c.command.is_none(), "the image's entrypoint is ipwarden");
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "run");

    // $(VAR) references are to variables the container defines.
    let env: Vec<String> = c.env.iter().flatten().map(|e| e.name.clone()).collect();
    let mut substituted = Vec::new();
    for arg in &args[1..] {
        let mut a = arg.clone();
        while let Some(start) = a.find("$(") {
            let end = start + a[start..].find(')').expect("closing )");
            let var = &a[start + 2..end];
            assert!(env.iter().any(|e| e == var), "{arg}: ${var} is not in env");
            a.replace_range(start..=end, "node-a");
        }
        substituted.push(a);
    }

    // The flags as written, and those of the commented alternatives.
    let text = std::fs::read_to_string(deploy_dir().join("daemonset.yaml")).unwrap();
    let commented: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("# - --"))
        .map(|f| format!("--{}", f.trim()))
        .collect();
    assert!(
        commented.iter().any(|f| f.starts_with("--kubeconfig=")),
        "the kubeconfig alternative: {commented:?}"
    );
    let help = Command::new(env!("CARGO_BIN_EXE_ipwarden"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    let known: BTreeSet<&str> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--"))
        .collect();
    for flag in substituted.iter().chain(&commented) {
        assert!(
            flag.starts_with("--"),
            "{flag}: a flag, written --name=value"
        );
        let name = flag.split('=').next().unwrap();
        assert!(
            known.contains(name),
            "{name} is not in `ipwarden run --help`"
        );
    }
    // With their values, they parse as `ipwarden run` parses them.
    for extra in [vec![], commented.clone()] {
        let argv = std::iter::once("ipwarden".to_string())
            .chain(substituted.iter().cloned())
            .chain(extra);
        let parsed = Run::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            parsed.args.manifests.is_none(),
            "the cluster comes from the API server"
        );
        assert_eq!(parsed.args.node_name.as_deref(), Some("node-a"));
        assert_eq!(parsed.args.metrics_bind_address, "0.0.0.0:20244");
        assert_eq!(parsed.args.healthz_bind_address, "0.0.0.0:20244");
        assert!(
            parsed.args.api_addr.is_none(),
            "the split flags, not the old one"
        );
    }

    // Probes and the scrape annotation point at those flags' port.
    let port = 20244;
    for (probe, path) in [
        (&c.readiness_probe, "/readyz"),
        (&c.liveness_probe, "/healthz"),
    ] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port)
        );
    }
    let annotations = ds.metadata.annotations.clone().unwrap_or_default();
    assert!(annotations.is_empty(), "scrape annotations go on the pods");
    let a = template.metadata.unwrap().annotations.unwrap();
    assert_eq!(a["prometheus.io/scrape"], "true");
    assert_eq!(a["prometheus.io/port"], port.to_string());
    assert_eq!(a["prometheus.io/path"], "/metrics");

    // What a node agent needs from its node.
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let tolerations = pod.tolerations.unwrap();
    assert!(tolerations
        .iter()
        .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()));
    let mounts = c.volume_mounts.clone().unwrap();
    let volumes = pod.volumes.unwrap();
    let host_path_of = |mount: &str| {
        let m = mounts
            .iter()
            .find(|m| m.mount_path == mount)
            .unwrap_or_else(|| panic!("no mount at {mount}"));
        let v = volumes.iter().find(|v| v.name == m.name).unwrap();
        let hp = v.host_path.clone().unwrap();
        (m.clone(), hp.path, hp.type_)
    };
    let (bpffs, path, _) = host_path_of("/sys/fs/bpf");
    assert_eq!(path, "/sys/fs/bpf");
    // A bpffs the host mounts after the pod started shows in the pod.
    assert_eq!(bpffs.mount_propagation.as_deref(), Some("HostToContainer"));
    let (_, path, kind) = host_path_of("/run/xtables.lock");
    assert_eq!(
        (path.as_str(), kind.as_deref()),
        ("/run/xtables.lock", Some("FileOrCreate"))
    );
    let (modules, path, _) = host_path_of("/lib/modules");
    assert_eq!(path, "/lib/modules");
    assert_eq!(modules.read_only, Some(true));
}

#[test]
fn the_cluster_role_grants_exactly_what_the_agent_reads() {
    let role: ClusterRole = one_of_kind("rbac.yaml", "ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.unwrap() {
            for resource in rule.resources.clone().unwrap() {
                for verb in &rule.verbs {
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    let mut expected = BTreeSet::new();
    for kind in Kind::ALL {
        // "endpointslices.discovery.k8s.io": resource, then group.
        let (resource, group) = kind
            .resource()
            .split_once('.')
            .unwrap_or((kind.resource(), ""));
        // The CRD kind is only listed and watched.
        let verbs: &[&str] = match kind {
            Kind::ClusterNetworkPolicy => &["list", "watch"],
            _ => &["get", "list", "watch"],
        };
        for verb in verbs {
            expected.insert((group.to_string(), resource.to_string(), verb.to_string()));
        }
    }
    // The Warning Events on skipped objects: created, and patched by
    // kube's recorder when a repeat becomes a series.
    for verb in ["create", "patch"] {
        expected.insert(("events.k8s.io".into(), "events".into(), verb.into()));
    }
    assert_eq!(granted, expected);

    // Bound to the account the DaemonSet runs as.
    let binding: ClusterRoleBinding = one_of_kind("rbac.yaml", "ClusterRoleBinding");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());
    let ds: DaemonSet = one_of_kind("daemonset.yaml", "DaemonSet");
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(
        Some(subjects[0].name.clone()),
        ds.spec.unwrap().template.spec.unwrap().service_account_name
    );
    assert_eq!(subjects[0].namespace, ds.metadata.namespace);
}

/// The capabilities tests/image_podman.rs shows the agent needs, each one.
const NEEDED_CAPS: [&str; 4] = ["NET_ADMIN", "NET_RAW", "BPF", "PERFMON"];

#[test]
fn the_daemonset_drops_every_capability_but_those_the_agent_needs() {
    let ds: DaemonSet = one_of_kind("daemonset.yaml", "DaemonSet");
    let pod = ds.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let security = c.security_context.clone().expect("a securityContext");
    assert_ne!(security.privileged, Some(true), "privileged");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let caps = security.capabilities.expect("capabilities");
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
    let added: BTreeSet<String> = caps.add.into_iter().flatten().collect();
    let needed: BTreeSet<String> = NEEDED_CAPS.iter().map(ToString::to_string).collect();
    assert_eq!(added, needed);
    assert_eq!(
        security.seccomp_profile.map(|p| p.type_),
        Some("RuntimeDefault".to_string()),
        "containerd's RuntimeDefault lets bpf(2) through for CAP_BPF"
    );

    // What it cannot do itself comes from the host: bpffs (mounting one
    // needs CAP_SYS_ADMIN) and /proc/sys/net (read-only in the container).
    let host_path = |mount_path: &str| {
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted on {mount_path}"));
        assert_ne!(mount.read_only, Some(true), "{mount_path} is read-only");
        assert_ne!(
            mount.mount_propagation.as_deref(),
            Some("Bidirectional"),
            "Bidirectional propagation needs privileged"
        );
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap();
        volume.host_path.clone().expect("a hostPath").path
    };
    assert_eq!(host_path("/sys/fs/bpf"), "/sys/fs/bpf");
    assert_eq!(host_path("/host/proc/sys/net"), "/proc/sys/net");
    let args = c.args.clone().unwrap();
    assert!(
        args.iter().any(|a| a == "--sysctl-dir=/host/proc/sys"),
        "{args:?}"
    );
    assert!(
        args.iter()
            .any(|a| a == "--bpf-pin-dir=/sys/fs/bpf/ipwarden"),
        "{args:?}"
    );
}
