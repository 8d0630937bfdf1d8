//! The container runtime seam. The agent drives tasks only through
//! [`ContainerRuntime`]; runtimes report state changes as [`RuntimeEvent`]s.
//! Implementations: [`crate::hollow::HollowRuntime`] (no containers, for tests
//! and benchmarks); Docker and process runtimes plug in the same way.

use agora_core::info::TaskInfo;
use agora_core::{FrameworkId, TaskId, TaskState};
use agora_proto::pb;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A state change of a task, produced by a runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeEvent {
    pub framework_id: FrameworkId,
    pub task_id: TaskId,
    pub state: TaskState,
    pub message: String,
    pub reason: String,
    pub exit_code: Option<i32>,
    /// A health check result (RUNNING updates only).
    pub healthy: Option<bool>,
    /// Which of the task's health checks `healthy` comes from.
    pub check: Option<usize>,
    /// A readiness check passed (RUNNING updates only).
    pub ready: Option<bool>,
}

impl RuntimeEvent {
    pub fn new(framework_id: &FrameworkId, task_id: &TaskId, state: TaskState) -> Self {
        RuntimeEvent {
            framework_id: framework_id.clone(),
            task_id: task_id.clone(),
            state,
            message: String::new(),
            reason: String::new(),
            exit_code: None,
            healthy: None,
            check: None,
            ready: None,
        }
    }

    pub fn ready(mut self) -> Self {
        self.ready = Some(true);
        self
    }

    /// The verdict of health check number `check` of the task.
    pub fn healthy(mut self, check: usize, h: bool) -> Self {
        self.healthy = Some(h);
        self.check = Some(check);
        self
    }

    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.message = m.into();
        self
    }

    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = r.into();
        self
    }

    pub fn exit_code(mut self, c: i32) -> Self {
        self.exit_code = Some(c);
        self
    }
}

/// Where runtimes send events. Unbounded: events are few per task and the
/// agent drains them continuously.
pub type EventSink = mpsc::UnboundedSender<RuntimeEvent>;

/// What a runtime needs to start a task: the task as the agent validated
/// it (ids well-formed, durations finite, ports in range), and its secrets
/// as resolved at launch (`Debug` shows no value; empty after a recovery:
/// a live task keeps what it was given).
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub framework_id: FrameworkId,
    pub task: TaskInfo,
    pub secrets: Arc<crate::secrets::TaskSecrets>,
}

impl LaunchSpec {
    /// A task without secrets.
    pub fn new(framework_id: FrameworkId, task: TaskInfo) -> LaunchSpec {
        LaunchSpec {
            framework_id,
            task,
            secrets: Arc::default(),
        }
    }

    pub fn task_id(&self) -> TaskId {
        self.task.id.clone()
    }
}

/// What [`ContainerRuntime::recover`] answers: the tasks it cannot find.
pub type RecoverResult = Result<Vec<(FrameworkId, TaskId)>, RecoverError>;

/// Recovery could not look at the runtime's tasks.
#[derive(Debug, thiserror::Error)]
#[error("the {runtime} runtime cannot recover its tasks: {message}")]
pub struct RecoverError {
    pub runtime: &'static str,
    pub message: String,
}

/// What a fail point makes the runtime do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailAction {
    /// Go on as usual.
    Pass,
    /// Stop here as if the agent had been killed (`kill -9`): the runtime's
    /// work for this call ends silently, leaving what exists as it is.
    Crash,
    /// Fail here with an injected error (a broken stream, an engine that
    /// does not answer).
    Error,
}

/// Fail points for fault tests, in the spirit of TiKV's: named places in a
/// runtime (`docker.after_create`, `docker.wait`, …) where a test decides
/// what happens. Empty (every point passes) unless a test sets it.
#[derive(Clone, Default)]
pub struct FailPoints(Option<Arc<FailFn>>);

type FailFn = dyn Fn(&str) -> FailAction + Send + Sync;

impl FailPoints {
    pub fn new(f: impl Fn(&str) -> FailAction + Send + Sync + 'static) -> Self {
        FailPoints(Some(Arc::new(f)))
    }

    /// What to do at point `name`.
    pub fn at(&self, name: &str) -> FailAction {
        match &self.0 {
            Some(f) => f(name),
            None => FailAction::Pass,
        }
    }
}

impl std::fmt::Debug for FailPoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "FailPoints(set)"
        } else {
            "FailPoints(none)"
        })
    }
}

/// A stream of log bytes (stdout and stderr interleaved as produced).
pub type LogStream = Pin<Box<dyn futures::Stream<Item = Result<Vec<u8>, String>> + Send>>;

/// Runs tasks. Calls must not block; long work goes in spawned tasks that
/// report through the [`EventSink`] given at construction.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// A short name shown in logs and `/state` ("hollow", "docker", "process").
    fn name(&self) -> &'static str;
    /// Starts a task; must eventually report RUNNING or a terminal state.
    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, ()>;
    /// Stops a task: polite signal, then force after `grace`; reports KILLED.
    fn kill(
        &self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        grace: Duration,
    ) -> BoxFuture<'_, ()>;

    /// After an agent restart: re-attach to these tasks (known from the
    /// checkpoint). Tasks still running stay as they are; tasks that ended
    /// while the agent was down are reported through the sink. Returns the
    /// tasks the runtime cannot find at all (the agent reports them
    /// terminal). A task found alive is reported RUNNING again (the agent
    /// drops the duplicate if it knew), so a task checkpointed while it was
    /// still STAGING or STARTING does not stay there. Anything the runtime
    /// finds that is not listed is an orphan and is removed. An error means
    /// the runtime could not tell (its engine does not answer): the agent
    /// stops rather than report live tasks gone. By default nothing
    /// survives a restart.
    fn recover(&self, tasks: Vec<LaunchSpec>) -> BoxFuture<'_, RecoverResult> {
        Box::pin(async move {
            Ok(tasks
                .iter()
                .map(|t| (t.framework_id.clone(), t.task_id()))
                .collect())
        })
    }

    /// Stops and removes every task of this agent, whoever launched it
    /// (`agora dev` on exit). Returns how many were stopped.
    fn stop_all(&self) -> BoxFuture<'_, usize> {
        Box::pin(async { 0 })
    }

    /// The task's terminal update was acknowledged: release what is left of
    /// it (e.g. remove the exited container).
    fn cleanup(&self, _framework_id: &FrameworkId, _task_id: &TaskId) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// The task's output; with `follow`, keeps streaming until the task ends.
    fn logs(&self, _framework_id: &FrameworkId, task_id: &TaskId, _follow: bool) -> LogStream {
        let msg = format!(
            "the {} runtime keeps no logs for task {task_id}",
            self.name()
        );
        Box::pin(futures::stream::once(async move { Err(msg) }))
    }

    /// Runs a health-check command inside the task (exit status 0 = healthy).
    /// By default, on the agent's host with `sh -c`.
    fn exec_check(
        &self,
        _framework_id: &FrameworkId,
        _task_id: &TaskId,
        command: String,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<i32, String>> {
        Box::pin(async move {
            let child = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&command)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status();
            match tokio::time::timeout(timeout, child).await {
                Ok(Ok(s)) => Ok(s.code().unwrap_or(-1)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("timed out after {timeout:?}")),
            }
        })
    }

    /// Where a TCP or HTTP check of the task's host port `port` connects.
    /// By default the host's loopback; a runtime whose tasks sit behind a
    /// port forwarder that accepts connections by itself (Docker's userland
    /// proxy in bridge mode) names the task's own address instead.
    fn check_addr(
        &self,
        _framework_id: &FrameworkId,
        _task_id: &TaskId,
        port: u16,
    ) -> BoxFuture<'_, std::net::SocketAddr> {
        Box::pin(async move { std::net::SocketAddr::from(([127, 0, 0, 1], port)) })
    }

    /// CPU time and memory of live tasks.
    fn usage(&self) -> BoxFuture<'_, Vec<pb::TaskUsage>> {
        Box::pin(async { Vec::new() })
    }
}

/// How a task that exited with `code` ended — the one rule every runtime
/// uses: killed on request → KILLED; over its memory limit (`oom` carries the
/// message) → FAILED with the OOM reason; 0 → FINISHED; else FAILED.
pub fn exit_event(
    framework_id: &FrameworkId,
    task_id: &TaskId,
    code: i32,
    killing: bool,
    oom: Option<String>,
) -> RuntimeEvent {
    let ev = |s| RuntimeEvent::new(framework_id, task_id, s).exit_code(code);
    if killing {
        ev(TaskState::Killed).message("killed on request")
    } else if let Some(m) = oom {
        ev(TaskState::Failed).reason(REASON_OOM).message(m)
    } else if code == 0 {
        ev(TaskState::Finished)
    } else {
        ev(TaskState::Failed).message(format!("exited with code {code}"))
    }
}

/// Reason carried by updates of tasks whose container vanished while the
/// agent was down.
pub const REASON_CONTAINER_GONE: &str = "REASON_CONTAINER_GONE";
/// Reason for a task whose description the agent refused (Mesos:
/// `REASON_TASK_INVALID`); the message names the field.
pub const REASON_TASK_INVALID: &str = "REASON_TASK_INVALID";
/// Reason for a task killed by the kernel's OOM killer.
pub const REASON_OOM: &str = "REASON_CONTAINER_LIMITATION_MEMORY";
