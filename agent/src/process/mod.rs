//! The process runtime: a task's command runs as a child process in its own
//! process group, with its environment, in a sandbox directory under the
//! agent's work dir (`sandboxes/<framework>/<task>/`, holding `stdout`,
//! `stderr` and `pid`). CPU and memory limits are applied through cgroups
//! (v2, or v1 `cpu` and `memory` controllers) where the host lets the agent
//! create them; where it does not, the task's RUNNING update says so.
//!
//! Start: the child is a small shell that waits for a "go" on its stdin;
//! the agent writes the `pid` file first, then says go, and only then does
//! the shell join the task's cgroup and exec the command. An agent that dies
//! before the pid file is written closes the pipe: the shell exits without
//! running anything, so no task ever runs unrecorded.
//!
//! Kill: SIGTERM to the process group, then SIGKILL to the whole group and
//! everything in the task's cgroup after the grace period. When the leader
//! ends (of the SIGTERM, or by itself), whatever it left behind in its
//! group or cgroup is killed at once, as the kernel does to a container
//! whose PID 1 ends, and the cgroup removed.
//!
//! Recovery after an agent restart: the `pid` file (pid + start time, so a
//! reused pid is not mistaken for the task) tells whether the process still
//! runs; it is then reported RUNNING and watched by polling. A process that
//! ended while the agent was down is reported FAILED with its exit status
//! unknown. Then orphans are swept: every process whose environment names a
//! sandbox of this agent (`AGORA_SANDBOX`) and every cgroup under the
//! agent's own cgroup directory that no recovered task claims is killed.

use crate::runtime::{
    BoxFuture, ContainerRuntime, EventSink, FailAction, LaunchSpec, LogStream, REASON_OOM,
    RecoverResult, RuntimeEvent, exit_event,
};
use agora_core::{FrameworkId, TaskId, TaskState};
use agora_proto::pb;
use cgroup::Cgroups;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

mod cgroup;
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
    /// Fault injection (tests): `process.after_spawn`, `process.after_pid`.
    fail: crate::runtime::FailPoints,
    /// The agent's internal address, given to tasks as `HOST`: they must
    /// bind their ports there (nothing here can make them). Checks connect
    /// there too.
    host_ip: std::net::IpAddr,
}

#[derive(Clone)]
struct Proc {
    pid: i32,
    /// The leader's start time as recorded (0: unknown). Its group is
    /// signalled only while the process with `pid` started then: once the
    /// leader is gone the pid may name an unrelated process group.
    started: u64,
    /// A child of this agent (not re-attached after a restart).
    ours: bool,
    killing: bool,
    cgroup: Option<Vec<PathBuf>>,
}

impl Proc {
    /// The recorded leader still runs (same pid, same start time).
    fn leader_alive(&self) -> bool {
        self.started != 0 && start_time(self.pid) == Some(self.started)
    }

    /// SIGs the task's process group, only while its leader is the one
    /// recorded.
    fn signal_group(&self, sig: Signal) {
        if self.leader_alive() {
            let _ = killpg(Pid::from_raw(self.pid), sig);
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
        let cgroups = cgroup::detect(work_dir);
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
                fail: Default::default(),
                host_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            }),
        }
    }

    fn configure(self, f: impl FnOnce(&mut Inner)) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                f(&mut inner);
                ProcessRuntime {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => ProcessRuntime { inner },
        }
    }

    /// Fault injection for tests (see [`crate::runtime::FailPoints`]).
    pub fn with_fail_points(self, fail: crate::runtime::FailPoints) -> Self {
        self.configure(|i| i.fail = fail)
    }

    /// Keeps a finished task's sandbox (and its logs) this long after its
    /// terminal update is acknowledged (default [`SANDBOX_GC_DELAY`]).
    pub fn with_gc_delay(self, d: Duration) -> Self {
        self.configure(|i| i.gc_delay = d)
    }

    /// The agent's internal address (default 127.0.0.1): tasks get it as
    /// `HOST` and must bind their ports there; TCP and HTTP checks connect
    /// there, as the routers do.
    pub fn with_host_ip(self, ip: std::net::IpAddr) -> Self {
        self.configure(|i| i.host_ip = ip)
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

    /// Starts the task's process. `Ok(None)`: a fail point "killed the
    /// agent" on the way.
    async fn start(
        &self,
        spec: &LaunchSpec,
    ) -> Result<Option<(tokio::process::Child, String)>, String> {
        use tokio::io::AsyncWriteExt;
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
        link_secret_files(&sandbox, &spec.secrets.files)?;
        // A pid file of an earlier run of this task id would be taken for this one.
        let _ = std::fs::remove_file(sandbox.join("pid"));
        let stdout = std::fs::File::create(sandbox.join("stdout")).map_err(|e| e.to_string())?;
        let stderr = std::fs::File::create(sandbox.join("stderr")).map_err(|e| e.to_string())?;
        let name = format!(
            "{}-{}",
            cgroup_prefix(&key.1.0),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let (cgroup, note) = match cgroup::prepare(&self.inner.cgroups, &name, r) {
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
        // Recorded before anything runs in it, so recovery finds it.
        let cgroup_file = match &cgroup {
            Some(dirs) => dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            None => String::new(),
        };
        if let Err(e) = write_synced(&sandbox.join("cgroup"), cgroup_file.as_bytes()) {
            cgroup::remove(cgroup.as_deref().unwrap_or_default());
            return Err(format!(
                "cannot write {}: {e}",
                sandbox.join("cgroup").display()
            ));
        }
        // argv of the task: a shell command, or a program with arguments.
        let argv: Vec<String> = if command.shell || command.args.is_empty() {
            vec!["/bin/sh".into(), "-c".into(), command.value.clone()]
        } else {
            std::iter::once(command.value.clone())
                .chain(command.args.iter().cloned())
                .collect()
        };
        // The wrapper waits for "go" (sent once the pid file is written),
        // joins the cgroups, then execs the task: no fork escapes.
        let joins: String = cgroup
            .iter()
            .flatten()
            .map(|d| {
                format!(
                    "echo $$ > '{}' || exit 125; ",
                    d.join("cgroup.procs").display()
                )
            })
            .collect();
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!(
                "read -r go && [ \"$go\" = go ] || exit 125; {joins}exec \"$@\" < /dev/null"
            ))
            .arg("agora-task")
            .args(&argv);
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
        for (name, value) in &spec.secrets.env {
            use std::os::unix::ffi::OsStrExt;
            cmd.env(name, std::ffi::OsStr::from_bytes(value.expose()));
        }
        // The agent's to give (after the task's own variables, so it wins):
        // where the task must bind its ports to be reachable.
        cmd.env("HOST", self.inner.host_ip.to_string());
        cmd.current_dir(&sandbox)
            .stdin(std::process::Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                cgroup::remove(cgroup.as_deref().unwrap_or_default());
                return Err(format!("cannot start {:?}: {e}", command.value));
            }
        };
        let mut go = child.stdin.take();
        if self.inner.fail.at("process.after_spawn") == FailAction::Crash {
            return Ok(None); // the pipe closes: the wrapper exits, nothing ran
        }
        let Some(pid) = child.id().map(|p| p as i32) else {
            cgroup::remove(cgroup.as_deref().unwrap_or_default());
            return Err("the process exited before it could be tracked".into());
        };
        let started = start_time(pid).unwrap_or(0);
        let recorded = format!("{pid} {started}");
        if let Err(e) = write_synced(&sandbox.join("pid"), recorded.as_bytes()) {
            drop(go); // the wrapper exits without running the task
            let _ = child.wait().await;
            cgroup::remove(cgroup.as_deref().unwrap_or_default());
            return Err(format!(
                "cannot write {}: {e}",
                sandbox.join("pid").display()
            ));
        }
        if let Some(w) = go.as_mut() {
            // A wrapper that is gone already is seen by the watcher.
            let _ = w.write_all(b"go\n").await;
        }
        drop(go);
        if self.inner.fail.at("process.after_pid") == FailAction::Crash {
            return Ok(None);
        }
        let note = format!("pid {pid}; {note}");
        if let Ok(mut m) = self.inner.procs.lock() {
            m.insert(
                key,
                Proc {
                    pid,
                    started,
                    ours: true,
                    killing: false,
                    cgroup,
                },
            );
        }
        Ok(Some((child, note)))
    }

    /// The task's process ended (`status` unknown after a restart): what
    /// it left in its group and cgroup is killed, the cgroup removed, and
    /// the end reported.
    async fn finish(&self, key: &Key, status: Option<std::process::ExitStatus>) {
        let p = self.get(key);
        let killing = p.as_ref().is_some_and(|p| p.killing);
        let cgroup = p
            .as_ref()
            .and_then(|p| p.cgroup.clone())
            .unwrap_or_default();
        let group = p.filter(|p| p.ours).map(|p| p.pid);
        self.finish_with(key, status, killing, cgroup, group).await
    }

    /// [`Self::finish`] for a task whose leader has ended. `group`: the
    /// leader was this agent's child, just reaped, so its pid stays
    /// reserved while its group has members (the kernel does not reuse a
    /// pid in use as a process group id) and the group is killed; a
    /// re-attached leader's pid may name an unrelated group by now, so
    /// its leftovers are found by their sandbox (`AGORA_SANDBOX`) and
    /// cgroup instead.
    async fn finish_with(
        &self,
        key: &Key,
        status: Option<std::process::ExitStatus>,
        killing: bool,
        cgroup: Vec<PathBuf>,
        group: Option<i32>,
    ) {
        let oom = cgroup::oom_killed(&cgroup);
        match group {
            Some(pid) => {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            None => {
                let sandbox = self.sandbox(key);
                for (pid, dir) in processes_under(&self.inner.root) {
                    if dir == sandbox {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
        }
        cgroup::kill_and_remove(&cgroup, KILL_PATIENCE).await;
        let (fw, tid) = key;
        let ev = match status {
            // A process re-attached after a restart is not our child: its
            // status is unknown, but a kill asked for is what ended it.
            None if killing => {
                RuntimeEvent::new(fw, tid, TaskState::Killed).message("killed on request")
            }
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
                let Some(dirs) = &p.cgroup else { return };
                if !p.leader_alive() {
                    return;
                }
                if cgroup::oom_killed(dirs) {
                    tracing::warn!(task_id = %key.1, "memory limit exceeded; killing the task's processes");
                    p.signal_group(Signal::SIGKILL);
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
                me.finish(&key, None).await;
            }
            .instrument(span),
        );
    }

    /// Kills every process of this agent that no live task claims: those
    /// whose environment names a sandbox under this agent's root other than
    /// `keep`'s, and those in a cgroup of this agent other than `keep`'s
    /// (whose cgroups are removed). Returns how many were killed.
    async fn sweep(&self, keep: &HashSet<PathBuf>, keep_cgroups: &HashSet<PathBuf>) -> usize {
        let mut killed = 0;
        for (pid, sandbox) in processes_under(&self.inner.root) {
            if !keep.contains(&sandbox) && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                tracing::warn!(pid, sandbox = %sandbox.display(), "killed an orphan process");
                killed += 1;
            }
        }
        let orphans: Vec<PathBuf> = self
            .inner
            .cgroups
            .children()
            .into_iter()
            .filter(|d| !keep_cgroups.contains(d))
            .collect();
        for d in &orphans {
            let n = cgroup::kill_and_remove(std::slice::from_ref(d), KILL_PATIENCE).await;
            if n > 0 {
                tracing::warn!(cgroup = %d.display(), processes = n, "killed the processes of an orphan cgroup");
            }
            killed += n;
        }
        killed
    }

    /// The task's cgroups as its sandbox records them: only cgroups of
    /// this agent are believed (the sandbox is the task's to write).
    fn recorded_cgroups(&self, sandbox: &Path) -> Option<Vec<PathBuf>> {
        let dirs: Vec<PathBuf> = std::fs::read_to_string(sandbox.join("cgroup"))
            .ok()?
            .lines()
            .map(PathBuf::from)
            .filter(|d| self.inner.cgroups.owns(d))
            .collect();
        (!dirs.is_empty()).then_some(dirs)
    }
}

/// How long killed processes get to disappear before their cgroup is
/// removed anyway (and the removal fails loudly).
const KILL_PATIENCE: Duration = Duration::from_secs(5);

/// Writes a small file and flushes it to disk.
/// The files the agent itself keeps at the top of a task's sandbox.
const SANDBOX_FILES: [&str; 4] = ["stdout", "stderr", "pid", "cgroup"];

/// Each secret file appears at its path under the sandbox as a symlink to
/// the agent's tmpfs file: nothing on disk holds the value.
fn link_secret_files(sandbox: &Path, files: &[crate::secrets::SecretFile]) -> Result<(), String> {
    for f in files {
        let rel = Path::new(f.target.trim_start_matches('/'));
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!(
                "secret file path {:?} must stay inside the sandbox",
                f.target
            ));
        }
        // The sandbox's own files: a link there would be written through
        // (truncating the secret) or removed before the task starts.
        if let Some(top) = rel.components().next().map(|c| c.as_os_str())
            && rel.components().count() == 1
            && SANDBOX_FILES.iter().any(|f| top == *f)
        {
            return Err(format!(
                "secret file path {:?} is one of the sandbox's own files ({}); choose another path",
                f.target,
                SANDBOX_FILES.join(", ")
            ));
        }
        let link = sandbox.join(rel);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&f.host_path, &link)
            .map_err(|e| format!("cannot link secret file {}: {e}", link.display()))?;
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_data()
}

/// Every process whose environment has `AGORA_SANDBOX=<a dir under root>`,
/// with that dir.
fn processes_under(root: &Path) -> Vec<(i32, PathBuf)> {
    let me = std::process::id() as i32;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        for var in env.split(|b| *b == 0) {
            if let Some(v) = var.strip_prefix(b"AGORA_SANDBOX=") {
                let dir = PathBuf::from(String::from_utf8_lossy(v).into_owned());
                if dir.starts_with(root) && dir != root {
                    found.push((pid, dir));
                }
                break;
            }
        }
    }
    found
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
            match self.start(&spec).await {
                Err(msg) => self.emit(RuntimeEvent::new(&fw, &tid, TaskState::Failed).message(msg)),
                Ok(None) => tracing::warn!("fail point: launch stops here as if the agent died"),
                Ok(Some((mut child, note))) => {
                    self.emit(RuntimeEvent::new(&fw, &tid, TaskState::Running).message(note));
                    self.watch_oom((fw.clone(), tid.clone()));
                    let me = self.clone();
                    tokio::spawn(
                        async move {
                            let status = child.wait().await.ok();
                            me.finish(&(fw, tid), status).await;
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
            let p = match self.inner.procs.lock() {
                Ok(mut m) => m.get_mut(&key).map(|p| {
                    p.killing = true;
                    p.clone()
                }),
                Err(_) => None,
            };
            let Some(p) = p else { return };
            // Only while the recorded leader runs: a pid whose process
            // ended may name an unrelated group by now.
            p.signal_group(Signal::SIGTERM);
            // After the grace period the whole group and cgroup go. If the
            // leader left already (a `sh -c "prep; server"` whose server
            // ignores SIGTERM), `finish` killed its group when it did, as
            // the kernel kills a container when its PID 1 ends; its group
            // id is not signalled again (it may name another group by now).
            let span = tracing::Span::current();
            tokio::spawn(
                async move {
                    tokio::time::sleep(grace).await;
                    p.signal_group(Signal::SIGKILL);
                    if let Some(dirs) = &p.cgroup {
                        for d in dirs {
                            for pid in cgroup::procs(d) {
                                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                            }
                        }
                    }
                }
                .instrument(span),
            );
        })
    }

    fn recover(&self, tasks: Vec<LaunchSpec>) -> BoxFuture<'_, RecoverResult> {
        Box::pin(async move {
            let mut gone = Vec::new();
            let mut keep = HashSet::new();
            let mut keep_cgroups = HashSet::new();
            for spec in tasks {
                let key = (spec.framework_id.clone(), spec.task_id());
                let sandbox = self.sandbox(&key);
                let cgroup = self.recorded_cgroups(&sandbox);
                let pidfile = std::fs::read_to_string(sandbox.join("pid")).unwrap_or_default();
                let mut it = pidfile.split_whitespace().map(|v| v.parse::<i64>().ok());
                let (Some(Some(pid)), Some(Some(started))) = (it.next(), it.next()) else {
                    // Never started (its wrapper, if any, got no "go" and
                    // exits): its cgroup, if any, is swept below.
                    gone.push(key);
                    continue;
                };
                let (pid, started) = (pid as i32, started as u64);
                let p = Proc {
                    pid,
                    started,
                    ours: false,
                    killing: false,
                    cgroup: cgroup.clone(),
                };
                if p.leader_alive() {
                    if let Ok(mut m) = self.inner.procs.lock() {
                        m.insert(key.clone(), p);
                    }
                    tracing::info!(task_id = %key.1, pid, "re-attached to process");
                    keep.insert(sandbox);
                    keep_cgroups.extend(cgroup.into_iter().flatten());
                    self.emit(
                        RuntimeEvent::new(&key.0, &key.1, TaskState::Running)
                            .message(format!("pid {pid} (re-attached)")),
                    );
                    self.watch_oom(key.clone());
                    self.poll_until_gone(key, pid, started);
                } else {
                    // Ended while the agent was down: no Proc is kept (a
                    // kill must not signal whatever has the pid now); its
                    // leftovers are killed by sandbox and cgroup.
                    self.finish_with(&key, None, false, cgroup.unwrap_or_default(), None)
                        .await;
                }
            }
            let n = self.sweep(&keep, &keep_cgroups).await;
            if n > 0 {
                tracing::warn!(killed = n, "orphan processes of an earlier run killed");
            }
            Ok(gone)
        })
    }

    fn stop_all(&self) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            let procs: Vec<Proc> = self
                .inner
                .procs
                .lock()
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            for p in &procs {
                p.signal_group(Signal::SIGKILL);
            }
            self.sweep(&HashSet::new(), &HashSet::new()).await
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

    /// The task was told to bind `$HOST`: its checks go there, where the
    /// routers reach it too. That is the `HOST` it was launched with (read
    /// from its environment), which a task recovered by an agent restarted
    /// with another `--internal-address` still binds.
    fn check_addr(
        &self,
        framework_id: &FrameworkId,
        task_id: &TaskId,
        port: u16,
    ) -> BoxFuture<'_, std::net::SocketAddr> {
        let pid = self.inner.procs.lock().ok().and_then(|m| {
            m.get(&(framework_id.clone(), task_id.clone()))
                .map(|p| p.pid)
        });
        let ip = pid.and_then(launched_host).unwrap_or(self.inner.host_ip);
        let addr = std::net::SocketAddr::new(ip, port);
        Box::pin(async move { addr })
    }

    /// CPU time and memory of each live task: from its cgroup where it has
    /// one that holds its processes (every process it started, CPU time only where the cpu
    /// controller accounts it, i.e. v2 or a combined v1 `cpu,cpuacct`);
    /// else, and for what the cgroup lacks, from the leader's `/proc`
    /// entry (working set = RSS then).
    fn usage(&self) -> BoxFuture<'_, Vec<pb::TaskUsage>> {
        Box::pin(async move {
            let procs: Vec<(Key, i32, Vec<PathBuf>)> = self
                .inner
                .procs
                .lock()
                .map(|m| {
                    m.iter()
                        .map(|(k, p)| (k.clone(), p.pid, p.cgroup.clone().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            procs
                .into_iter()
                .filter_map(|(k, pid, cgroup)| {
                    let (cpu, rss) = proc_usage(pid)?;
                    // Only a cgroup that holds the task's processes: where
                    // the host let the agent create it but not move the
                    // task in, it counts nothing.
                    let held = cgroup.iter().any(|d| !cgroup::procs(d).is_empty());
                    let cg = if held {
                        crate::runtime::cgroup_usage::read_dirs(&cgroup)
                    } else {
                        crate::runtime::cgroup_usage::Sample::default()
                    };
                    Some(pb::TaskUsage {
                        framework_id: k.0.0,
                        task_id: k.1.0,
                        cpu_seconds: cg.cpu_seconds.unwrap_or(cpu),
                        mem_rss_bytes: rss,
                        mem_working_set_bytes: cg.working_set.unwrap_or(rss),
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

/// Removes a test's work dir and its agent's (empty) cgroup directories.
#[cfg(test)]
pub(crate) fn remove_work_dir(dir: &Path) {
    for root in cgroup::detect(dir).roots() {
        let _ = std::fs::remove_dir(root);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests;

/// The `HOST` a running process was started with (`/proc/<pid>/environ`).
fn launched_host(pid: i32) -> Option<std::net::IpAddr> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"HOST="))
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}
