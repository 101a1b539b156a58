use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(name = "ipwarden", version, about)]
struct Cli {}

fn main() -> Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
