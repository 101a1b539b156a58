//! `cargo xtask <task>`: everything that is not the agent itself.
//!
//! Privilege stays here: plain `cargo test` never needs root; the tasks that
//! do (set-up, privileged tests, the VM) check for it and say so.

mod bench;
mod build_ebpf;
mod demo;
mod image;
mod process;
mod race;
mod setup;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "ipwarden's build, set-up and test tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF object (release, with BTF) and print its path.
    BuildEbpf(build_ebpf::Options),
    /// Install what building and testing need on a fresh Debian 12 machine (root, idempotent).
    Setup(setup::Options),
    /// Run a command as root inside a Debian 6.1 kernel with IPVS, under qemu (TCG).
    VmTest(vm::Options),
    /// Run every test: unit, privileged network-namespace tests, VM tests.
    Test(test::Options),
    /// Build everything and show the tc classifier at work in a network namespace.
    Demo(demo::Options),
    /// The set-store race harness: prints lost=N applies=M.
    Race(race::Options),
    /// Run the benchmarks and write BENCHMARKS.md.
    Bench(bench::Options),
    /// Build the agent's OCI image from Debian packages and print its size.
    Image(image::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::BuildEbpf(o) => build_ebpf::run(&o).map(|path| {
            println!("{}", path.display());
            0
        }),
        Task::Setup(o) => setup::run(&o).map(|()| 0),
        Task::VmTest(o) => vm::run(&o),
        Task::Test(o) => test::run(&o).map(|()| 0),
        Task::Demo(o) => demo::run(&o).map(|()| 0),
        Task::Race(o) => race::run(&o).map(|()| 0),
        Task::Bench(o) => bench::run(&o).map(|()| 0),
        Task::Image(o) => image::run(&o).map(|_| 0),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            // A clear message, not a stack trace: `{:#}` prints the context chain.
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
