//! `cargo xtask demo`: builds everything and runs `ipwarden demo`.

use std::process::Command;

use anyhow::{Context, Result};

use crate::{
    build_ebpf,
    process::{self, require_root, workspace_root},
};

#[derive(clap::Args)]
pub struct Options {}

pub fn run(_: &Options) -> Result<()> {
    require_root("demo")?;
    let object = build_ebpf::run(&build_ebpf::Options::default())?;
    process::run(
        Command::new("cargo")
            .args(["build", "--quiet", "-p", "ipwarden"])
            .current_dir(workspace_root()),
    )
    .context("building the agent")?;
    let agent = process::target_dir().join("debug/ipwarden");
    process::run(
        Command::new(agent)
            .arg("demo")
            .arg("--bpf-object")
            .arg(&object),
    )
}
