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

/// CPU time and memory read straight from a task's cgroup files (cgroup v2
/// or v1): what the process runtime reports for tasks it confined, and
/// what the Docker runtime reads instead of asking the engine.
pub mod cgroup_usage {
    use std::path::{Path, PathBuf};

    /// What a task's cgroup says.
    #[derive(Debug, Clone, Copy, PartialEq, Default)]
    pub struct Sample {
        /// CPU time of every process the cgroup ever held (v2 `cpu.stat`
        /// `usage_usec`, v1 `cpuacct.usage`); `None`: no such file.
        pub cpu_seconds: Option<f64>,
        /// Memory charged to the cgroup, page cache included (v2
        /// `memory.current`, v1 `memory.usage_in_bytes`).
        pub memory_usage: Option<u64>,
        /// `memory_usage` less the inactive file cache (see [`working_set`]).
        pub working_set: Option<u64>,
    }

    /// The value of `key` in a flat-keyed cgroup file (`memory.stat`,
    /// `cpu.stat`: one `key value` per line).
    pub fn stat_value(text: &str, key: &str) -> Option<u64> {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// The inactive file cache in a `memory.stat` (or Docker's copy of it):
    /// cgroup v1's hierarchical `total_inactive_file` where present, else
    /// `inactive_file` (cgroup v2, or a v1 cgroup without children).
    pub fn inactive_file(lookup: impl Fn(&str) -> Option<u64>) -> Option<u64> {
        lookup("total_inactive_file").or_else(|| lookup("inactive_file"))
    }

    /// The working set: memory in use less the inactive file cache, which
    /// the kernel reclaims first under pressure (what `docker stats`,
    /// cAdvisor and the kubelet report). Never below zero.
    pub fn working_set(usage: u64, inactive_file: Option<u64>) -> u64 {
        usage.saturating_sub(inactive_file.unwrap_or(0))
    }

    fn read(dir: &Path, file: &str) -> Option<String> {
        std::fs::read_to_string(dir.join(file)).ok()
    }

    fn read_u64(dir: &Path, file: &str) -> Option<u64> {
        read(dir, file)?.trim().parse().ok()
    }

    /// Reads the cgroup directories of one task (v2: its one directory;
    /// v1: one per controller, in any order). Each figure comes from the
    /// first directory that has it.
    pub fn read_dirs(dirs: &[PathBuf]) -> Sample {
        let mut s = Sample::default();
        for d in dirs {
            if s.cpu_seconds.is_none() {
                s.cpu_seconds = read(d, "cpu.stat")
                    .and_then(|t| stat_value(&t, "usage_usec"))
                    .map(|us| us as f64 / 1e6)
                    .or_else(|| read_u64(d, "cpuacct.usage").map(|ns| ns as f64 / 1e9));
            }
            if s.memory_usage.is_none() {
                let usage =
                    read_u64(d, "memory.current").or_else(|| read_u64(d, "memory.usage_in_bytes"));
                if let Some(usage) = usage {
                    let stat = read(d, "memory.stat").unwrap_or_default();
                    let inactive = inactive_file(|k| stat_value(&stat, k));
                    s.memory_usage = Some(usage);
                    s.working_set = Some(working_set(usage, inactive));
                }
            }
        }
        s
    }

    /// The cgroup directories of process `pid`, from `/proc/<pid>/cgroup`
    /// (`cgroup` is that file's text): the unified (v2) directory, or the
    /// v1 `memory` and `cpuacct` ones, under `root` (`/sys/fs/cgroup`).
    /// Only directories that exist are returned.
    pub fn dirs_of(cgroup: &str, root: &Path) -> Vec<PathBuf> {
        let mut v1 = Vec::new();
        let mut v2 = None;
        for line in cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            if rel.split('/').any(|c| c == "..") {
                continue;
            }
            if controllers.is_empty() {
                // The unified hierarchy: at the root on a pure v2 host,
                // under `unified/` on a hybrid one.
                v2 = [root.to_path_buf(), root.join("unified")]
                    .into_iter()
                    .filter(|r| r.join("cgroup.controllers").exists())
                    .map(|r| r.join(rel))
                    .find(|d| d.is_dir());
            } else if controllers
                .split(',')
                .any(|c| c == "memory" || c == "cpuacct")
            {
                let d = root.join(controllers).join(rel);
                if d.is_dir() {
                    v1.push(d);
                }
            }
        }
        // A hybrid host accounts memory in v1 (its unified tree has no
        // controllers); v2 only where v1 has no memory controller.
        let v1_memory = v1.iter().any(|d| d.join("memory.usage_in_bytes").exists());
        match v2 {
            Some(d) if !v1_memory && d.join("memory.current").exists() => vec![d],
            _ => v1,
        }
    }
}

#[cfg(test)]
mod cgroup_usage_tests {
    use super::cgroup_usage::*;
    use std::path::Path;

    fn temp() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("agora-cg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }

    #[test]
    fn v2_working_set_is_memory_current_less_inactive_file() {
        let d = temp();
        write(&d, "memory.current", "104857600\n");
        write(
            &d,
            "memory.stat",
            "anon 52428800\nfile 52428800\nactive_file 10485760\ninactive_file 41943040\n",
        );
        write(&d, "cpu.stat", "usage_usec 2500000\nuser_usec 2000000\n");
        let s = read_dirs(std::slice::from_ref(&d));
        assert_eq!(s.memory_usage, Some(100 << 20));
        assert_eq!(s.working_set, Some(60 << 20));
        assert_eq!(s.cpu_seconds, Some(2.5));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn v1_uses_the_hierarchical_inactive_file_and_cpuacct() {
        let root = temp();
        let (mem, cpu) = (root.join("memory"), root.join("cpuacct"));
        write(&mem, "memory.usage_in_bytes", "8000\n");
        // `inactive_file` is this cgroup's own; `total_` counts children.
        write(
            &mem,
            "memory.stat",
            "cache 6000\nrss 2000\ninactive_file 1000\ntotal_inactive_file 5000\n",
        );
        write(&cpu, "cpuacct.usage", "1500000000\n");
        let s = read_dirs(&[cpu.clone(), mem.clone()]);
        assert_eq!(s.memory_usage, Some(8000));
        assert_eq!(s.working_set, Some(3000));
        assert_eq!(s.cpu_seconds, Some(1.5));
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn the_working_set_never_goes_below_zero_and_missing_files_give_none() {
        assert_eq!(working_set(100, Some(300)), 0);
        assert_eq!(working_set(100, None), 100);
        let d = temp();
        assert_eq!(read_dirs(std::slice::from_ref(&d)), Sample::default());
        write(&d, "memory.current", "garbage");
        assert_eq!(read_dirs(std::slice::from_ref(&d)).memory_usage, None);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn dirs_come_from_the_processes_cgroup_file() {
        // A hybrid host (v1 controllers, an empty unified tree), as Docker
        // with the cgroupfs driver lays it out.
        let root = temp();
        let id = "abc123";
        write(
            &root.join("memory/docker").join(id),
            "memory.usage_in_bytes",
            "1",
        );
        write(
            &root.join("cpu,cpuacct/docker").join(id),
            "cpuacct.usage",
            "1",
        );
        write(&root.join("unified"), "cgroup.controllers", "");
        std::fs::create_dir_all(root.join("unified/docker").join(id)).unwrap();
        let text = format!(
            "12:pids:/docker/{id}\n4:memory:/docker/{id}\n2:cpu,cpuacct:/docker/{id}\n0::/docker/{id}\n"
        );
        let mut dirs = dirs_of(&text, &root);
        dirs.sort();
        assert_eq!(
            dirs,
            vec![
                root.join("cpu,cpuacct/docker").join(id),
                root.join("memory/docker").join(id)
            ]
        );
        // A pure v2 host (systemd driver).
        let v2 = temp();
        write(&v2, "cgroup.controllers", "cpu memory");
        let scope = v2.join(format!("system.slice/docker-{id}.scope"));
        write(&scope, "memory.current", "1");
        assert_eq!(
            dirs_of(&format!("0::/system.slice/docker-{id}.scope\n"), &v2),
            vec![scope]
        );
        // Nothing that escapes the root, nothing that does not exist.
        assert!(dirs_of("0::/../../etc\n4:memory:/../x\n", &v2).is_empty());
        assert!(dirs_of("0::/nope\n", &v2).is_empty());
        std::fs::remove_dir_all(&root).ok();
        std::fs::remove_dir_all(&v2).ok();
    }
}
