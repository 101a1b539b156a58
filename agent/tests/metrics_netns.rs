//! `/metrics` of the running agent read by a parser nobody here wrote
//! (support/openmetrics.rs: Python prometheus_client's strict OpenMetrics
//! parser).
//! The metrics `run --once` records move in the daemon too, after each
//! sync. The policy controller alone, on this host's kernel in a
//! throw-away namespace; the service proxy's (`virtual_services`,
//! `ipvs_changes`) need IPVS, in the VM (vm_daemon.rs).

use std::path::Path;

use ipwarden::{
    lab::{wait_until, AgentProcess, Lab, CLUSTER, VM_WAIT},
    netns::privileged,
};

mod support;

use support::openmetrics::{scrape, value};

const AGENT: &str = env!("CARGO_BIN_EXE_ipwarden");

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
