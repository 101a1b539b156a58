//! `ipwarden race`: the set-store race harness in a throw-away network
//! namespace (see store::race). Prints `lost=N applies=M` last.

use anyhow::{Context, Result};

use crate::{netns::NetNs, store::race};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// kube-router's behaviour: cached copies of every set, restored whole.
    #[arg(long)]
    pub naive: bool,
    /// Applies per owner.
    #[arg(long, default_value_t = 10_000)]
    pub iterations: u64,
    /// Naive mode: applies between refreshes of an owner's cached copy.
    #[arg(long, default_value_t = 50)]
    pub refresh_every: u64,
}

pub fn run(args: &Args) -> Result<()> {
    let ns = NetNs::new("ipw-race").context("creating the harness's network namespace")?;
    let opts = race::Options {
        iterations: args.iterations,
        naive: args.naive,
        refresh_every: args.refresh_every,
    };
    let start = std::time::Instant::now();
    let outcome = ns.run(|| race::run(opts))??;
    println!(
        "mode={} observations={} elapsed={:.1}s",
        if args.naive { "naive" } else { "store" },
        outcome.observations,
        start.elapsed().as_secs_f64()
    );
    println!("lost={} applies={}", outcome.lost, outcome.applies);
    Ok(())
}
