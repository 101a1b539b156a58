//! The rescue part of `ipwarden demo`: kube-router #1732 on a lab node,
//! with the tc program off, in allow mode and in log mode. Needs IPVS.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{bail, Context, Result};

use crate::lab::{wait_until, AgentProcess, Lab, CLUSTER};

const EXTERNAL: &str = "203.0.113.10:80";
const MEMBER: &str = "203.0.113.10,tcp:80";

fn connect(lab: &Lab, what: &str) -> bool {
    let to: SocketAddr = EXTERNAL.parse().expect("a socket address");
    match lab.tcp(to) {
        Ok(name) => {
            println!("   {what}: connect {EXTERNAL} -> answered by {name}");
            true
        }
        Err(e) => {
            println!("   {what}: connect {EXTERNAL} -> {e}");
            false
        }
    }
}

fn ipset(lab: &Lab, args: &[&str]) -> Result<()> {
    println!("   $ ipset {}", args.join(" "));
    lab.node.output("ipset", args)?;
    Ok(())
}

pub fn run(bin: &Path) -> Result<()> {
    let lab = Lab::new(CLUSTER).context("building the lab namespaces")?;
    println!(
        "lab: node {} (10.0.1.1), client 10.0.1.2, pods 10.244.1.2 and 10.244.2.2",
        lab.node.name()
    );
    println!("     Service shop/web: externalIP {EXTERNAL} -> pods :8080\n");

    println!("1. --bpf-mode off: what kube-router users saw in issue 1732");
    let agent = AgentProcess::start(&lab, bin, &["--bpf-mode", "off"])?;
    connect(&lab, "before");
    ipset(&lab, &["flush", "ipwarden-svip-prt"])?;
    let before = lab.chain_counter("-j REJECT")?;
    if connect(&lab, "after the flush") {
        bail!("the connection should have been refused with the set flushed");
    }
    println!(
        "   the REJECT rule counted {} packet(s)\n",
        lab.chain_counter("-j REJECT")? - before
    );
    agent.kill();

    println!("2. --bpf-mode allow: the tc program marks mirrored traffic, the chain accepts it");
    let agent = AgentProcess::start(&lab, bin, &["--bpf-mode", "allow"])?;
    ipset(&lab, &["flush", "ipwarden-svip-prt"])?;
    for i in 1..=3 {
        if !connect(&lab, &format!("try {i}")) {
            bail!("allow mode should have rescued the connection");
        }
    }
    let dump = lab.node.output(
        &bin.to_string_lossy(),
        &[
            "bpf",
            "dump",
            "--bpf-pin-dir",
            &lab.bpffs.path().to_string_lossy(),
        ],
    )?;
    println!("   $ ipwarden bpf dump");
    for line in dump.lines() {
        println!("   {line}");
    }
    println!();
    agent.kill();

    println!("3. --bpf-mode log: refused as before, but reported with its 5-tuple, then healed");
    let events = std::env::temp_dir().join(format!("ipw-demo-events-{}", lab.node.name()));
    let _ = std::fs::remove_file(&events);
    let agent = AgentProcess::start(
        &lab,
        bin,
        &[
            "--bpf-mode",
            "log",
            "--audit-interval",
            "1",
            "--audit-heal-delay",
            "3",
            "--bpf-events-log",
            &events.to_string_lossy(),
        ],
    )?;
    ipset(&lab, &["del", "ipwarden-svip-prt", MEMBER])?;
    let flagged = wait_until(Duration::from_secs(20), || {
        lab.mirror_entry("IPW_SVC_PORTS", [203, 0, 113, 10], 80)
            .is_some_and(|v| v["flags"] == 1)
    });
    println!("   the auditor flagged the member in the mirror: {flagged}");
    connect(&lab, "while missing");
    if wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&events).is_ok_and(|t| !t.is_empty())
    }) {
        for line in std::fs::read_to_string(&events)?.lines() {
            println!("   event: {line}");
        }
    }
    let healed = wait_until(Duration::from_secs(30), || {
        lab.node
            .output("ipset", &["test", "ipwarden-svip-prt", MEMBER])
            .is_ok()
    });
    println!("   the auditor healed the set: {healed}");
    connect(&lab, "after the heal");
    agent.kill();
    let _ = lab.node.output(
        &bin.to_string_lossy(),
        &[
            "cleanup",
            "--bpf-pin-dir",
            &lab.bpffs.path().to_string_lossy(),
        ],
    );
    println!("\nthe lab namespaces are removed on exit");
    Ok(())
}
