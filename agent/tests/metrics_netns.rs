//! `/metrics` of the running agent read by a parser nobody here wrote:
//! Python prometheus_client's OpenMetrics parser, which is strict (it
//! refuses a missing `# EOF`, a counter without `_total`, a bad label).
//! The metrics `run --once` records move in the daemon too, after each
//! sync. The policy controller alone, on this host's kernel in a
//! throw-away namespace; the service proxy's (`virtual_services`,
//! `ipvs_changes`) need IPVS, in the VM.

use std::{collections::BTreeMap, io::Write, path::Path, process::Stdio};

use ipwarden::{
    lab::{http_get_from, wait_until, AgentProcess, Lab, CLUSTER, VM_WAIT},
    netns::privileged,
};

const AGENT: &str = env!("CARGO_BIN_EXE_ipwarden");

/// Each sample as `name{labels}` and its value, from the strict parser.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;

/// The venv `cargo xtask setup` installs prometheus_client in.
fn python() -> String {
    std::env::var("IPWARDEN_PYTHON")
        .unwrap_or_else(|_| "/opt/ipwarden/kubernetes-validate/bin/python3".into())
}

fn scrape(lab: &Lab) -> BTreeMap<String, f64> {
    let (code, text) =
        http_get_from(&lab.node, "127.0.0.1:20244".parse().unwrap(), "/metrics").unwrap();
    assert_eq!(code, 200, "{text}");
    let mut child = std::process::Command::new(python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (cargo xtask setup)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("{key} not in {samples:#?}"))
}

#[test]
fn metrics_parse_strictly_and_the_pass_metrics_move_in_the_daemon() {
    if !privileged("metrics_parse_strictly_and_the_pass_metrics_move_in_the_daemon") {
        return;
    }
    let lab = Lab::new(CLUSTER).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/netpol.yaml");
    std::fs::copy(&example, lab.manifests.join("netpol.yaml")).unwrap();
    let source = ["--manifests", lab.manifests.to_str().unwrap()];
    let extra = ["--run-service-proxy=false", "--bpf-mode", "off"];
    let mut agent = AgentProcess::spawn(&lab, Path::new(AGENT), &source, &extra).unwrap();
    agent.wait_ready(VM_WAIT).unwrap();

    let ok = r#"ipwarden_reconciles_total{result="ok"}"#;
    let moving = [
        ok,
        "ipwarden_reconcile_duration_seconds_count{}",
        "ipwarden_set_member_changes_total{}",
    ];
    let before = scrape(&lab);
    for key in moving {
        assert!(value(&before, key) > 0.0, "{key} after the first sync");
    }
    value(&before, "ipwarden_input_problems{}");
    value(&before, "ipwarden_virtual_services{}");
    value(&before, "ipwarden_ipvs_changes_total{}");

    // A second frontend pod: a member of the policy's source set.
    let aside = lab.manifests.join("web2.tmp");
    std::fs::write(
        &aside,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web2, namespace: front, labels: {role: frontend}}\n\
         spec: {nodeName: node-b, containers: [{name: web}]}\n\
         status: {phase: Running, podIP: 10.244.2.21, podIPs: [{ip: 10.244.2.21}]}\n",
    )
    .unwrap();
    std::fs::rename(&aside, lab.manifests.join("web2.yaml")).unwrap();
    assert!(
        wait_until(VM_WAIT, || {
            let now = scrape(&lab);
            moving.iter().all(|k| value(&now, k) > value(&before, k))
        }),
        "the metrics did not move after a sync: before {before:#?}, now {:#?}",
        scrape(&lab)
    );
}
