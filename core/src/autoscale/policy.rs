//! The autoscaling policy: the body of `PUT /v1/autoscalers/{app-id}`.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Default tolerance: no change while `|value / target - 1| <= 0.10`.
pub const DEFAULT_TOLERANCE: f64 = 0.10;
/// Longest rate-limit period, in seconds (30 minutes, as HPA).
pub const MAX_PERIOD_SECONDS: u32 = 1800;
/// Longest stabilisation window, in seconds (one hour, as HPA).
pub const MAX_WINDOW_SECONDS: u32 = 3600;
/// Longest `idleAfterSeconds` (30 days).
pub const MAX_IDLE_AFTER_SECONDS: u64 = 30 * 24 * 3600;
/// Longest metric name echoed back in an error.
const ECHO_LEN: usize = 64;

/// What a target measures.
///
/// | JSON         | value                                                   |
/// |--------------|---------------------------------------------------------|
/// | `cpu`        | CPU used as a percent of the requested cpus, per ready instance |
/// | `memory`     | working set as a percent of the requested mem, per ready instance |
/// | `rps`        | requests per second per ready instance                  |
/// | `inFlight`   | in-flight requests per ready instance                   |
/// | `latencyP95` | the app's 95th-percentile latency, in milliseconds      |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Metric {
    Cpu,
    Memory,
    Rps,
    InFlight,
    LatencyP95,
}

impl Metric {
    pub const ALL: [Metric; 5] = [
        Metric::Cpu,
        Metric::Memory,
        Metric::Rps,
        Metric::InFlight,
        Metric::LatencyP95,
    ];

    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
            Metric::Rps => "rps",
            Metric::InFlight => "inFlight",
            Metric::LatencyP95 => "latencyP95",
        }
    }

    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// How a value of this metric reads: `62.5%`, `180/s`, `3 in flight`, `150ms`.
    pub fn format_value(self, v: f64) -> String {
        let n = if (v - v.round()).abs() < 0.05 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        };
        match self {
            Metric::Cpu | Metric::Memory => format!("{n}%"),
            Metric::Rps => format!("{n}/s"),
            Metric::InFlight => format!("{n} in flight"),
            Metric::LatencyP95 => format!("{n}ms"),
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn unknown_metric(name: &str) -> String {
    let shown: String = name.chars().take(ECHO_LEN).collect();
    format!(
        "unknown metric {shown:?}: use one of {}",
        Metric::ALL.map(Metric::as_str).join(", ")
    )
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Metric;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a metric name (cpu, memory, rps, inFlight, latencyP95)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Metric, E> {
                Metric::parse(s).ok_or_else(|| E::custom(unknown_metric(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// One target: keep `metric` near `value`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    #[serde(deserialize_with = "metric_field")]
    pub metric: Metric,
    pub value: f64,
}

/// How a rate-limit policy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyType {
    /// At most `value` instances per period.
    Pods,
    /// At most `value` percent of the instances at the start of the period.
    Percent,
}

/// A rate limit: at most `value` (instances or percent) per `periodSeconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalingPolicy {
    #[serde(rename = "type")]
    pub kind: PolicyType,
    pub value: u32,
    pub period_seconds: u32,
}

impl fmt::Display for ScalingPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            PolicyType::Pods => "Pods",
            PolicyType::Percent => "Percent",
        };
        write!(f, "{kind} {} per {}s", self.value, self.period_seconds)
    }
}

/// Which of several policies applies: the one allowing the most change
/// (`Max`), the least (`Min`), or none: no scaling in this direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SelectPolicy {
    #[default]
    Max,
    Min,
    Disabled,
}

/// The rules for one direction (HPA's `HPAScalingRules`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rules {
    pub stabilization_window_seconds: u32,
    pub policies: Vec<ScalingPolicy>,
    pub select_policy: SelectPolicy,
}

impl Rules {
    /// Scale-up: immediate, at most +100 % or +4 instances per 15 s (the larger).
    pub fn default_up() -> Rules {
        Rules {
            stabilization_window_seconds: 0,
            policies: vec![
                ScalingPolicy {
                    kind: PolicyType::Percent,
                    value: 100,
                    period_seconds: 15,
                },
                ScalingPolicy {
                    kind: PolicyType::Pods,
                    value: 4,
                    period_seconds: 15,
                },
            ],
            select_policy: SelectPolicy::Max,
        }
    }

    /// Scale-down: stabilised over 300 s, then at most 100 % per 15 s.
    pub fn default_down() -> Rules {
        Rules {
            stabilization_window_seconds: 300,
            policies: vec![ScalingPolicy {
                kind: PolicyType::Percent,
                value: 100,
                period_seconds: 15,
            }],
            select_policy: SelectPolicy::Max,
        }
    }

    fn from_spec(spec: RulesSpec, default: Rules) -> Rules {
        Rules {
            stabilization_window_seconds: spec
                .stabilization_window_seconds
                .unwrap_or(default.stabilization_window_seconds),
            policies: spec.policies.unwrap_or(default.policies),
            select_policy: spec.select_policy.unwrap_or(default.select_policy),
        }
    }
}

/// Scale-up and scale-down rules. Omitted parts take their defaults
/// ([`Rules::default_up`], [`Rules::default_down`]), field by field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "BehaviorSpec")]
pub struct Behavior {
    pub scale_up: Rules,
    pub scale_down: Rules,
}

impl Default for Behavior {
    fn default() -> Behavior {
        Behavior {
            scale_up: Rules::default_up(),
            scale_down: Rules::default_down(),
        }
    }
}

/// `behavior` as written, every part optional.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BehaviorSpec {
    scale_up: Option<RulesSpec>,
    scale_down: Option<RulesSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RulesSpec {
    stabilization_window_seconds: Option<u32>,
    policies: Option<Vec<ScalingPolicy>>,
    select_policy: Option<SelectPolicy>,
}

impl From<BehaviorSpec> for Behavior {
    fn from(s: BehaviorSpec) -> Behavior {
        let none = || RulesSpec {
            stabilization_window_seconds: None,
            policies: None,
            select_policy: None,
        };
        Behavior {
            scale_up: Rules::from_spec(s.scale_up.unwrap_or_else(none), Rules::default_up()),
            scale_down: Rules::from_spec(s.scale_down.unwrap_or_else(none), Rules::default_down()),
        }
    }
}

fn default_tolerance() -> f64 {
    DEFAULT_TOLERANCE
}

/// An autoscaling policy: the body of `PUT /v1/autoscalers/{app-id}` on the
/// services framework (camelCase JSON; unknown fields are refused).
///
/// ```json
/// {
///   "min": 1,
///   "max": 20,
///   "targets": [
///     {"metric": "cpu", "value": 60},
///     {"metric": "rps", "value": 200},
///     {"metric": "latencyP95", "value": 150}
///   ],
///   "behavior": {
///     "scaleUp": {
///       "stabilizationWindowSeconds": 0,
///       "policies": [
///         {"type": "Percent", "value": 100, "periodSeconds": 15},
///         {"type": "Pods", "value": 4, "periodSeconds": 15}
///       ],
///       "selectPolicy": "Max"
///     },
///     "scaleDown": {
///       "stabilizationWindowSeconds": 300,
///       "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]
///     }
///   },
///   "tolerance": 0.1
/// }
/// ```
///
/// - `min`, `max`: bounds on the instance count; `max` at most the
///   cluster-wide limit. `min: 0` needs `idleAfterSeconds` and the other way
///   round: metrics never scale to zero, only idleness does.
/// - `targets`: one or more, each metric at most once (see [`Metric`]);
///   values positive (percent for `cpu`/`memory`, milliseconds for
///   `latencyP95`, per instance for `rps`/`inFlight`).
/// - `behavior` (optional, and each part of it): Kubernetes HPA v2's
///   `behavior`. `stabilizationWindowSeconds` 0..=3600; `policies` of `type`
///   `Pods` or `Percent`, `value` ≥ 1, `periodSeconds` 1..=1800;
///   `selectPolicy` `Max` (default), `Min` or `Disabled`.
/// - `idleAfterSeconds` (optional): go to zero instances after this long
///   without a request; a request held by a router wakes the app.
/// - `tolerance` (optional, default 0.1): no change while every metric is
///   within this fraction of its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    pub min: u32,
    pub max: u32,
    #[serde(deserialize_with = "targets_field")]
    pub targets: Vec<Target>,
    #[serde(default)]
    pub behavior: Behavior,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_after_seconds: Option<u64>,
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

/// A problem with a policy: the JSON path of the field and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// E.g. `targets[1].value`, `behavior.scaleDown.policies[0].periodSeconds`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl Policy {
    /// Every problem, each naming its field; `Ok` when the policy can run.
    pub fn validate(&self, cluster_max_instances: u32) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        let mut err = |field: String, message: String| errs.push(FieldError { field, message });

        if self.max == 0 {
            err(
                "max".into(),
                "must be at least 1 (to go to zero when idle, set min 0 and idleAfterSeconds)"
                    .into(),
            );
        } else if self.max > cluster_max_instances {
            err(
                "max".into(),
                format!(
                    "{} is above the cluster-wide limit of {cluster_max_instances} instances per app; lower it",
                    self.max
                ),
            );
        }
        if self.min > self.max {
            err(
                "min".into(),
                format!(
                    "{} is above max {}; min must be at most max",
                    self.min, self.max
                ),
            );
        }
        match (self.min, self.idle_after_seconds) {
            (0, None) => err(
                "min".into(),
                "min 0 needs idleAfterSeconds (metrics never scale to zero, only idleness does); set idleAfterSeconds or min 1"
                    .into(),
            ),
            (min, Some(_)) if min > 0 => err(
                "idleAfterSeconds".into(),
                format!("scaling to zero when idle needs min 0, not {min}; drop idleAfterSeconds or set min 0"),
            ),
            (_, Some(0)) => err(
                "idleAfterSeconds".into(),
                "must be at least 1 second".into(),
            ),
            (_, Some(s)) if s > MAX_IDLE_AFTER_SECONDS => err(
                "idleAfterSeconds".into(),
                format!("{s} is longer than {MAX_IDLE_AFTER_SECONDS} (30 days)"),
            ),
            _ => {}
        }
        if self.targets.is_empty() {
            err(
                "targets".into(),
                "give at least one target, e.g. {\"metric\": \"cpu\", \"value\": 60}".into(),
            );
        }
        for (i, t) in self.targets.iter().enumerate() {
            if !t.value.is_finite() || t.value <= 0.0 {
                err(
                    format!("targets[{i}].value"),
                    format!("must be a positive number, not {}", t.value),
                );
            }
            if let Some(j) = self.targets[..i].iter().position(|o| o.metric == t.metric) {
                err(
                    format!("targets[{i}].metric"),
                    format!(
                        "{} is already the metric of targets[{j}]; give each metric once",
                        t.metric
                    ),
                );
            }
        }
        if !self.tolerance.is_finite() || !(0.0..1.0).contains(&self.tolerance) {
            err(
                "tolerance".into(),
                format!(
                    "must be at least 0 and below 1 (0.1 is 10 %), not {}",
                    self.tolerance
                ),
            );
        }
        for (name, rules, down) in [
            ("scaleUp", &self.behavior.scale_up, false),
            ("scaleDown", &self.behavior.scale_down, true),
        ] {
            let at = |f: &str| format!("behavior.{name}.{f}");
            if rules.stabilization_window_seconds > MAX_WINDOW_SECONDS {
                err(
                    at("stabilizationWindowSeconds"),
                    format!(
                        "{} is longer than {MAX_WINDOW_SECONDS} (one hour)",
                        rules.stabilization_window_seconds
                    ),
                );
            }
            if rules.policies.is_empty() && rules.select_policy != SelectPolicy::Disabled {
                err(
                    at("policies"),
                    "give at least one policy, or selectPolicy \"Disabled\" to never scale this way"
                        .into(),
                );
            }
            for (i, p) in rules.policies.iter().enumerate() {
                if p.value == 0 {
                    err(
                        at(&format!("policies[{i}].value")),
                        "must be at least 1 (to forbid this direction, use selectPolicy \"Disabled\")"
                            .into(),
                    );
                }
                if down && p.kind == PolicyType::Percent && p.value > 100 {
                    err(
                        at(&format!("policies[{i}].value")),
                        format!("a scale-down removes at most 100 percent, not {}", p.value),
                    );
                }
                if p.period_seconds == 0 || p.period_seconds > MAX_PERIOD_SECONDS {
                    err(
                        at(&format!("policies[{i}].periodSeconds")),
                        format!(
                            "must be 1 to {MAX_PERIOD_SECONDS} seconds, not {}",
                            p.period_seconds
                        ),
                    );
                }
            }
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

/// `"<path>: <message>"`, joining nested paths with `.` and dropping the
/// position serde_json appends (it appends the outer one again).
fn at_path<E: de::Error>(path: &str, inner: impl fmt::Display) -> E {
    let msg = inner.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i)
            if msg[i + 9..]
                .split(" column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            &msg[..i]
        }
        _ => msg.as_str(),
    };
    let nested = msg.split_once(": ").filter(|(p, _)| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'[' | b']' | b'.' | b'_'))
    });
    match nested {
        Some((p, rest)) => E::custom(format!("{path}.{p}: {rest}")),
        None => E::custom(format!("{path}: {msg}")),
    }
}

fn metric_field<'de, D: Deserializer<'de>>(d: D) -> Result<Metric, D::Error> {
    Metric::deserialize(d).map_err(|e| at_path("metric", e))
}

/// `targets`, with the index of a bad element in the error.
fn targets_field<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Target>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<Target>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of targets")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Target>, A::Error> {
            let mut out = Vec::new();
            loop {
                let i = out.len();
                match seq.next_element::<Target>() {
                    Ok(Some(t)) => out.push(t),
                    Ok(None) => return Ok(out),
                    Err(e) => return Err(at_path(&format!("targets[{i}]"), e)),
                }
                if out.len() > Metric::ALL.len() * 4 {
                    return Err(de::Error::custom(format!(
                        "targets: more than {} targets; give each metric once",
                        Metric::ALL.len() * 4
                    )));
                }
            }
        }
    }
    d.deserialize_seq(V)
}
