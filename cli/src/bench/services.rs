//! `agora bench services`: the services framework's cost per status update
//! at scale, without containers — its scheduler deciding what to do
//! (`update`, which converges every app) and its store writing what changed
//! (one redb transaction, fsync included). This is the work its single
//! actor does for every update, so it bounds how fast a large app deploys.

use agora_core::{AgentId, OfferId, Resources, TaskId, TaskState};
use agora_services::scheduler::Services;
use agora_services::store::Store;
use anyhow::{Context, Result, ensure};
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct ServicesArgs {
    /// Instances of the one app (placed 100 per hollow agent offer).
    #[arg(long, default_value_t = 10_000)]
    pub instances: u32,
    /// Timed status updates (each RUNNING for one instance).
    #[arg(long, default_value_t = 500)]
    pub updates: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ServicesArgs) -> Result<()> {
    ensure!(
        args.instances > 0 && args.updates > 0,
        "instances and updates must be > 0"
    );
    let dir = std::env::temp_dir().join(format!(
        "agora-bench-services-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let result = measure(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(args: &ServicesArgs, dir: &std::path::Path) -> Result<()> {
    let mut s = Services::new();
    let app = agora_services::app::parse_app(&serde_json::json!({
        "id": "/bench/web", "cmd": "serve", "instances": args.instances,
        "cpus": 0.01, "mem": 1
    }))
    .map_err(|e| anyhow::anyhow!("bench app definition: {e:?}"))?;
    s.put_app(app, false);
    let per_agent = 100u32;
    let agents = args.instances.div_ceil(per_agent);
    let res = Resources::parse(&format!("cpus:{};mem:{}", per_agent, per_agent * 2))?;
    for a in 0..agents {
        s.offers(vec![agora_sdk::Offer {
            id: OfferId::new(format!("o-{a}")),
            agent_id: AgentId::new(format!("agent-{a}")),
            hostname: format!("host-{a}"),
            resources: res.clone(),
            attributes: vec![],
        }]);
    }
    ensure!(
        s.instances.len() == args.instances as usize,
        "placed {} of {} instances",
        s.instances.len(),
        args.instances
    );
    let mut store = Store::open(dir).context("opening the bench store")?;
    store.save(&s.apps, &s.instances)?;

    let ids: Vec<String> = s.instances.keys().cloned().collect();
    let n = args.updates.min(ids.len());
    let (mut decide, mut save) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for id in ids.iter().take(n) {
        let status = agora_sdk::TaskStatus {
            task_id: TaskId::new(id.as_str()),
            agent_id: AgentId::new(s.instances[id].agent_id.as_str()),
            state: TaskState::Running,
            message: "container abc".into(),
            reason: String::new(),
            exit_code: None,
            healthy: None,
            ready: None,
            uuid: vec![1],
        };
        let t0 = Instant::now();
        s.update(&status);
        let t1 = Instant::now();
        store.save(&s.apps, &s.instances)?;
        decide.push((t1 - t0).as_secs_f64() * 1000.0);
        save.push(t1.elapsed().as_secs_f64() * 1000.0);
    }
    let q = super::quantile;
    let (d50, d99) = (q(&mut decide, 0.5), q(&mut decide, 0.99));
    let (s50, s99) = (q(&mut save, 0.5), q(&mut save, 0.99));
    eprintln!(
        "services, {} instances: per status update, scheduler p50 {d50:.3} ms (p99 {d99:.3}), store p50 {s50:.3} ms (p99 {s99:.3}); {n} updates",
        args.instances
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "services",
                "instances": args.instances,
                "updates": n,
                "update_ms_p50": d50,
                "update_ms_p99": d99,
                "save_ms_p50": s50,
                "save_ms_p99": s99,
            })
        );
    }
    Ok(())
}
