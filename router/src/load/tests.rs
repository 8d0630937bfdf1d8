use super::*;

fn key() -> EndpointKey {
    EndpointKey {
        app_id: "/demo/web".into(),
        port_index: 0,
    }
}

fn port(window: Duration, epoch: Instant) -> Arc<PortLoad> {
    Arc::new(PortLoad::new(key(), window, epoch, Arc::new(Notify::new())))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn near(got: Option<f64>, want: f64, what: &str) {
    let got = got.unwrap_or_else(|| panic!("{what}: no value"));
    assert!(
        (got - want).abs() <= want * 0.09,
        "{what}: {got} ms, want {want} ms ± 9 % (one bucket)"
    );
}

#[test]
fn rates_and_percentiles_of_a_known_pattern_over_the_window() {
    let t0 = Instant::now();
    let p = port(Duration::from_secs(10), t0);
    // 0.5 s in: 60 edge requests at 10 ms, 30 at 100 ms, 10 at 400 ms
    // (p50 10 ms, p95 400 ms); 20 internal ones at 10 ms; 5 L4
    // connections (no latency).
    let at = t0 + ms(500);
    for _ in 0..60 {
        p.record_at(Kind::Edge, at, Some(ms(10)));
    }
    for _ in 0..30 {
        p.record_at(Kind::Edge, at, Some(ms(100)));
    }
    for _ in 0..10 {
        p.record_at(Kind::Edge, at, Some(ms(400)));
    }
    for _ in 0..20 {
        p.record_at(Kind::Internal, at, Some(ms(10)));
    }
    for _ in 0..5 {
        p.record_at(Kind::L4, at, None);
    }
    let edge = p.window_at(&[Kind::Edge], t0 + ms(5_000));
    assert_eq!(edge.requests, 100);
    assert!((edge.rps - 10.0).abs() < 1e-9, "rps {}", edge.rps);
    near(edge.p50_ms, 10.0, "edge p50");
    near(edge.p95_ms, 400.0, "edge p95");
    let l4 = p.window_at(&[Kind::L4], t0 + ms(5_000));
    assert_eq!((l4.requests, l4.p50_ms, l4.p95_ms), (5, None, None));

    // The report sums the kinds: 125 requests, 12.5 rps; 80 of 120
    // latencies are 10 ms.
    let s = p.set_load_at(t0 + ms(5_000));
    assert_eq!((s.requests, s.in_flight, s.held), (125, 0, 0));
    assert!((s.rps - 12.5).abs() < 1e-9);
    near(s.latency_p50_ms, 10.0, "report p50");

    // 10.5 s: the slot of 0.5 s is half out of the window; 11 s: gone.
    assert_eq!(p.window_at(&[Kind::Edge], t0 + ms(10_500)).requests, 50);
    let later = p.window_at(&[Kind::Edge], t0 + ms(11_000));
    assert_eq!((later.requests, later.rps, later.p95_ms), (0, 0.0, None));
    // The counters stay.
    assert_eq!(p.total(Kind::Edge), 100);

    // New samples after the ring went round replace the stale slot.
    p.record_at(Kind::Edge, t0 + ms(11_500), Some(ms(50)));
    let w = p.window_at(&[Kind::Edge], t0 + ms(12_000));
    assert_eq!(w.requests, 1);
    near(w.p50_ms, 50.0, "p50 after the wrap");
}

#[tokio::test]
async fn a_request_counts_in_flight_until_it_ends() {
    let p = port(Duration::from_secs(10), Instant::now());
    let mut a = RequestLoad::begin(&p, Kind::Internal);
    let b = RequestLoad::begin(&p, Kind::Internal);
    assert_eq!(p.in_flight(Kind::Internal), 2);
    assert_eq!(p.set_load_at(Instant::now()).in_flight, 2);
    a.head(Instant::now());
    drop(a);
    drop(b);
    assert_eq!(p.in_flight(Kind::Internal), 0);
    assert_eq!(p.total(Kind::Internal), 2);
    assert_eq!(p.window_at(&[Kind::Internal], Instant::now()).requests, 2);
}

#[tokio::test]
async fn holding_is_bounded_and_released_in_arrival_order() {
    let p = port(Duration::from_secs(10), Instant::now());
    let mut first = p.hold(2).unwrap();
    let mut second = p.hold(2).unwrap();
    assert_eq!(p.hold(2).err(), Some(HoldError::Full));
    assert_eq!(p.held(), 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    p.release(Instant::now(), true);
    first.released(deadline).await.unwrap();
    second.released(deadline).await.unwrap();
    drop((first, second));
    assert_eq!(p.held(), 0);
    // A cold start was recorded.
    let mut out = String::new();
    write_metrics([p.clone()].iter(), &mut out);
    assert!(
        out.contains("agora_router_cold_start_seconds_count{app=\"/demo/web\",port=\"0\"} 1"),
        "{out}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_request_times_out() {
    let p = port(Duration::from_secs(10), Instant::now());
    let mut h = p.hold(10).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    assert_eq!(h.released(deadline).await, Err(HoldError::TimedOut));
}

/// While a request stays held, those that time out (or whose client
/// leaves) in the meantime do not pile up in the queue: it stays under
/// twice the bound however many come and go.
#[tokio::test]
async fn held_requests_that_left_do_not_pile_up_while_others_wait() {
    let p = port(Duration::from_secs(10), Instant::now());
    let _waiting = p.hold(4).unwrap();
    for _ in 0..1000 {
        let gone = p.hold(4).unwrap();
        drop(gone);
    }
    assert_eq!(p.held(), 1);
    let queued = p.queue.lock().unwrap().waiters.len();
    assert!(queued <= 8, "{queued} waiters queued for 1 held request");
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}
