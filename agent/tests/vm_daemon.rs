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
    lab.node
        .output("ip", &["addr", "flush", "dev", "ipwarden0"])
        .unwrap();
    wait_until("the VIPs back on ipwarden0", VM_WAIT, || {
        lab.node
            .output("ip", &["-o", "addr", "show", "dev", "ipwarden0"])
            .unwrap()
            .contains("203.0.113.10")
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
