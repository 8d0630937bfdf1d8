//! Prometheus text for `/metrics` (prometheus-client, OpenMetrics format).
//!
//! Gauges are recomputed from the actor's state at scrape time; counters
//! mirror the actor's monotonic counters; the allocation-run histogram is fed
//! with every run's duration since the previous scrape.

use crate::view::Gauges;
use agora_core::task::ALL_TASK_STATES;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

type Labels = Vec<(String, String)>;

struct Inner {
    registry: Registry,
    agents: Family<Labels, Gauge>,
    frameworks: Family<Labels, Gauge>,
    tasks: Family<Labels, Gauge>,
    offers_outstanding: Gauge,
    deferred: Gauge,
    counters: Vec<(&'static str, Counter, u64)>,
    allocation: Histogram,
}

pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agora_master");
        let agents = Family::<Labels, Gauge>::default();
        registry.register("agents", "Agents by state", agents.clone());
        let frameworks = Family::<Labels, Gauge>::default();
        registry.register("frameworks", "Frameworks by state", frameworks.clone());
        let tasks = Family::<Labels, Gauge>::default();
        registry.register("tasks", "Live tasks by state", tasks.clone());
        let offers_outstanding = Gauge::default();
        registry.register(
            "offers_outstanding",
            "Outstanding offers",
            offers_outstanding.clone(),
        );
        let mut counters = Vec::new();
        for (name, help, _) in crate::state::Counters::default().named() {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            counters.push((name, c, 0));
        }
        let deferred = Gauge::default();
        registry.register(
            "deferred",
            "Reconciliation answers and kills waiting for an agent to re-register",
            deferred.clone(),
        );
        let allocation = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        registry.register(
            "allocation_run_seconds",
            "Duration of allocation runs",
            allocation.clone(),
        );
        Metrics {
            inner: Mutex::new(Inner {
                registry,
                agents,
                frameworks,
                tasks,
                offers_outstanding,
                deferred,
                counters,
                allocation,
            }),
        }
    }

    /// Updates from a gauge snapshot and renders the text exposition.
    pub fn render(&self, g: &Gauges, allocation_runs: &[f64]) -> String {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let inner = &mut *guard;
        use agora_core::lifecycle::{AgentState as A, FrameworkState as F};
        for s in [
            A::Recovered,
            A::Active,
            A::Disconnected,
            A::Unreachable,
            A::Gone,
        ] {
            let label = serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            inner
                .agents
                .get_or_create(&vec![("state".into(), label)])
                .set(g.agents.get(&s).copied().unwrap_or(0) as i64);
        }
        for s in [F::Connected, F::Disconnected, F::Recovered, F::Completed] {
            let label = serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            inner
                .frameworks
                .get_or_create(&vec![("state".into(), label)])
                .set(g.frameworks.get(&s).copied().unwrap_or(0) as i64);
        }
        for s in ALL_TASK_STATES {
            if s.is_terminal() || s == agora_core::TaskState::Unknown {
                continue;
            }
            inner
                .tasks
                .get_or_create(&vec![("state".into(), s.as_str().to_string())])
                .set(g.tasks.get(&s).copied().unwrap_or(0) as i64);
        }
        inner.offers_outstanding.set(g.outstanding_offers as i64);
        inner.deferred.set(g.deferred as i64);
        let values = g.counters.named().map(|(_, _, v)| v);
        for ((_, counter, last), v) in inner.counters.iter_mut().zip(values) {
            if v > *last {
                counter.inc_by(v - *last);
                *last = v;
            }
        }
        for r in allocation_runs {
            inner.allocation.observe(*r);
        }
        let mut buf = String::new();
        if encode(&mut buf, &inner.registry).is_err() {
            buf.clear();
        }
        buf
    }
}
