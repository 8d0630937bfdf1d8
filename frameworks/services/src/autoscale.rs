//! The services framework's side of autoscaling: the policies (stored
//! through the framework's store), the live numbers each decision is made
//! from, and what the API, the event stream and `/metrics` show of them.
//! The decision itself is [`agora_core::autoscale`]'s (no logic here
//! decides a count); the actor (`service/autoscale.rs`) evaluates every
//! policy once a second and applies a changed count as a scale.
//!
//! Where the numbers come from (`Observation`):
//! - **ready / not ready**: the app's live instances that serve (what its
//!   endpoint sets list as serving: running, past health and readiness
//!   checks) / the live ones that do not yet;
//! - **cpu %**: per ready instance, Δ`cpu_seconds` ÷ Δt between its last
//!   two usage samples (forwarded by the master about once a second), ÷
//!   the app's `cpus`, × 100; averaged over the ready instances that have a
//!   sample no older than [`FRESH_FOR`];
//! - **memory %**: working set (RSS when the runtime cannot tell) ÷ the
//!   app's `mem`, × 100; averaged the same way;
//! - **rps / in flight per instance**: summed over the app's ports and over
//!   the latest load report of each router (reports older than
//!   [`FRESH_FOR`] dropped), ÷ ready instances;
//! - **latency p95**: the largest p95 any router reports for the app's
//!   ports (a router that completed no request for it reports none; when no
//!   router did, it counts as 0 ms: no request is waiting on a slow one);
//! - **last request** (for `idleAfterSeconds`): the last report naming
//!   the app with a request, in flight or held; while no fresh report
//!   names the app at all, it counts as busy (idleness is only seen in
//!   reports: routers that cannot report may be serving it);
//! - a metric is *measured when* its oldest input arrived, on the
//!   framework's monotonic clock (agents' and routers' wall clocks are not
//!   compared with ours).

use crate::app::App;
use crate::scheduler::Services;
use agora_core::autoscale::{
    Autoscaler, Cause, Decision, FRESH_FOR, Instances, Metric, Metrics, Observation, Policy,
    Reason, Sample,
};
use agora_core::endpoints::LoadReport;
use agora_core::protocol::TaskUsage;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Duration;
use utoipa::ToSchema;

/// A decision that changes nothing but was held back (by a window, a rate
/// limit, a bound) is an event at most this often per app.
pub const LIMITED_EVENT_EVERY: Duration = Duration::from_secs(10);

/// Load reports of a router that stopped reporting are forgotten after
/// this long (they stopped counting after [`FRESH_FOR`]).
const FORGET_ROUTER_AFTER: Duration = Duration::from_secs(60);

/// Most routers whose reports are kept (a client posting under ever new
/// router ids cannot grow the framework's memory): beyond it, the router
/// heard from longest ago is forgotten.
pub const MAX_ROUTERS: usize = 1024;

/// An app's policy as stored (`autoscalers` table): the policy, and why it
/// is suspended when a manual scale was forced over it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredPolicy {
    pub policy: Policy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct UsagePoint {
    cpu_seconds: f64,
    /// The agent's timestamp (Unix seconds): only compared with the same
    /// task's previous sample.
    ts: f64,
    mem_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct TaskSamples {
    prev: Option<UsagePoint>,
    last: UsagePoint,
    arrived: Duration,
}

/// One app's autoscaler and what it last saw and decided.
#[derive(Debug, Clone)]
struct Entry {
    stored: StoredPolicy,
    scaler: Autoscaler,
    last_request_at: Option<Duration>,
    /// A router holds a request for the app: the next decision wakes it.
    wake: bool,
    /// Woken and no instance serves yet.
    woken_at: Option<Duration>,
    /// The last cold start (wake → first instance serving), seconds.
    cold_start: Option<f64>,
    /// (wall-clock time, decision) of the last evaluation.
    last: Option<(f64, Decision)>,
    last_limited_event: Option<Duration>,
    /// The last evaluation at which no fresh load report named the app:
    /// the idle clock does not run without reports (see [`Self::evaluate`]).
    unobserved_at: Option<Duration>,
    scaled_up: u64,
    scaled_down: u64,
}

/// Every app's autoscaler, and the usage samples and load reports their
/// observations are built from. Bounded: samples only of instances the
/// framework knows, reports only of routers heard from in the last minute.
#[derive(Debug, Default)]
pub struct Autoscalers {
    entries: BTreeMap<String, Entry>,
    usage: HashMap<String, TaskSamples>,
    load: HashMap<String, (Duration, LoadReport)>,
    /// Apps deleted whose policy row could not be deleted yet.
    orphans: BTreeSet<String>,
}

/// What an evaluation did, for the actor to apply and tell.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub decision: Decision,
    /// A decision that changes nothing but was held back, and no such
    /// event was sent in the last [`LIMITED_EVENT_EVERY`].
    pub report_limited: bool,
}

impl Autoscalers {
    pub fn restore(policies: Vec<(String, StoredPolicy)>) -> Autoscalers {
        let mut a = Autoscalers::default();
        for (id, p) in policies {
            a.put(&id, p);
        }
        a
    }

    pub fn get(&self, app_id: &str) -> Option<&StoredPolicy> {
        self.entries.get(app_id).map(|e| &e.stored)
    }

    /// The app has a policy that acts (not suspended).
    pub fn active(&self, app_id: &str) -> Option<&Policy> {
        self.entries
            .get(app_id)
            .filter(|e| e.stored.suspended.is_none())
            .map(|e| &e.stored.policy)
    }

    pub fn ids(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Sets an app's policy (a new one, or a change: the history of
    /// recommendations and scale events stays).
    pub fn put(&mut self, app_id: &str, stored: StoredPolicy) {
        self.orphans.remove(app_id);
        match self.entries.get_mut(app_id) {
            Some(e) => {
                e.scaler.set_policy(stored.policy.clone());
                e.stored = stored;
            }
            None => {
                self.entries.insert(
                    app_id.to_string(),
                    Entry {
                        scaler: Autoscaler::new(stored.policy.clone()),
                        stored,
                        last_request_at: None,
                        wake: false,
                        woken_at: None,
                        cold_start: None,
                        last: None,
                        last_limited_event: None,
                        unobserved_at: None,
                        scaled_up: 0,
                        scaled_down: 0,
                    },
                );
            }
        }
    }

    /// Starts an active policy's scale-down window at the app's count now,
    /// as HPA does for a new autoscaler (it records the current replicas as
    /// its first recommendation): without it, the first evaluation after a
    /// policy is put — or after the framework restarts — would have no
    /// history and could scale down at once, skipping the window: the
    /// current count is its first recommendation ([`Autoscaler::seed`]).
    /// Nothing to do for a count outside `[max(min, 1), max]` (at zero, or
    /// brought back to the bounds at once anyway).
    pub fn seed(&mut self, app_id: &str, s: &Services, now: Duration) {
        let Some(current) = s.app(app_id).map(|a| a.app.instances) else {
            return;
        };
        let Some(e) = self.entries.get_mut(app_id) else {
            return;
        };
        let p = &e.stored.policy;
        if e.stored.suspended.is_some() || current < p.min.max(1) || current > p.max {
            return;
        }
        e.scaler.seed(now, current);
    }

    pub fn remove(&mut self, app_id: &str) -> Option<StoredPolicy> {
        self.entries.remove(app_id).map(|e| e.stored)
    }

    /// A policy row to delete again (its app is gone; the first delete
    /// failed).
    pub fn orphaned(&mut self, app_id: &str) {
        self.orphans.insert(app_id.to_string());
    }

    pub fn take_orphans(&mut self) -> Vec<String> {
        std::mem::take(&mut self.orphans).into_iter().collect()
    }

    /// Usage samples from the agents (through the master). Only those of
    /// instances the framework knows are kept.
    pub fn record_usage(&mut self, usage: Vec<TaskUsage>, now: Duration, s: &Services) {
        for u in usage {
            let task = u.task_id.0;
            if s.instance(&task).is_none() {
                continue;
            }
            let point = UsagePoint {
                cpu_seconds: u.cpu_seconds,
                ts: u.timestamp,
                mem_bytes: if u.mem_working_set_bytes > 0 {
                    u.mem_working_set_bytes
                } else {
                    u.mem_rss_bytes
                },
            };
            match self.usage.get_mut(&task) {
                // The same sample again: nothing new.
                Some(t) if point.ts == t.last.ts => {}
                // Older than the last one: the agent's wall clock went
                // back (an NTP step, a restored VM). Its samples would all
                // be dropped until the clock passed the last one again —
                // as long as the jump — so the series restarts here (no
                // CPU delta across the jump).
                Some(t) if point.ts < t.last.ts => {
                    t.prev = None;
                    t.last = point;
                    t.arrived = now;
                }
                Some(t) => {
                    t.prev = Some(t.last);
                    t.last = point;
                    t.arrived = now;
                }
                None => {
                    self.usage.insert(
                        task,
                        TaskSamples {
                            prev: None,
                            last: point,
                            arrived: now,
                        },
                    );
                }
            }
        }
    }

    /// A router's load report. Notes the last request of each app it
    /// names; returns the apps at zero instances it asks to wake (it holds
    /// requests for them), each marked to wake at its next decision.
    pub fn record_load(&mut self, report: LoadReport, now: Duration, s: &Services) -> Vec<String> {
        let mut wake = Vec::new();
        let mut report = report;
        // Only the sets of apps with a policy are ever read: the rest is
        // not kept (a report may name any number of sets).
        report
            .sets
            .retain(|set| self.entries.contains_key(&set.key.app_id));
        for set in &report.sets {
            let Some(e) = self.entries.get_mut(&set.key.app_id) else {
                continue;
            };
            if set.requests > 0 || set.in_flight > 0 || set.held > 0 {
                e.last_request_at = Some(now);
            }
            let at_zero = s.app(&set.key.app_id).is_some_and(|a| a.app.instances == 0);
            if set.held > 0 && at_zero && e.stored.suspended.is_none() && !e.wake {
                e.wake = true;
                wake.push(set.key.app_id.clone());
            }
        }
        if self.load.len() >= MAX_ROUTERS
            && !self.load.contains_key(&report.router)
            && let Some(oldest) = self
                .load
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
        {
            self.load.remove(&oldest);
        }
        self.load.insert(report.router.clone(), (now, report));
        wake
    }

    /// Forgets samples of instances that are gone and routers that went
    /// quiet.
    pub fn prune(&mut self, s: &Services, now: Duration) {
        self.usage.retain(|t, _| s.instance(t).is_some());
        self.load
            .retain(|_, (at, _)| now.saturating_sub(*at) <= FORGET_ROUTER_AFTER);
    }

    fn fresh(at: Duration, now: Duration) -> bool {
        now.saturating_sub(at) <= FRESH_FOR
    }

    /// The app-wide metrics now (see the module's doc).
    fn metrics(&self, app: &App, ready: &[&crate::scheduler::Instance], now: Duration) -> Metrics {
        let mut m = Metrics::default();
        let (mut cpu, mut mem) = (Vec::new(), Vec::new());
        let mut oldest: Option<Duration> = None;
        for i in ready {
            let Some(t) = self.usage.get(&i.task_id) else {
                continue;
            };
            if !Self::fresh(t.arrived, now) {
                continue;
            }
            oldest = Some(oldest.map_or(t.arrived, |o| o.min(t.arrived)));
            if let Some(p) = t.prev {
                let (dt, dc) = (t.last.ts - p.ts, t.last.cpu_seconds - p.cpu_seconds);
                if dt > 0.0 && dc >= 0.0 && app.cpus > 0.0 {
                    cpu.push(dc / dt / app.cpus * 100.0);
                }
            }
            if app.mem > 0.0 && t.last.mem_bytes > 0 {
                mem.push(t.last.mem_bytes as f64 / (app.mem * 1024.0 * 1024.0) * 100.0);
            }
        }
        let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        if let Some(at) = oldest {
            if !cpu.is_empty() {
                m.cpu = Some(Sample {
                    value: avg(&cpu),
                    measured_at: at,
                });
            }
            if !mem.is_empty() {
                m.memory = Some(Sample {
                    value: avg(&mem),
                    measured_at: at,
                });
            }
        }
        let reports: Vec<&(Duration, LoadReport)> = self
            .load
            .values()
            .filter(|(at, _)| Self::fresh(*at, now))
            .collect();
        if let Some(at) = reports.iter().map(|(at, _)| *at).min() {
            let (mut rps, mut in_flight, mut p95) = (0.0, 0.0, None::<f64>);
            for (_, r) in &reports {
                for set in r.sets.iter().filter(|s| s.key.app_id == app.id) {
                    if set.rps.is_finite() && set.rps >= 0.0 {
                        rps += set.rps;
                    }
                    in_flight += set.in_flight as f64;
                    if let Some(l) = set.latency_p95_ms.filter(|l| l.is_finite() && *l >= 0.0) {
                        p95 = Some(p95.map_or(l, |p: f64| p.max(l)));
                    }
                }
            }
            let sample = |value| {
                Some(Sample {
                    value,
                    measured_at: at,
                })
            };
            if !ready.is_empty() {
                m.rps = sample(rps / ready.len() as f64);
                m.in_flight = sample(in_flight / ready.len() as f64);
            }
            m.latency_p95 = sample(p95.unwrap_or(0.0));
        }
        m
    }

    /// A fresh load report names one of the app's ports.
    fn reported(&self, app_id: &str, now: Duration) -> bool {
        self.load.values().any(|(at, r)| {
            Self::fresh(*at, now) && r.sets.iter().any(|set| set.key.app_id == app_id)
        })
    }

    /// What the app's autoscaler sees now (`None`: no such app or policy).
    pub fn observe(&self, app_id: &str, s: &Services, now: Duration) -> Option<Observation> {
        let e = self.entries.get(app_id)?;
        let st = s.app(app_id)?;
        let (ready, not_ready) = s.readiness(app_id);
        Some(Observation {
            now,
            instances: Instances {
                ready: ready.len() as u32,
                not_ready,
            },
            current_target: st.app.instances,
            metrics: self.metrics(&st.app, &ready, now),
            last_request_at: e.last_request_at,
            wake: e.wake,
        })
    }

    /// Evaluates an active policy once (`None`: no app, no policy, or
    /// suspended). The actor applies a changed count.
    pub fn evaluate(
        &mut self,
        app_id: &str,
        s: &Services,
        now: Duration,
        wall: f64,
    ) -> Option<Evaluation> {
        self.active(app_id)?;
        let mut obs = self.observe(app_id, s, now)?;
        let reported = self.reported(app_id, now);
        let e = self.entries.get_mut(app_id)?;
        // Idleness is what the routers report: with no fresh report naming
        // the app (the routers' reports fail — a revoked token, the
        // services API unreachable — or no router runs), no request is
        // seen, yet the app may be serving. Time without reports counts as
        // not idle, so the app is not scaled to zero under live traffic
        // (nothing could wake it either: the wake-up is a report).
        if !reported {
            e.unobserved_at = Some(now);
        }
        obs.last_request_at = obs.last_request_at.max(e.unobserved_at);
        let decision = e.scaler.decide(&obs);
        e.wake = false;
        let limited = !decision.changes() && decision.reason.recommendation != decision.desired;
        let report_limited = limited
            && e.last_limited_event
                .is_none_or(|t| now.saturating_sub(t) >= LIMITED_EVENT_EVERY);
        if report_limited {
            e.last_limited_event = Some(now);
        }
        e.last = Some((wall, decision.clone()));
        Some(Evaluation {
            decision,
            report_limited,
        })
    }

    /// A decision's count was applied (stored and acted on).
    pub fn applied(&mut self, app_id: &str, d: &Decision, now: Duration) {
        let Some(e) = self.entries.get_mut(app_id) else {
            return;
        };
        if d.desired > d.current {
            e.scaled_up += 1;
        } else if d.desired < d.current {
            e.scaled_down += 1;
        }
        if d.reason.cause == Cause::Woken {
            e.woken_at = Some(now);
        }
    }

    /// Cold starts that ended (a woken app's first instance serves): their
    /// apps and durations in seconds.
    pub fn note_serving(&mut self, s: &Services, now: Duration) -> Vec<(String, f64)> {
        let mut done = Vec::new();
        for (id, e) in self.entries.iter_mut() {
            let Some(w) = e.woken_at else { continue };
            if s.app(id).is_none() {
                e.woken_at = None;
                continue;
            }
            if !s.readiness(id).0.is_empty() {
                let secs = now.saturating_sub(w).as_secs_f64();
                e.cold_start = Some(secs);
                e.woken_at = None;
                done.push((id.clone(), secs));
            }
        }
        done
    }

    /// Some app waits for its first instance after a wake-up.
    pub fn waking(&self) -> bool {
        self.entries.values().any(|e| e.woken_at.is_some())
    }

    /// The API's view of an app's policy and status.
    pub fn view(
        &self,
        app_id: &str,
        s: &Services,
        now: Duration,
        wall: f64,
    ) -> Option<AutoscalerView> {
        let e = self.entries.get(app_id)?;
        let obs = self.observe(app_id, s, now);
        let at = |t: Duration| wall - now.saturating_sub(t).as_secs_f64();
        let metrics = e
            .stored
            .policy
            .targets
            .iter()
            .map(|t| {
                let sample = obs
                    .as_ref()
                    .and_then(|o| o.metrics.get(t.metric))
                    .filter(|s| Self::fresh(s.measured_at, now));
                MetricStatus {
                    metric: t.metric.as_str().to_string(),
                    target: t.value,
                    value: sample.map(|s| s.value),
                    measured_at: sample.map(|s| at(s.measured_at)),
                }
            })
            .collect();
        Some(AutoscalerView {
            app_id: app_id.to_string(),
            policy: e.stored.policy.clone(),
            status: AutoscalerStatus {
                suspended: e.stored.suspended.is_some(),
                suspended_reason: e.stored.suspended.clone(),
                instances: obs.as_ref().map_or(0, |o| o.current_target),
                ready: obs.as_ref().map_or(0, |o| o.instances.ready),
                not_ready: obs.as_ref().map_or(0, |o| o.instances.not_ready),
                desired: e.last.as_ref().map(|(_, d)| d.desired),
                metrics,
                last_decision: e.last.as_ref().map(|(t, d)| DecisionView::of(*t, d)),
                last_request_at: e.last_request_at.map(at),
                waking: e.woken_at.is_some() || e.wake,
                cold_start_seconds: e.cold_start,
            },
        })
    }

    /// `/metrics` lines (Prometheus text format) for every policy.
    pub fn prometheus(&self, s: &Services, now: Duration) -> String {
        let mut out = String::new();
        let esc = |v: &str| {
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP agora_services_autoscaler_{name} {help}");
            let _ = writeln!(out, "# TYPE agora_services_autoscaler_{name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "agora_services_autoscaler_{name}{{{labels}}} {v}");
            }
        };
        let app = |id: &str| format!("app=\"{}\"", esc(id));
        let mut desired = Vec::new();
        let mut current = Vec::new();
        let mut values = Vec::new();
        let mut targets = Vec::new();
        let mut decisions = Vec::new();
        let mut suspended = Vec::new();
        let mut cold = Vec::new();
        for (id, e) in &self.entries {
            let obs = self.observe(id, s, now);
            if let Some((_, d)) = &e.last {
                desired.push((app(id), d.desired as f64));
            }
            if let Some(o) = &obs {
                current.push((app(id), o.current_target as f64));
            }
            for t in &e.stored.policy.targets {
                let l = format!("{},metric=\"{}\"", app(id), t.metric.as_str());
                targets.push((l.clone(), t.value));
                if let Some(v) = obs
                    .as_ref()
                    .and_then(|o| o.metrics.get(t.metric))
                    .filter(|s| Self::fresh(s.measured_at, now))
                {
                    values.push((l, v.value));
                }
            }
            decisions.push((format!("{},direction=\"up\"", app(id)), e.scaled_up as f64));
            decisions.push((
                format!("{},direction=\"down\"", app(id)),
                e.scaled_down as f64,
            ));
            suspended.push((
                app(id),
                if e.stored.suspended.is_some() {
                    1.0
                } else {
                    0.0
                },
            ));
            if let Some(c) = e.cold_start {
                cold.push((app(id), c));
            }
        }
        family(
            "desired_instances",
            "gauge",
            "The instance count the app's autoscaler decided last.",
            desired,
        );
        family(
            "current_instances",
            "gauge",
            "The app's instance count now.",
            current,
        );
        family(
            "metric_value",
            "gauge",
            "A target's metric now (cpu, memory: percent; rps, inFlight: per ready instance; latencyP95: milliseconds); absent when missing or stale.",
            values,
        );
        family(
            "target",
            "gauge",
            "A target of the app's policy, in the metric's unit.",
            targets,
        );
        family(
            "decisions_total",
            "counter",
            "Decisions that changed the instance count, by direction.",
            decisions,
        );
        family(
            "suspended",
            "gauge",
            "1 while a forced manual scale suspends the policy.",
            suspended,
        );
        family(
            "cold_start_seconds",
            "gauge",
            "The app's last cold start: from the wake-up at zero instances to its first serving instance.",
            cold,
        );
        out
    }
}

/// An autoscaling policy and how it is doing (`GET /v1/autoscalers/{appId}`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerView {
    pub app_id: String,
    /// The policy as stored, defaults filled in (see docs/autoscaling.md).
    #[schema(value_type = Object)]
    pub policy: Policy,
    pub status: AutoscalerStatus,
}

/// All policies (`GET /v1/autoscalers`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AutoscalerList {
    pub autoscalers: Vec<AutoscalerView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerStatus {
    /// A forced manual scale suspended the policy: it decides nothing until
    /// it is PUT again.
    pub suspended: bool,
    pub suspended_reason: Option<String>,
    /// The app's instance count now.
    pub instances: u32,
    /// Instances serving, and launched but not serving yet.
    pub ready: u32,
    pub not_ready: u32,
    /// What the last decision asked for.
    pub desired: Option<u32>,
    /// Each target's metric now.
    pub metrics: Vec<MetricStatus>,
    pub last_decision: Option<DecisionView>,
    /// The last request a router saw for the app (Unix seconds).
    pub last_request_at: Option<f64>,
    /// Woken from zero, no instance serves yet.
    pub waking: bool,
    /// The last cold start: wake-up → first instance serving, seconds.
    pub cold_start_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    /// `cpu`, `memory`, `rps`, `inFlight` or `latencyP95`.
    pub metric: String,
    pub target: f64,
    /// `null`: missing or older than 2 s.
    pub value: Option<f64>,
    /// When it was measured (Unix seconds).
    pub measured_at: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionView {
    /// When (Unix seconds).
    pub at: f64,
    pub current: u32,
    pub desired: u32,
    /// `up`, `down`, or `null` for no change.
    pub direction: Option<String>,
    /// Why, readable: the metric that decided (value, target, its
    /// desired), the raw recommendation and what limited it.
    pub reason: String,
    /// The same, as data.
    #[schema(value_type = Object)]
    pub detail: Reason,
}

impl DecisionView {
    pub fn of(at: f64, d: &Decision) -> DecisionView {
        DecisionView {
            at,
            current: d.current,
            desired: d.desired,
            direction: direction(d).map(str::to_string),
            reason: d.to_string(),
            detail: d.reason.clone(),
        }
    }
}

pub fn direction(d: &Decision) -> Option<&'static str> {
    match d.desired.cmp(&d.current) {
        std::cmp::Ordering::Greater => Some("up"),
        std::cmp::Ordering::Less => Some("down"),
        std::cmp::Ordering::Equal => None,
    }
}

/// The `autoscale_decision_event` of a decision (`applied`: its count was
/// stored and acted on).
pub fn event(app_id: &str, d: &Decision, applied: bool, wall: f64) -> serde_json::Value {
    serde_json::json!({
        "eventType": "autoscale_decision_event",
        "appId": app_id,
        "current": d.current,
        "desired": d.desired,
        "direction": direction(d),
        "applied": applied,
        "reason": d.to_string(),
        "detail": d.reason,
        "timestamp": wall,
    })
}

/// A policy body: JSON → [`Policy`] (the field is named when the JSON does
/// not fit: unknown field, unknown metric, wrong type) → validated against
/// the largest instance count an app may have. Every problem as
/// (JSON pointer, message).
pub fn parse_policy(body: &[u8], max_instances: u32) -> Result<Policy, Vec<(String, String)>> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let policy: Policy = match serde_path_to_error::deserialize(de) {
        Ok(p) => p,
        Err(e) => {
            let path = pointer(&e.path().to_string());
            let inner = e.into_inner();
            // serde names the field in its message; the path says where.
            return Err(vec![(path, inner.to_string())]);
        }
    };
    policy.validate(max_instances).map_err(|errs| {
        errs.into_iter()
            .map(|e| (pointer(&e.field), e.message))
            .collect::<Vec<_>>()
    })?;
    Ok(policy)
}

/// `targets[1].value` → `/targets/1/value` (`.` alone: the document).
fn pointer(path: &str) -> String {
    if path == "." || path.is_empty() {
        return "/".into();
    }
    let mut out = String::new();
    for part in path.split('.') {
        let mut rest = part;
        while let Some(open) = rest.find('[') {
            let (name, tail) = rest.split_at(open);
            if !name.is_empty() {
                out.push('/');
                out.push_str(name);
            }
            let close = tail.find(']').unwrap_or(tail.len());
            out.push('/');
            out.push_str(&tail[1..close]);
            rest = tail.get(close + 1..).unwrap_or("");
        }
        if !rest.is_empty() {
            out.push('/');
            out.push_str(rest);
        }
    }
    out
}

/// `Metric` names for help texts.
pub fn metric_names() -> String {
    Metric::ALL.map(Metric::as_str).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports under ever new router ids keep at most [`MAX_ROUTERS`];
    /// the newest stay.
    #[test]
    fn load_reports_are_bounded_by_router() {
        let s = Services::new();
        let mut a = Autoscalers::default();
        for i in 0..MAX_ROUTERS + 10 {
            let r = LoadReport {
                router: format!("r{i}"),
                window_ms: 1000,
                sets: vec![],
            };
            a.record_load(r, Duration::from_millis(i as u64), &s);
        }
        assert_eq!(a.load.len(), MAX_ROUTERS);
        assert!(a.load.contains_key(&format!("r{}", MAX_ROUTERS + 9)));
        assert!(!a.load.contains_key("r0"));
    }

    /// Only the sets of apps with a policy are kept of a report (a report
    /// may name any number of sets: the rest is never read).
    #[test]
    fn load_reports_keep_only_the_sets_of_autoscaled_apps() {
        use agora_core::endpoints::{EndpointKey, SetLoad};
        let s = Services::new();
        let mut a = Autoscalers::default();
        let p: Policy = serde_json::from_value(serde_json::json!(
            {"min": 1, "max": 2, "targets": [{"metric": "rps", "value": 10}]}))
        .unwrap();
        a.put(
            "/a",
            StoredPolicy {
                policy: p,
                suspended: None,
            },
        );
        let set = |app: String| SetLoad {
            key: EndpointKey {
                app_id: app,
                port_index: 0,
            },
            requests: 1,
            rps: 1.0,
            in_flight: 0,
            latency_p50_ms: None,
            latency_p95_ms: None,
            held: 0,
        };
        let mut sets: Vec<SetLoad> = (0..1000).map(|i| set(format!("/other-{i}"))).collect();
        sets.push(set("/a".into()));
        let r = LoadReport {
            router: "r1".into(),
            window_ms: 1000,
            sets,
        };
        a.record_load(r, Duration::ZERO, &s);
        let kept = &a.load["r1"].1.sets;
        assert_eq!(kept.len(), 1, "{} sets kept", kept.len());
        assert_eq!(kept[0].key.app_id, "/a");
    }

    #[test]
    fn pointers_from_serde_paths() {
        assert_eq!(pointer("targets[1].value"), "/targets/1/value");
        assert_eq!(
            pointer("behavior.scaleDown.policies[0].periodSeconds"),
            "/behavior/scaleDown/policies/0/periodSeconds"
        );
        assert_eq!(pointer("min"), "/min");
        assert_eq!(pointer("."), "/");
    }

    #[test]
    fn a_policy_body_names_the_field_of_every_problem() {
        let unknown = parse_policy(
            br#"{"min":1,"max":2,"targets":[{"metric":"cpu","value":50}],"maxx":3}"#,
            100,
        )
        .unwrap_err();
        assert_eq!(unknown[0].0, "/maxx", "{unknown:?}");
        assert!(unknown[0].1.contains("maxx"), "{unknown:?}");
        let metric = parse_policy(br#"{"min":1,"max":2,"targets":[{"metric":"cpu","value":50},{"metric":"gpu","value":1}]}"#, 100)
            .unwrap_err();
        assert_eq!(metric[0].0, "/targets/1/metric", "{metric:?}");
        assert!(metric[0].1.contains("gpu"), "{metric:?}");
        let bounds = parse_policy(
            br#"{"min":5,"max":200,"targets":[{"metric":"rps","value":-1}]}"#,
            100,
        )
        .unwrap_err();
        let fields: Vec<&str> = bounds.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"/max"), "{bounds:?}");
        assert!(fields.contains(&"/targets/0/value"), "{bounds:?}");
        let minmax = parse_policy(
            br#"{"min":5,"max":3,"targets":[{"metric":"rps","value":10}]}"#,
            100,
        )
        .unwrap_err();
        assert_eq!(minmax[0].0, "/min", "{minmax:?}");
        assert!(
            parse_policy(
                br#"{"min":1,"max":3,"targets":[{"metric":"rps","value":10}]}"#,
                100
            )
            .is_ok()
        );
    }
}
