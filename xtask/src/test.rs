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
//!    host. The phase fails when it finds no `vm_*` suite, when a name in
//!    [`ALSO_IN_VM`] has no binary, or when a suite passes having run no
//!    test, so it can never pass by running nothing.

use std::{
    io::BufRead,
    path::PathBuf,
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{
    build_ebpf, image,
    process::{self, require_root, workspace_root},
    setup, vm,
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

/// The VM's timeout per suite, in seconds. Under TCG on a busy host the
/// longest suites took 385 s (vm_kube) and 483 s (vm_netpol_sctp), close
/// to vm-test's default of 600 s; a suite that hangs still ends, as 124.
const SUITE_TIMEOUT_SECS: u64 = 1800;

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
            "IPWARDEN_PYTHON",
            format!("{}/bin/python3", setup::KUBERNETES_VALIDATE_VENV),
        ),
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
    if !tally.run(&mut unit)?.0.success() {
        bail!("cargo test --workspace failed ({})", tally.line());
    }

    if opts.no_vm {
        println!("xtask test: VM suites skipped (--no-vm)");
        println!("{}", tally.line());
        return Ok(());
    }
    let suites = test_binaries()?;
    check_suites(&suites)?;
    let mut failed = Vec::new();
    for (name, exe) in &suites {
        let mut args = vec![exe.display().to_string(), "--test-threads=2".to_string()];
        if name.starts_with("vm_") {
            args.push("--ignored".to_string());
        }
        let mut vm_suite = || -> Result<(ExitStatus, Tally)> {
            println!("xtask test: running {name} inside the VM");
            let started = std::time::Instant::now();
            let (status, ran) = tally.run(
                Command::new(std::env::current_exe()?)
                    .arg("vm-test")
                    .args(["--timeout", &SUITE_TIMEOUT_SECS.to_string()])
                    .arg("--")
                    .args(&args)
                    .envs(env.iter().map(|(k, v)| (k, v))),
            )?;
            let secs = started.elapsed().as_secs();
            println!("xtask test: {name}: {} in {secs} s", status_text(status));
            Ok((status, ran))
        };
        let (mut status, mut ran) = vm_suite()?;
        // The guest kernel died before the suite reported (a panic, or a
        // soft lockup made one): its tests gave no verdict, so the suite
        // runs once more. A test that fails is never run again.
        if status.code() == Some(vm::EXIT_DIED) {
            println!(
                "xtask test: {name}: the VM died without a status (guest console above); once more"
            );
            (status, ran) = vm_suite()?;
        }
        if let Some(why) = suite_failure(status, ran) {
            failed.push(format!("{name} ({why})"));
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

fn status_text(status: ExitStatus) -> &'static str {
    if status.success() {
        "passed"
    } else {
        "failed"
    }
}

/// A VM suite fails when its status says so, and also when it exits 0
/// having run no test at all (a filter that matches nothing, a binary
/// whose tests were all renamed away): a VM phase that ran nothing must
/// not read as a pass.
fn suite_failure(status: ExitStatus, ran: Tally) -> Option<String> {
    if !status.success() {
        Some(status.to_string())
    } else if ran.passed == 0 {
        Some("no test ran".to_string())
    } else {
        None
    }
}

/// The VM phase must find what it is meant to run: at least one `vm_*`
/// suite, every name in [`ALSO_IN_VM`], and an executable for each.
fn check_suites(found: &[(String, PathBuf)]) -> Result<()> {
    if !found.iter().any(|(name, _)| name.starts_with("vm_")) {
        bail!("no vm_* test binary found: the VM phase would run nothing");
    }
    let missing: Vec<&str> = ALSO_IN_VM
        .iter()
        .copied()
        .filter(|want| !found.iter().any(|(name, _)| name == want))
        .collect();
    if !missing.is_empty() {
        bail!(
            "test binaries listed in ALSO_IN_VM not found: {}",
            missing.join(", ")
        );
    }
    if let Some((name, exe)) = found.iter().find(|(_, exe)| !exe.is_file()) {
        bail!("test binary of {name} missing: {}", exe.display());
    }
    Ok(())
}

/// Totals of every `test result:` line the suites print.
#[derive(Clone, Copy, Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    /// Runs `cmd`, echoing its stdout line by line as it comes, and adds up
    /// the `test result: ok. N passed; M failed; ...` lines (a test ignored
    /// on the host is counted when it runs in the VM). Returns `cmd`'s
    /// status and the totals of this run alone.
    fn run(&mut self, cmd: &mut Command) -> Result<(ExitStatus, Tally)> {
        let shown = process::describe(cmd);
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start `{shown}`"))?;
        let mut this_run = Tally::default();
        if let Some(out) = child.stdout.take() {
            for line in std::io::BufReader::new(out).lines() {
                let line = line?;
                println!("{line}");
                if let Some(rest) = line.strip_prefix("test result: ") {
                    this_run.add(rest);
                }
            }
        }
        self.passed += this_run.passed;
        self.failed += this_run.failed;
        Ok((child.wait()?, this_run))
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
    use std::{os::unix::process::ExitStatusExt, path::PathBuf, process::ExitStatus};

    use super::*;

    #[test]
    fn result_lines_add_up() {
        let mut t = Tally::default();
        t.add("ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 1.2s");
        t.add("FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        assert_eq!(t.line(), "14 passed, 1 failed");
    }

    fn ran(line: &str) -> Tally {
        let mut t = Tally::default();
        t.add(line);
        t
    }

    #[test]
    fn a_suite_fails_on_its_status_or_when_it_ran_nothing() {
        let ok = ExitStatus::from_raw(0);
        let failed = ExitStatus::from_raw(101 << 8);
        let passed = ran("ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
        let nothing = ran("ok. 0 passed; 0 failed; 0 ignored; 0 measured; 3 filtered out");
        assert_eq!(suite_failure(ok, passed), None);
        assert_eq!(suite_failure(ok, nothing).as_deref(), Some("no test ran"));
        assert_eq!(
            suite_failure(ok, Tally::default()).as_deref(),
            Some("no test ran")
        );
        assert!(suite_failure(failed, passed).is_some());
    }

    /// `(name, an executable that exists)` for each name.
    fn suites(names: &[&str]) -> Vec<(String, PathBuf)> {
        let exe = std::env::current_exe().unwrap();
        names.iter().map(|n| (n.to_string(), exe.clone())).collect()
    }

    #[test]
    fn the_vm_phase_refuses_to_run_nothing_or_less_than_listed() {
        let mut all = ALSO_IN_VM.to_vec();
        all.push("vm_kube");
        check_suites(&suites(&all)).unwrap();

        let no_vm = check_suites(&suites(ALSO_IN_VM)).unwrap_err();
        assert!(no_vm.to_string().contains("no vm_* test binary"), "{no_vm}");

        let renamed: Vec<&str> = all
            .iter()
            .copied()
            .filter(|n| *n != "explain_netns")
            .collect();
        let missing = check_suites(&suites(&renamed)).unwrap_err();
        assert!(missing.to_string().contains("explain_netns"), "{missing}");

        let mut gone = suites(&all);
        gone[0].1 = PathBuf::from("/nonexistent/vm_kube-0123");
        let absent = check_suites(&gone).unwrap_err();
        assert!(absent.to_string().contains("missing"), "{absent}");
    }
}
