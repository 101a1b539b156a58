//! `cargo xtask build-ebpf`: the eBPF object, release only, with BTF.
//!
//! The object is linked by bpf-linker, which embeds one LLVM; rustc's LLVM
//! must have the same major version or the link fails ("Invalid record").
//! The workspace pins rustc 1.95.0 (LLVM 22) in rust-toolchain.toml and
//! setup builds bpf-linker against llvm-22. 1.95.0 is a stable toolchain, so
//! `-Z build-std` needs RUSTC_BOOTSTRAP=1.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::process::{self, workspace_root};

pub const TARGET: &str = "bpfel-unknown-none";

#[derive(clap::Args, Default)]
pub struct Options {}

/// Builds the object and returns its path.
pub fn run(_: &Options) -> Result<PathBuf> {
    let ebpf_dir = workspace_root().join("ebpf");
    check_llvm_match(&ebpf_dir)?;
    let mut cmd = clean_cargo(&ebpf_dir);
    cmd.args([
        "build",
        "--release",
        "--target",
        TARGET,
        "-Z",
        "build-std=core",
    ])
    // BTF for maps and programs is generated from debug info.
    .env(
        "CARGO_ENCODED_RUSTFLAGS",
        ["-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f"),
    );
    process::run(&mut cmd).context("building the eBPF crate")?;
    let object = object_path();
    if !object.is_file() {
        bail!(
            "the eBPF build finished but {} is missing",
            object.display()
        );
    }
    Ok(object)
}

/// Where `run` leaves the object.
pub fn object_path() -> PathBuf {
    workspace_root()
        .join("ebpf/target")
        .join(TARGET)
        .join("release/ipwarden")
}

/// A `cargo` for the eBPF workspace with nothing leaking from the outer
/// cargo that runs xtask: its RUSTC, flags and toolchain override would
/// build the BPF crate with the host's settings.
fn clean_cargo(dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir).env("RUSTC_BOOTSTRAP", "1");
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTDOC",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "CARGO_MANIFEST_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Fails early, with the fix, when rustc and bpf-linker disagree on LLVM.
fn check_llvm_match(ebpf_dir: &Path) -> Result<()> {
    let mut rustc = Command::new("rustc");
    rustc.arg("-vV").current_dir(ebpf_dir);
    for var in ["RUSTC", "RUSTUP_TOOLCHAIN"] {
        rustc.env_remove(var);
    }
    let rustc_llvm = llvm_major_of_rustc(&process::output(&mut rustc)?)
        .context("rustc -vV printed no LLVM version")?;
    let linker = process::which("bpf-linker")
        .or_else(|| home_cargo_bin("bpf-linker"))
        .context("bpf-linker is not installed: run `cargo xtask setup`")?;
    let linker_llvm = llvm_major_of_linker(&linker)?;
    if rustc_llvm != linker_llvm {
        bail!(
            "rustc uses LLVM {rustc_llvm} but {} links against LLVM {linker_llvm}; \
             run `cargo xtask setup` to rebuild bpf-linker for LLVM {rustc_llvm}",
            linker.display()
        );
    }
    Ok(())
}

pub fn llvm_major_of_rustc(version_verbose: &str) -> Option<u32> {
    let line = version_verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))?;
    line.split('.').next()?.trim().parse().ok()
}

/// bpf-linker 0.13 links libLLVM dynamically; ldd names its version.
pub fn llvm_major_of_linker(linker: &Path) -> Result<u32> {
    let ldd = process::output(Command::new("ldd").arg(linker))?;
    ldd.lines()
        .find_map(|l| {
            let soname = l.split_whitespace().next()?;
            soname
                .strip_prefix("libLLVM.so.")
                .or_else(|| soname.strip_prefix("libLLVM-"))?
                .split(['.', '-'])
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("{} does not link a libLLVM", linker.display()))
}

pub fn home_cargo_bin(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let p = home.join("bin").join(name);
    p.is_file().then_some(p)
}
