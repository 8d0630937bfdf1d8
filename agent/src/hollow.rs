//! The hollow runtime: runs no containers. A launched task reports STARTING at
//! once and RUNNING after a configurable delay; like a real runtime, it has
//! nothing to kill before then (a kill while starting is the agent's to
//! remember). Its command decides what
//! happens next (`sleep N` → FINISHED after N s; `exit N` → FINISHED or
//! FAILED with code N; anything else runs until killed), and tests can tell a
//! task to finish, fail or vanish through the [`HollowRuntime`] handle.
//! A hollow task reports no usage unless a test gives it a simulated load
//! ([`HollowRuntime::set_load`]): scale benchmarks of thousands of hollow
//! tasks send no usage reports.

use crate::runtime::{BoxFuture, ContainerRuntime, EventSink, LaunchSpec, RuntimeEvent};
use agora_core::{FrameworkId, TaskId, TaskState};
use agora_proto::pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

#[derive(Clone)]
pub struct HollowRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    sink: EventSink,
    start_delay: Duration,
    /// Live tasks (those that have not reported a terminal state), with
    /// their simulated load if a test set one.
    tasks: Mutex<HashMap<(FrameworkId, TaskId), Option<Load>>>,
}

/// A hollow task's simulated usage: it uses `cpus` cores from `since` on
/// (after `cpu_seconds` before that) and `mem_bytes` of memory.
#[derive(Clone, Copy, Debug)]
struct Load {
    cpus: f64,
    mem_bytes: u64,
    since: tokio::time::Instant,
    cpu_seconds: f64,
}

impl Load {
    fn cpu_seconds_at(&self, now: tokio::time::Instant) -> f64 {
        self.cpu_seconds + self.cpus * now.duration_since(self.since).as_secs_f64()
    }
}

impl HollowRuntime {
    pub fn new(sink: EventSink, start_delay: Duration) -> Self {
        HollowRuntime {
            inner: Arc::new(Inner {
                sink,
                start_delay,
                tasks: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn emit(&self, ev: RuntimeEvent) {
        let _ = self.inner.sink.send(ev);
    }

    /// Ends a live task with `state`; false if it is not live.
    fn end(&self, fw: &FrameworkId, task: &TaskId, ev: RuntimeEvent) -> bool {
        let removed = self
            .inner
            .tasks
            .lock()
            .map(|mut t| t.remove(&(fw.clone(), task.clone())).is_some())
            .unwrap_or(false);
        if removed {
            self.emit(ev);
        }
        removed
    }

    /// The task exits 0.
    pub fn finish(&self, fw: &FrameworkId, task: &TaskId) -> bool {
        self.end(
            fw,
            task,
            RuntimeEvent::new(fw, task, TaskState::Finished).exit_code(0),
        )
    }

    /// The task exits with `code`.
    pub fn fail(&self, fw: &FrameworkId, task: &TaskId, code: i32) -> bool {
        self.end(
            fw,
            task,
            RuntimeEvent::new(fw, task, TaskState::Failed)
                .exit_code(code)
                .message(format!("exited with code {code}")),
        )
    }

    /// The task disappears without any report (as if its container was
    /// removed behind the agent's back).
    pub fn vanish(&self, fw: &FrameworkId, task: &TaskId) -> bool {
        self.inner
            .tasks
            .lock()
            .map(|mut t| t.remove(&(fw.clone(), task.clone())).is_some())
            .unwrap_or(false)
    }

    /// Gives a live task a simulated load from now on: it uses `cpus`
    /// cores (its CPU time grows by that much per second) and `mem_bytes`
    /// of memory, and is reported in [`ContainerRuntime::usage`]. False if
    /// the task is not live. Negative or non-finite `cpus` count as 0.
    pub fn set_load(&self, fw: &FrameworkId, task: &TaskId, cpus: f64, mem_bytes: u64) -> bool {
        let now = tokio::time::Instant::now();
        let cpus = if cpus.is_finite() { cpus.max(0.0) } else { 0.0 };
        let Ok(mut t) = self.inner.tasks.lock() else {
            return false;
        };
        let Some(load) = t.get_mut(&(fw.clone(), task.clone())) else {
            return false;
        };
        let cpu_seconds = load.as_ref().map_or(0.0, |l| l.cpu_seconds_at(now));
        *load = Some(Load {
            cpus,
            mem_bytes,
            since: now,
            cpu_seconds,
        });
        true
    }

    /// The task exists from here on (like a container once started):
    /// before this, there is nothing to kill.
    fn start(&self, fw: &FrameworkId, task: &TaskId) {
        if let Ok(mut t) = self.inner.tasks.lock() {
            t.insert((fw.clone(), task.clone()), None);
        }
        self.emit(RuntimeEvent::new(fw, task, TaskState::Running));
    }

    pub fn live_tasks(&self) -> usize {
        self.inner.tasks.lock().map(|t| t.len()).unwrap_or(0)
    }
}

enum Script {
    Forever,
    Sleep(Duration),
    Exit(i32),
}

/// The longest `sleep` a hollow task honours.
const MAX_SLEEP: Duration = Duration::from_secs(1_000_000);

/// What a hollow task's command asks for. Numbers come from the framework:
/// a sleep that is not a finite, non-negative number of seconds up to
/// [`MAX_SLEEP`], or an exit code that is not an `i32`, runs forever like
/// any other command (never a panic).
fn script(cmd: &str) -> Script {
    let mut parts = cmd.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("sleep"), Some(n)) => n
            .parse::<f64>()
            .ok()
            .and_then(|s| agora_proto::convert::duration("sleep", s, MAX_SLEEP).ok())
            .map_or(Script::Forever, Script::Sleep),
        (Some("exit"), Some(n)) => n.parse::<i32>().map_or(Script::Forever, Script::Exit),
        _ => Script::Forever,
    }
}

impl ContainerRuntime for HollowRuntime {
    fn name(&self) -> &'static str {
        "hollow"
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let fw = spec.framework_id.clone();
            let tid = spec.task_id();
            self.emit(RuntimeEvent::new(&fw, &tid, TaskState::Starting));
            let cmd = spec
                .task
                .command
                .as_ref()
                .map(|c| c.value.clone())
                .unwrap_or_default();
            let script = script(&cmd);
            let delay = self.inner.start_delay;
            if delay.is_zero() && matches!(script, Script::Forever) {
                self.start(&fw, &tid);
                return;
            }
            let me = self.clone();
            let span = tracing::Span::current();
            tokio::spawn(
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    me.start(&fw, &tid);
                    match script {
                        Script::Forever => {}
                        Script::Sleep(d) => {
                            tokio::time::sleep(d).await;
                            me.finish(&fw, &tid);
                        }
                        Script::Exit(0) => {
                            me.finish(&fw, &tid);
                        }
                        Script::Exit(c) => {
                            me.fail(&fw, &tid, c);
                        }
                    }
                }
                .instrument(span),
            );
        })
    }

    fn kill(&self, fw: &FrameworkId, task: &TaskId, _grace: Duration) -> BoxFuture<'_, ()> {
        let (fw, task) = (fw.clone(), task.clone());
        Box::pin(async move {
            self.end(
                &fw,
                &task,
                RuntimeEvent::new(&fw, &task, TaskState::Killed).message("killed on request"),
            );
        })
    }

    /// The simulated load of the live tasks that have one.
    fn usage(&self) -> BoxFuture<'_, Vec<pb::TaskUsage>> {
        let now = tokio::time::Instant::now();
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let v = self
            .inner
            .tasks
            .lock()
            .map(|t| {
                t.iter()
                    .filter_map(|((fw, task), load)| {
                        let l = load.as_ref()?;
                        Some(pb::TaskUsage {
                            framework_id: fw.0.clone(),
                            task_id: task.0.clone(),
                            cpu_seconds: l.cpu_seconds_at(now),
                            mem_rss_bytes: l.mem_bytes,
                            mem_working_set_bytes: l.mem_bytes,
                            timestamp,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Box::pin(async move { v })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_core::info::{CommandInfo, TaskInfo};
    use tokio::sync::mpsc;

    fn spec(cmd: &str) -> LaunchSpec {
        LaunchSpec {
            framework_id: "f".into(),
            task: TaskInfo {
                command: Some(CommandInfo {
                    value: cmd.into(),
                    ..Default::default()
                }),
                ..TaskInfo::new("t".into(), Default::default())
            },
            secrets: Default::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn starts_after_delay_then_finishes_by_script() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let rt = HollowRuntime::new(tx, Duration::from_secs(2));
        rt.launch(spec("sleep 5")).await;
        assert_eq!(rx.recv().await.unwrap().state, TaskState::Starting);
        let t0 = tokio::time::Instant::now();
        assert_eq!(rx.recv().await.unwrap().state, TaskState::Running);
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        let ev = rx.recv().await.unwrap();
        assert_eq!(ev.state, TaskState::Finished);
        assert_eq!(t0.elapsed(), Duration::from_secs(7));
        assert_eq!(rt.live_tasks(), 0);
    }

    #[test]
    fn scripts_with_numbers_out_of_range_run_forever() {
        assert!(
            matches!(script("sleep 1.5"), Script::Sleep(d) if d == Duration::from_millis(1500))
        );
        assert!(matches!(script("exit 3"), Script::Exit(3)));
        for cmd in [
            "sleep NaN",
            "sleep inf",
            "sleep -1",
            "sleep 1e400",
            "sleep 1e300",
            "exit 99999999999",
            "exit 1.5",
            "serve",
        ] {
            assert!(matches!(script(cmd), Script::Forever), "{cmd}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn exit_code_fails_and_kill_reports_killed() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let rt = HollowRuntime::new(tx, Duration::ZERO);
        rt.launch(spec("exit 3")).await;
        assert_eq!(rx.recv().await.unwrap().state, TaskState::Starting);
        assert_eq!(rx.recv().await.unwrap().state, TaskState::Running);
        let ev = rx.recv().await.unwrap();
        assert_eq!((ev.state, ev.exit_code), (TaskState::Failed, Some(3)));

        rt.launch(spec("serve")).await;
        rx.recv().await.unwrap();
        assert_eq!(rx.recv().await.unwrap().state, TaskState::Running);
        rt.kill(&"f".into(), &"t".into(), Duration::ZERO).await;
        assert_eq!(rx.recv().await.unwrap().state, TaskState::Killed);
        // A second kill of a dead task reports nothing.
        rt.kill(&"f".into(), &"t".into(), Duration::ZERO).await;
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn only_tasks_given_a_load_report_usage_and_cpu_time_accumulates() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let rt = HollowRuntime::new(tx, Duration::ZERO);
        let (f, t) = (FrameworkId::from("f"), TaskId::from("t"));
        assert!(!rt.set_load(&f, &t, 1.0, 1), "not live yet");
        rt.launch(spec("serve")).await;
        rx.recv().await.unwrap();
        assert!(rt.usage().await.is_empty(), "no load, no usage");
        assert!(rt.set_load(&f, &t, 0.5, 64 << 20));
        tokio::time::advance(Duration::from_secs(4)).await;
        let u = rt.usage().await;
        assert_eq!(u.len(), 1);
        assert_eq!(
            (u[0].framework_id.as_str(), u[0].task_id.as_str()),
            ("f", "t")
        );
        assert!((u[0].cpu_seconds - 2.0).abs() < 1e-6, "{u:?}");
        assert_eq!(u[0].mem_working_set_bytes, 64 << 20);
        // A new load keeps the CPU time used so far.
        assert!(rt.set_load(&f, &t, 2.0, 1 << 20));
        tokio::time::advance(Duration::from_secs(1)).await;
        let u = rt.usage().await;
        assert!((u[0].cpu_seconds - 4.0).abs() < 1e-6, "{u:?}");
        rt.kill(&f, &t, Duration::ZERO).await;
        assert!(rt.usage().await.is_empty(), "a dead task reports nothing");
    }
}
