//! `agora bench …`: benchmark programs (not timed tests). Each prints a
//! human summary and, with `--json`, one JSON object as its last line.

pub mod allocator;
pub mod deploy;
pub mod launch;
pub mod scale;

/// The `q`-quantile (0..=1) of `v` (sorted in place), nearest-rank.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::quantile(&mut v, 0.5), 50.0);
        assert_eq!(super::quantile(&mut v, 0.99), 99.0);
        assert_eq!(super::quantile(&mut v, 1.0), 100.0);
        assert_eq!(super::quantile(&mut [], 0.5), 0.0);
    }
}
