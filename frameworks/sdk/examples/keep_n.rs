//! keep_n: keeps N copies of a command running, relaunching any that end.
//!
//! ```text
//! cargo run -p agora-sdk --example keep_n -- --master http://127.0.0.1:5050 --instances 3 --command "sleep 30"
//! ```
//!
//! What it shows: accepting offers, declining what is not needed with a long
//! filter, SUPPRESS when satisfied and REVIVE when short, reacting to status
//! updates, and resuming as the same framework after a restart (`--framework-id`).

use agora_sdk::{
    Client, Driver, FrameworkConfig, FrameworkId, Offer, Resources, Scheduler, TaskId, TaskState,
    TaskStatus,
};
use clap::Parser;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Keep N copies of a command running on an Agora cluster")]
struct Args {
    /// Master address.
    #[arg(long, env = "AGORA_MASTER", default_value = "http://127.0.0.1:5050")]
    master: String,
    /// How many copies to keep running.
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// The command each copy runs.
    #[arg(long, default_value = "sleep 3600")]
    command: String,
    /// Resources per copy (Mesos syntax).
    #[arg(long, default_value = "cpus:0.1;mem:32")]
    resources: String,
    /// Resume as this framework (keeps the tasks of a previous run).
    #[arg(long)]
    framework_id: Option<String>,
}

struct KeepN {
    want: usize,
    command: String,
    per_task: Resources,
    /// Live tasks by id, with their last state.
    live: HashMap<TaskId, TaskState>,
    seq: u64,
    suppressed: bool,
}

impl KeepN {
    fn missing(&self) -> usize {
        self.want.saturating_sub(self.live.len())
    }
}

impl Scheduler for KeepN {
    async fn subscribed(&mut self, _client: &Client, id: &FrameworkId) {
        println!("subscribed as {id} (restart with --framework-id {id} to keep these tasks)");
        // A subscription un-suppresses (Mesos v1 semantics), even if a
        // previous run suppressed offers.
        self.suppressed = false;
    }

    async fn offers(&mut self, client: &Client, offers: Vec<Offer>) {
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut tasks = Vec::new();
            while self.missing() > tasks.len() {
                let Some(rest) = left.checked_sub(&self.per_task) else {
                    break;
                };
                left = rest;
                self.seq += 1;
                let id = format!("keep-{}-{}", std::process::id(), self.seq);
                let mut t = agora_sdk::task(&id, &self.per_task.to_string(), &self.command)
                    .expect("valid resources");
                t.name = "keep_n".into();
                tasks.push(t);
            }
            if tasks.is_empty() {
                // Not needed: don't ask again for a while.
                let _ = client
                    .decline(&[offer.id], Some(Duration::from_secs(60)))
                    .await;
                continue;
            }
            for t in &tasks {
                self.live
                    .insert(TaskId::new(t.task_id.as_str()), TaskState::Staging);
                println!("launching {} on {}", t.task_id, offer.hostname);
            }
            if let Err(e) = client.launch(&offer, tasks).await {
                eprintln!("launch refused: {e}");
            }
        }
        if self.missing() == 0 && !self.suppressed {
            self.suppressed = client.suppress().await.is_ok();
        }
    }

    async fn update(&mut self, client: &Client, status: TaskStatus) {
        println!("{} {} {}", status.task_id, status.state, status.message);
        if status.state.is_terminal() || status.state == TaskState::Unknown {
            self.live.remove(&status.task_id);
            if self.suppressed {
                self.suppressed = false;
                let _ = client.revive().await;
            }
        } else {
            self.live.insert(status.task_id, status.state);
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let args = Args::parse();
    let per_task = Resources::parse(&args.resources)?;
    let mut cfg = FrameworkConfig::new(args.master, "keep_n");
    cfg.framework_id = args.framework_id.map(FrameworkId::new);
    cfg.failover_timeout = Duration::from_secs(600);
    let sched = KeepN {
        want: args.instances,
        command: args.command,
        per_task,
        live: HashMap::new(),
        seq: 0,
        suppressed: false,
    };
    Driver::new(cfg, sched).run().await?;
    Ok(())
}
