//! Inside the IPVS VM: a manifests file rewritten in place never empties
//! IPVS. Oracle: `ipvsadm -Ln`. Timing matters here (a rewrite's gap
//! against the 5 s hold): keep busy tests out of this suite.

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
