use std::time::Duration;

use super::*;

fn policy() -> OutlierPolicy {
    OutlierPolicy {
        consecutive_failures: 3,
        base_ejection: Duration::from_secs(1),
        max_ejection: Duration::from_secs(4),
    }
}

fn backends(n: usize, epoch: Instant) -> Vec<Arc<Backend>> {
    let drain = Arc::new(Notify::new());
    (0..n)
        .map(|i| {
            Arc::new(Backend::new(
                EndpointId {
                    task_id: format!("t{i}").into(),
                    host: "127.0.0.1".into(),
                    port: 1000 + i as u16,
                },
                epoch,
                policy(),
                drain.clone(),
            ))
        })
        .collect()
}

fn index(bs: &[Arc<Backend>], g: &InFlight) -> usize {
    bs.iter().position(|b| Arc::ptr_eq(b, g.backend())).unwrap()
}

#[test]
fn outstanding_requests_spread_evenly_and_return_to_zero() {
    let now = Instant::now();
    let bs = backends(4, now);
    let lb = Balancer::new(bs.clone());
    let held: Vec<InFlight> = (0..400).map(|_| lb.pick_at(now, &[]).unwrap()).collect();
    let counts: Vec<usize> = bs.iter().map(|b| b.in_flight()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 400);
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    // Least outstanding of two choices keeps the spread tiny (random
    // choice alone would be off by tens at this size).
    assert!(max - min <= 4, "uneven: {counts:?}");
    drop(held);
    assert!(bs.iter().all(|b| b.in_flight() == 0));
}

#[test]
fn ties_go_to_the_lower_latency() {
    let now = Instant::now();
    let bs = backends(2, now);
    bs[0].success(Duration::from_millis(50), now);
    bs[1].success(Duration::from_millis(5), now);
    let lb = Balancer::new(bs.clone());
    for _ in 0..100 {
        let g = lb.pick_at(now, &[]).unwrap();
        assert_eq!(index(&bs, &g), 1);
    }
    // Fewer outstanding beats latency.
    let _busy = InFlight::begin(&bs[1]).unwrap();
    let g = lb.pick_at(now, &[]).unwrap();
    assert_eq!(index(&bs, &g), 0);
}

#[test]
fn a_failing_endpoint_loses_ties_before_it_is_ejected() {
    let now = Instant::now();
    let bs = backends(2, now);
    bs[0].success(Duration::from_millis(50), now);
    bs[1].success(Duration::from_millis(5), now);
    bs[1].failure(now);
    assert!(!bs[1].is_ejected(now));
    assert!(bs[1].ewma() > bs[0].ewma());
    let lb = Balancer::new(bs.clone());
    for _ in 0..50 {
        assert_eq!(index(&bs, &lb.pick_at(now, &[]).unwrap()), 0);
    }
    // Successes bring it back.
    for _ in 0..20 {
        bs[1].success(Duration::from_millis(5), now);
    }
    assert_eq!(index(&bs, &lb.pick_at(now, &[]).unwrap()), 1);
}

#[test]
fn ewma_follows_samples() {
    let now = Instant::now();
    let b = &backends(1, now)[0];
    b.success(Duration::from_millis(100), now);
    assert_eq!(b.ewma(), Duration::from_millis(100));
    for _ in 0..40 {
        b.success(Duration::from_millis(10), now);
    }
    let e = b.ewma().as_secs_f64();
    assert!((0.0099..0.0102).contains(&e), "{e}");
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_with_doubling_backoff_and_return() {
    let bs = backends(2, Instant::now());
    let lb = Balancer::new(bs.clone());
    let bad = &bs[0];
    let chosen = |lb: &Balancer| {
        // Held, so that least-outstanding spreads them.
        let mut seen = [0usize; 2];
        let held: Vec<InFlight> = (0..200).map(|_| lb.pick(&[]).unwrap()).collect();
        for g in &held {
            seen[index(&bs, g)] += 1;
        }
        seen
    };
    // Two failures, then a success: the run is broken, no ejection.
    assert!(!bad.failure(Instant::now()));
    assert!(!bad.failure(Instant::now()));
    bad.success(Duration::from_millis(1), Instant::now());
    assert!(!bad.failure(Instant::now()));
    assert!(!bad.failure(Instant::now()));
    assert!(!bad.is_ejected(Instant::now()));
    // The third in a row ejects it for 1 s.
    assert!(bad.failure(Instant::now()));
    assert_eq!(chosen(&lb)[0], 0);
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(chosen(&lb)[0], 0);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(chosen(&lb)[0] > 0, "back after its back-off");
    // Failing again right away: out for twice as long, then 4 s (capped).
    for want in [2, 4, 4] {
        for _ in 0..3 {
            bad.failure(Instant::now());
        }
        assert!(bad.is_ejected(Instant::now()));
        // Failures while ejected do not extend it.
        assert!(!bad.failure(Instant::now()));
        tokio::time::advance(Duration::from_secs(want) - Duration::from_millis(1)).await;
        assert!(bad.is_ejected(Instant::now()), "ejected {want} s");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!bad.is_ejected(Instant::now()));
    }
    // After working for the longest back-off, it starts again from 1 s.
    tokio::time::advance(Duration::from_secs(5)).await;
    bad.success(Duration::from_millis(1), Instant::now());
    for _ in 0..3 {
        bad.failure(Instant::now());
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!bad.is_ejected(Instant::now()));
}

#[test]
fn ejection_never_empties_a_set_and_tried_ones_are_skipped() {
    let now = Instant::now();
    let bs = backends(2, now);
    let lb = Balancer::new(bs.clone());
    for b in &bs {
        for _ in 0..3 {
            b.failure(now);
        }
        assert!(b.is_ejected(now));
    }
    assert!(lb.pick_at(now, &[]).is_some(), "all ejected: still one");
    for _ in 0..50 {
        let g = lb.pick_at(now, std::slice::from_ref(&bs[1])).unwrap();
        assert_eq!(index(&bs, &g), 0);
    }
    assert!(lb.pick_at(now, &bs).is_none(), "every one tried");
    assert!(Balancer::default().pick_at(now, &[]).is_none());
}

#[test]
fn a_retired_backend_takes_no_new_request() {
    let now = Instant::now();
    let bs = backends(2, now);
    let lb = Balancer::new(bs.clone());
    bs[0].retire();
    for _ in 0..100 {
        let g = lb.pick_at(now, &[]).unwrap();
        assert_eq!(index(&bs, &g), 1);
    }
    assert!(InFlight::begin(&bs[0]).is_none());
    assert_eq!(bs[0].in_flight(), 0);
    bs[1].retire();
    assert!(lb.pick_at(now, &[]).is_none());
    assert!(bs.iter().all(|b| b.in_flight() == 0));
}
