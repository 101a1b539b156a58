//! `cargo xtask vm-test -- CMD...` (being written).
use anyhow::Result;

#[derive(clap::Args)]
pub struct Options {
    /// The command to run inside the VM.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn run(_: &Options) -> Result<i32> {
    anyhow::bail!("vm-test is not written yet")
}
