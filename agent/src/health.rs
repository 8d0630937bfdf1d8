//! Health checks run by the agent (Mesos semantics: checks next to the task,
//! not in the framework, so an overloaded scheduler cannot cause false
//! kills). HTTP: a GET answered 2xx/3xx; TCP: a connection accepted;
//! COMMAND: exit status 0 inside the task's container.
//!
//! Each check reports only when its verdict changes: healthy after the first
//! success, unhealthy once `max_consecutive_failures` checks in a row fail
//! after the grace period (failures during the grace period do not count
//! until a check has passed). A task with several checks is healthy when
//! all of them pass and unhealthy as soon as one fails ([`Verdicts`]).

use crate::runtime::{ContainerRuntime, EventSink, RuntimeEvent};
use agora_core::info::{HealthCheck, HealthProtocol};
use agora_core::{FrameworkId, TaskId, TaskState};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The shortest probe timeout and interval: a check given 0 s probes at
/// most every 50 ms rather than in a busy loop.
const MIN_PERIOD: Duration = Duration::from_millis(50);

/// Probes once; `Ok(())` is healthy, `Err` says what failed.
pub async fn probe(
    check: &HealthCheck,
    runtime: &dyn ContainerRuntime,
    fw: &FrameworkId,
    task: &TaskId,
) -> Result<(), String> {
    let timeout = check.timeout.max(MIN_PERIOD);
    let target = match check.protocol {
        HealthProtocol::Command => std::net::SocketAddr::from(([127, 0, 0, 1], check.port)),
        _ => runtime.check_addr(fw, task, check.port).await,
    };
    let addr = target.to_string();
    match check.protocol {
        HealthProtocol::Tcp => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("TCP {addr}: {e}")),
                Err(_) => Err(format!("TCP {addr}: timed out")),
            }
        }
        HealthProtocol::Http => {
            let path = if check.path.is_empty() {
                "/"
            } else {
                check.path.as_str()
            };
            let host = target.ip().to_string();
            let code = crate::http_client::get_status(&host, target.port(), path, timeout)
                .await
                .map_err(|e| format!("HTTP GET {addr}{path}: {e}"))?;
            let ok = if check.ok_statuses.is_empty() {
                (200..400).contains(&code)
            } else {
                check.ok_statuses.contains(&code)
            };
            if ok {
                Ok(())
            } else {
                Err(format!("HTTP GET {addr}{path}: answered {code}"))
            }
        }
        HealthProtocol::Command => match runtime
            .exec_check(fw, task, check.command.clone(), timeout)
            .await
        {
            Ok(0) => Ok(()),
            Ok(code) => Err(format!("command exited with {code}")),
            Err(e) => Err(format!("command: {e}")),
        },
    }
}

/// Until a check first passes, there is no point waiting a whole interval
/// after a failure (Marathon's default interval is 60 s, and a task is
/// rarely listening at its first probe): probes go after 50 ms, doubling up
/// to the interval. Only used while failures do not count (readiness, or
/// health within its grace period), so it never makes a task unhealthy
/// sooner.
struct FirstPassPacer {
    next: Duration,
}

impl FirstPassPacer {
    fn new() -> Self {
        FirstPassPacer {
            next: Duration::from_millis(50),
        }
    }

    fn wait(&mut self, interval: Duration) -> Duration {
        let w = self.next.min(interval);
        self.next = (self.next * 2).min(interval);
        w
    }
}

/// The task's health from the verdicts of its several checks (Marathon:
/// healthy when every check passes).
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    checks: Vec<Option<bool>>,
    reported: Option<bool>,
}

impl Verdicts {
    pub fn new(n: usize) -> Self {
        Verdicts {
            checks: vec![None; n],
            reported: None,
        }
    }

    /// Records check `i`'s verdict; returns the task's health when it
    /// changes (unhealthy if any check fails, healthy once all pass).
    pub fn record(&mut self, i: usize, healthy: bool) -> Option<bool> {
        *self.checks.get_mut(i)? = Some(healthy);
        let now = if self.checks.contains(&Some(false)) {
            Some(false)
        } else if self.checks.iter().all(|c| *c == Some(true)) {
            Some(true)
        } else {
            None
        };
        if now.is_some() && now != self.reported {
            self.reported = now;
            now
        } else {
            None
        }
    }
}

/// Runs one of the task's health checks (number `index`) until `live` says
/// the task is gone.
pub fn spawn_checker(
    index: usize,
    check: HealthCheck,
    runtime: Arc<dyn ContainerRuntime>,
    sink: EventSink,
    fw: FrameworkId,
    task: TaskId,
    live: impl Fn() -> bool + Send + 'static,
) {
    let span =
        tracing::info_span!("health_check", framework_id = %fw, task_id = %task, check = index + 1);
    tokio::spawn(
        async move {
            let grace = check.grace_period;
            let interval = check.interval.max(MIN_PERIOD);
            let max = check.max_consecutive_failures.max(1);
            let started = tokio::time::Instant::now();
            let mut healthy: Option<bool> = None;
            let mut failures = 0u32;
            let mut pacer = FirstPassPacer::new();
            loop {
                if !live() {
                    return;
                }
                let result = probe(&check, runtime.as_ref(), &fw, &task).await;
                if !live() {
                    return;
                }
                match result {
                    Ok(()) => {
                        failures = 0;
                        if healthy != Some(true) {
                            healthy = Some(true);
                            let _ = sink.send(
                                RuntimeEvent::new(&fw, &task, TaskState::Running)
                                    .healthy(index, true)
                                    .message(format!("health check {} passed", index + 1)),
                            );
                        }
                    }
                    Err(why) => {
                        let in_grace = started.elapsed() < grace && healthy.is_none();
                        if !in_grace {
                            failures += 1;
                        }
                        if failures >= max && healthy != Some(false) {
                            healthy = Some(false);
                            let _ = sink.send(
                            RuntimeEvent::new(&fw, &task, TaskState::Running)
                                .healthy(index, false)
                                .message(format!(
                                    "health check {}: {failures} consecutive failures; last: {why}",
                                    index + 1
                                )),
                        );
                        }
                    }
                }
                let in_grace = started.elapsed() < grace && healthy.is_none();
                let wait = if in_grace {
                    pacer.wait(interval)
                } else {
                    interval
                };
                tokio::time::sleep(wait).await;
            }
        }
        .instrument(span),
    );
}

/// Probes the task's readiness check until it first passes, reports that
/// once, and stops.
pub fn spawn_readiness(
    check: HealthCheck,
    runtime: Arc<dyn ContainerRuntime>,
    sink: EventSink,
    fw: FrameworkId,
    task: TaskId,
    live: impl Fn() -> bool + Send + 'static,
) {
    let span = tracing::info_span!("readiness_check", framework_id = %fw, task_id = %task);
    tokio::spawn(
        async move {
            let interval = check.interval.max(MIN_PERIOD);
            let mut pacer = FirstPassPacer::new();
            while live() {
                if probe(&check, runtime.as_ref(), &fw, &task).await.is_ok() {
                    if live() {
                        let _ = sink.send(
                            RuntimeEvent::new(&fw, &task, TaskState::Running)
                                .ready()
                                .message("readiness check passed"),
                        );
                    }
                    return;
                }
                tokio::time::sleep(pacer.wait(interval)).await;
            }
        }
        .instrument(span),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{BoxFuture, LaunchSpec};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::mpsc;

    /// A runtime whose COMMAND checks answer from a script (then stay at the last answer).
    struct Scripted(Mutex<Vec<i32>>);

    impl ContainerRuntime for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn launch(&self, _: LaunchSpec) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn kill(&self, _: &FrameworkId, _: &TaskId, _: Duration) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn exec_check(
            &self,
            _: &FrameworkId,
            _: &TaskId,
            _: String,
            _: Duration,
        ) -> BoxFuture<'_, Result<i32, String>> {
            let mut s = self.0.lock().unwrap();
            let code = if s.len() > 1 { s.remove(0) } else { s[0] };
            Box::pin(async move { Ok(code) })
        }
    }

    fn check(grace: u64, max: u32) -> HealthCheck {
        HealthCheck {
            protocol: HealthProtocol::Command,
            path: String::new(),
            port: 0,
            command: "true".into(),
            grace_period: Duration::from_secs(grace),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_consecutive_failures: max,
            ok_statuses: vec![],
        }
    }

    async fn health_reports(script: Vec<i32>, c: HealthCheck, secs: u64) -> Vec<(bool, String)> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let alive = Arc::new(AtomicBool::new(true));
        let a = alive.clone();
        spawn_checker(
            0,
            c,
            Arc::new(Scripted(Mutex::new(script))),
            tx,
            "f".into(),
            "t".into(),
            move || a.load(Ordering::Relaxed),
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
        alive.store(false, Ordering::Relaxed);
        let mut out = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            out.push((ev.healthy.unwrap(), ev.message));
        }
        out
    }

    #[test]
    fn a_task_is_healthy_when_all_its_checks_pass() {
        let mut v = Verdicts::new(2);
        assert_eq!(v.record(0, true), None, "check 2 has not answered yet");
        assert_eq!(v.record(1, true), Some(true));
        assert_eq!(v.record(0, true), None, "no change, no report");
        assert_eq!(
            v.record(1, false),
            Some(false),
            "one failing check is enough"
        );
        assert_eq!(v.record(0, false), None);
        assert_eq!(v.record(1, true), None, "check 1 still fails");
        assert_eq!(v.record(0, true), Some(true));
        assert_eq!(v.record(7, false), None, "no such check");
        let mut one = Verdicts::new(1);
        assert_eq!(one.record(0, false), Some(false));
        assert_eq!(one.record(0, true), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_once_then_unhealthy_after_max_consecutive_failures() {
        // ok, ok, fail, ok, fail, fail(2nd in a row) ...
        let r = health_reports(vec![0, 0, 1, 0, 1, 1, 1], check(0, 2), 10).await;
        assert_eq!(r.len(), 2, "only changes are reported: {r:?}");
        assert!(r[0].0);
        assert!(!r[1].0 && r[1].1.contains("2 consecutive"), "{r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn before_the_first_pass_probes_come_quickly_then_at_the_interval() {
        // Interval 10 s, grace 60 s: fails twice, then passes at once.
        let mut c = check(60, 3);
        c.interval = Duration::from_secs(10);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let alive = Arc::new(AtomicBool::new(true));
        let a = alive.clone();
        let t0 = tokio::time::Instant::now();
        spawn_checker(
            0,
            c,
            Arc::new(Scripted(Mutex::new(vec![1, 1, 0, 1, 1, 1]))),
            tx,
            "f".into(),
            "t".into(),
            move || a.load(Ordering::Relaxed),
        );
        let ev = rx.recv().await.unwrap();
        assert_eq!(ev.healthy, Some(true));
        // Probes at 0, 50 ms, 150 ms (not at 0, 10 s, 20 s).
        assert_eq!(t0.elapsed(), Duration::from_millis(150));
        // Once healthy, the interval holds: three failures take 30 s.
        let ev = rx.recv().await.unwrap();
        assert_eq!(ev.healthy, Some(false));
        assert_eq!(t0.elapsed(), Duration::from_millis(30_150));
        alive.store(false, Ordering::Relaxed);

        let mut p = FirstPassPacer::new();
        let waits: Vec<u128> = (0..6)
            .map(|_| p.wait(Duration::from_millis(500)).as_millis())
            .collect();
        assert_eq!(waits, vec![50, 100, 200, 400, 500, 500]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_during_the_grace_period_do_not_count() {
        // Fails for the first 5 checks (grace 10 s), then passes.
        let r = health_reports(vec![1, 1, 1, 1, 1, 0], check(10, 2), 12).await;
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].0, "becomes healthy, never reported unhealthy: {r:?}");
        // Past the grace period, failures count.
        let r = health_reports(vec![1], check(2, 3), 10).await;
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(!r[0].0);
    }

    #[tokio::test]
    async fn http_checks_honour_the_accepted_statuses() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                // The status line arrives in two pieces.
                let _ = s.write_all(b"HTTP/1.1 2").await;
                let _ = s.flush().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = s.write_all(b"04 No Content\r\n\r\n").await;
            }
        });
        let rt = Scripted(Mutex::new(vec![0]));
        let mut c = HealthCheck {
            protocol: HealthProtocol::Http,
            path: "/ready".into(),
            port,
            timeout: Duration::from_secs(2),
            ..check(0, 1)
        };
        assert!(
            probe(&c, &rt, &"f".into(), &"t".into()).await.is_ok(),
            "any 2xx by default"
        );
        c.ok_statuses = vec![200];
        let e = probe(&c, &rt, &"f".into(), &"t".into()).await.unwrap_err();
        assert!(e.contains("answered 204"), "{e}");
    }

    /// A server on loopback that answers every connection with `answer`
    /// (or, if `None`, reads and never answers).
    async fn server(answer: Option<&'static [u8]>) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    match answer {
                        Some(a) => {
                            let _ = s.write_all(a).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn http_probes_accept_2xx_and_3xx_and_refuse_the_rest() {
        let rt = Scripted(Mutex::new(vec![0]));
        let http = |port| HealthCheck {
            protocol: HealthProtocol::Http,
            port,
            timeout: Duration::from_millis(500),
            ..check(0, 1)
        };
        let p = server(Some(
            b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
        ))
        .await;
        assert!(probe(&http(p), &rt, &"f".into(), &"t".into()).await.is_ok());
        let p = server(Some(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")).await;
        let e = probe(&http(p), &rt, &"f".into(), &"t".into())
            .await
            .unwrap_err();
        assert!(e.contains("answered 500"), "{e}");
        let p = server(Some(b"SSH-2.0-OpenSSH\r\n")).await;
        assert!(
            probe(&http(p), &rt, &"f".into(), &"t".into())
                .await
                .is_err()
        );
        // Nobody listening.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = probe(&http(closed), &rt, &"f".into(), &"t".into())
            .await
            .unwrap_err();
        assert!(e.contains(&format!("127.0.0.1:{closed}/")), "{e}");
        // Accepts, never answers: the check's timeout holds.
        let p = server(None).await;
        let e = probe(&http(p), &rt, &"f".into(), &"t".into())
            .await
            .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
    }
}
