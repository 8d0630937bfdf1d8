//! The process runtime: a task's command runs as a child process in its own
//! process group, with its environment, in a sandbox directory under the
//! agent's work dir (`sandboxes/<framework>/<task>/`, holding `stdout`,
//! `stderr` and `pid`). CPU and memory limits are applied through cgroups
//! (v2, or v1 `cpu` and `memory` controllers) where the host lets the agent
//! create them; where it does not, the task's RUNNING update says so.
//!
//! Kill: SIGTERM to the process group, SIGKILL after the grace period.
//! Recovery after an agent restart: the `pid` file (pid + start time, so a
//! reused pid is not mistaken for the task) tells whether the process still
//! runs; it is then watched by polling. A process that ended while the agent
//! was down is reported FAILED with its exit status unknown.

use crate::runtime::{
    BoxFuture, ContainerRuntime, EventSink, LaunchSpec, LogStream, REASON_OOM, RuntimeEvent,
    exit_event,
};
use agora_core::{FrameworkId, Resources, TaskId, TaskState};
use agora_proto::pb;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

mod logs;

type Key = (FrameworkId, TaskId);

/// How long a finished task's sandbox (and its logs) is kept.
pub const SANDBOX_GC_DELAY: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    sink: EventSink,
    root: PathBuf,
    /// How long a finished task's sandbox is kept.
    gc_delay: Duration,
    cgroups: Cgroups,
    procs: Mutex<HashMap<Key, Proc>>,
}

#[derive(Clone)]
struct Proc {
    pid: i32,
    killing: bool,
    cgroup: Option<Vec<PathBuf>>,
}

/// Where the agent may create cgroups.
#[derive(Clone, Debug)]
enum Cgroups {
    V2(PathBuf),
    V1 { cpu: PathBuf, memory: PathBuf },
    None(String),
}

fn detect_cgroups() -> Cgroups {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        let dir = base.join("agora");
        return match std::fs::create_dir_all(&dir) {
            Ok(()) => {
                // Delegate cpu and memory to children of our directory.
                let _ = std::fs::write(base.join("cgroup.subtree_control"), "+cpu +memory");
                let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory");
                Cgroups::V2(dir)
            }
            Err(e) => Cgroups::None(format!("cannot create {}: {e}", dir.display())),
        };
    }
    let cpu = ["cpu,cpuacct", "cpu"]
        .iter()
        .map(|d| base.join(d))
        .find(|p| p.exists());
    let memory = base.join("memory");
    match cpu {
        Some(cpu) if memory.exists() => {
            let (c, m) = (cpu.join("agora"), memory.join("agora"));
            match std::fs::create_dir_all(&c).and_then(|_| std::fs::create_dir_all(&m)) {
                Ok(()) => Cgroups::V1 { cpu: c, memory: m },
                Err(e) => Cgroups::None(format!(
                    "cannot create cgroups under {}: {e}",
                    base.display()
                )),
            }
        }
        _ => Cgroups::None("no cgroup cpu/memory controllers are mounted".into()),
    }
}

/// Creates the task's cgroup(s) with its limits. The task's first process
/// moves itself in before it execs the command (see `start`), so nothing it
/// forks escapes the limits.
fn prepare_cgroup(cg: &Cgroups, name: &str, r: &Resources) -> Result<Vec<PathBuf>, String> {
    let quota = (r.cpus_milli * 100).max(1000); // µs per 100 ms period
    let mem = r.mem_mib << 20;
    let w = |p: &Path, f: &str, v: String| {
        std::fs::write(p.join(f), v).map_err(|e| format!("{}: {e}", p.join(f).display()))
    };
    match cg {
        Cgroups::None(why) => Err(why.clone()),
        Cgroups::V2(root) => {
            let d = root.join(name);
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            if r.cpus_milli > 0 {
                w(&d, "cpu.max", format!("{quota} 100000"))?;
            }
            if mem > 0 {
                w(&d, "memory.max", mem.to_string())?;
                let _ = w(&d, "memory.swap.max", "0".into());
            }
            Ok(vec![d])
        }
        Cgroups::V1 { cpu, memory } => {
            let (c, m) = (cpu.join(name), memory.join(name));
            std::fs::create_dir_all(&c).map_err(|e| format!("{}: {e}", c.display()))?;
            std::fs::create_dir_all(&m).map_err(|e| format!("{}: {e}", m.display()))?;
            if r.cpus_milli > 0 {
                w(&c, "cpu.cfs_period_us", "100000".into())?;
                w(&c, "cpu.cfs_quota_us", quota.to_string())?;
                w(
                    &c,
                    "cpu.shares",
                    (r.cpus_milli * 1024 / 1000).max(2).to_string(),
                )?;
            }
            if mem > 0 {
                w(&m, "memory.limit_in_bytes", mem.to_string())?;
                let _ = w(&m, "memory.memsw.limit_in_bytes", mem.to_string());
            }
            Ok(vec![c, m])
        }
    }
}

/// Whether the kernel OOM-killed something in these cgroups.
fn oom_killed(cgroup: &Option<Vec<PathBuf>>) -> bool {
    let Some(dirs) = cgroup else { return false };
    dirs.iter().any(|d| {
        let events = std::fs::read_to_string(d.join("memory.events")).unwrap_or_default();
        let control = std::fs::read_to_string(d.join("memory.oom_control")).unwrap_or_default();
        events.lines().chain(control.lines()).any(|l| {
            l.starts_with("oom_kill ") && l.split_whitespace().nth(1).is_some_and(|n| n != "0")
        })
    })
}

fn remove_cgroups(cgroup: &Option<Vec<PathBuf>>) {
    if let Some(dirs) = cgroup {
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Field 22 of /proc/<pid>/stat: start time in clock ticks since boot.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// (cpu seconds, rss bytes) of a process, from /proc.
fn proc_usage(pid: i32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    Some((ticks as f64 / 100.0, rss_pages * 4096))
}

/// A readable cgroup name prefix (made unique by a random suffix; the
/// sandbox, not this, is what identifies the task).
fn cgroup_prefix(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

impl ProcessRuntime {
    /// Sandboxes go under `work_dir/sandboxes`.
    pub fn new(sink: EventSink, work_dir: &Path) -> Self {
        let cgroups = detect_cgroups();
        if let Cgroups::None(why) = &cgroups {
            tracing::warn!(%why, "process runtime: CPU and memory limits cannot be enforced on this host");
        }
        ProcessRuntime {
            inner: Arc::new(Inner {
                sink,
                root: work_dir.join("sandboxes"),
                gc_delay: SANDBOX_GC_DELAY,
                cgroups,
                procs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Keeps a finished task's sandbox (and its logs) this long after its
    /// terminal update is acknowledged (default [`SANDBOX_GC_DELAY`]).
    pub fn with_gc_delay(self, d: Duration) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.gc_delay = d;
                ProcessRuntime {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => ProcessRuntime { inner },
        }
    }

    fn emit(&self, ev: RuntimeEvent) {
        let _ = self.inner.sink.send(ev);
    }

    /// The task's sandbox: one directory per (framework, task), never shared
    /// and never outside the root (see [`crate::sandbox`]).
    fn sandbox(&self, key: &Key) -> PathBuf {
        crate::sandbox::dir(&self.inner.root, key.0.as_str(), key.1.as_str())
    }

    fn get(&self, key: &Key) -> Option<Proc> {
        self.inner
            .procs
            .lock()
            .ok()
            .and_then(|m| m.get(key).cloned())
    }

    fn start(&self, spec: &LaunchSpec) -> Result<(tokio::process::Child, String), String> {
        let key = (spec.framework_id.clone(), spec.task_id());
        let t = &spec.task;
        let r = &t.resources;
        let command = t.command.clone().unwrap_or_default();
        if command.value.is_empty() {
            return Err("the task has no command; the process runtime runs commands".into());
        }
        let sandbox = self.sandbox(&key);
        std::fs::create_dir_all(&sandbox)
            .map_err(|e| format!("cannot create sandbox {}: {e}", sandbox.display()))?;
        let stdout = std::fs::File::create(sandbox.join("stdout")).map_err(|e| e.to_string())?;
        let stderr = std::fs::File::create(sandbox.join("stderr")).map_err(|e| e.to_string())?;
        let name = format!(
            "{}-{}",
            cgroup_prefix(&key.1.0),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let (cgroup, note) = match prepare_cgroup(&self.inner.cgroups, &name, r) {
            Ok(dirs) => (
                Some(dirs),
                format!(
                    "limits {} cpu, {} MiB enforced by cgroups",
                    r.cpus(),
                    r.mem_mib
                ),
            ),
            Err(why) => (None, format!("CPU and memory limits NOT enforced: {why}")),
        };
        // argv of the task: a shell command, or a program with arguments.
        let argv: Vec<String> = if command.shell || command.args.is_empty() {
            vec!["/bin/sh".into(), "-c".into(), command.value.clone()]
        } else {
            std::iter::once(command.value.clone())
                .chain(command.args.iter().cloned())
                .collect()
        };
        let mut cmd = match &cgroup {
            // Join the cgroups first, then exec the task: no fork escapes.
            Some(dirs) => {
                let joins: String = dirs
                    .iter()
                    .map(|d| {
                        format!(
                            "echo $$ > '{}' || exit 125; ",
                            d.join("cgroup.procs").display()
                        )
                    })
                    .collect();
                let mut c = tokio::process::Command::new("/bin/sh");
                c.arg("-c")
                    .arg(format!("{joins}exec \"$@\""))
                    .arg("agora-task")
                    .args(&argv);
                c
            }
            None => {
                let mut c = tokio::process::Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        let ports: Vec<u32> = r
            .ports
            .ranges()
            .iter()
            .flat_map(|(b, e)| *b..=*e)
            .take(100)
            .collect();
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            )
            .env("HOME", &sandbox)
            .env("AGORA_TASK_ID", t.id.as_str())
            .env("AGORA_FRAMEWORK_ID", &spec.framework_id.0)
            .env("AGORA_SANDBOX", &sandbox);
        for (i, p) in ports.iter().enumerate() {
            cmd.env(format!("PORT{i}"), p.to_string());
        }
        if let Some(p) = ports.first() {
            cmd.env("PORT", p.to_string());
        }
        for (name, value) in &command.env {
            cmd.env(name, value);
        }
        cmd.current_dir(&sandbox)
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", command.value))?;
        let pid = child
            .id()
            .map(|p| p as i32)
            .ok_or("the process exited before it could be tracked")?;
        let _ = std::fs::write(
            sandbox.join("pid"),
            format!("{pid} {}", start_time(pid).unwrap_or(0)),
        );
        if let Some(dirs) = &cgroup {
            let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            let _ = std::fs::write(sandbox.join("cgroup"), list.join("\n"));
        }
        let note = format!("pid {pid}; {note}");
        if let Ok(mut m) = self.inner.procs.lock() {
            m.insert(
                key,
                Proc {
                    pid,
                    killing: false,
                    cgroup,
                },
            );
        }
        Ok((child, note))
    }

    fn finish(&self, key: &Key, status: Option<std::process::ExitStatus>) {
        let p = self.get(key);
        let killing = p.as_ref().is_some_and(|p| p.killing);
        let cgroup = p.as_ref().and_then(|p| p.cgroup.clone());
        let oom = oom_killed(&cgroup);
        remove_cgroups(&cgroup);
        let (fw, tid) = key;
        let ev = match status {
            None if oom => RuntimeEvent::new(fw, tid, TaskState::Failed)
                .reason(REASON_OOM)
                .message("OOM: the process exceeded its memory limit"),
            None => RuntimeEvent::new(fw, tid, TaskState::Failed)
                .message("the process ended while the agent was down; its exit status is unknown"),
            Some(s) => {
                let code = s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
                let oom = oom.then(|| "OOM: the process exceeded its memory limit".to_string());
                exit_event(fw, tid, code, killing, oom)
            }
        };
        self.emit(ev);
    }

    /// The kernel OOM-kills one process of the group; the task as a whole
    /// is over its limit, so the whole group goes (as a container would).
    fn watch_oom(&self, key: Key) {
        let me = self.clone();
        let span = tracing::Span::current();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let Some(p) = me.get(&key) else { return };
                if p.cgroup.is_none() || start_time(p.pid).is_none() {
                    return;
                }
                if oom_killed(&p.cgroup) {
                    tracing::warn!(task_id = %key.1, "memory limit exceeded; killing the task's processes");
                    let _ = killpg(Pid::from_raw(p.pid), Signal::SIGKILL);
                    return;
                }
            }
        }.instrument(span));
    }

    /// Watches a process that is not our child (after a restart) by polling.
    fn poll_until_gone(&self, key: Key, pid: i32, started: u64) {
        let me = self.clone();
        let span = tracing::info_span!("process", framework_id = %key.0, task_id = %key.1, pid);
        tokio::spawn(
            async move {
                while start_time(pid) == Some(started) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                me.finish(&key, None);
            }
            .instrument(span),
        );
    }
}

impl ContainerRuntime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let fw = spec.framework_id.clone();
            let tid = spec.task_id();
            self.emit(RuntimeEvent::new(&fw, &tid, TaskState::Starting));
            match self.start(&spec) {
                Err(msg) => self.emit(RuntimeEvent::new(&fw, &tid, TaskState::Failed).message(msg)),
                Ok((mut child, note)) => {
                    self.emit(RuntimeEvent::new(&fw, &tid, TaskState::Running).message(note));
                    self.watch_oom((fw.clone(), tid.clone()));
                    let me = self.clone();
                    tokio::spawn(
                        async move {
                            let status = child.wait().await.ok();
                            me.finish(&(fw, tid), status);
                        }
                        .instrument(tracing::Span::current()),
                    );
                }
            }
        })
    }

    fn kill(&self, fw: &FrameworkId, task: &TaskId, grace: Duration) -> BoxFuture<'_, ()> {
        let key = (fw.clone(), task.clone());
        Box::pin(async move {
            let pid = match self.inner.procs.lock() {
                Ok(mut m) => m.get_mut(&key).map(|p| {
                    p.killing = true;
                    p.pid
                }),
                Err(_) => None,
            };
            let Some(pid) = pid else { return };
            let pg = Pid::from_raw(pid);
            if killpg(pg, Signal::SIGTERM).is_err() {
                return; // already gone
            }
            let started = start_time(pid);
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                if started.is_some() && start_time(pid) == started {
                    let _ = killpg(pg, Signal::SIGKILL);
                }
            });
        })
    }

    fn recover(&self, tasks: Vec<LaunchSpec>) -> BoxFuture<'_, Vec<(FrameworkId, TaskId)>> {
        Box::pin(async move {
            let mut gone = Vec::new();
            for spec in tasks {
                let key = (spec.framework_id.clone(), spec.task_id());
                let sandbox = self.sandbox(&key);
                let pidfile = std::fs::read_to_string(sandbox.join("pid")).unwrap_or_default();
                let mut it = pidfile.split_whitespace().map(|v| v.parse::<i64>().ok());
                let (Some(Some(pid)), Some(Some(started))) = (it.next(), it.next()) else {
                    gone.push(key);
                    continue;
                };
                let (pid, started) = (pid as i32, started as u64);
                // Its cgroups, so OOM kills are still seen and cleaned up.
                let cgroup = std::fs::read_to_string(sandbox.join("cgroup"))
                    .ok()
                    .map(|s| s.lines().map(PathBuf::from).collect::<Vec<_>>())
                    .filter(|v| !v.is_empty());
                if let Ok(mut m) = self.inner.procs.lock() {
                    m.insert(
                        key.clone(),
                        Proc {
                            pid,
                            killing: false,
                            cgroup,
                        },
                    );
                }
                if start_time(pid) == Some(started) {
                    tracing::info!(task_id = %key.1, pid, "re-attached to process");
                    self.watch_oom(key.clone());
                    self.poll_until_gone(key, pid, started);
                } else {
                    self.finish(&key, None);
                }
            }
            gone
        })
    }

    fn logs(&self, fw: &FrameworkId, task: &TaskId, follow: bool) -> LogStream {
        let key = (fw.clone(), task.clone());
        let sandbox = self.sandbox(&key);
        let me = self.clone();
        logs::stream(sandbox, follow, move || {
            me.get(&key).is_some_and(|p| start_time(p.pid).is_some())
        })
    }

    fn usage(&self) -> BoxFuture<'_, Vec<pb::TaskUsage>> {
        Box::pin(async move {
            let procs: Vec<(Key, i32)> = self
                .inner
                .procs
                .lock()
                .map(|m| m.iter().map(|(k, p)| (k.clone(), p.pid)).collect())
                .unwrap_or_default();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            procs
                .into_iter()
                .filter_map(|(k, pid)| {
                    let (cpu, rss) = proc_usage(pid)?;
                    Some(pb::TaskUsage {
                        framework_id: k.0.0,
                        task_id: k.1.0,
                        cpu_seconds: cpu,
                        mem_rss_bytes: rss,
                        timestamp: now,
                    })
                })
                .collect()
        })
    }

    fn cleanup(&self, fw: &FrameworkId, task: &TaskId) -> BoxFuture<'_, ()> {
        let key = (fw.clone(), task.clone());
        let me = self.clone();
        Box::pin(async move {
            if let Ok(mut m) = self.inner.procs.lock() {
                m.remove(&key);
            }
            // The sandbox (and its logs) stays a while for inspection. Its
            // pid file says which run of the task it holds: if the same
            // task id was launched again meanwhile, that run's sandbox stays.
            let dir = me.sandbox(&key);
            let run = std::fs::read(dir.join("pid")).ok();
            let span = tracing::info_span!("cleanup", framework_id = %key.0, task_id = %key.1);
            tokio::spawn(async move {
                tokio::time::sleep(me.inner.gc_delay).await;
                let same_run = std::fs::read(dir.join("pid")).ok() == run;
                if me.get(&key).is_none()
                    && same_run
                    && let Err(e) = crate::sandbox::remove(&me.inner.root, &dir)
                {
                    tracing::debug!(sandbox = %dir.display(), error = %e, "removing the sandbox failed");
                }
            }.instrument(span));
        })
    }
}

#[cfg(test)]
mod tests;
