//! `ipwarden kernel ipvs`: read-only inspection (being written).

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON for scripts instead of the human table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
