//! `agora bench allocator`: the DRF allocator core alone. Every cycle offers
//! every agent's free resources; the offers are then returned (as if
//! declined without a filter) outside the timed section, so each timed cycle
//! starts with every agent free — the Mesos allocator benchmark's setting.

use agora_core::allocator::Allocator;
use agora_core::{AgentId, FrameworkId, Resources};
use anyhow::{Result, ensure};
use std::time::Instant;

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
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: AllocatorArgs) -> Result<()> {
    ensure!(
        args.agents > 0 && args.frameworks > 0 && args.cycles > 0,
        "agents, frameworks and cycles must be > 0"
    );
    let mut alloc = Allocator::default();
    let agent_res = Resources::parse("cpus:16;mem:65536;disk:100000;ports:[31000-32000]")?;
    let setup = Instant::now();
    for i in 0..args.agents {
        alloc.add_agent(AgentId::new(format!("agent-{i}")), agent_res.clone(), &[])?;
    }
    let roles = if args.roles == 0 {
        args.frameworks
    } else {
        args.roles
    };
    for i in 0..args.frameworks {
        alloc.add_framework(
            FrameworkId::new(format!("fw-{i}")),
            &format!("role-{}", i % roles),
            true,
        )?;
    }
    eprintln!(
        "allocator: {} agents, {} frameworks in {} roles (setup {:.0} ms); {} cycles",
        args.agents,
        args.frameworks,
        roles,
        setup.elapsed().as_secs_f64() * 1000.0,
        args.cycles
    );
    let mut times = Vec::with_capacity(args.cycles);
    let now = Instant::now();
    for c in 0..args.cycles {
        let t0 = Instant::now();
        let offers = alloc.allocate(now, None);
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        ensure!(
            offers.len() == args.agents,
            "cycle {c}: {} offers for {} agents",
            offers.len(),
            args.agents
        );
        times.push(ms);
        for o in &offers {
            alloc.recover(&o.framework, &o.agent, &o.resources, None)?;
        }
    }
    let p50 = super::quantile(&mut times, 0.5);
    let p99 = super::quantile(&mut times, 0.99);
    eprintln!(
        "cycle time: p50 {p50:.2} ms, p99 {p99:.2} ms (Mesos 1.8 anchor at 10k agents x 1k frameworks: ~1100 ms)"
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "allocator",
                "agents": args.agents,
                "frameworks": args.frameworks,
                "cycles": args.cycles,
                "cycle_ms_p50": p50,
                "cycle_ms_p99": p99,
            })
        );
    }
    Ok(())
}
