//! Decisions and why: what events, `agora app show` and `/metrics` print.

use super::policy::{Metric, ScalingPolicy};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One evaluation: scale from `current` to `desired` (equal: stay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub desired: u32,
    pub current: u32,
    pub reason: Reason,
}

impl Decision {
    pub fn changes(&self) -> bool {
        self.desired != self.current
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes() {
            write!(
                f,
                "scale {} → {}: {}",
                self.current, self.desired, self.reason
            )
        } else {
            write!(f, "stay at {}: {}", self.current, self.reason)
        }
    }
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reason {
    /// What drove it.
    pub cause: Cause,
    /// Every target as measured this time (empty when metrics played no part).
    pub metrics: Vec<Reading>,
    /// The raw recommendation from the metrics, before windows, rate
    /// limits and bounds (for the other causes: what they asked for).
    pub recommendation: u32,
    /// What moved the result away from `recommendation`, in order.
    pub limits: Vec<Limit>,
}

/// What drove a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Cause {
    /// This metric's recommendation was the largest and differs from now.
    Metric { metric: Metric },
    /// The metrics ask for no change (within tolerance, held, or missing).
    Steady,
    /// No request for `seconds` ≥ `idleAfterSeconds`: scale to zero (a
    /// scale-down that skips the window and the rate limits).
    Idle { seconds: u64 },
    /// At zero instances, a router holds a request: up at once.
    Woken,
    /// At zero instances and no request waiting.
    AtZero,
    /// No ready instance to measure: nothing is decided from metrics.
    NoReadyInstances,
    /// The instance count is outside `[min, max]` (the policy changed):
    /// brought back at once.
    OutOfBounds,
}

/// One target's reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reading {
    pub metric: Metric,
    pub target: f64,
    /// `None`: missing or older than [`super::FRESH_FOR`].
    pub value: Option<f64>,
    /// What this metric alone asks for (`None` when missing).
    pub desired: Option<u32>,
    pub status: ReadingStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReadingStatus {
    Missing,
    /// `|value / target - 1| <= tolerance`.
    WithinTolerance,
    /// Over target, but with the starting instances counted at no load it
    /// is not: a scale-up is already under way.
    HeldByStarting,
    /// Under target, but with the starting instances counted at target
    /// load it is not.
    HeldForStarting,
    Up,
    Down,
}

/// What limited a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Limit {
    /// Every present metric is within tolerance.
    WithinTolerance,
    /// These metrics are missing or stale, and the others asked for a
    /// scale-down: none (all missing: no change at all).
    MissingMetrics {
        metrics: Vec<Metric>,
    },
    /// Starting (launched, not yet ready) instances hold a metric back.
    Starting {
        instances: u32,
    },
    /// The stabilisation window kept the recommendation at `value`.
    StabilizationWindow {
        direction: Direction,
        window_seconds: u32,
        value: u32,
    },
    /// The rate limit `policy` allowed only `allowed`.
    RateLimit {
        direction: Direction,
        policy: ScalingPolicy,
        allowed: u32,
    },
    /// `selectPolicy: Disabled` for this direction.
    ScalingDisabled {
        direction: Direction,
    },
    Max {
        max: u32,
    },
    Min {
        min: u32,
    },
    /// Metrics never take an app below one instance (only idleness does).
    AtLeastOne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    Up,
    Down,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "scale-up",
            Direction::Down => "scale-down",
        })
    }
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.metric;
        let target = m.format_value(self.target);
        match (self.value, self.desired) {
            (Some(v), Some(d)) => {
                write!(f, "{m} {} (target {target}) → {d}", m.format_value(v))?;
                match self.status {
                    ReadingStatus::WithinTolerance => f.write_str(" (within tolerance)"),
                    ReadingStatus::HeldByStarting | ReadingStatus::HeldForStarting => {
                        f.write_str(" (held: instances starting)")
                    }
                    _ => Ok(()),
                }
            }
            _ => write!(f, "{m} missing (target {target})"),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::WithinTolerance => f.write_str("within tolerance"),
            Limit::MissingMetrics { metrics } => {
                let names: Vec<_> = metrics.iter().map(|m| m.as_str()).collect();
                write!(f, "missing metrics: {} (no scale-down)", names.join(", "))
            }
            Limit::Starting { instances } => {
                write!(
                    f,
                    "{instances} instance(s) starting (counted conservatively)"
                )
            }
            Limit::StabilizationWindow {
                direction,
                window_seconds,
                value,
            } => write!(
                f,
                "stabilization window ({direction}, {window_seconds}s) → {value}"
            ),
            Limit::RateLimit {
                policy, allowed, ..
            } => write!(f, "rate limit: {policy} → {allowed}"),
            Limit::ScalingDisabled { direction } => write!(f, "{direction} disabled"),
            Limit::Max { max } => write!(f, "max {max}"),
            Limit::Min { min } => write!(f, "min {min}"),
            Limit::AtLeastOne => f.write_str("at least 1 (only idleness scales to zero)"),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Metric { metric } => write!(f, "decided by {metric}")?,
            Cause::Steady => f.write_str("steady")?,
            Cause::Idle { seconds } => write!(f, "idle for {seconds}s (no request)")?,
            Cause::Woken => f.write_str("woken by a request")?,
            Cause::AtZero => f.write_str("at zero, no request waiting")?,
            Cause::NoReadyInstances => f.write_str("no ready instance to measure")?,
            Cause::OutOfBounds => f.write_str("outside min/max")?,
        }
        if !self.metrics.is_empty() {
            let readings: Vec<_> = self.metrics.iter().map(|r| r.to_string()).collect();
            write!(f, "; {}", readings.join(", "))?;
        }
        write!(f, "; recommendation {}", self.recommendation)?;
        if !self.limits.is_empty() {
            let limits: Vec<_> = self.limits.iter().map(|l| l.to_string()).collect();
            write!(f, "; limited by {}", limits.join(", "))?;
        }
        Ok(())
    }
}
