use super::*;

fn parse(json: &str) -> Result<Policy, String> {
    serde_json::from_str(json).map_err(|e| e.to_string())
}

fn fields(p: &Policy, cluster_max: u32) -> Vec<String> {
    p.validate(cluster_max)
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.field)
        .collect()
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

fn obs(now: u64, ready: u32, current: u32, rps: Option<f64>) -> Observation {
    let metrics = Metrics {
        rps: rps.map(|value| Sample {
            value,
            measured_at: Duration::from_secs(now),
        }),
        ..Metrics::default()
    };
    Observation {
        now: Duration::from_secs(now),
        instances: Instances {
            ready,
            not_ready: current.saturating_sub(ready),
        },
        current_target: current,
        metrics,
        last_request_at: Some(Duration::from_secs(now)),
        wake: false,
    }
}

#[test]
fn minimal_policy_takes_the_hpa_defaults() {
    let p = parse(r#"{"min": 1, "max": 10, "targets": [{"metric": "cpu", "value": 60}]}"#).unwrap();
    assert_eq!(p.behavior.scale_up, Rules::default_up());
    assert_eq!(p.behavior.scale_down, Rules::default_down());
    assert_eq!(p.behavior.scale_up.stabilization_window_seconds, 0);
    assert_eq!(p.behavior.scale_down.stabilization_window_seconds, 300);
    assert_eq!(p.tolerance, 0.10);
    assert_eq!(p.validate(100), Ok(()));
}

#[test]
fn partial_behavior_defaults_field_by_field_per_direction() {
    let p = parse(
        r#"{"min": 1, "max": 10, "targets": [{"metric": "rps", "value": 50}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60},
                         "scaleUp": {"selectPolicy": "Min"}}}"#,
    )
    .unwrap();
    assert_eq!(p.behavior.scale_down.stabilization_window_seconds, 60);
    assert_eq!(
        p.behavior.scale_down.policies,
        Rules::default_down().policies
    );
    assert_eq!(p.behavior.scale_up.select_policy, SelectPolicy::Min);
    assert_eq!(p.behavior.scale_up.policies, Rules::default_up().policies);
    assert_eq!(p.behavior.scale_up.stabilization_window_seconds, 0);
}

#[test]
fn the_documented_example_parses_and_round_trips() {
    let doc = include_str!("policy.rs");
    let start = doc.find("/// ```json\n").unwrap() + "/// ```json\n".len();
    let end = start + doc[start..].find("/// ```\n").unwrap();
    let json: String = doc[start..end]
        .lines()
        .map(|l| l.trim_start().trim_start_matches("///"))
        .collect::<Vec<_>>()
        .join("\n");
    let p = parse(&json).unwrap();
    assert_eq!(p.validate(100), Ok(()));
    assert_eq!(p.targets.len(), 3);
    assert_eq!(p.targets[2].metric, Metric::LatencyP95);
    let back = serde_json::to_value(&p).unwrap();
    assert_eq!(back["behavior"]["scaleUp"]["policies"][1]["type"], "Pods");
    assert_eq!(back["targets"][1]["metric"], "rps");
    let again: Policy = serde_json::from_value(back).unwrap();
    assert_eq!(again, p);
}

#[test]
fn unknown_metric_names_the_field_and_the_choices() {
    let e = parse(
        r#"{"min": 1, "max": 3, "targets": [{"metric": "cpu", "value": 60}, {"metric": "gpu", "value": 1}]}"#,
    )
    .unwrap_err();
    assert!(
        e.starts_with("targets[1].metric: unknown metric \"gpu\""),
        "{e}"
    );
    assert!(e.contains("inFlight, latencyP95"), "{e}");
    // One position, not two.
    assert_eq!(e.matches(" at line ").count(), 1, "{e}");
}

#[test]
fn unknown_fields_are_refused_by_name() {
    let e = parse(r#"{"min": 1, "max": 3, "targets": [], "minReplicas": 2}"#).unwrap_err();
    assert!(e.contains("unknown field `minReplicas`"), "{e}");
    let e =
        parse(r#"{"min": 1, "max": 3, "targets": [{"metric": "cpu", "value": 1, "unit": "%"}]}"#)
            .unwrap_err();
    assert!(e.starts_with("targets[0]: unknown field `unit`"), "{e}");
    let e = parse(r#"{"min": 1, "max": 3, "targets": [], "behavior": {"scaleUp": {"window": 3}}}"#)
        .unwrap_err();
    assert!(e.contains("unknown field `window`"), "{e}");
    let e = parse(
        r#"{"min": 1, "max": 3, "targets": [], "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 1, "x": 1}]}}}"#,
    )
    .unwrap_err();
    assert!(e.contains("unknown field `x`"), "{e}");
}

#[test]
fn validation_names_each_field() {
    let p = parse(
        r#"{"min": 5, "max": 3, "targets": [
              {"metric": "cpu", "value": 0},
              {"metric": "rps", "value": -1},
              {"metric": "cpu", "value": 50}],
            "tolerance": 1.5,
            "idleAfterSeconds": 60,
            "behavior": {
              "scaleUp": {"stabilizationWindowSeconds": 3601,
                          "policies": [{"type": "Pods", "value": 0, "periodSeconds": 0}]},
              "scaleDown": {"policies": [{"type": "Percent", "value": 150, "periodSeconds": 1801}]}}}"#,
    )
    .unwrap();
    let got = fields(&p, 100);
    for want in [
        "min",
        "idleAfterSeconds",
        "targets[0].value",
        "targets[1].value",
        "targets[2].metric",
        "tolerance",
        "behavior.scaleUp.stabilizationWindowSeconds",
        "behavior.scaleUp.policies[0].value",
        "behavior.scaleUp.policies[0].periodSeconds",
        "behavior.scaleDown.policies[0].value",
        "behavior.scaleDown.policies[0].periodSeconds",
    ] {
        assert!(got.iter().any(|f| f == want), "{want} missing from {got:?}");
    }
    let errs = p.validate(100).unwrap_err();
    let dup = errs
        .iter()
        .find(|e| e.field == "targets[2].metric")
        .unwrap();
    assert!(dup.message.contains("targets[0]"), "{dup}");
}

#[test]
fn validation_of_bounds_targets_and_idleness() {
    let mut p = rps_policy(1, 0);
    assert_eq!(fields(&p, 100), ["max", "min"]);
    p = rps_policy(1, 101);
    assert_eq!(fields(&p, 100), ["max"]);
    assert!(
        p.validate(100).unwrap_err()[0]
            .message
            .contains("cluster-wide limit of 100")
    );
    p = rps_policy(1, 5);
    p.targets.clear();
    assert_eq!(fields(&p, 100), ["targets"]);
    p = rps_policy(1, 5);
    p.targets[0].value = f64::NAN;
    assert_eq!(fields(&p, 100), ["targets[0].value"]);
    p.targets[0].value = f64::INFINITY;
    assert_eq!(fields(&p, 100), ["targets[0].value"]);
    // min 0 needs idleAfterSeconds, idleAfterSeconds needs min 0.
    p = rps_policy(0, 5);
    assert_eq!(fields(&p, 100), ["min"]);
    p.idle_after_seconds = Some(300);
    assert_eq!(p.validate(100), Ok(()));
    p.idle_after_seconds = Some(0);
    assert_eq!(fields(&p, 100), ["idleAfterSeconds"]);
    p = rps_policy(2, 5);
    p.idle_after_seconds = Some(300);
    assert_eq!(fields(&p, 100), ["idleAfterSeconds"]);
    // No policies: only when the direction is disabled.
    p = rps_policy(1, 5);
    p.behavior.scale_down.policies.clear();
    assert_eq!(fields(&p, 100), ["behavior.scaleDown.policies"]);
    p.behavior.scale_down.select_policy = SelectPolicy::Disabled;
    assert_eq!(p.validate(100), Ok(()));
}

#[test]
fn a_stale_sample_counts_as_missing() {
    let mut a = Autoscaler::new(rps_policy(1, 10));
    let mut o = obs(100, 2, 2, Some(300.0));
    o.metrics.rps.as_mut().unwrap().measured_at = Duration::from_secs(98);
    assert_eq!(a.decide(&o).desired, 6, "2 s old is fresh");
    let mut a = Autoscaler::new(rps_policy(1, 10));
    o.metrics.rps.as_mut().unwrap().measured_at = Duration::from_millis(97_999);
    let d = a.decide(&o);
    assert_eq!(d.desired, 2, "{d}");
    assert_eq!(
        d.reason.limits,
        [Limit::MissingMetrics {
            metrics: vec![Metric::Rps]
        }]
    );
}

#[test]
fn rate_limit_pods_and_percent_with_select_policy() {
    // Default scale-up: +100 % or +4 per 15 s, the larger.
    let mut a = Autoscaler::new(rps_policy(1, 100));
    let d = a.decide(&obs(0, 2, 2, Some(1000.0)));
    assert_eq!(d.desired, 6, "{d}"); // max(2 + 4, 2 × 2)
    assert_eq!(
        d.reason.limits,
        [Limit::RateLimit {
            direction: Direction::Up,
            policy: Rules::default_up().policies[1],
            allowed: 6
        }]
    );
    assert_eq!(
        d.to_string(),
        "scale 2 → 6: decided by rps; rps 1000/s (target 100/s) → 20; recommendation 20; limited by rate limit: Pods 4 per 15s → 6"
    );
    // The period counts from the start: nothing more for 15 s.
    for t in 1..15 {
        let d = a.decide(&obs(t, 6, 6, Some(1000.0 * 2.0 / 6.0)));
        assert_eq!(d.desired, 6, "t={t}: {d}");
    }
    let d = a.decide(&obs(15, 6, 6, Some(1000.0 * 2.0 / 6.0)));
    assert_eq!(d.desired, 12, "{d}"); // max(6 + 4, 6 × 2)

    // Min: the smaller of the two.
    let mut p = rps_policy(1, 100);
    p.behavior.scale_up.select_policy = SelectPolicy::Min;
    let mut a = Autoscaler::new(p);
    assert_eq!(a.decide(&obs(0, 10, 10, Some(1000.0))).desired, 14);

    // Disabled: never up.
    let mut p = rps_policy(1, 100);
    p.behavior.scale_up.select_policy = SelectPolicy::Disabled;
    let mut a = Autoscaler::new(p);
    let d = a.decide(&obs(0, 10, 10, Some(1000.0)));
    assert_eq!(d.desired, 10);
    assert_eq!(
        d.reason.limits,
        [Limit::ScalingDisabled {
            direction: Direction::Up
        }]
    );
}

#[test]
fn bounds_apply_last_and_out_of_bounds_is_corrected_at_once() {
    let mut a = Autoscaler::new(rps_policy(2, 5));
    let d = a.decide(&obs(0, 4, 4, Some(1000.0)));
    assert_eq!(d.desired, 5);
    assert_eq!(d.reason.limits.last(), Some(&Limit::Max { max: 5 }));
    let d = a.decide(&obs(1, 9, 9, Some(100.0)));
    assert_eq!((d.desired, &d.reason.cause), (5, &Cause::OutOfBounds));
    let d = a.decide(&obs(2, 1, 1, Some(100.0)));
    assert_eq!((d.desired, &d.reason.cause), (2, &Cause::OutOfBounds));
}

#[test]
fn reasons_serialise_for_events() {
    let mut a = Autoscaler::new(rps_policy(1, 10));
    let d = a.decide(&obs(0, 2, 2, Some(300.0)));
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["desired"], 6);
    assert_eq!(v["reason"]["cause"]["kind"], "metric");
    assert_eq!(v["reason"]["cause"]["metric"], "rps");
    assert_eq!(v["reason"]["metrics"][0]["status"], "up");
    let back: Decision = serde_json::from_value(v).unwrap();
    assert_eq!(back, d);
}

#[test]
fn a_seeded_autoscaler_waits_for_its_window_before_scaling_down() {
    // Scale-down window 300 s by default; load at a quarter of the target.
    let low = |now| obs(now, 8, 8, Some(25.0));
    // Unseeded, the first evaluation has no history and scales down at once.
    let mut a = Autoscaler::new(rps_policy(1, 10));
    assert!(a.decide(&low(1000)).desired < 8);
    // Seeded with the running count (a policy put on a running app, or
    // restored after a restart), it waits the whole window.
    let mut a = Autoscaler::new(rps_policy(1, 10));
    a.seed(Duration::from_secs(1000), 8);
    for t in 1000..=1300 {
        assert_eq!(a.decide(&low(t)).desired, 8, "at {t}");
    }
    assert!(a.decide(&low(1301)).desired < 8);
}
