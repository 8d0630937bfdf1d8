//! `agora bench services`: the services framework's cost per status update
//! at scale, without containers — its scheduler deciding what to do
//! (`update`, which converges the apps it touched) and its store writing
//! what changed (one redb transaction, fsync included). This is the work its
//! single actor does for every update, so it bounds how fast a large app
//! deploys.
//!
//! The actor stores updates in bursts (group commit: whatever is queued when
//! it gets to work, up to 1,024, is stored in one transaction and then
//! acknowledged together), so the headline figures are amortised: the time
//! of a burst of `--burst` updates divided by its size. The same cost for a
//! burst of one (an idle framework getting a lone update) is reported too.

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
    /// Timed status updates in bursts (each RUNNING for one instance).
    #[arg(long, default_value_t = 2_000)]
    pub updates: usize,
    /// Updates stored in one transaction (the actor's group commit).
    #[arg(long, default_value_t = 100)]
    pub burst: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ServicesArgs) -> Result<()> {
    ensure!(
        args.instances > 0 && args.updates > 0 && args.burst > 0,
        "instances, updates and burst must be > 0"
    );
    let dir = std::env::temp_dir().join(format!(
        "agora-bench-services-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let result = measure(&args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn running(s: &Services, id: &str) -> agora_sdk::TaskStatus {
    agora_sdk::TaskStatus {
        task_id: TaskId::new(id),
        agent_id: AgentId::new(s.instance(id).map(|i| i.agent_id.as_str()).unwrap_or("")),
        state: TaskState::Running,
        message: "container abc".into(),
        reason: String::new(),
        exit_code: None,
        healthy: None,
        ready: None,
        uuid: vec![1],
    }
}

/// Times `n` updates in bursts of `burst`: per burst, (scheduler ms, store
/// ms) divided by the burst's size.
fn timed(
    s: &mut Services,
    store: &mut Store,
    ids: &mut impl Iterator<Item = String>,
    n: usize,
    burst: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut decide, mut save) = (Vec::new(), Vec::new());
    let mut left = n;
    while left > 0 {
        let b = burst.min(left);
        left -= b;
        let statuses: Vec<_> = ids.take(b).map(|id| running(s, &id)).collect();
        let t0 = Instant::now();
        for st in &statuses {
            s.update(st);
        }
        let t1 = Instant::now();
        let changes = s.take_changes();
        store.save(s.apps(), s.instances(), &changes)?;
        let per = b as f64;
        decide.push((t1 - t0).as_secs_f64() * 1000.0 / per);
        save.push(t1.elapsed().as_secs_f64() * 1000.0 / per);
    }
    Ok((decide, save))
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
    let t = Instant::now();
    for a in 0..agents {
        s.offers(vec![agora_sdk::Offer {
            id: OfferId::new(format!("o-{a}")),
            agent_id: AgentId::new(format!("agent-{a}")),
            hostname: format!("host-{a}"),
            address: None,
            resources: res.clone(),
            attributes: vec![],
            role: "*".into(),
        }]);
    }
    let place_ms = t.elapsed().as_secs_f64() * 1000.0;
    ensure!(
        s.instances().len() == args.instances as usize,
        "placed {} of {} instances",
        s.instances().len(),
        args.instances
    );
    let mut store = Store::open(dir).context("opening the bench store")?;
    let changes = s.take_changes();
    store.save(s.apps(), s.instances(), &changes)?;

    // Every instance in turn (again from the first if there are more
    // updates than instances: a repeated RUNNING costs the same).
    let all: Vec<String> = s.instances().keys().cloned().collect();
    let mut ids = all.into_iter().cycle();
    let singles = args.updates.min(200);
    let (mut d1, mut s1) = timed(&mut s, &mut store, &mut ids, singles, 1)?;
    let (mut decide, mut save) = timed(&mut s, &mut store, &mut ids, args.updates, args.burst)?;
    let q = super::quantile;
    let (d50, d99) = (q(&mut decide, 0.5), q(&mut decide, 0.99));
    let (s50, s99) = (q(&mut save, 0.5), q(&mut save, 0.99));
    let (d1_50, s1_50) = (q(&mut d1, 0.5), q(&mut s1, 0.5));
    let burst = args.burst.min(args.updates);
    eprintln!(
        "services, {} instances: per status update, amortised over bursts of {burst} stored in one transaction: scheduler p50 {d50:.4} ms (p99 {d99:.4}), store p50 {s50:.4} ms (p99 {s99:.4}), together {:.4} ms; a lone update (burst of 1): scheduler {d1_50:.4} ms, store {s1_50:.4} ms; placing all instances took {place_ms:.0} ms; {} + {singles} updates",
        args.instances,
        d50 + s50,
        args.updates
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "services",
                "instances": args.instances,
                "updates": args.updates,
                "burst": burst,
                "amortised": format!("per update: the time of a burst of {burst} updates (scheduler: update each; store: one transaction with fsync) divided by {burst}; p50/p99 over the bursts"),
                "update_ms_p50": d50,
                "update_ms_p99": d99,
                "save_ms_p50": s50,
                "save_ms_p99": s99,
                "per_update_ms_p50": d50 + s50,
                "single_update_ms_p50": d1_50,
                "single_save_ms_p50": s1_50,
                "place_ms": place_ms,
            })
        );
    }
    Ok(())
}
