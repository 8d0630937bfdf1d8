//! Deterministic simulation of the autoscaler: a scripted load feed, one
//! evaluation per simulated second, each decision applied to a simulated
//! app whose new instances become ready after a scripted delay.

use agora_core::autoscale::{
    Autoscaler, Behavior, Cause, DEFAULT_TOLERANCE, Decision, Instances, Limit, Metric, Metrics,
    Observation, Policy, PolicyType, Rules, Sample, ScalingPolicy, SelectPolicy, Target,
};
use proptest::prelude::*;
use std::time::Duration;

/// A 64-bit LCG (Knuth's MMIX constants): deterministic noise, no dependency.
struct Lcg(u64);

impl Lcg {
    /// Uniform in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-amp, amp).
    fn noise(&mut self, amp: f64) -> f64 {
        (self.next() * 2.0 - 1.0) * amp
    }
}

type Feed = Box<dyn FnMut(u64, &mut Lcg) -> f64>;

/// The simulated app and its environment.
struct Sim {
    autoscaler: Autoscaler,
    rng: Lcg,
    now: u64,
    /// When each instance becomes (or became) ready; its length is the
    /// app's instance count.
    ready_at: Vec<u64>,
    startup: u64,
    /// Total requests per second at time `t`.
    load: Feed,
    /// Whether the rps sample is missing at `t`.
    rps_missing: Box<dyn FnMut(u64) -> bool>,
    /// A router holds a request from this time on (while at zero).
    wake_from: Option<u64>,
    last_served: Option<u64>,
    /// (time, instance count after the decision at that time).
    counts: Vec<(u64, u32)>,
    decisions: Vec<(u64, Decision)>,
}

impl Sim {
    fn new(policy: Policy, instances: u32, startup: u64, load: Feed) -> Sim {
        assert_eq!(policy.validate(1000), Ok(()));
        Sim {
            autoscaler: Autoscaler::new(policy),
            rng: Lcg(0x5eed),
            now: 0,
            ready_at: vec![0; instances as usize],
            startup,
            load,
            rps_missing: Box::new(|_| false),
            wake_from: None,
            last_served: None,
            counts: Vec::new(),
            decisions: Vec::new(),
        }
    }

    fn count(&self) -> u32 {
        self.ready_at.len() as u32
    }

    /// One evaluation at `now`, applied; then one second passes.
    fn step(&mut self) -> Decision {
        let t = self.now;
        let ready = self.ready_at.iter().filter(|&&r| r <= t).count() as u32;
        let total = (self.load)(t, &mut self.rng);
        if total > 0.0 && ready > 0 {
            self.last_served = Some(t);
        }
        let present = ready > 0 && !(self.rps_missing)(t);
        let metrics = Metrics {
            rps: present.then(|| Sample {
                value: total / f64::from(ready),
                measured_at: Duration::from_secs(t),
            }),
            ..Metrics::default()
        };
        let obs = Observation {
            now: Duration::from_secs(t),
            instances: Instances {
                ready,
                not_ready: self.count() - ready,
            },
            current_target: self.count(),
            metrics,
            last_request_at: self.last_served.map(Duration::from_secs),
            wake: self.count() == 0 && self.wake_from.is_some_and(|w| t >= w),
        };
        let d = self.autoscaler.decide(&obs);
        assert_eq!(d.current, self.count());
        let desired = d.desired as usize;
        if desired > self.ready_at.len() {
            self.ready_at.resize(desired, t + self.startup);
        } else {
            // Starting instances go first, then the newest.
            self.ready_at.sort_unstable();
            self.ready_at.truncate(desired);
        }
        self.counts.push((t, d.desired));
        self.decisions.push((t, d.clone()));
        self.now += 1;
        d
    }

    fn run_until(&mut self, end: u64) {
        while self.now < end {
            self.step();
        }
    }

    /// (time, from, to) of every change.
    fn changes(&self) -> Vec<(u64, u32, u32)> {
        self.decisions
            .iter()
            .filter(|(_, d)| d.desired != d.current)
            .map(|(t, d)| (*t, d.current, d.desired))
            .collect()
    }
}

fn rps_policy(min: u32, max: u32) -> Policy {
    Policy {
        min,
        max,
        targets: vec![Target {
            metric: Metric::Rps,
            value: 100.0,
        }],
        behavior: Behavior::default(),
        idle_after_seconds: None,
        tolerance: DEFAULT_TOLERANCE,
    }
}

fn step_load(before: f64, at: u64, after: f64) -> Feed {
    Box::new(move |t, _| if t < at { before } else { after })
}

#[test]
fn a_load_step_up_is_acted_on_within_one_sync_period() {
    let mut sim = Sim::new(rps_policy(1, 50), 3, 10, step_load(300.0, 60, 600.0));
    sim.run_until(600);
    // Exactly one change, at the first evaluation after the step, to the
    // count the load needs; the starting instances are not counted twice.
    assert_eq!(sim.changes(), [(60, 3, 6)]);
    let d = &sim.decisions[60].1;
    assert_eq!(
        d.reason.cause,
        Cause::Metric {
            metric: Metric::Rps
        }
    );
    assert_eq!(d.reason.recommendation, 6);
}

#[test]
fn a_big_step_up_goes_as_fast_as_the_rate_limits_allow() {
    // 3 → 20 needed; default: +100 % or +4 per 15 s, the larger.
    let mut sim = Sim::new(rps_policy(1, 50), 3, 5, step_load(300.0, 60, 2000.0));
    sim.run_until(300);
    assert_eq!(sim.changes(), [(60, 3, 7), (75, 7, 14), (90, 14, 20)]);
    let d = &sim.decisions[60].1;
    assert_eq!(d.reason.recommendation, 20);
    assert!(
        d.to_string()
            .ends_with("limited by rate limit: Pods 4 per 15s → 7"),
        "{}",
        d
    );
}

#[test]
fn steady_load_with_ten_percent_noise_never_changes_the_count() {
    let load: Feed = Box::new(|_, rng| 500.0 * (1.0 + rng.noise(0.10)));
    let mut sim = Sim::new(rps_policy(1, 50), 5, 10, load);
    sim.run_until(30 * 60);
    assert_eq!(sim.changes(), []);
    // The noise did reach the edge of the tolerance.
    let extreme = sim
        .decisions
        .iter()
        .filter_map(|(_, d)| d.reason.metrics[0].value)
        .fold(0.0f64, |m, v| m.max((v / 100.0 - 1.0).abs()));
    assert!(extreme > 0.099, "{extreme}");
}

#[test]
fn a_load_drop_scales_down_only_after_the_window() {
    let mut sim = Sim::new(rps_policy(1, 50), 10, 10, step_load(1000.0, 100, 250.0));
    sim.run_until(1000);
    // Default scale-down: 300 s window, then up to 100 % per 15 s.
    assert_eq!(sim.changes(), [(400, 10, 3)]);
    let d = &sim.decisions[399].1;
    assert_eq!(d.desired, 10);
    assert!(
        matches!(
            d.reason.limits[..],
            [Limit::StabilizationWindow {
                value: 10,
                window_seconds: 300,
                ..
            }]
        ),
        "{d}"
    );
}

#[test]
fn a_load_drop_scales_down_by_the_allowed_steps() {
    let mut p = rps_policy(1, 50);
    p.behavior.scale_down.policies = vec![ScalingPolicy {
        kind: PolicyType::Pods,
        value: 2,
        period_seconds: 60,
    }];
    let mut sim = Sim::new(p, 10, 10, step_load(1000.0, 100, 250.0));
    sim.run_until(1000);
    assert_eq!(
        sim.changes(),
        [(400, 10, 8), (460, 8, 6), (520, 6, 4), (580, 4, 3)]
    );
}

#[test]
fn a_short_dip_inside_the_window_does_not_scale_down() {
    // 200 s of low load, then back: the window never sees 300 s of it.
    let load: Feed = Box::new(|t, _| {
        if (100..300).contains(&t) {
            200.0
        } else {
            1000.0
        }
    });
    let mut sim = Sim::new(rps_policy(1, 50), 10, 10, load);
    sim.run_until(1200);
    assert_eq!(sim.changes(), []);
}

#[test]
fn missing_metrics_never_scale_down() {
    // cpu is a target too, and never measured: the rps drop must not scale down.
    let mut p = rps_policy(1, 50);
    p.targets.push(Target {
        metric: Metric::Cpu,
        value: 60.0,
    });
    let load: Feed = Box::new(|t, _| match t {
        0..100 => 1000.0,
        100..1900 => 100.0,
        _ => 2000.0,
    });
    let mut sim = Sim::new(p, 10, 5, load);
    sim.run_until(2000);
    // Down never; up still works (+100 % per 15 s from 10).
    assert_eq!(sim.changes(), [(1900, 10, 20)]);
    let d = &sim.decisions[500].1;
    assert!(d.to_string().contains("missing metrics: cpu"), "{d}");

    // All missing: no change at all, whatever the load.
    let mut sim = Sim::new(rps_policy(1, 50), 4, 5, step_load(100.0, 10, 5000.0));
    sim.rps_missing = Box::new(|_| true);
    sim.run_until(600);
    assert_eq!(sim.changes(), []);
}

#[test]
fn starting_instances_prevent_overshoot() {
    // Noisy step to 600 rps (6 needed) with instances that take 30 s to be
    // ready: while they start, the 3 ready ones see 180..220 rps each,
    // which alone would ask for 7. One scale-up to 6, and nothing after.
    let load: Feed = Box::new(|t, rng| match t {
        0..60 => 300.0,
        60 => 600.0,
        _ => 600.0 * (1.0 + rng.noise(0.10)),
    });
    let mut sim = Sim::new(rps_policy(1, 50), 3, 30, load);
    sim.run_until(30 * 60);
    assert_eq!(sim.changes(), [(60, 3, 6)]);
    let held = sim.decisions[70..90]
        .iter()
        .filter(|(_, d)| {
            d.reason
                .limits
                .iter()
                .any(|l| matches!(l, Limit::Starting { instances: 3 }))
        })
        .count();
    assert!(held > 0, "the starting instances held back no decision");
}

#[test]
fn idle_goes_to_zero_and_a_request_wakes_one_instance_at_once() {
    let mut p = rps_policy(0, 10);
    p.idle_after_seconds = Some(120);
    assert_eq!(p.validate(1000), Ok(()));
    let load: Feed = Box::new(|t, _| if (100..500).contains(&t) { 0.0 } else { 150.0 });
    let mut sim = Sim::new(p, 2, 5, load);
    sim.wake_from = Some(500);
    sim.run_until(700);
    // Last request served at 99: zero at 219, skipping the 300 s window.
    // Woken at 500: one instance at once, kept while it starts (the held
    // request is served only when it is ready), then metrics as usual.
    assert_eq!(sim.changes(), [(219, 2, 0), (500, 0, 1), (505, 1, 2)]);
    let idle = &sim.decisions[219].1;
    assert_eq!(idle.reason.cause, Cause::Idle { seconds: 120 });
    assert!(
        idle.to_string().starts_with("scale 2 → 0: idle for 120s"),
        "{idle}"
    );
    let woke = &sim.decisions[500].1;
    assert_eq!(woke.reason.cause, Cause::Woken);
    assert_eq!(
        woke.to_string(),
        "scale 0 → 1: woken by a request; recommendation 1"
    );
    // At zero without a request: stays at zero.
    assert!(sim.counts[220..500].iter().all(|&(_, c)| c == 0));
}

#[test]
fn never_requested_app_goes_idle_after_idle_after_from_the_start() {
    let mut p = rps_policy(0, 10);
    p.idle_after_seconds = Some(60);
    // The autoscaler starts at 1000 s (the framework restarted, say): the
    // idle clock starts then, not at the clock's epoch.
    let mut sim = Sim::new(p, 1, 5, Box::new(|_, _| 0.0));
    sim.now = 1000;
    sim.run_until(1200);
    assert_eq!(sim.changes(), [(1060, 1, 0)]);
}

#[test]
fn history_stays_bounded_over_days() {
    // Changing load for two simulated days, plus bursts of evaluations
    // many times a second: the history never outgrows the longest window
    // (300 s) and the longest period (15 s).
    let load: Feed = Box::new(|t, rng| {
        let phase = (t / 450) % 4;
        (200.0 + 600.0 * phase as f64) * (1.0 + rng.noise(0.3))
    });
    let mut sim = Sim::new(rps_policy(1, 50), 2, 5, load);
    let mut most = (0, 0);
    for _ in 0..2 * 86_400 {
        sim.step();
        let (r, e) = sim.autoscaler.history_len();
        most = (most.0.max(r), most.1.max(e));
    }
    assert!(sim.changes().len() > 100, "the load should move the count");
    assert!(most.0 <= 302 && most.1 <= 17, "{most:?}");
    // Ten evaluations a second share their second's entries.
    let mut a = Autoscaler::new(rps_policy(1, 50));
    let mut current = 4;
    for i in 0..30_000u64 {
        let now = Duration::from_millis(i * 100);
        let metrics = Metrics {
            rps: Some(Sample {
                value: if (i / 3000) % 2 == 0 { 300.0 } else { 20.0 },
                measured_at: now,
            }),
            ..Metrics::default()
        };
        let d = a.decide(&Observation {
            now,
            instances: Instances {
                ready: current,
                not_ready: 0,
            },
            current_target: current,
            metrics,
            last_request_at: Some(now),
            wake: false,
        });
        current = d.desired;
        let (r, e) = a.history_len();
        assert!(r <= 302 && e <= 17, "({r}, {e}) at {i}");
    }
}

/// What the rate limits allow from `start` instances (the count one
/// period ago), per policy.
fn allowed(p: &ScalingPolicy, start: u32, up: bool) -> u32 {
    let (s, v) = (u64::from(start), u64::from(p.value));
    let n = match (p.kind, up) {
        (PolicyType::Pods, true) => s + v,
        (PolicyType::Percent, true) => (s * (100 + v)).div_ceil(100),
        (PolicyType::Pods, false) => s.saturating_sub(v),
        (PolicyType::Percent, false) => s * (100 - v.min(100)) / 100,
    };
    n as u32
}

fn arb_policy() -> impl Strategy<Value = ScalingPolicy> {
    (any::<bool>(), 1u32..=8, 1u32..=60).prop_map(|(pods, value, period_seconds)| ScalingPolicy {
        kind: if pods {
            PolicyType::Pods
        } else {
            PolicyType::Percent
        },
        value: if pods { value } else { value * 25 },
        period_seconds,
    })
}

fn arb_rules(down: bool) -> impl Strategy<Value = Rules> {
    (
        0u32..=120,
        prop::collection::vec(arb_policy(), 1..=3),
        any::<bool>(),
    )
        .prop_map(move |(window, mut policies, max)| {
            if down {
                for p in &mut policies {
                    if p.kind == PolicyType::Percent {
                        p.value = p.value.min(100);
                    }
                }
            }
            Rules {
                stabilization_window_seconds: window,
                policies,
                select_policy: if max {
                    SelectPolicy::Max
                } else {
                    SelectPolicy::Min
                },
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Over random policies and load feeds: the count stays within
    /// [min, max], no change exceeds what the rate limits allow over their
    /// periods, and a missing metric never lets the count go down.
    #[test]
    fn bounds_and_rate_limits_hold_over_random_feeds(
        min in 1u32..=4,
        span in 0u32..=30,
        start in 0u32..=40,
        up in arb_rules(false),
        down in arb_rules(true),
        segments in prop::collection::vec((0.0f64..4000.0, 10u64..200), 1..8),
        noise in 0.0f64..0.5,
        startup in 0u64..40,
        missing_every in 0u64..7,
        seed in any::<u64>(),
    ) {
        let max = min + span;
        let start = start.clamp(min, max);
        let mut p = rps_policy(min, max);
        p.behavior = Behavior { scale_up: up.clone(), scale_down: down.clone() };
        let total: u64 = segments.iter().map(|s| s.1).sum();
        let feed_segments = segments.clone();
        let load: Feed = Box::new(move |t, rng| {
            let mut t0 = 0;
            for &(rps, len) in &feed_segments {
                if t < t0 + len {
                    return rps * (1.0 + rng.noise(noise));
                }
                t0 += len;
            }
            0.0
        });
        let mut sim = Sim::new(p, start, startup, load);
        sim.rng = Lcg(seed);
        let is_missing = move |t: u64| missing_every > 0 && t.is_multiple_of(missing_every);
        sim.rps_missing = Box::new(is_missing);
        sim.run_until(total);

        let count_at = |t: i64| -> u32 {
            if t < 0 { start } else { sim.counts[t as usize].1 }
        };
        for (t, d) in &sim.decisions {
            let t = *t as i64;
            prop_assert!((min..=max).contains(&d.desired), "t={} {}", t, d);
            if is_missing(t as u64) {
                prop_assert!(d.desired >= d.current, "t={} missing metric, yet {}", t, d);
            }
            if d.desired == d.current {
                continue;
            }
            let (rules, growing) = if d.desired > d.current { (&up, true) } else { (&down, false) };
            let ok: Vec<bool> = rules.policies.iter().map(|p| {
                let before = count_at(t - i64::from(p.period_seconds));
                let limit = allowed(p, before, growing);
                if growing { d.desired <= limit } else { d.desired >= limit }
            }).collect();
            let holds = match rules.select_policy {
                SelectPolicy::Max => ok.iter().any(|&b| b),
                _ => ok.iter().all(|&b| b),
            };
            prop_assert!(holds, "t={} {} breaks {:?} (counts {:?})", t, d, rules,
                &sim.counts[(t as usize).saturating_sub(60)..=t as usize]);
        }
    }
}
