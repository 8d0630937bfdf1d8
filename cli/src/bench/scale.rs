//! `agora bench scale`: a master in its own process, thousands of hollow
//! agents and several SDK frameworks in this one, over real gRPC on loopback.
//!
//! `launch_per_s` = tasks ÷ (time from the first offer until every task is
//! RUNNING at its framework *and* the master has forwarded every
//! acknowledgement of the STARTING and RUNNING updates).

use crate::agent_cmd::master_url;
use crate::util::{http_get, parse_duration, rss_mib};
use agora_agent::{AgentConfig, Connector};
use agora_core::{Resources, TaskId, TaskState};
use agora_sdk::{Client, Driver, FrameworkConfig, Offer, Scheduler, TaskStatus};
use anyhow::{Context, Result, bail, ensure};
use std::collections::HashSet;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Endpoint;

#[derive(clap::Args, Debug, Clone)]
pub struct ScaleArgs {
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    #[arg(long, default_value_t = 10)]
    pub frameworks: usize,
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    /// Resources of each task.
    #[arg(long, default_value = "cpus:0.1;mem:32")]
    pub task_resources: String,
    /// Hollow agents sharing one HTTP/2 connection to the master.
    #[arg(long, default_value_t = 100)]
    pub agents_per_connection: usize,
    /// Give up after this long.
    #[arg(long, value_parser = parse_duration, default_value = "600s")]
    pub timeout: Duration,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

struct Shared {
    start: Instant,
    first_offer_ns: AtomicU64,
    running_total: AtomicU64,
    all_running_ns: AtomicU64,
    target: u64,
}

impl Shared {
    fn mark(&self, cell: &AtomicU64) {
        let ns = self.start.elapsed().as_nanos() as u64;
        let _ = cell.compare_exchange(0, ns, Ordering::SeqCst, Ordering::SeqCst);
    }
}

struct BenchFramework {
    index: usize,
    want: usize,
    launched: usize,
    running: HashSet<TaskId>,
    task: Resources,
    suppressed: bool,
    shared: Arc<Shared>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Scheduler for BenchFramework {
    async fn offers(&mut self, client: &Client, offers: Vec<Offer>) {
        self.shared.mark(&self.shared.first_offer_ns);
        let mut decline = Vec::new();
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut tasks = Vec::new();
            while self.launched < self.want {
                let Some(rest) = left.checked_sub(&self.task) else {
                    break;
                };
                left = rest;
                let id = format!("f{}-t{}", self.index, self.launched);
                self.launched += 1;
                tasks.push(agora_proto::pb::TaskInfo {
                    task_id: id.clone(),
                    name: id,
                    agent_id: offer.agent_id.0.clone(),
                    resources: Some((&self.task).into()),
                    command: Some(agora_proto::pb::CommandInfo {
                        value: "run".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            if tasks.is_empty() {
                decline.push(offer.id);
                continue;
            }
            if let Err(e) = client
                .accept(&[offer.id], tasks, Some(Duration::from_secs(3600)))
                .await
                && let Ok(mut errs) = self.errors.lock()
            {
                errs.push(e.to_string());
            }
        }
        if !decline.is_empty() {
            let _ = client
                .decline(&decline, Some(Duration::from_secs(3600)))
                .await;
        }
        if self.launched >= self.want && !self.suppressed {
            self.suppressed = client.suppress().await.is_ok();
        }
    }

    async fn update(&mut self, _client: &Client, status: TaskStatus) {
        match status.state {
            TaskState::Running if self.running.insert(status.task_id.clone()) => {
                let total = self.shared.running_total.fetch_add(1, Ordering::SeqCst) + 1;
                if total == self.shared.target {
                    self.shared.mark(&self.shared.all_running_ns);
                }
            }
            s if s.is_terminal() => {
                if let Ok(mut errs) = self.errors.lock() {
                    errs.push(format!("{} ended {s}: {}", status.task_id, status.message));
                }
            }
            _ => {}
        }
    }
}

async fn metric(addr: &str, name: &str) -> Result<f64> {
    let body = http_get(addr, "/metrics").await?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("metric {name} not found"))
}

pub async fn run(args: ScaleArgs) -> Result<()> {
    ensure!(
        args.agents > 0 && args.frameworks > 0 && args.tasks > 0,
        "agents, frameworks and tasks must be > 0"
    );
    let task = Resources::parse(&args.task_resources).context("--task-resources")?;
    // Each agent fits twice its share of tasks, so placement has slack.
    let per_agent = (args.tasks.div_ceil(args.agents) * 2).max(1) as u64;
    let agent_res = Resources {
        cpus_milli: task.cpus_milli * per_agent,
        mem_mib: task.mem_mib * per_agent,
        disk_mib: task.disk_mib * per_agent,
        ports: agora_core::Ranges::range(31000, 32000)?,
    };

    // 1. The master, as its own process.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let addr = format!("127.0.0.1:{port}");
    let data = std::env::temp_dir().join(format!("agora-bench-{}", uuid::Uuid::new_v4().simple()));
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        // The master's defaults (heartbeat 2 s, agent timeout 10 s): 10,000
        // agents heartbeat 5,000 times a second while the tasks launch.
        .args(["master", "--listen", &addr])
        // Plain text on loopback, as the figures in docs/benchmarks.md were
        // measured (the hollow agents connect without certificates).
        .arg("--insecure")
        .arg("--data-dir")
        .arg(&data)
        .env("AGORA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the master process")?;
    let pid = child.id().context("master pid")?;
    let result = drive(&args, &addr, pid, task, agent_res).await;
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&data);
    result
}

async fn drive(
    args: &ScaleArgs,
    addr: &str,
    pid: u32,
    task: Resources,
    agent_res: Resources,
) -> Result<()> {
    let deadline = Instant::now() + args.timeout;
    while http_get(addr, "/health").await.is_err() {
        ensure!(Instant::now() < deadline, "the master did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = master_url(addr);

    // 2. Hollow agents, many per connection.
    let t_reg = Instant::now();
    let mut channels = Vec::new();
    for _ in 0..args.agents.div_ceil(args.agents_per_connection.max(1)) {
        channels.push(
            Endpoint::from_shared(url.clone())?
                .tcp_nodelay(true)
                .initial_connection_window_size(Some(4 << 20))
                .initial_stream_window_size(Some(1 << 20))
                .connect()
                .await
                .context("connecting to the master")?,
        );
    }
    let mut handles = Vec::with_capacity(args.agents);
    for i in 0..args.agents {
        let cfg = AgentConfig {
            hostname: format!("hollow-{i}"),
            resources: agent_res.clone(),
            attributes: vec![("rack".into(), format!("r{}", i % 40))],
            status_retry_min: Duration::from_secs(30),
            register_timeout: Duration::from_secs(120),
            ..AgentConfig::default()
        };
        let ch = channels[i / args.agents_per_connection.max(1)].clone();
        let (h, _rt, _join) =
            agora_agent::spawn_hollow(cfg, Connector::Channel(ch), Duration::ZERO);
        handles.push(h);
    }
    for (i, h) in handles.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, h.registered())
            .await
            .with_context(|| format!("agent {i} did not register in time"))?;
    }
    let register_s = t_reg.elapsed().as_secs_f64();
    eprintln!(
        "{} hollow agents registered in {register_s:.2} s ({}/connection), each offering {agent_res}",
        args.agents, args.agents_per_connection
    );

    // 3. Frameworks.
    let shared = Arc::new(Shared {
        start: Instant::now(),
        first_offer_ns: AtomicU64::new(0),
        running_total: AtomicU64::new(0),
        all_running_ns: AtomicU64::new(0),
        target: args.tasks as u64,
    });
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut drivers = Vec::new();
    for i in 0..args.frameworks {
        let want = args.tasks / args.frameworks + usize::from(i < args.tasks % args.frameworks);
        let mut cfg = FrameworkConfig::new(url.clone(), format!("bench-{i}"));
        cfg.role = format!("bench-{i}");
        cfg.failover_timeout = Duration::from_secs(3600);
        let sched = BenchFramework {
            index: i,
            want,
            launched: 0,
            running: HashSet::with_capacity(want),
            task: task.clone(),
            suppressed: false,
            shared: shared.clone(),
            errors: errors.clone(),
        };
        drivers.push(tokio::spawn(
            Driver::new(cfg, sched).with_stop(stop_rx.clone()).run(),
        ));
    }

    // 4. Wait for every task RUNNING, then for every acknowledgement.
    let mut last_report = Instant::now();
    while shared.all_running_ns.load(Ordering::SeqCst) == 0 {
        if Instant::now() > deadline {
            bail!(
                "timed out with {}/{} tasks running; errors: {:?}",
                shared.running_total.load(Ordering::SeqCst),
                args.tasks,
                errors
                    .lock()
                    .map(|e| e.iter().take(5).cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            );
        }
        if let Ok(e) = errors.lock()
            && !e.is_empty()
        {
            bail!("tasks failed: {:?}", e.iter().take(5).collect::<Vec<_>>());
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "  {}/{} tasks running",
                shared.running_total.load(Ordering::SeqCst),
                args.tasks
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let expected_acks = 2.0 * args.tasks as f64; // STARTING + RUNNING
    loop {
        let acks = metric(addr, "agora_master_status_update_acks_total").await?;
        if acks >= expected_acks {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "timed out waiting for acknowledgements ({acks}/{expected_acks})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let end = shared.start.elapsed();
    let first = Duration::from_nanos(shared.first_offer_ns.load(Ordering::SeqCst));
    let all_running = Duration::from_nanos(shared.all_running_ns.load(Ordering::SeqCst));
    let elapsed = (end - first).as_secs_f64();
    let updates = metric(addr, "agora_master_status_updates_total").await?;
    let (rss, peak) = rss_mib(pid).context("reading the master's memory from /proc")?;
    let _ = stop_tx.send(true);
    for d in drivers {
        let _ = tokio::time::timeout(Duration::from_secs(5), d).await;
    }
    let launch_per_s = args.tasks as f64 / elapsed;
    let updates_per_s = updates / elapsed;
    eprintln!(
        "{} tasks RUNNING after {:.2} s, acknowledged after {:.2} s from the first offer: {:.0} tasks/s, {:.0} status updates/s",
        args.tasks,
        (all_running - first).as_secs_f64(),
        elapsed,
        launch_per_s,
        updates_per_s
    );
    eprintln!(
        "master RSS {rss:.0} MiB (peak {peak:.0} MiB); anchors: Nomad C1M ~3,750 containers/s, kube-scheduler 100-300 pods/s"
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "scale",
                "agents": args.agents,
                "frameworks": args.frameworks,
                "tasks": args.tasks,
                "launch_per_s": launch_per_s,
                "updates_per_s": updates_per_s,
                "master_rss_mib": peak,
                "master_rss_now_mib": rss,
                "register_s": register_s,
                "elapsed_s": elapsed,
            })
        );
    }
    Ok(())
}
