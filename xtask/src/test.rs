//! `cargo xtask test`: every test, as CI runs them.
//!
//! 1. the eBPF object is built (the privileged tests load it), and the OCI
//!    image (`cargo xtask image --cached`: rebuilt only when the release
//!    binary or the eBPF object changed), which the image test runs;
//! 2. `cargo test --workspace` as root: unit tests and the privileged
//!    network-namespace tests (IPWARDEN_PRIVILEGED=1 turns a skip into a
//!    failure, so nothing passes by being skipped);
//! 3. the VM suites: every test binary named `vm_*` runs with `--ignored`
//!    inside the IPVS VM; `tc_classifier`, `link_netns` and `explain_netns`
//!    run there too, so the clsact and dummy-interface paths of an older
//!    kernel (6.1) are exercised beside TCX and the bridge fallback on this
//!    host.

use std::{
    io::BufRead,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{
    build_ebpf, image,
    process::{self, require_root, workspace_root},
    setup,
};

#[derive(clap::Args)]
pub struct Options {
    /// Skip the VM suites (for a quick local run; CI runs everything).
    #[arg(long)]
    pub no_vm: bool,
}

/// Test binaries that run in the VM beside the `vm_*` ones (`explain_netns`:
/// `ipwarden explain` for a pod isolated by a policy, on 6.1 too).
const ALSO_IN_VM: &[&str] = &["tc_classifier", "link_netns", "explain_netns"];

pub fn run(opts: &Options) -> Result<()> {
    require_root("test")?;
    let object = build_ebpf::run(&build_ebpf::Options::default())?;
    let built = image::run(&image::Options {
        cached: true,
        ..Default::default()
    })?;
    let env = [
        ("IPWARDEN_BPF_OBJECT", object.display().to_string()),
        ("IPWARDEN_PRIVILEGED", "1".to_string()),
        (
            "IPWARDEN_IMAGE_ARCHIVE",
            built.archive.display().to_string(),
        ),
        ("IPWARDEN_IMAGE", built.reference),
        (
            "IPWARDEN_KUBERNETES_VALIDATE",
            format!(
                "{}/bin/kubernetes-validate",
                setup::KUBERNETES_VALIDATE_VENV
            ),
        ),
    ];

    let mut tally = Tally::default();
    let mut unit = Command::new("cargo");
    unit.args(["test", "--workspace", "--no-fail-fast"])
        .current_dir(workspace_root());
    unit.envs(env.iter().map(|(k, v)| (k, v)));
    if !tally.run(&mut unit)?.success() {
        bail!("cargo test --workspace failed ({})", tally.line());
    }

    if opts.no_vm {
        println!("xtask test: VM suites skipped (--no-vm)");
        println!("{}", tally.line());
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
        let status = tally.run(
            Command::new(std::env::current_exe()?)
                .arg("vm-test")
                .arg("--")
                .args(&args)
                .envs(env.iter().map(|(k, v)| (k, v))),
        )?;
        if !status.success() {
            failed.push(format!("{name} ({status})"));
        }
    }
    if !failed.is_empty() {
        bail!("VM suites failed: {} ({})", failed.join(", "), tally.line());
    }
    println!("xtask test: {} VM suites passed", suites.len());
    // One closing line for every suite, host and VM together.
    println!("{}", tally.line());
    Ok(())
}

/// Totals of every `test result:` line the suites print.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    /// Runs `cmd`, echoing its stdout line by line as it comes, and adds up
    /// the `test result: ok. N passed; M failed; ...` lines (a test ignored
    /// on the host is counted when it runs in the VM).
    fn run(&mut self, cmd: &mut Command) -> Result<std::process::ExitStatus> {
        let shown = process::describe(cmd);
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start `{shown}`"))?;
        if let Some(out) = child.stdout.take() {
            for line in std::io::BufReader::new(out).lines() {
                let line = line?;
                println!("{line}");
                if let Some(rest) = line.strip_prefix("test result: ") {
                    self.add(rest);
                }
            }
        }
        Ok(child.wait()?)
    }

    fn add(&mut self, result: &str) {
        // "ok. 12 passed; 0 failed; 3 ignored; 0 measured; ..."
        for part in result.split(['.', ';']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next()) {
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    _ => {}
                }
            }
        }
    }

    fn line(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed)
    }
}

/// (target name, executable) of the test binaries that run in the VM.
fn test_binaries() -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = Command::new("cargo");
    cmd.args(["test", "--workspace", "--no-run", "--message-format=json"])
        .current_dir(workspace_root());
    let mut found: Vec<_> = process::cargo_executables(&mut cmd, "test")?
        .into_iter()
        .filter(|(name, _)| name.starts_with("vm_") || ALSO_IN_VM.contains(&name.as_str()))
        .collect();
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    #[test]
    fn result_lines_add_up() {
        let mut t = super::Tally::default();
        t.add("ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 1.2s");
        t.add("FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        assert_eq!(t.line(), "14 passed, 1 failed");
    }
}
