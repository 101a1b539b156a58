//! `cargo xtask test`: every test, as CI runs them.
//!
//! 1. the eBPF object is built (the privileged tests load it);
//! 2. `cargo test --workspace` as root: unit tests and the privileged
//!    network-namespace tests (IPWARDEN_PRIVILEGED=1 turns a skip into a
//!    failure, so nothing passes by being skipped);
//! 3. the VM suites: every test binary named `vm_*` runs with `--ignored`
//!    inside the IPVS VM; `tc_classifier` and `link_netns` run there too,
//!    so the clsact and dummy-interface paths of an older kernel (6.1) are
//!    exercised beside TCX and the bridge fallback on this host.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{
    build_ebpf,
    process::{self, require_root, workspace_root},
};

#[derive(clap::Args)]
pub struct Options {
    /// Skip the VM suites (for a quick local run; CI runs everything).
    #[arg(long)]
    pub no_vm: bool,
}

/// Test binaries that run in the VM beside the `vm_*` ones.
const ALSO_IN_VM: &[&str] = &["tc_classifier", "link_netns"];

pub fn run(opts: &Options) -> Result<()> {
    require_root("test")?;
    let object = build_ebpf::run(&build_ebpf::Options::default())?;
    let env = [
        ("IPWARDEN_BPF_OBJECT", object.display().to_string()),
        ("IPWARDEN_PRIVILEGED", "1".to_string()),
    ];

    let mut unit = Command::new("cargo");
    unit.args(["test", "--workspace"])
        .current_dir(workspace_root());
    unit.envs(env.iter().map(|(k, v)| (k, v)));
    process::run(&mut unit).context("cargo test failed")?;

    if opts.no_vm {
        println!("xtask test: VM suites skipped (--no-vm)");
        return Ok(());
    }
    let suites = test_binaries()?;
    let mut failed = Vec::new();
    for (name, exe) in &suites {
        let mut args = vec![exe.display().to_string(), "--test-threads=2".to_string()];
        if name.starts_with("vm_") {
            args.push("--ignored".to_string());
        }
        println!("xtask test: running {name} inside the VM");
        let status = Command::new(std::env::current_exe()?)
            .arg("vm-test")
            .arg("--")
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .status()
            .context("starting vm-test")?;
        if !status.success() {
            failed.push(format!("{name} ({status})"));
        }
    }
    if !failed.is_empty() {
        bail!("VM suites failed: {}", failed.join(", "));
    }
    println!("xtask test: {} VM suites passed", suites.len());
    Ok(())
}

/// (target name, executable) of the test binaries that run in the VM.
fn test_binaries() -> Result<Vec<(String, PathBuf)>> {
    let out = Command::new("cargo")
        .args(["test", "--workspace", "--no-run", "--message-format=json"])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str())
        else {
            continue;
        };
        let is_test = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if is_test && (name.starts_with("vm_") || ALSO_IN_VM.contains(&name)) {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    found.sort();
    Ok(found)
}
