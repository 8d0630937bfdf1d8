//! `agora`: the one binary. Daemons are subcommands (`master`, `agent`,
//! `dev`); benchmarks live under `bench`.

mod agent_cmd;
mod bench;
mod ca_cmd;
mod context;
mod dev;
mod http;
mod master_cmd;
mod ops;
mod router_cmd;
mod secret_cmd;
mod services_cmd;
mod tls;
mod token_cmd;
mod util;
mod util_signal;
mod wait;

/// mimalloc (without transparent huge pages): the daemons allocate many small,
/// short-lived buffers (messages, ids). On `bench scale` the master launched
/// about 30 % more tasks per second than with glibc's malloc, with a smaller
/// peak RSS (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "agora",
    version,
    about = "Agora: a cluster manager with Mesos-style resource offers",
    long_about = "Agora pools the resources of many agents in a master and offers them to \
framework schedulers (dominant resource fairness across roles).\n\n\
Quick start:  agora dev            (master + agent + services framework on this machine)\n\
Daemons:      agora master | agora agent | agora services | agora router\n\
Operate:      agora agent list | agora framework list | agora task list|show|kill|logs\n\
Auth:         agora token create|list|revoke|whoami (--token-file/AGORA_TOKEN_FILE, AGORA_TOKEN, or the context file\n\
\x20             $AGORA_HOME/context.json or ~/.config/agora/context.json: {\"master\", \"token_file\", \"ca_cert\"})\n\
Services:     agora app deploy -f app.json --wait | app list|show|endpoints|scale|restart|destroy | deployment list|rollback\n\
\x20             (--wait shows progress until done; --master/AGORA_MASTER, --services/AGORA_SERVICES; -o json for scripts)\n\
Secrets:      agora secret put PATH < value | secret list|show|rm|rotate-key\n\
Exit codes:   0 ok, 1 error, 2 bad usage, 4 not found, 5 --wait timed out\n\
TLS:          agora ca init | ca issue --server|--agent|--client NAME (see `agora ca --help`);\n\
\x20             daemons refuse to start without TLS unless --insecure (agora dev is plain, on 127.0.0.1)\n\
Benchmarks:   agora bench allocator | scale | launch | deploy | services | discovery | router | rollout | autoscale"
)]
struct Cli {
    /// CA certificate to verify https:// daemons with (the cluster's ca.crt).
    #[arg(long, env = "AGORA_CA_CERT", global = true, value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
    /// Bearer token for the master (prefer AGORA_TOKEN or --token-file: a
    /// flag is visible to other users in the process list).
    #[arg(long, env = "AGORA_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// File holding the bearer token for the master.
    #[arg(long, env = "AGORA_TOKEN_FILE", global = true, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a master: pools agents' resources and offers them to frameworks.
    Master(master_cmd::MasterArgs),
    /// Run an agent (registers its resources with a master and runs tasks),
    /// or `agent list` to list the master's agents.
    Agent(AgentCmd),
    /// Frameworks known to the master.
    #[command(subcommand)]
    Framework(FrameworkCommand),
    /// Tasks: list, show, kill, read logs.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Run the services framework (Marathon-style apps; REST API on :8080).
    Services(services_cmd::ServicesArgs),
    /// Apps of the services framework: deploy, list, show, scale, restart, destroy.
    #[command(subcommand)]
    App(AppCommand),
    /// Deployments of the services framework: list, rollback.
    #[command(subcommand)]
    Deployment(DeploymentCommand),
    /// Secrets in the master's store: put, list, show, rm, rotate-key
    /// (values go in from stdin or a file and never come out).
    #[command(subcommand)]
    Secret(secret_cmd::SecretCommand),
    /// Run a router: DNS for the cluster's zone (`agora.`) from the services
    /// framework's endpoint stream.
    Router(router_cmd::RouterArgs),
    /// Bearer tokens of the master: create, list, revoke, whoami.
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
    /// Run an all-in-one local cluster (master + agent + services) on an embedded store.
    Dev(dev::DevArgs),
    /// The cluster CA: create it, issue server, agent and client certificates.
    #[command(subcommand, long_about = ca_cmd::WORKFLOW)]
    Ca(ca_cmd::CaCommand),
    /// Benchmarks (programs, not tests); see docs/benchmarks.md.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct AgentCmd {
    #[command(subcommand)]
    sub: Option<AgentSub>,
    #[command(flatten)]
    run: agent_cmd::AgentArgs,
}

#[derive(Subcommand, Debug)]
enum AgentSub {
    /// List the agents the master knows.
    List(ops::Common),
}

#[derive(Subcommand, Debug)]
enum FrameworkCommand {
    /// List frameworks.
    List(ops::Common),
}

#[derive(Subcommand, Debug)]
enum TaskCommand {
    /// List live tasks (with --all, recently finished ones too).
    List {
        /// Include recently finished tasks.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        common: ops::Common,
    },
    /// Show one task: state, agent, resources, usage.
    Show {
        /// The task's id (see `agora task list`).
        task_id: String,
        #[command(flatten)]
        common: ops::Common,
    },
    /// Kill a task (its framework is told TASK_KILLED).
    Kill {
        /// The task's id (see `agora task list`).
        task_id: String,
        /// The task's framework, when several have a task with this id.
        #[arg(long)]
        framework: Option<String>,
        #[command(flatten)]
        common: ops::Common,
    },
    /// Print a task's output (stdout and stderr), read from its agent.
    Logs {
        /// The task's id (see `agora task list --all`; finished tasks keep
        /// their logs for the agent's --gc-delay).
        task_id: String,
        /// Keep printing as the task writes, until it ends (Ctrl-C to stop).
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        common: ops::Common,
    },
}

#[derive(Subcommand, Debug)]
enum AppCommand {
    /// Create or update an app from a JSON definition (Marathon format).
    Deploy {
        /// The app definition (a JSON file, e.g. examples/web.json).
        #[arg(short, long)]
        file: std::path::PathBuf,
        #[command(flatten)]
        wait: services_cmd::Wait,
        #[command(flatten)]
        common: services_cmd::Common,
    },
    /// List apps.
    List(services_cmd::Common),
    /// Show an app and its tasks.
    Show {
        /// The app's id, e.g. /demo/web.
        id: String,
        #[command(flatten)]
        common: services_cmd::Common,
    },
    /// Where an app is reached: its DNS name, service ports and the
    /// instances taking traffic (serving or draining).
    Endpoints {
        /// The app's id, e.g. /demo/web.
        id: String,
        #[command(flatten)]
        common: services_cmd::Common,
    },
    /// Change an app's instance count.
    Scale {
        /// The app's id, e.g. /demo/web.
        id: String,
        /// How many instances it should run (0 to 10000).
        instances: u32,
        /// Scale an autoscaled app anyway: its policy is suspended (shown
        /// in `agora app show`) until it is set again with `agora app
        /// autoscale`.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: services_cmd::Wait,
        #[command(flatten)]
        common: services_cmd::Common,
    },
    /// Scale an app from live metrics: set its autoscaling policy (or
    /// delete it with --off).
    ///
    /// Targets (at least one): --cpu and --memory are percent of the
    /// app's requested cpus / mem, averaged over serving instances (`60%`
    /// or `60`); --rps and --in-flight are per serving instance; --latency-p95
    /// is the slowest router's p95 (`150ms`, `0.2s`). The count stays
    /// within --min/--max; --min 0 with --idle-after scales to zero after
    /// that long without requests, and the first request wakes it.
    /// Example: agora app autoscale /demo/web --min 1 --max 20 --cpu 60% --rps 200 --latency-p95 150ms
    #[command(verbatim_doc_comment)]
    Autoscale(services_cmd::AutoscaleArgs),
    /// Replace every instance of an app (rolling, as its upgradeStrategy says).
    Restart {
        /// The app's id, e.g. /demo/web.
        id: String,
        #[command(flatten)]
        wait: services_cmd::Wait,
        #[command(flatten)]
        common: services_cmd::Common,
    },
    /// Delete an app and kill its instances.
    Destroy {
        /// The app's id, e.g. /demo/web.
        id: String,
        #[command(flatten)]
        wait: services_cmd::Wait,
        #[command(flatten)]
        common: services_cmd::Common,
    },
}

#[derive(Subcommand, Debug)]
enum DeploymentCommand {
    /// Deployments in progress.
    List(services_cmd::Common),
    /// Roll a deployment back to the app's previous definition (with
    /// --force: stop it where it is, nothing rolled back).
    Rollback {
        /// The deployment's id (see `agora deployment list`).
        id: String,
        /// Stop the deployment where it is instead of rolling back.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: services_cmd::Wait,
        #[command(flatten)]
        common: services_cmd::Common,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// The DRF allocator core alone: full allocation cycles.
    Allocator(bench::allocator::AllocatorArgs),
    /// Master process + hollow agents + SDK frameworks over real gRPC.
    Scale(bench::scale::ScaleArgs),
    /// ACCEPT → RUNNING per container vs the engine's own create + start.
    Launch(bench::launch::LaunchArgs),
    /// N healthy instances through the services framework vs Docker Swarm mode.
    Deploy(bench::deploy::DeployArgs),
    /// The services framework's scheduler + store cost per status update.
    Services(bench::services::ServicesArgs),
    /// Health change → DNS answer and endpoint view updated (propagation).
    Discovery(bench::discovery::DiscoveryArgs),
    /// Agora's L7 proxy vs nginx and HAProxy in front of the same backends (wrk).
    Router(bench::router::RouterBenchArgs),
    /// Steady load through the edge router during `app restart`: failed requests.
    Rollout(bench::rollout::RolloutArgs),
    /// A load step against an autoscaled app through the edge router: time
    /// to decide and to have the capacity, flaps under steady noisy load,
    /// scale-down, and a cold start from zero instances.
    Autoscale(bench::autoscale::AutoscaleArgs),
}

/// The innermost subcommand's matches.
fn leaf(m: &clap::ArgMatches) -> &clap::ArgMatches {
    match m.subcommand() {
        Some((_, sub)) => leaf(sub),
        None => m,
    }
}

/// Applies the client context and the credentials: the context's master
/// when `--master`/`AGORA_MASTER` was not given, and the bearer token for
/// requests to the master.
fn credentials(cli: &mut Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let m = leaf(matches);
    let arg = |id: &str| -> Option<String> {
        match m.try_get_one::<String>(id) {
            Ok(v) => v.cloned(),
            Err(_) => None,
        }
    };
    let (master, services) = (arg("master"), arg("services"));
    if master.is_none() && services.is_none() {
        return Ok(());
    }
    let ctx = context::ClientContext::load()?;
    // https daemons are verified with --ca-cert / AGORA_CA_CERT, else the context's.
    http::set_ca_cert(cli.ca_cert.clone().or_else(|| ctx.ca_cert.clone()));
    let mut to = Vec::new();
    if let Some(given) = master {
        let master = match (&ctx.master, m.value_source("master")) {
            (Some(c), Some(clap::parser::ValueSource::DefaultValue)) => {
                context::set_master_from_context(c.clone());
                c.clone()
            }
            _ => given,
        };
        to.push(ops::addr(&master));
    }
    if let Some(s) = services {
        to.push(ops::addr(&s));
    }
    let token =
        context::resolve_token(cli.token.take().as_deref(), cli.token_file.as_deref(), &ctx)?;
    if let Some(t) = token {
        http::set_token_for(&to, t)?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let daemon = matches!(
        cli.command,
        Command::Master(_)
            | Command::Dev(_)
            | Command::Services(_)
            | Command::Router(_)
            | Command::Bench(_)
    ) || matches!(&cli.command, Command::Agent(AgentCmd { sub: None, .. }));
    if !daemon && let Err(e) = credentials(&mut cli, &matches) {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::from(2);
    }
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
            Command::Agent(AgentCmd {
                sub: Some(AgentSub::List(c)),
                ..
            }) => ops::agent_list(&c).await,
            Command::Agent(AgentCmd { sub: None, run }) => agent_cmd::run(run).await,
            Command::Framework(FrameworkCommand::List(c)) => ops::framework_list(&c).await,
            Command::Task(TaskCommand::List { all, common }) => ops::task_list(&common, all).await,
            Command::Task(TaskCommand::Show { task_id, common }) => {
                ops::task_show(&common, &task_id).await
            }
            Command::Task(TaskCommand::Kill {
                task_id,
                framework,
                common,
            }) => ops::task_kill(&common, &task_id, framework.as_deref()).await,
            Command::Task(TaskCommand::Logs {
                task_id,
                follow,
                common,
            }) => ops::task_logs(&common, &task_id, follow).await,
            Command::Dev(a) => dev::run(a).await,
            Command::Ca(c) => ca_cmd::run(c),
            Command::Token(t) => token_cmd::run(t).await,
            Command::Secret(c) => secret_cmd::run(c).await,
            Command::Router(a) => router_cmd::run(a, cli.token, cli.token_file).await,
            Command::Services(a) => services_cmd::run(a, cli.token, cli.token_file).await,
            Command::App(AppCommand::Deploy { file, wait, common }) => {
                services_cmd::deploy(&common, &file, wait).await
            }
            Command::App(AppCommand::List(c)) => services_cmd::list(&c).await,
            Command::App(AppCommand::Show { id, common }) => services_cmd::show(&common, &id).await,
            Command::App(AppCommand::Endpoints { id, common }) => {
                services_cmd::endpoints(&common, &id).await
            }
            Command::App(AppCommand::Scale {
                id,
                instances,
                force,
                wait,
                common,
            }) => services_cmd::scale(&common, &id, instances, force, wait).await,
            Command::App(AppCommand::Autoscale(a)) => services_cmd::autoscale(&a).await,
            Command::App(AppCommand::Restart { id, wait, common }) => {
                services_cmd::restart(&common, &id, wait).await
            }
            Command::App(AppCommand::Destroy { id, wait, common }) => {
                services_cmd::destroy(&common, &id, wait).await
            }
            Command::Deployment(DeploymentCommand::List(c)) => {
                services_cmd::deployment_list(&c).await
            }
            Command::Deployment(DeploymentCommand::Rollback {
                id,
                force,
                wait,
                common,
            }) => services_cmd::rollback(&common, &id, force, wait).await,
            Command::Bench(BenchCommand::Allocator(a)) => bench::allocator::run(a),
            Command::Bench(BenchCommand::Scale(a)) => bench::scale::run(a).await,
            Command::Bench(BenchCommand::Launch(a)) => bench::launch::run(a).await,
            Command::Bench(BenchCommand::Deploy(a)) => bench::deploy::run(a).await,
            Command::Bench(BenchCommand::Services(a)) => bench::services::run(a),
            Command::Bench(BenchCommand::Discovery(a)) => bench::discovery::run(a).await,
            Command::Bench(BenchCommand::Router(a)) => bench::router::run(a),
            Command::Bench(BenchCommand::Rollout(a)) => bench::rollout::run(a).await,
            Command::Bench(BenchCommand::Autoscale(a)) => bench::autoscale::run(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<ops::NotFound>().is_some() {
                std::process::ExitCode::from(ops::NOT_FOUND)
            } else if e.downcast_ref::<wait::TimedOut>().is_some() {
                std::process::ExitCode::from(wait::TIMED_OUT)
            } else {
                std::process::ExitCode::from(1)
            }
        }
    }
}
