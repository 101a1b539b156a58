//! `cargo xtask race`: the set-store race harness (`ipwarden race`).

use std::process::Command;

use anyhow::{Context, Result};

use crate::process::{self, require_root, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// kube-router's behaviour: each owner restores its cached copy of all sets.
    #[arg(long)]
    pub naive: bool,
    /// Applies per owner.
    #[arg(long, default_value_t = 10_000)]
    pub iterations: u64,
}

pub fn run(opts: &Options) -> Result<()> {
    require_root("race")?;
    process::run(
        Command::new("cargo")
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "ipwarden",
                "--features",
                "lab",
            ])
            .current_dir(workspace_root()),
    )
    .context("building the agent")?;
    let mut cmd = Command::new(process::target_dir().join("release/ipwarden"));
    cmd.args(["race", "--iterations", &opts.iterations.to_string()]);
    if opts.naive {
        cmd.arg("--naive");
    }
    process::run(&mut cmd)
}
