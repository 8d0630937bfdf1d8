//! Usage sampling off the agent's loop: a sample slower than the interval
//! makes the agent skip ticks, never queue or overlap samples.

use super::*;
use crate::runtime::{BoxFuture, LaunchSpec};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A runtime whose usage sample takes `takes`.
struct Slow {
    takes: Duration,
    calls: AtomicUsize,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
}

impl ContainerRuntime for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn launch(&self, _spec: LaunchSpec) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn kill(&self, _f: &FrameworkId, _t: &TaskId, _g: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn usage(&self) -> BoxFuture<'_, Vec<pb::TaskUsage>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.takes).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            vec![pb::TaskUsage {
                framework_id: "f".into(),
                task_id: "t".into(),
                ..Default::default()
            }]
        })
    }
}

/// Runs the session's sampling loop for `run` with a 1 s interval:
/// (samples started, reports, ticks skipped).
async fn sample_for(rt: Arc<Slow>, run: Duration) -> (usize, usize, u64) {
    let interval = Duration::from_secs(1);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sampler = UsageSampler::new(rt.clone(), interval);
    let end = tokio::time::sleep(run);
    tokio::pin!(end);
    let mut reports = 0;
    loop {
        tokio::select! {
            _ = &mut end => break,
            _ = tick.tick() => { sampler.start(); }
            r = sampler.done() => {
                assert_eq!(r.len(), 1);
                reports += 1;
            }
        }
    }
    (rt.calls.load(Ordering::SeqCst), reports, sampler.skipped)
}

#[tokio::test(start_paused = true)]
async fn a_sample_slower_than_the_interval_skips_ticks_instead_of_piling_up() {
    let rt = Arc::new(Slow {
        takes: Duration::from_millis(2500),
        calls: AtomicUsize::new(0),
        running: AtomicUsize::new(0),
        most_at_once: AtomicUsize::new(0),
    });
    let (calls, reports, skipped) = sample_for(rt.clone(), Duration::from_millis(10_500)).await;
    assert_eq!(
        rt.most_at_once.load(Ordering::SeqCst),
        1,
        "samples overlapped"
    );
    // Started at 0, 3, 6 and 9 s (each takes 2.5 s; the ticks between are skipped).
    assert_eq!(calls, 4, "one sample per finished sample, not per tick");
    assert_eq!(reports, 3, "the one started at 9 s is still being taken");
    assert_eq!(skipped, 7);
}

#[tokio::test(start_paused = true)]
async fn a_fast_sample_is_reported_every_interval() {
    let rt = Arc::new(Slow {
        takes: Duration::from_millis(20),
        calls: AtomicUsize::new(0),
        running: AtomicUsize::new(0),
        most_at_once: AtomicUsize::new(0),
    });
    let (calls, reports, skipped) = sample_for(rt, Duration::from_millis(4_500)).await;
    assert_eq!((calls, reports, skipped), (5, 5, 0));
}

#[test]
fn the_default_interval_is_one_second() {
    assert_eq!(
        AgentConfig::default().usage_interval,
        Duration::from_secs(1)
    );
}

#[tokio::test]
async fn the_agents_metrics_show_each_tasks_working_set() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (handle, runtime, _join) = crate::spawn_hollow(
        AgentConfig::default(),
        Connector::Address("http://127.0.0.1:9".into()),
        Duration::ZERO,
    );
    runtime
        .launch(LaunchSpec::new(
            "f".into(),
            agora_core::info::TaskInfo::new("t".into(), Default::default()),
        ))
        .await;
    assert!(runtime.set_load(&"f".into(), &"t".into(), 0.25, 3 << 20));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = crate::http::HttpState {
        agent: handle,
        runtime: Arc::new(runtime),
        tokens: None,
    };
    tokio::spawn(crate::http::serve(listener, state));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(
        body.contains("# TYPE agora_agent_task_memory_working_set_bytes gauge"),
        "{body}"
    );
    assert!(
        body.contains(
            "agora_agent_task_memory_working_set_bytes{framework_id=\"f\",task_id=\"t\"} 3145728"
        ),
        "{body}"
    );
    // The existing names stay.
    assert!(
        body.contains("agora_agent_task_memory_rss_bytes{"),
        "{body}"
    );
    assert!(
        body.contains("agora_agent_task_cpu_seconds_total{"),
        "{body}"
    );
}
