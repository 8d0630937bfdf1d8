//! `agora`: the one binary. Daemons are subcommands (`master`, `agent`,
//! `dev`); benchmarks live under `bench`.

mod agent_cmd;
mod bench;
mod dev;
mod master_cmd;
mod util;
mod util_signal;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "agora",
    version,
    about = "Agora: a cluster manager with Mesos-style resource offers",
    long_about = "Agora pools the resources of many agents in a master and offers them to \
framework schedulers (dominant resource fairness across roles).\n\n\
Quick start:  agora dev            (master + agent on this machine)\n\
Daemons:      agora master | agora agent\n\
Benchmarks:   agora bench allocator | agora bench scale"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a master: pools agents' resources and offers them to frameworks.
    Master(master_cmd::MasterArgs),
    /// Run an agent: registers its resources with a master and runs tasks.
    Agent(agent_cmd::AgentArgs),
    /// Run an all-in-one local cluster (master + agent) on an embedded store.
    Dev(dev::DevArgs),
    /// Benchmarks (programs, not tests); see docs/benchmarks.md.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// The DRF allocator core alone: full allocation cycles.
    Allocator(bench::allocator::AllocatorArgs),
    /// Master process + hollow agents + SDK frameworks over real gRPC.
    Scale(bench::scale::ScaleArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Master(a) => master_cmd::run(a).await,
            Command::Agent(a) => agent_cmd::run(a).await,
            Command::Dev(a) => dev::run(a).await,
            Command::Bench(BenchCommand::Allocator(a)) => bench::allocator::run(a),
            Command::Bench(BenchCommand::Scale(a)) => bench::scale::run(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
