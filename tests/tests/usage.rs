//! Task usage end to end over real gRPC: hollow agents sample their
//! tasks' (simulated) load every second, the master forwards each report
//! at once to the framework each task belongs to, and the SDK calls the
//! scheduler's `usage`. Freshness: from the agent's sample timestamp to
//! the callback, under 2 s with the default 1 s interval.

use agora_core::{TaskId, TaskState};
use agora_tests::{Cluster, Fw, Usage, fw_config, task, test_config};
use std::time::{Duration, UNIX_EPOCH};

/// Launches `name` on the framework's first offer; waits until it runs.
async fn launch(fw: &mut Fw, name: &str) {
    let offers = fw.offers().await.unwrap();
    fw.client
        .launch(&offers[0], vec![task(name, "cpus:0.5;mem:64", "serve")])
        .await
        .unwrap();
    fw.update(name, TaskState::Running).await.unwrap();
}

/// The usage reports `fw` gets over `d`.
async fn reports(fw: &mut Fw, d: Duration) -> Vec<Usage> {
    let deadline = tokio::time::Instant::now() + d;
    let mut v = Vec::new();
    while let Ok(Some(u)) = tokio::time::timeout_at(deadline, fw.usage.recv()).await {
        v.push(u);
    }
    v
}

/// Seconds from each sample's timestamp to the callback that delivered it.
fn delays(reports: &[Usage]) -> Vec<f64> {
    reports
        .iter()
        .flat_map(|r| {
            let got = r.received.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
            r.tasks.iter().map(move |t| got - t.timestamp)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reaches_only_its_own_framework_within_two_seconds_of_the_sample() {
    let c = Cluster::start(test_config()).await.unwrap();
    let mut one = Fw::start(fw_config(&c, "one")).await.unwrap();
    let mut two = Fw::start(fw_config(&c, "two")).await.unwrap();
    let agents = [
        c.agent("a1", "cpus:4;mem:1024", &[]).await.unwrap(),
        c.agent("a2", "cpus:4;mem:1024", &[]).await.unwrap(),
    ];
    launch(&mut one, "one-web").await;
    launch(&mut two, "two-web").await;
    // The hollow tasks report usage once they have a (simulated) load.
    let load = |fw: &Fw, task: &str, cpus: f64| {
        let placed = agents
            .iter()
            .filter(|a| {
                a.runtime
                    .set_load(&fw.id, &TaskId::from(task), cpus, 64 << 20)
            })
            .count();
        assert_eq!(placed, 1, "{task} runs on one agent");
    };
    load(&one, "one-web", 0.5);
    load(&two, "two-web", 1.0);
    // Reports sent before the load was set carried nothing; start afresh.
    while one.usage.try_recv().is_ok() {}
    while two.usage.try_recv().is_ok() {}

    let (r1, r2) = tokio::join!(
        reports(&mut one, Duration::from_secs(6)),
        reports(&mut two, Duration::from_secs(6))
    );
    for (fw, name, got) in [(&one, "one-web", &r1), (&two, "two-web", &r2)] {
        // About one report a second (the default interval).
        assert!(got.len() >= 4, "{name}: {} reports in 6 s", got.len());
        for r in got.iter() {
            for t in &r.tasks {
                assert_eq!(
                    (&t.framework_id, t.task_id.as_str()),
                    (&fw.id, name),
                    "a framework got another's usage"
                );
                assert_eq!(t.mem_working_set_bytes, 64 << 20);
            }
        }
        let cpu: Vec<f64> = got.iter().map(|r| r.tasks[0].cpu_seconds).collect();
        assert!(cpu.windows(2).all(|w| w[1] > w[0]), "{name}: {cpu:?}");
        // Freshness: each sample reached the scheduler well within 2 s,
        // and samples kept coming every ~1 s, so the newest sample a
        // scheduler holds is never 2 s old.
        let d = delays(got);
        let worst = d.iter().copied().fold(0.0_f64, f64::max);
        let mut sorted = d.clone();
        sorted.sort_by(f64::total_cmp);
        eprintln!(
            "{name}: {} reports, sample → callback median {:.1} ms, max {:.1} ms",
            got.len(),
            sorted[sorted.len() / 2] * 1e3,
            worst * 1e3
        );
        assert!(
            d.iter().all(|s| (-0.05..2.0).contains(s)),
            "{name}: delays {d:?}"
        );
        let gaps: Vec<f64> = got
            .windows(2)
            .map(|w| {
                w[1].received
                    .duration_since(w[0].received)
                    .unwrap_or_default()
                    .as_secs_f64()
            })
            .collect();
        assert!(
            gaps.iter().all(|g| *g < 1.6),
            "{name}: gaps between reports {gaps:?}"
        );
        // The age of the newest sample just before the next one arrives.
        for (gap, delay) in gaps.iter().zip(&d) {
            assert!(
                gap + delay < 2.0,
                "{name}: a sample was {:.2} s old before the next came",
                gap + delay
            );
        }
    }
}
