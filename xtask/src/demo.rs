//! `cargo xtask demo`: builds everything and runs `ipwarden demo` inside
//! the IPVS VM: the tc classifier between two namespaces, then the rescue
//! of an ExternalIP missing from the service set (modes off, allow, log).

use std::process::Command;

use anyhow::{Context, Result};

use crate::{
    build_ebpf,
    process::{self, require_root, workspace_root},
};

#[derive(clap::Args)]
pub struct Options {
    /// Run on this host instead of the VM (the rescue part needs IPVS).
    #[arg(long)]
    pub host: bool,
}

pub fn run(opts: &Options) -> Result<()> {
    require_root("demo")?;
    let object = build_ebpf::run(&build_ebpf::Options::default())?;
    process::run(
        Command::new("cargo")
            .args(["build", "--quiet", "-p", "ipwarden", "--features", "lab"])
            .current_dir(workspace_root()),
    )
    .context("building the agent")?;
    let agent = process::target_dir().join("debug/ipwarden");
    let mut cmd = if opts.host {
        Command::new(&agent)
    } else {
        let mut c = Command::new(std::env::current_exe()?);
        c.arg("vm-test").arg("--").arg(&agent);
        c
    };
    cmd.arg("demo")
        .arg("--bpf-object")
        .arg(&object)
        .current_dir(workspace_root());
    process::run(&mut cmd)
}
