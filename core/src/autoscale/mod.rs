//! Autoscaling: from a [`Policy`] and live metrics to a desired instance
//! count, with the reason. No IO, no async, no clock: the caller passes
//! `now` (a monotonic [`Duration`] since any epoch) in each [`Observation`],
//! so the services framework drives it with tokio's clock once a second and
//! tests step `now` by hand.
//!
//! # The algorithm, step by step ([`Autoscaler::decide`])
//!
//! `current` is the app's instance count now (its target, not what runs).
//!
//! 1. **At zero** (`current == 0`): a router holding a request
//!    (`wake`) brings the app to `max(1, min)` at once: no window, no rate
//!    limit. Otherwise it stays at zero (unless `min > 0`, step 2).
//! 2. **Out of bounds** (`current` above `max` or below `min`, e.g. the
//!    policy just changed): back to the bound at once, as HPA does.
//! 3. **Idle** (`min == 0` with `idleAfterSeconds`): no request for at least
//!    `idleAfterSeconds` (counted from the last request, or from the first
//!    evaluation or the last wake-up when later) → 0. This is a scale-down
//!    that **skips the stabilisation window and the rate limits**: idleness
//!    is already a window of its own (`idleAfterSeconds` long, and a long
//!    one), and an app that gets no request is not flapping. A wake-up
//!    restarts the idle clock, so a woken app is not put back to sleep
//!    before its first instance could serve the held request.
//! 4. **Per metric** (samples older than [`FRESH_FOR`] count as missing;
//!    no ready instance → no decision): `ratio = value / target`;
//!    - `|ratio - 1| <= tolerance` → no change;
//!    - otherwise `desired = ceil(ready × ratio)`, with the instances that
//!      are starting (launched but not ready, plus those not launched yet
//!      when `current` is above what runs) counted conservatively: for a
//!      scale-up they are assumed at zero load and the ratio recomputed
//!      over all of them;
//!      for a scale-down at exactly the target. When the recomputed ratio
//!      is within tolerance or on the other side of 1, the metric proposes
//!      no change. So a scale-up under way is not repeated, and noise while
//!      instances start does not overshoot.
//! 5. **Across metrics**: the largest `desired` wins. If any target's
//!    metric is missing, the result is at least `current` (missing metrics
//!    never scale down); all missing → no change. Metrics never go below
//!    one instance (only step 3 reaches zero). This is the *recommendation*.
//! 6. **Stabilisation**: every recommendation is remembered. For a
//!    scale-up the result is the *minimum* recommendation over the last
//!    `scaleUp.stabilizationWindowSeconds`; for a scale-down the *maximum*
//!    over the last `scaleDown.stabilizationWindowSeconds` (both including
//!    the recommendations exactly that old, and the current one); never
//!    past `current` in the other direction.
//! 7. **Rate limits**: for each policy, the count at the start of its
//!    period is `current` minus the net change of the scale events in the
//!    last `periodSeconds` (an event exactly that old no longer counts);
//!    `Pods v` allows `start ± v`, `Percent v` `ceil(start × (1 + v/100))`
//!    up and `floor(start × (1 - v/100))` down. `selectPolicy: Max` takes
//!    the policy allowing the most change, `Min` the least, `Disabled`
//!    none.
//! 8. **Bounds**: clamp to `[max(min, 1), max]`. A result different from
//!    `current` is recorded as a scale event (for step 7).
//!
//! # Differences from Kubernetes' HPA
//! - Evaluated every second on samples at most 2 s old (HPA: 15 s sync on
//!   metrics-server's 60 s resolution), so a load step is acted on within
//!   one evaluation.
//! - Scale to zero and wake on request (steps 1 and 3); HPA has neither.
//! - Starting instances are counted in the scale-down direction too (at
//!   target load; HPA ignores unready pods there), and instances the
//!   framework has not launched yet count as starting.
//! - Missing metrics: HPA assumes missing pods at 100 % of target for a
//!   scale-down; here a missing *metric* forbids a scale-down outright.
//! - `latencyP95` is app-wide, not per instance; it goes through the same
//!   formula (HPA's object metrics do the same with `Value` targets).
//! - Windows include a recommendation exactly `window` old, so a load drop
//!   at `t` scales down at `t + window`, not a second earlier.
//!
//! # Memory
//! Recommendations are kept for the longest window and scale events for
//! the longest period, in one-second buckets: at most 3601 + 1801 entries
//! however often `decide` is called, for a run of any length.

mod policy;
mod reason;

pub use policy::{
    Behavior, DEFAULT_TOLERANCE, FieldError, MAX_IDLE_AFTER_SECONDS, MAX_PERIOD_SECONDS,
    MAX_WINDOW_SECONDS, Metric, Policy, PolicyType, Rules, ScalingPolicy, SelectPolicy, Target,
};
pub use reason::{Cause, Decision, Direction, Limit, Reading, ReadingStatus, Reason};

use std::collections::VecDeque;
use std::time::Duration;

/// A sample older than this counts as missing.
pub const FRESH_FOR: Duration = Duration::from_secs(2);

/// Slack for float comparisons (per-instance values are quotients).
const EPS: f64 = 1e-9;

/// The app's instances as the framework sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Instances {
    /// Healthy and ready: they serve, and the metrics are measured over them.
    pub ready: u32,
    /// Launched, not yet healthy/ready.
    pub not_ready: u32,
}

/// One app-wide value of a metric: cpu/memory averaged over the ready
/// instances, rps/inFlight summed over the app and divided by the ready
/// instances, latency p95 app-wide.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub value: f64,
    /// When it was measured (same clock as [`Observation::now`]).
    pub measured_at: Duration,
}

/// The latest sample of each metric, if any.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Metrics {
    pub cpu: Option<Sample>,
    pub memory: Option<Sample>,
    pub rps: Option<Sample>,
    pub in_flight: Option<Sample>,
    pub latency_p95: Option<Sample>,
}

impl Metrics {
    pub fn get(&self, m: Metric) -> Option<Sample> {
        match m {
            Metric::Cpu => self.cpu,
            Metric::Memory => self.memory,
            Metric::Rps => self.rps,
            Metric::InFlight => self.in_flight,
            Metric::LatencyP95 => self.latency_p95,
        }
    }

    pub fn set(&mut self, m: Metric, s: Option<Sample>) {
        let slot = match m {
            Metric::Cpu => &mut self.cpu,
            Metric::Memory => &mut self.memory,
            Metric::Rps => &mut self.rps,
            Metric::InFlight => &mut self.in_flight,
            Metric::LatencyP95 => &mut self.latency_p95,
        };
        *slot = s;
    }
}

/// What the autoscaler sees at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Observation {
    pub now: Duration,
    pub instances: Instances,
    /// The app's instance count now (its target).
    pub current_target: u32,
    pub metrics: Metrics,
    /// The last request to the app seen by a router.
    pub last_request_at: Option<Duration>,
    /// A router holds a request for the app (at zero instances).
    pub wake: bool,
}

/// Recommendations in one second: their extremes, and the latest time.
#[derive(Debug, Clone, Copy)]
struct Recommendation {
    second: u64,
    at: Duration,
    lo: u32,
    hi: u32,
}

/// Scale events in one second.
#[derive(Debug, Clone, Copy)]
struct ScaleEvent {
    second: u64,
    at: Duration,
    added: u64,
    removed: u64,
}

/// The autoscaler of one app: its policy and its bounded history.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    policy: Policy,
    started_at: Option<Duration>,
    woken_at: Option<Duration>,
    recommendations: VecDeque<Recommendation>,
    events: VecDeque<ScaleEvent>,
}

impl Autoscaler {
    /// `policy` should have passed [`Policy::validate`]; an unvalidated one
    /// does not panic (zero periods count as one second, and so on).
    pub fn new(policy: Policy) -> Autoscaler {
        Autoscaler {
            policy,
            started_at: None,
            woken_at: None,
            recommendations: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A new policy for the same app: the history stays (a changed window
    /// applies to the recommendations already made).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Starts the history at `current` (a policy just put on a running app,
    /// or restored after a restart): `current` counts as a recommendation
    /// made `now`, so the scale-down window runs from here instead of a
    /// first evaluation scaling down at once (HPA seeds its history the same
    /// way). It also starts the idle clock. No scale event is recorded.
    pub fn seed(&mut self, now: Duration, current: u32) {
        self.started_at.get_or_insert(now);
        self.prune(now);
        self.record_recommendation(now, current);
    }

    /// Entries kept: (recommendation buckets, scale-event buckets).
    pub fn history_len(&self) -> (usize, usize) {
        (self.recommendations.len(), self.events.len())
    }

    /// Evaluate once. The caller applies `desired` (when it differs from
    /// `current`): the decision is recorded as a scale event either way.
    pub fn decide(&mut self, obs: &Observation) -> Decision {
        let now = obs.now;
        let started = *self.started_at.get_or_insert(now);
        self.prune(now);
        let p = &self.policy;
        let current = obs.current_target;
        let (min, max) = (p.min, p.max.max(p.min));
        let decision = |desired: u32, cause, metrics, recommendation, limits| Decision {
            desired,
            current,
            reason: Reason {
                cause,
                metrics,
                recommendation,
                limits,
            },
        };

        // 1. At zero.
        if current == 0 && min == 0 {
            let d = if obs.wake {
                self.woken_at = Some(now);
                let up = 1.max(min).min(max);
                decision(up, Cause::Woken, vec![], up, vec![])
            } else {
                decision(0, Cause::AtZero, vec![], 0, vec![])
            };
            self.record_event(now, current, d.desired);
            return d;
        }
        // 2. Out of bounds.
        if current > max || current < min {
            let (to, limit) = if current > max {
                (max, Limit::Max { max })
            } else {
                (min, Limit::Min { min })
            };
            let d = decision(to, Cause::OutOfBounds, vec![], current, vec![limit]);
            self.record_event(now, current, to);
            return d;
        }
        // 3. Idle.
        if min == 0
            && let Some(idle) = p.idle_after_seconds
        {
            let since = [obs.last_request_at, self.woken_at]
                .into_iter()
                .flatten()
                .fold(started, Duration::max);
            let quiet = now.saturating_sub(since);
            if quiet >= Duration::from_secs(idle) {
                let d = decision(
                    0,
                    Cause::Idle {
                        seconds: quiet.as_secs(),
                    },
                    vec![],
                    0,
                    vec![],
                );
                self.record_event(now, current, 0);
                // Start afresh after a wake-up.
                self.recommendations.clear();
                return d;
            }
        }
        // 4. Per metric.
        let ready = obs.instances.ready;
        let readings: Vec<Reading> = p.targets.iter().map(|t| self.reading(t, obs)).collect();
        if ready == 0 {
            return decision(current, Cause::NoReadyInstances, readings, current, vec![]);
        }
        // 5. Across metrics.
        let mut limits = Vec::new();
        let missing: Vec<Metric> = readings
            .iter()
            .filter(|r| r.status == ReadingStatus::Missing)
            .map(|r| r.metric)
            .collect();
        let present = readings.iter().filter(|r| r.desired.is_some());
        let best = present.max_by_key(|r| r.desired);
        let Some(best) = best else {
            limits.push(Limit::MissingMetrics { metrics: missing });
            return decision(current, Cause::Steady, readings, current, limits);
        };
        let mut rec = best.desired.unwrap_or(current);
        let winner = best.metric;
        if !missing.is_empty() && rec < current {
            rec = current;
            limits.push(Limit::MissingMetrics { metrics: missing });
        }
        if rec == current {
            let present = readings.iter().filter(|r| r.desired.is_some());
            let starting = starting(obs);
            if present.clone().any(|r| {
                matches!(
                    r.status,
                    ReadingStatus::HeldByStarting | ReadingStatus::HeldForStarting
                )
            }) {
                limits.push(Limit::Starting {
                    instances: starting,
                });
            } else if present
                .clone()
                .all(|r| r.status == ReadingStatus::WithinTolerance)
            {
                limits.push(Limit::WithinTolerance);
            }
        }
        let rec = rec.max(1);
        let cause = if rec != current {
            Cause::Metric { metric: winner }
        } else {
            Cause::Steady
        };

        // 6. Stabilisation.
        self.record_recommendation(now, rec);
        let p = &self.policy;
        let up_window = p.behavior.scale_up.stabilization_window_seconds;
        let down_window = p.behavior.scale_down.stabilization_window_seconds;
        let (mut up_rec, mut down_rec) = (rec, rec);
        for r in &self.recommendations {
            if r.at >= now.saturating_sub(secs(up_window)) {
                up_rec = up_rec.min(r.lo);
            }
            if r.at >= now.saturating_sub(secs(down_window)) {
                down_rec = down_rec.max(r.hi);
            }
        }
        let mut desired = current;
        if desired < up_rec {
            desired = up_rec;
        }
        if desired > down_rec {
            desired = down_rec;
        }
        if desired != rec {
            let (direction, window_seconds) = if rec > current {
                (Direction::Up, up_window)
            } else {
                (Direction::Down, down_window)
            };
            limits.push(Limit::StabilizationWindow {
                direction,
                window_seconds,
                value: desired,
            });
        }

        // 7. Rate limits.
        if desired > current {
            let rules = &p.behavior.scale_up;
            let limit = match rules.select_policy {
                SelectPolicy::Disabled => None,
                _ => self.up_limit(now, current),
            };
            if let Some((policy, allowed)) = limit {
                if desired > allowed {
                    desired = allowed;
                    limits.push(Limit::RateLimit {
                        direction: Direction::Up,
                        policy,
                        allowed,
                    });
                }
            } else {
                desired = current;
                limits.push(Limit::ScalingDisabled {
                    direction: Direction::Up,
                });
            }
        } else if desired < current {
            let rules = &p.behavior.scale_down;
            let limit = match rules.select_policy {
                SelectPolicy::Disabled => None,
                _ => self.down_limit(now, current),
            };
            if let Some((policy, allowed)) = limit {
                if desired < allowed {
                    desired = allowed;
                    limits.push(Limit::RateLimit {
                        direction: Direction::Down,
                        policy,
                        allowed,
                    });
                }
            } else {
                desired = current;
                limits.push(Limit::ScalingDisabled {
                    direction: Direction::Down,
                });
            }
        }

        // 8. Bounds.
        if desired > max {
            desired = max;
            limits.push(Limit::Max { max });
        }
        let floor = min.max(1);
        if desired < floor {
            desired = floor;
            limits.push(if min >= 1 {
                Limit::Min { min }
            } else {
                Limit::AtLeastOne
            });
        }
        self.record_event(now, current, desired);
        decision(desired, cause, readings, rec, limits)
    }

    /// Step 4 for one target.
    fn reading(&self, t: &Target, obs: &Observation) -> Reading {
        let tol = self.policy.tolerance;
        let current = obs.current_target;
        let ready = obs.instances.ready;
        let value = obs.metrics.get(t.metric).filter(|s| {
            s.value.is_finite()
                && s.value >= 0.0
                && obs.now.saturating_sub(s.measured_at) <= FRESH_FOR
        });
        let mut r = Reading {
            metric: t.metric,
            target: t.value,
            value: value.map(|s| s.value),
            desired: None,
            status: ReadingStatus::Missing,
        };
        let Some(s) = value else { return r };
        if ready == 0 || !(t.value.is_finite() && t.value > 0.0) {
            return r;
        }
        let ratio = s.value / t.value;
        let held = |r: &mut Reading, status| {
            r.desired = Some(current);
            r.status = status;
        };
        if (ratio - 1.0).abs() <= tol + EPS {
            held(&mut r, ReadingStatus::WithinTolerance);
            return r;
        }
        let ready_f = f64::from(ready);
        let starting = f64::from(starting(obs));
        let all = ready_f + starting;
        if ratio > 1.0 {
            // Starting instances at zero load.
            let new_ratio = ratio * ready_f / all;
            if new_ratio <= 1.0 + tol + EPS {
                held(&mut r, ReadingStatus::HeldByStarting);
                return r;
            }
            let d = ceil_u32(new_ratio * all);
            r.desired = Some(d.max(current));
            r.status = ReadingStatus::Up;
        } else {
            // Starting instances at target load.
            let new_ratio = (ratio * ready_f + starting) / all;
            if new_ratio >= 1.0 - tol - EPS {
                held(&mut r, ReadingStatus::HeldForStarting);
                return r;
            }
            let d = ceil_u32(new_ratio * all);
            r.desired = Some(d.min(current));
            r.status = if d < current {
                ReadingStatus::Down
            } else {
                ReadingStatus::WithinTolerance
            };
        }
        r
    }

    fn record_recommendation(&mut self, now: Duration, rec: u32) {
        let second = now.as_secs();
        match self.recommendations.back_mut() {
            Some(last) if last.second == second => {
                last.at = now.max(last.at);
                last.lo = last.lo.min(rec);
                last.hi = last.hi.max(rec);
            }
            _ => self.recommendations.push_back(Recommendation {
                second,
                at: now,
                lo: rec,
                hi: rec,
            }),
        }
    }

    fn record_event(&mut self, now: Duration, from: u32, to: u32) {
        if from == to {
            return;
        }
        let (added, removed) = if to > from {
            (u64::from(to - from), 0)
        } else {
            (0, u64::from(from - to))
        };
        let second = now.as_secs();
        match self.events.back_mut() {
            Some(last) if last.second == second => {
                last.at = now.max(last.at);
                last.added += added;
                last.removed += removed;
            }
            _ => self.events.push_back(ScaleEvent {
                second,
                at: now,
                added,
                removed,
            }),
        }
    }

    /// Drop what no window or period can see any more.
    fn prune(&mut self, now: Duration) {
        let b = &self.policy.behavior;
        let window = b
            .scale_up
            .stabilization_window_seconds
            .max(b.scale_down.stabilization_window_seconds)
            .min(MAX_WINDOW_SECONDS);
        let period = b
            .scale_up
            .policies
            .iter()
            .chain(&b.scale_down.policies)
            .map(|p| p.period_seconds)
            .max()
            .unwrap_or(0)
            .min(MAX_PERIOD_SECONDS);
        let keep_recs = now.saturating_sub(secs(window));
        while self
            .recommendations
            .front()
            .is_some_and(|r| r.at < keep_recs)
        {
            self.recommendations.pop_front();
        }
        if let Some(keep_events) = now.checked_sub(secs(period)) {
            while self.events.front().is_some_and(|e| e.at <= keep_events) {
                self.events.pop_front();
            }
        }
    }

    /// (added, removed) by the scale events of the last `period` seconds.
    fn changes_in(&self, now: Duration, period: u32) -> (u64, u64) {
        // Before the epoch is more than `period` old, every event counts.
        let cutoff = now.checked_sub(secs(period.max(1)));
        self.events
            .iter()
            .filter(|e| cutoff.is_none_or(|c| e.at > c))
            .fold((0, 0), |(a, r), e| (a + e.added, r + e.removed))
    }

    /// The policy that decides the scale-up limit and the count it allows
    /// (`None`: no policy).
    fn up_limit(&self, now: Duration, current: u32) -> Option<(ScalingPolicy, u32)> {
        let rules = &self.policy.behavior.scale_up;
        let limits = rules.policies.iter().map(|p| {
            let (added, removed) = self.changes_in(now, p.period_seconds);
            let start = (u64::from(current) + removed).saturating_sub(added);
            let v = u64::from(p.value);
            let limit = match p.kind {
                PolicyType::Pods => start + v,
                PolicyType::Percent => start.saturating_mul(100 + v).div_ceil(100),
            };
            (*p, clamp_u32(limit))
        });
        let chosen = match rules.select_policy {
            SelectPolicy::Min => limits.min_by_key(|l| l.1),
            _ => limits.max_by_key(|l| l.1),
        };
        chosen.map(|(p, allowed)| (p, allowed.max(current)))
    }

    /// The same for a scale-down.
    fn down_limit(&self, now: Duration, current: u32) -> Option<(ScalingPolicy, u32)> {
        let rules = &self.policy.behavior.scale_down;
        let limits = rules.policies.iter().map(|p| {
            let (added, removed) = self.changes_in(now, p.period_seconds);
            let start = (u64::from(current) + removed).saturating_sub(added);
            let v = u64::from(p.value.min(100));
            let limit = match p.kind {
                PolicyType::Pods => start.saturating_sub(v),
                PolicyType::Percent => start * (100 - v) / 100,
            };
            (*p, clamp_u32(limit))
        });
        let chosen = match rules.select_policy {
            SelectPolicy::Min => limits.max_by_key(|l| l.1),
            _ => limits.min_by_key(|l| l.1),
        };
        chosen.map(|(p, allowed)| (p, allowed.min(current)))
    }
}

/// Instances counted as starting: launched and not ready, or not launched
/// yet (the target is above what runs).
fn starting(obs: &Observation) -> u32 {
    let launched = obs.instances.ready.saturating_add(obs.instances.not_ready);
    obs.instances
        .not_ready
        .saturating_add(obs.current_target.saturating_sub(launched))
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

fn ceil_u32(x: f64) -> u32 {
    let c = (x - EPS).ceil();
    if c.is_nan() || c <= 0.0 {
        0
    } else if c >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        c as u32
    }
}

fn clamp_u32(x: u64) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
