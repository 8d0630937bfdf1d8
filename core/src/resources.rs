//! Resources: exact fixed-point scalars plus port ranges.
//!
//! CPUs are kept in thousandths (`cpus_milli`), memory and disk in MiB, so
//! arithmetic is exact and `a + b - b == a` always holds (Mesos uses the same
//! three-decimal fixed point for scalars).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A set of `u32` values stored as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ranges(Vec<(u32, u32)>);

impl Ranges {
    pub fn new() -> Self {
        Ranges(Vec::new())
    }

    /// Builds a normalised set from arbitrary (possibly overlapping) ranges.
    /// Ranges with `begin > end` are rejected.
    pub fn from_ranges(
        ranges: impl IntoIterator<Item = (u32, u32)>,
    ) -> Result<Self, ResourceError> {
        let mut v: Vec<(u32, u32)> = Vec::new();
        for (b, e) in ranges {
            if b > e {
                return Err(ResourceError::InvalidRange { begin: b, end: e });
            }
            v.push((b, e));
        }
        Ok(Self::normalise(v))
    }

    /// One range `[begin, end]`.
    pub fn range(begin: u32, end: u32) -> Result<Self, ResourceError> {
        Self::from_ranges([(begin, end)])
    }

    fn normalise(mut v: Vec<(u32, u32)>) -> Self {
        v.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
        for (b, e) in v {
            match out.last_mut() {
                Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => out.push((b, e)),
            }
        }
        Ranges(out)
    }

    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of values in the set.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(b, e)| (*e - *b) as u64 + 1).sum()
    }

    pub fn contains_value(&self, p: u32) -> bool {
        // binary search on begin
        let idx = self.0.partition_point(|(b, _)| *b <= p);
        idx > 0 && self.0[idx - 1].1 >= p
    }

    /// Whether every value of `other` is in `self`.
    pub fn contains(&self, other: &Ranges) -> bool {
        other.0.iter().all(|(b, e)| {
            let idx = self.0.partition_point(|(sb, _)| *sb <= *b);
            idx > 0 && self.0[idx - 1].1 >= *e
        })
    }

    pub fn union(&self, other: &Ranges) -> Ranges {
        if other.is_empty() {
            return self.clone();
        }
        if self.is_empty() {
            return other.clone();
        }
        let mut v = self.0.clone();
        v.extend_from_slice(&other.0);
        Self::normalise(v)
    }

    /// `self - other` (values of other not in self are ignored).
    pub fn difference(&self, other: &Ranges) -> Ranges {
        if other.is_empty() {
            return self.clone();
        }
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(b, e) in &self.0 {
            let mut cur = b as u64;
            let end = e as u64;
            for &(ob, oe) in &other.0 {
                let (ob, oe) = (ob as u64, oe as u64);
                if oe < cur || ob > end {
                    continue;
                }
                if ob > cur {
                    out.push((cur as u32, (ob - 1) as u32));
                }
                cur = oe + 1;
                if cur > end {
                    break;
                }
            }
            if cur <= end {
                out.push((cur as u32, end as u32));
            }
        }
        Ranges(out)
    }

    pub fn intersects(&self, other: &Ranges) -> bool {
        let (mut i, mut j) = (0, 0);
        while i < self.0.len() && j < other.0.len() {
            let (a, b) = (self.0[i], other.0[j]);
            if a.1 < b.0 {
                i += 1;
            } else if b.1 < a.0 {
                j += 1;
            } else {
                return true;
            }
        }
        false
    }

    /// The first `n` values of the set (fewer if it has fewer).
    pub fn take(&self, n: u64) -> Ranges {
        let mut left = n;
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            if left == 0 {
                break;
            }
            let len = (e - b) as u64 + 1;
            if len <= left {
                out.push((b, e));
                left -= len;
            } else {
                out.push((b, b + (left as u32) - 1));
                left = 0;
            }
        }
        Ranges(out)
    }
}

impl fmt::Debug for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, (b, e)) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            if b == e {
                write!(f, "{b}")?;
            } else {
                write!(f, "{b}-{e}")?;
            }
        }
        write!(f, "]")
    }
}

/// Errors building or combining resources.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    #[error("invalid range {begin}-{end}: begin must not exceed end")]
    InvalidRange { begin: u32, end: u32 },
    #[error("invalid cpus {0}: must be a finite number >= 0")]
    InvalidCpus(f64),
    #[error("cannot parse resources {input:?}: {reason}")]
    Parse { input: String, reason: String },
}

/// A bundle of resources on one agent.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub cpus_milli: u64,
    pub mem_mib: u64,
    pub disk_mib: u64,
    pub ports: Ranges,
}

impl Resources {
    pub fn new(cpus: f64, mem_mib: u64, disk_mib: u64) -> Result<Self, ResourceError> {
        Ok(Resources {
            cpus_milli: cpus_to_milli(cpus)?,
            mem_mib,
            disk_mib,
            ports: Ranges::new(),
        })
    }

    pub fn with_ports(mut self, ports: Ranges) -> Self {
        self.ports = ports;
        self
    }

    pub fn cpus(&self) -> f64 {
        self.cpus_milli as f64 / 1000.0
    }

    pub fn is_empty(&self) -> bool {
        self.cpus_milli == 0 && self.mem_mib == 0 && self.disk_mib == 0 && self.ports.is_empty()
    }

    /// Whether `other` fits entirely inside `self`.
    pub fn contains(&self, other: &Resources) -> bool {
        self.cpus_milli >= other.cpus_milli
            && self.mem_mib >= other.mem_mib
            && self.disk_mib >= other.disk_mib
            && self.ports.contains(&other.ports)
    }

    pub fn add(&self, other: &Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli.saturating_add(other.cpus_milli),
            mem_mib: self.mem_mib.saturating_add(other.mem_mib),
            disk_mib: self.disk_mib.saturating_add(other.disk_mib),
            ports: self.ports.union(&other.ports),
        }
    }

    pub fn add_assign(&mut self, other: &Resources) {
        *self = self.add(other);
    }

    /// `self - other`, or `None` if `other` does not fit in `self`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        Some(Resources {
            cpus_milli: self.cpus_milli - other.cpus_milli,
            mem_mib: self.mem_mib - other.mem_mib,
            disk_mib: self.disk_mib - other.disk_mib,
            ports: self.ports.difference(&other.ports),
        })
    }

    /// `self - other`, flooring each scalar at zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli.saturating_sub(other.cpus_milli),
            mem_mib: self.mem_mib.saturating_sub(other.mem_mib),
            disk_mib: self.disk_mib.saturating_sub(other.disk_mib),
            ports: self.ports.difference(&other.ports),
        }
    }

    /// Scalars only (ports dropped): what DRF shares are computed from.
    pub fn scalars(&self) -> Scalars {
        Scalars {
            cpus_milli: self.cpus_milli,
            mem_mib: self.mem_mib,
            disk_mib: self.disk_mib,
        }
    }

    /// Parses `cpus:4;mem:8192;disk:10000;ports:[31000-32000]` (Mesos flag syntax).
    pub fn parse(input: &str) -> Result<Resources, ResourceError> {
        let err = |reason: &str| ResourceError::Parse {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let mut r = Resources::default();
        for part in input.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| err("each entry must be name:value"))?;
            let value = value.trim();
            match name.trim() {
                "cpus" => {
                    let v: f64 = value.parse().map_err(|_| err("cpus must be a number"))?;
                    r.cpus_milli = cpus_to_milli(v)?;
                }
                "mem" => r.mem_mib = value.parse().map_err(|_| err("mem must be MiB"))?,
                "disk" => r.disk_mib = value.parse().map_err(|_| err("disk must be MiB"))?,
                "ports" => {
                    let inner = value
                        .strip_prefix('[')
                        .and_then(|v| v.strip_suffix(']'))
                        .ok_or_else(|| err("ports must look like [31000-32000]"))?;
                    let mut ranges = Vec::new();
                    for piece in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let (b, e) = piece.split_once('-').unwrap_or((piece, piece));
                        let b = b.trim().parse().map_err(|_| err("bad port number"))?;
                        let e = e.trim().parse().map_err(|_| err("bad port number"))?;
                        ranges.push((b, e));
                    }
                    r.ports = Ranges::from_ranges(ranges)?;
                }
                other => {
                    return Err(err(&format!(
                        "unknown resource {other:?} (known: cpus, mem, disk, ports)"
                    )));
                }
            }
        }
        Ok(r)
    }
}

/// Converts a user-facing CPU count to thousandths, rounding to nearest.
pub fn cpus_to_milli(cpus: f64) -> Result<u64, ResourceError> {
    if !cpus.is_finite() || !(0.0..=1e12).contains(&cpus) {
        return Err(ResourceError::InvalidCpus(cpus));
    }
    Ok((cpus * 1000.0).round() as u64)
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpus:{};mem:{};disk:{}",
            self.cpus(),
            self.mem_mib,
            self.disk_mib
        )?;
        if !self.ports.is_empty() {
            write!(f, ";ports:{}", self.ports)?;
        }
        Ok(())
    }
}

/// The scalar part of [`Resources`], cheap to copy: what the allocator sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scalars {
    pub cpus_milli: u64,
    pub mem_mib: u64,
    pub disk_mib: u64,
}

impl Scalars {
    pub fn plus(self, o: Scalars) -> Scalars {
        Scalars {
            cpus_milli: self.cpus_milli.saturating_add(o.cpus_milli),
            mem_mib: self.mem_mib.saturating_add(o.mem_mib),
            disk_mib: self.disk_mib.saturating_add(o.disk_mib),
        }
    }

    pub fn minus(self, o: Scalars) -> Scalars {
        Scalars {
            cpus_milli: self.cpus_milli.saturating_sub(o.cpus_milli),
            mem_mib: self.mem_mib.saturating_sub(o.mem_mib),
            disk_mib: self.disk_mib.saturating_sub(o.disk_mib),
        }
    }

    /// Dominant share of `self` against `total`: the largest fraction over
    /// the resource kinds the cluster has.
    pub fn dominant_share(self, total: Scalars) -> f64 {
        let frac = |a: u64, t: u64| if t == 0 { 0.0 } else { a as f64 / t as f64 };
        frac(self.cpus_milli, total.cpus_milli)
            .max(frac(self.mem_mib, total.mem_mib))
            .max(frac(self.disk_mib, total.disk_mib))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ranges_strategy() -> impl Strategy<Value = Ranges> {
        prop::collection::vec((0u32..200, 0u32..20), 0..6)
            .prop_map(|v| Ranges::from_ranges(v.into_iter().map(|(b, l)| (b, b + l))).unwrap())
    }

    fn set(r: &Ranges) -> std::collections::BTreeSet<u32> {
        r.ranges().iter().flat_map(|(b, e)| *b..=*e).collect()
    }

    fn resources_strategy() -> impl Strategy<Value = Resources> {
        (
            0u64..10_000,
            0u64..100_000,
            0u64..100_000,
            ranges_strategy(),
        )
            .prop_map(|(c, m, d, p)| Resources {
                cpus_milli: c,
                mem_mib: m,
                disk_mib: d,
                ports: p,
            })
    }

    #[test]
    fn parse_mesos_syntax() {
        let r =
            Resources::parse("cpus:2.5;mem:1024;disk:10;ports:[31000-31002,31010-31010]").unwrap();
        assert_eq!(r.cpus_milli, 2500);
        assert_eq!(r.mem_mib, 1024);
        assert_eq!(r.ports.count(), 4);
        assert!(r.ports.contains_value(31010));
        assert!(!r.ports.contains_value(31003));
        assert!(Resources::parse("gpus:1").is_err());
        assert!(Resources::parse("ports:[5-1]").is_err());
        assert!(Resources::parse("cpus:-1").is_err());
        assert!(Resources::parse("cpus:NaN").is_err());
    }

    #[test]
    fn ranges_normalise_adjacent_and_overlapping() {
        let r = Ranges::from_ranges([(5, 7), (1, 3), (4, 4), (6, 10)]).unwrap();
        assert_eq!(r.ranges(), &[(1, 10)]);
        let r = Ranges::from_ranges([(u32::MAX - 1, u32::MAX), (0, 0)]).unwrap();
        assert_eq!(r.count(), 3);
    }

    #[test]
    fn take_and_difference() {
        let r = Ranges::from_ranges([(10, 12), (20, 29)]).unwrap();
        assert_eq!(r.take(5).ranges(), &[(10, 12), (20, 21)]);
        assert_eq!(r.difference(&r.take(5)).ranges(), &[(22, 29)]);
        assert_eq!(r.take(0).count(), 0);
        assert_eq!(r.take(100), r);
    }

    proptest! {
        #[test]
        fn ranges_behave_like_sets(a in ranges_strategy(), b in ranges_strategy()) {
            let (sa, sb) = (set(&a), set(&b));
            prop_assert_eq!(set(&a.union(&b)), sa.union(&sb).copied().collect());
            prop_assert_eq!(set(&a.difference(&b)), sa.difference(&sb).copied().collect());
            prop_assert_eq!(a.contains(&b), sb.is_subset(&sa));
            prop_assert_eq!(a.intersects(&b), !sa.is_disjoint(&sb));
            prop_assert_eq!(a.count(), sa.len() as u64);
        }

        #[test]
        fn resources_add_then_sub_roundtrips(a in resources_strategy(), b in resources_strategy()) {
            // ports: only disjoint parts round-trip, so remove the overlap first
            let b = Resources { ports: b.ports.difference(&a.ports), ..b };
            let sum = a.add(&b);
            prop_assert!(sum.contains(&a));
            prop_assert!(sum.contains(&b));
            prop_assert_eq!(sum.checked_sub(&b).unwrap(), a.clone());
            prop_assert_eq!(sum.checked_sub(&a).unwrap(), b);
        }

        #[test]
        fn checked_sub_fails_iff_not_contained(a in resources_strategy(), b in resources_strategy()) {
            prop_assert_eq!(a.checked_sub(&b).is_some(), a.contains(&b));
            if let Some(d) = a.checked_sub(&b) {
                prop_assert_eq!(d.add(&b), a);
            }
        }

        #[test]
        fn dominant_share_is_max_fraction(c in 0u64..100, m in 0u64..100) {
            let total = Scalars { cpus_milli: 100, mem_mib: 100, disk_mib: 0 };
            let s = Scalars { cpus_milli: c, mem_mib: m, disk_mib: 0 };
            let want = c.max(m) as f64 / 100.0;
            prop_assert!((s.dominant_share(total) - want).abs() < 1e-12);
        }
    }
}
