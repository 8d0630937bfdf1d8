//! `agora bench allocator`: the DRF allocator core alone, two settings.
//!
//! - **Best case** (default): every agent free, every framework holding
//!   nothing, no filters. Each timed cycle offers every agent; the offers are
//!   then returned (as if declined without a filter) outside the timed
//!   section, so every cycle starts from zero shares — the Mesos allocator
//!   benchmark's setting.
//! - **Realistic worst case** (`--filters`): frameworks hold resources (tasks
//!   run on every agent, so shares are non-zero and differ) and a fraction of
//!   all agent × framework pairs (`--filter-fraction`, 0.9 by default) carry
//!   a live decline filter covering the agent's free resources, the state of
//!   a busy cluster where most frameworks have declined most agents. Every
//!   cycle must walk past the filtered frameworks; each offer is checked to
//!   go to a framework without a filter there, and every agent with one
//!   unfiltered framework to get an offer. Offers are returned without a
//!   filter outside the timed section, so each cycle sees the same filters.
//! - With `--churn` as well, filters come and go as in a live cluster: the
//!   clock advances by the allocation interval (1 s) every cycle and every
//!   offer is declined with a 30 s filter (timed apart: the master pays it
//!   when it handles DECLINE), so from the 31st cycle on, every agent sees
//!   one filter expire and one appear per cycle, on top of the setup's.

use agora_core::allocator::Allocator;
use agora_core::{AgentId, FrameworkId, Resources};
use anyhow::{Context, Result, ensure};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct AllocatorArgs {
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    #[arg(long, default_value_t = 1_000)]
    pub frameworks: usize,
    /// Roles the frameworks are spread over (0: one role per framework).
    #[arg(long, default_value_t = 0)]
    pub roles: usize,
    /// Timed allocation cycles.
    #[arg(long, default_value_t = 30)]
    pub cycles: usize,
    /// The realistic worst case: running tasks (non-zero shares) and live
    /// decline filters on most agent/framework pairs.
    #[arg(long)]
    pub filters: bool,
    /// With --filters: the fraction of agent/framework pairs with a filter.
    #[arg(long, default_value_t = 0.9)]
    pub filter_fraction: f64,
    /// With --filters: tasks running on each agent (1 cpu, 4 GiB, 1 port
    /// each), of frameworks chosen at random.
    #[arg(long, default_value_t = 4)]
    pub tasks_per_agent: u32,
    /// With --filters: filters expire and are re-created (the clock moves
    /// 1 s per cycle, every offer is declined with a 30 s filter).
    #[arg(long)]
    pub churn: bool,
    /// Seed of the pseudo-random choices (tasks' frameworks, filtered pairs).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

const AGENT: &str = "cpus:16;mem:65536;disk:100000;ports:[31000-32000]";
/// Filters of the setup outlive the benchmark.
const REFUSE_SECS: u16 = 3600;
/// With --churn: every offer is declined for this long.
const CHURN_DECLINE_SECS: u16 = 30;

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Until when (whole seconds after the start) each agent/framework pair is
/// filtered, 0 for never: the benchmark's own record, to check every offer.
struct Filtered {
    frameworks: usize,
    until: Vec<u16>,
}

impl Filtered {
    fn set(&mut self, a: usize, f: usize, until: u16) {
        self.until[a * self.frameworks + f] = until;
    }
    fn live(&self, a: usize, f: usize, now: u16) -> bool {
        self.until[a * self.frameworks + f] > now
    }
    /// Agents with at least one framework not filtered at `now`.
    fn open_agents(&self, now: u16) -> usize {
        self.until
            .chunks(self.frameworks)
            .filter(|pairs| pairs.iter().any(|u| *u <= now))
            .count()
    }
}

struct Setup {
    alloc: Allocator,
    agents: HashMap<AgentId, usize>,
    frameworks: HashMap<FrameworkId, usize>,
    filtered: Option<Filtered>,
    tasks: usize,
    filters: u64,
}

fn setup(args: &AllocatorArgs, start: Instant) -> Result<Setup> {
    let mut alloc = Allocator::default();
    let agent_res = Resources::parse(AGENT)?;
    let agent_ids: Vec<AgentId> = (0..args.agents)
        .map(|i| AgentId::new(format!("agent-{i}")))
        .collect();
    let fw_ids: Vec<FrameworkId> = (0..args.frameworks)
        .map(|i| FrameworkId::new(format!("fw-{i}")))
        .collect();
    for id in &agent_ids {
        alloc.add_agent(id.clone(), agent_res.clone(), &[])?;
    }
    let roles = if args.roles == 0 {
        args.frameworks
    } else {
        args.roles
    };
    for (i, id) in fw_ids.iter().enumerate() {
        alloc.add_framework(id.clone(), &format!("role-{}", i % roles), true)?;
    }
    let mut s = Setup {
        alloc,
        agents: agent_ids.iter().cloned().zip(0..).collect(),
        frameworks: fw_ids.iter().cloned().zip(0..).collect(),
        filtered: None,
        tasks: 0,
        filters: 0,
    };
    if !args.filters {
        return Ok(s);
    }
    let mut rng = Rng(args.seed);
    // Running tasks: every framework ends up with a share of its own.
    for id in &agent_ids {
        for k in 0..args.tasks_per_agent {
            let f = &fw_ids[(rng.next() % args.frameworks as u64) as usize];
            let port = 31000 + k;
            let task =
                Resources::parse(&format!("cpus:1;mem:4096;disk:1000;ports:[{port}-{port}]"))?;
            s.alloc
                .allocate_on(f, id, &task)
                .context("placing running tasks (lower --tasks-per-agent)")?;
            s.tasks += 1;
        }
    }
    // Decline filters: the framework was offered the agent's free resources
    // and declined them for an hour.
    let mut filtered = Filtered {
        frameworks: args.frameworks,
        until: vec![0; args.agents * args.frameworks],
    };
    for (ai, aid) in agent_ids.iter().enumerate() {
        let (total, allocated) = s.alloc.agent_resources(aid).context("agent vanished")?;
        let free = total.saturating_sub(&allocated);
        for (fi, fid) in fw_ids.iter().enumerate() {
            if rng.chance(args.filter_fraction) {
                s.alloc.allocate_on(fid, aid, &free)?;
                s.alloc.recover(
                    fid,
                    aid,
                    &free,
                    Some((start, Duration::from_secs(u64::from(REFUSE_SECS)))),
                )?;
                filtered.set(ai, fi, REFUSE_SECS);
                s.filters += 1;
            }
        }
    }
    s.filtered = Some(filtered);
    Ok(s)
}

/// Peak resident set of this process in MiB (Linux), for the record.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

pub fn run(args: AllocatorArgs) -> Result<()> {
    ensure!(
        args.agents > 0 && args.frameworks > 0 && args.cycles > 0,
        "agents, frameworks and cycles must be > 0"
    );
    ensure!(
        (0.0..=1.0).contains(&args.filter_fraction),
        "--filter-fraction must be between 0 and 1, got {}",
        args.filter_fraction
    );
    ensure!(
        args.tasks_per_agent <= 15,
        "--tasks-per-agent must be at most 15 (an agent has 16 cpus)"
    );
    ensure!(
        args.filters || !args.churn,
        "--churn needs --filters (it makes the filters expire and come back)"
    );
    ensure!(
        args.cycles < usize::from(REFUSE_SECS),
        "--cycles must be below {REFUSE_SECS} (the setup's filters must outlive the run)"
    );
    let case = match (args.filters, args.churn) {
        (false, _) => "best case",
        (true, false) => "realistic worst case",
        (true, true) => "realistic worst case, churning filters",
    };
    let t0 = Instant::now();
    let mut s = setup(&args, t0)?;
    let roles = if args.roles == 0 {
        args.frameworks
    } else {
        args.roles
    };
    eprintln!(
        "allocator, {case}: {} agents, {} frameworks in {} roles, {} running tasks, {} filters ({:.0} % of pairs); setup {:.1} s; {} cycles",
        args.agents,
        args.frameworks,
        roles,
        s.tasks,
        s.filters,
        100.0 * s.filters as f64 / (args.agents * args.frameworks) as f64,
        t0.elapsed().as_secs_f64(),
        args.cycles
    );
    // One second in: every filter of the setup is live.
    let mut secs: u16 = 1;
    let mut times = Vec::with_capacity(args.cycles);
    let mut decline_times = Vec::with_capacity(args.cycles);
    let mut offers_per_cycle = Vec::with_capacity(args.cycles);
    for c in 0..args.cycles {
        if args.churn && c > 0 {
            secs += 1;
        }
        let now = t0 + Duration::from_secs(u64::from(secs));
        let expected = s
            .filtered
            .as_ref()
            .map_or(args.agents, |f| f.open_agents(secs));
        let t = Instant::now();
        let offers = s.alloc.allocate(now, None);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        ensure!(
            offers.len() == expected,
            "cycle {c}: {} offers, expected one for each of the {expected} agents with an unfiltered framework",
            offers.len(),
        );
        times.push(ms);
        offers_per_cycle.push(offers.len() as f64);
        if let Some(filtered) = &s.filtered {
            for o in &offers {
                let (a, f) = (s.agents[&o.agent], s.frameworks[&o.framework]);
                ensure!(
                    !filtered.live(a, f, secs),
                    "cycle {c}: {} offered to {} despite its live filter",
                    o.agent,
                    o.framework
                );
            }
        }
        let t = Instant::now();
        let refuse = args
            .churn
            .then(|| (now, Duration::from_secs(u64::from(CHURN_DECLINE_SECS))));
        for o in &offers {
            s.alloc
                .recover(&o.framework, &o.agent, &o.resources, refuse)?;
        }
        decline_times.push(t.elapsed().as_secs_f64() * 1000.0);
        if let (Some(filtered), true) = (s.filtered.as_mut(), args.churn) {
            for o in &offers {
                let (a, f) = (s.agents[&o.agent], s.frameworks[&o.framework]);
                filtered.set(a, f, secs + CHURN_DECLINE_SECS);
            }
        }
    }
    let p50 = super::quantile(&mut times, 0.5);
    let p99 = super::quantile(&mut times, 0.99);
    let decline_p50 = super::quantile(&mut decline_times, 0.5);
    let offers_p50 = super::quantile(&mut offers_per_cycle, 0.5);
    let rss = peak_rss_mib();
    eprintln!(
        "cycle time: p50 {p50:.2} ms, p99 {p99:.2} ms ({offers_p50:.0} offers); returning the offers: p50 {decline_p50:.2} ms; peak RSS {} MiB (Mesos 1.8 anchor at 10k agents x 1k frameworks: ~1100 ms)",
        rss.map_or("?".into(), |r| format!("{r:.0}"))
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "allocator",
                "case": case,
                "agents": args.agents,
                "frameworks": args.frameworks,
                "roles": roles,
                "cycles": args.cycles,
                "tasks": s.tasks,
                "filters": s.filters,
                "filter_fraction": if args.filters { args.filter_fraction } else { 0.0 },
                "offers_per_cycle_p50": offers_p50,
                "decline_ms_p50": decline_p50,
                "cycle_ms_p50": p50,
                "cycle_ms_p99": p99,
                "peak_rss_mib": rss,
            })
        );
    }
    Ok(())
}
