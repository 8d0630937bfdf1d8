//! The Docker runtime: drives the Docker Engine API through bollard.
//!
//! Every container carries labels that tie it to this agent (`agora.scope`,
//! the agent's work dir), its framework and its task, so a restarted agent
//! finds its containers again. CPU and memory limits are enforced by the
//! engine (`NanoCpus` hard cap plus `CpuShares` weight, `Memory` = memory +
//! swap). Host ports come from the task's port resources.

use crate::runtime::{
    BoxFuture, ContainerRuntime, EventSink, FailAction, FailPoints, LaunchSpec, LogStream,
    RecoverError, RecoverResult, RuntimeEvent, exit_event,
};
use agora_core::{FrameworkId, TaskId, TaskState};
use agora_proto::pb;
use bollard::Docker;
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    StatsOptions, StopContainerOptions,
};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

pub const LABEL_SCOPE: &str = "agora.scope";
pub const LABEL_FRAMEWORK: &str = "agora.framework_id";
pub const LABEL_TASK: &str = "agora.task_id";

mod spec;
mod wait;
use wait::injected;

type Key = (FrameworkId, TaskId);

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker engine: {0} (is dockerd running and /var/run/docker.sock readable?)"
    )]
    Unreachable(String),
}

#[derive(Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    sink: EventSink,
    scope: String,
    /// Image for tasks that name none (so plain commands run too).
    default_image: Option<String>,
    /// The agent's internal address: every host port is bound there (never
    /// on a wildcard) and tasks get it as `HOST`.
    host_ip: std::net::IpAddr,
    /// How long an exited container (and so its logs) is kept after its
    /// terminal update was acknowledged.
    gc_delay: Duration,
    /// Containers of live or not-yet-cleaned-up tasks.
    containers: Mutex<HashMap<Key, Container>>,
    /// Fault injection (tests): `docker.before_create`, `docker.after_create`,
    /// `docker.after_start` (crash), `docker.wait`, `docker.list` (error).
    fail: FailPoints,
    /// Recovery lists containers this many times, the first retry after
    /// `delay` (doubling), before it gives up.
    list_attempts: u32,
    list_retry: Duration,
    /// Launches running now (their containers may not exist yet).
    launching: std::sync::atomic::AtomicUsize,
    /// The cgroup directories of each container, by container id, found
    /// on its first usage sample (`None`: not readable here, the engine's
    /// stats API answers for it). Usage is read from these files: a
    /// one-shot stats call makes the engine sample CPU first, about a
    /// second per container (see docs/autoscaling.md).
    cgroups: Mutex<HashMap<String, Option<Vec<std::path::PathBuf>>>>,
}

/// How long [`DockerRuntime::remove_all`] waits for launches in flight.
const LAUNCHES_SETTLE: Duration = Duration::from_secs(10);

/// Counts one launch in flight while alive.
struct Launching(Arc<Inner>);

impl Launching {
    fn new(inner: &Arc<Inner>) -> Launching {
        inner
            .launching
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Launching(inner.clone())
    }
}

impl Drop for Launching {
    fn drop(&mut self) {
        self.0
            .launching
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Why a launch stopped early.
enum LaunchError {
    Failed(String),
    /// A fail point "killed the agent" here: nothing more happens.
    Crashed,
}

impl From<String> for LaunchError {
    fn from(m: String) -> Self {
        LaunchError::Failed(m)
    }
}

impl From<&str> for LaunchError {
    fn from(m: &str) -> Self {
        LaunchError::Failed(m.to_string())
    }
}

#[derive(Clone)]
struct Container {
    id: String,
    killing: bool,
    mem_mib: u64,
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket).
    /// `scope` identifies this agent's containers (use its work dir).
    pub async fn connect(
        sink: EventSink,
        scope: String,
        default_image: Option<String>,
    ) -> Result<Self, DockerError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| DockerError::Unreachable(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        Ok(DockerRuntime {
            inner: Arc::new(Inner {
                docker,
                sink,
                scope,
                default_image,
                host_ip: std::net::Ipv4Addr::LOCALHOST.into(),
                gc_delay: Duration::from_secs(600),
                containers: Mutex::new(HashMap::new()),
                fail: FailPoints::default(),
                list_attempts: 8,
                list_retry: Duration::from_millis(500),
                launching: std::sync::atomic::AtomicUsize::new(0),
                cgroups: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn configure(self, f: impl FnOnce(&mut Inner)) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                f(&mut inner);
                DockerRuntime {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => DockerRuntime { inner },
        }
    }

    /// Fault injection for tests (see [`FailPoints`]).
    pub fn with_fail_points(self, fail: FailPoints) -> Self {
        self.configure(|i| i.fail = fail)
    }

    /// How often recovery tries to list containers (default 8 times, the
    /// first retry after 500 ms, doubling: about a minute) before the
    /// agent gives up and stops.
    pub fn with_list_retry(self, attempts: u32, first: Duration) -> Self {
        self.configure(|i| {
            i.list_attempts = attempts.max(1);
            i.list_retry = first;
        })
    }

    /// Keeps exited containers (and their logs) this long after the task's
    /// terminal update is acknowledged (default 10 minutes).
    pub fn with_gc_delay(self, d: Duration) -> Self {
        self.configure(|i| i.gc_delay = d)
    }

    /// Binds every host port of bridge-networked containers on `ip` (the
    /// agent's internal address; default 127.0.0.1) and tells tasks it as
    /// `HOST`. The caller refuses wildcards: bound on `0.0.0.0`, a port
    /// would be reachable on every interface of the host.
    pub fn with_host_ip(self, ip: std::net::IpAddr) -> Self {
        self.configure(|i| i.host_ip = ip)
    }

    /// Whether an engine answers (used by `agora dev` to pick a runtime).
    pub async fn available() -> bool {
        match Docker::connect_with_local_defaults() {
            Ok(d) => tokio::time::timeout(Duration::from_secs(3), d.ping())
                .await
                .is_ok_and(|r| r.is_ok()),
            Err(_) => false,
        }
    }

    /// Which of `images` the local engine lacks (there is no registry to
    /// pull them from). Empty when the engine cannot be asked.
    pub async fn missing_images(images: &[&str]) -> Vec<String> {
        let Ok(d) = Docker::connect_with_local_defaults() else {
            return Vec::new();
        };
        let mut missing = Vec::new();
        for image in images {
            if let Err(e) = d.inspect_image(image).await
                && is_not_found(&e)
            {
                missing.push(image.to_string());
            }
        }
        missing
    }

    /// Every container (running or not) labelled with this agent's scope.
    pub(crate) async fn list_scoped(
        &self,
    ) -> Result<Vec<bollard::models::ContainerSummary>, bollard::errors::Error> {
        if self.inner.fail.at("docker.list") == FailAction::Error {
            return Err(injected("docker.list"));
        }
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![format!("{LABEL_SCOPE}={}", self.inner.scope)],
        );
        self.inner
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
    }

    /// `docker rm -f`; a container already gone is not an error.
    async fn force_remove(&self, id: &str) -> Result<(), bollard::errors::Error> {
        let opts = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self.inner.docker.remove_container(id, Some(opts)).await {
            Err(e) if !is_not_found(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Force-removes every container of this agent (used by `agora dev` on
    /// exit, once the agent is stopped). Launches in flight are waited for
    /// first (at most 10 s): a container created after the listing would
    /// otherwise be left running.
    pub async fn remove_all(&self) -> usize {
        let settle_by = tokio::time::Instant::now() + LAUNCHES_SETTLE;
        while self
            .inner
            .launching
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
            && tokio::time::Instant::now() < settle_by
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut n = 0;
        for c in self.list_scoped().await.unwrap_or_default() {
            if let Some(id) = c.id
                && self.force_remove(&id).await.is_ok()
            {
                n += 1;
            }
        }
        n
    }

    fn emit(&self, ev: RuntimeEvent) {
        let _ = self.inner.sink.send(ev);
    }

    fn container(&self, key: &Key) -> Option<Container> {
        self.inner
            .containers
            .lock()
            .ok()
            .and_then(|m| m.get(key).cloned())
    }

    /// `Crashed` if the fail point `name` says the agent dies here.
    fn crash_point(&self, name: &str) -> Result<(), LaunchError> {
        match self.inner.fail.at(name) {
            FailAction::Crash => Err(LaunchError::Crashed),
            _ => Ok(()),
        }
    }

    async fn start(&self, spec: &LaunchSpec) -> Result<(), LaunchError> {
        let fw = &spec.framework_id;
        let tid = spec.task_id();
        let t = &spec.task;
        let mut container = t.container.clone().unwrap_or_default();
        if container.image.is_empty() {
            match &self.inner.default_image {
                Some(i) => container.image = i.clone(),
                None => {
                    return Err("the task names no container image and this agent has no default image (--default-image)".into());
                }
            }
        }
        let docker = &self.inner.docker;
        match docker.inspect_image(&container.image).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                return Err(format!(
                    "image {} is not present on this agent (there is no registry: build or load it first)",
                    container.image
                )
                .into());
            }
            Err(e) => {
                return Err(format!("cannot inspect image {}: {e}", container.image).into());
            }
        }
        let resources = &t.resources;
        let body = spec::container_body(spec, &container, &self.inner.scope, self.inner.host_ip)?;
        let name = format!(
            "agora-{}-{}",
            sanitize(t.id.as_str()),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        self.crash_point("docker.before_create")?;
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name),
                    platform: String::new(),
                }),
                body,
            )
            .await
            .map_err(|e| format!("cannot create the container: {e}"))?;
        let key = (fw.clone(), tid.clone());
        if let Ok(mut m) = self.inner.containers.lock() {
            m.insert(
                key.clone(),
                Container {
                    id: created.id.clone(),
                    killing: false,
                    mem_mib: resources.mem_mib,
                },
            );
        }
        self.crash_point("docker.after_create")?;
        if let Err(e) = docker.start_container(&created.id, None).await {
            let _ = self.force_remove(&created.id).await;
            if let Ok(mut m) = self.inner.containers.lock() {
                m.remove(&key);
            }
            return Err(format!("cannot start the container: {e}").into());
        }
        self.crash_point("docker.after_start")?;
        self.emit(
            RuntimeEvent::new(fw, &tid, TaskState::Running).message(format!(
                "container {}",
                created.id.get(..12).unwrap_or(&created.id)
            )),
        );
        self.watch(key, created.id);
        Ok(())
    }
}

impl ContainerRuntime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let me = self.clone();
            // Image checks and container creation run off the agent's loop
            // (in the agent's launch span: logs carry the task's ids).
            let span = tracing::Span::current();
            let launching = Launching::new(&self.inner);
            tokio::spawn(
                async move {
                    let _launching = launching;
                    let fw = spec.framework_id.clone();
                    let tid = spec.task_id();
                    me.emit(RuntimeEvent::new(&fw, &tid, TaskState::Starting));
                    match me.start(&spec).await {
                        Ok(()) => {}
                        Err(LaunchError::Crashed) => {
                            tracing::warn!("fail point: launch stops here as if the agent died");
                        }
                        Err(LaunchError::Failed(msg)) => {
                            tracing::warn!(%msg, "launch failed");
                            me.emit(RuntimeEvent::new(&fw, &tid, TaskState::Failed).message(msg));
                        }
                    }
                }
                .instrument(span),
            );
        })
    }

    fn kill(&self, fw: &FrameworkId, task: &TaskId, grace: Duration) -> BoxFuture<'_, ()> {
        let key = (fw.clone(), task.clone());
        Box::pin(async move {
            let id = match self.inner.containers.lock() {
                Ok(mut m) => m.get_mut(&key).map(|c| {
                    c.killing = true;
                    c.id.clone()
                }),
                Err(_) => None,
            };
            let Some(id) = id else {
                tracing::debug!(task_id = %key.1, "kill: no container (yet)");
                return;
            };
            let me = self.clone();
            let span = tracing::Span::current();
            tokio::spawn(async move {
                let t = grace.as_secs_f64().ceil() as i32;
                let opts = StopContainerOptions {
                    signal: None,
                    t: Some(t),
                };
                if let Err(e) = me.inner.docker.stop_container(&id, Some(opts)).await {
                    tracing::warn!(container = %id, error = %e, "stopping the container failed");
                }
            }.instrument(span));
        })
    }

    fn recover(&self, tasks: Vec<LaunchSpec>) -> BoxFuture<'_, RecoverResult> {
        Box::pin(async move {
            let mut found = self.list_for_recovery().await?;
            // Newest first: if a task id was relaunched while its earlier
            // run's container waited for removal, the later run is the one
            // the checkpoint holds; the earlier one is removed as an orphan.
            found.sort_by_key(|c| std::cmp::Reverse(c.created.unwrap_or(0)));
            let mut wanted: HashMap<Key, &LaunchSpec> = tasks
                .iter()
                .map(|t| ((t.framework_id.clone(), t.task_id()), t))
                .collect();
            for c in found {
                let labels = c.labels.unwrap_or_default();
                let (Some(f), Some(t), Some(id)) =
                    (labels.get(LABEL_FRAMEWORK), labels.get(LABEL_TASK), c.id)
                else {
                    continue;
                };
                let key = (FrameworkId::new(f.as_str()), TaskId::new(t.as_str()));
                match wanted.remove(&key) {
                    Some(spec) => {
                        let mem_mib = spec.task.resources.mem_mib;
                        tracing::info!(task_id = %key.1, container = %id, state = ?c.state, "re-attached to container");
                        let foreign = spec::foreign_bindings(
                            c.ports.as_deref().unwrap_or_default(),
                            self.inner.host_ip,
                        );
                        if !foreign.is_empty() {
                            tracing::warn!(task_id = %key.1, container = %id, bindings = %foreign.join(","), internal_address = %self.inner.host_ip,
                                "this container's host ports are bound elsewhere than the agent's internal address (created before --internal-address changed, or by an agent that bound 0.0.0.0); they stay so until the task is replaced");
                        }
                        if let Ok(mut m) = self.inner.containers.lock() {
                            m.insert(
                                key.clone(),
                                Container {
                                    id: id.clone(),
                                    killing: false,
                                    mem_mib,
                                },
                            );
                        }
                        // Alive: RUNNING again (the agent may have died
                        // before it heard so). Created but never started,
                        // or exited: the watcher reports how it ended.
                        if c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING) {
                            self.emit(
                                RuntimeEvent::new(&key.0, &key.1, TaskState::Running).message(
                                    format!(
                                        "container {} (re-attached)",
                                        id.get(..12).unwrap_or(&id)
                                    ),
                                ),
                            );
                        }
                        self.watch(key, id);
                    }
                    None => {
                        tracing::warn!(container = %id, task_id = %key.1, "removing orphan container");
                        let _ = self.force_remove(&id).await;
                    }
                }
            }
            Ok(wanted.into_keys().collect())
        })
    }

    fn stop_all(&self) -> BoxFuture<'_, usize> {
        Box::pin(self.remove_all())
    }

    fn cleanup(&self, fw: &FrameworkId, task: &TaskId) -> BoxFuture<'_, ()> {
        let key = (fw.clone(), task.clone());
        let me = self.clone();
        Box::pin(async move {
            // The container of the run that ended: the same task id may be
            // launched again before the timer fires, and that run's
            // container is not this cleanup's to remove.
            let Some(id) = me.container(&key).map(|c| c.id) else {
                return;
            };
            // Keep the exited container a while so its logs can still be read.
            let span = tracing::info_span!("cleanup", framework_id = %key.0, task_id = %key.1);
            tokio::spawn(async move {
                tokio::time::sleep(me.inner.gc_delay).await;
                if let Ok(mut m) = me.inner.containers.lock()
                    && m.get(&key).is_some_and(|c| c.id == id)
                {
                    m.remove(&key);
                }
                if let Err(e) = me.force_remove(&id).await {
                    tracing::warn!(container = %id, error = %e, "removing the container failed");
                }
            }.instrument(span));
        })
    }

    fn logs(&self, fw: &FrameworkId, task: &TaskId, follow: bool) -> LogStream {
        let Some(c) = self.container(&(fw.clone(), task.clone())) else {
            let msg = format!(
                "no container for task {task} on this agent (finished and cleaned up, or never here)"
            );
            return Box::pin(futures::stream::once(async move { Err(msg) }));
        };
        let opts = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: "all".into(),
            ..Default::default()
        };
        Box::pin(self.inner.docker.logs(&c.id, Some(opts)).map(|r| {
            r.map(|o| o.into_bytes().to_vec())
                .map_err(|e| e.to_string())
        }))
    }

    fn exec_check(
        &self,
        fw: &FrameworkId,
        task: &TaskId,
        command: String,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<i32, String>> {
        let c = self.container(&(fw.clone(), task.clone()));
        Box::pin(async move {
            let c = c.ok_or("no container")?;
            let docker = &self.inner.docker;
            let run = async {
                let exec = docker
                    .create_exec(
                        &c.id,
                        bollard::exec::CreateExecOptions {
                            cmd: Some(vec!["/bin/sh".to_string(), "-c".to_string(), command]),
                            attach_stdout: Some(false),
                            attach_stderr: Some(false),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                docker
                    .start_exec(
                        &exec.id,
                        Some(bollard::exec::StartExecOptions {
                            detach: true,
                            ..Default::default()
                        }),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                loop {
                    let i = docker
                        .inspect_exec(&exec.id)
                        .await
                        .map_err(|e| e.to_string())?;
                    if i.running != Some(true) {
                        return Ok(i.exit_code.unwrap_or(-1) as i32);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            tokio::time::timeout(timeout, run)
                .await
                .map_err(|_| format!("timed out after {timeout:?}"))?
        })
    }

    fn check_addr(
        &self,
        fw: &FrameworkId,
        task: &TaskId,
        port: u16,
    ) -> BoxFuture<'_, std::net::SocketAddr> {
        let c = self.container(&(fw.clone(), task.clone()));
        Box::pin(async move {
            // Host networking (or no container): the task binds $HOST.
            let host = std::net::SocketAddr::new(self.inner.host_ip, port);
            let Some(c) = c else { return host };
            // Bridge mode: the engine's proxy on the host port accepts
            // connections even while nothing listens in the container, so
            // checks go to the container's address and port.
            match self.inner.docker.inspect_container(&c.id, None).await {
                Ok(i) => {
                    // Host networking: the HOST it was launched with, which
                    // a container recovered by an agent restarted with
                    // another --internal-address still binds.
                    let launched = i
                        .config
                        .as_ref()
                        .and_then(|c| c.env.as_ref())
                        .and_then(|env| {
                            env.iter()
                                .find_map(|kv| kv.strip_prefix("HOST="))
                                .and_then(|v| v.parse().ok())
                        })
                        .map_or(host, |ip| std::net::SocketAddr::new(ip, port));
                    i.network_settings
                        .and_then(|n| spec::container_addr(&n, port))
                        .unwrap_or(launched)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot inspect the container for its address");
                    host
                }
            }
        })
    }

    /// One sample per live container: from its cgroup files where this
    /// host can read them, else from a one-shot stats call to the engine. Containers are sampled concurrently.
    fn usage(&self) -> BoxFuture<'_, Vec<pb::TaskUsage>> {
        Box::pin(async move {
            let live: Vec<(Key, String)> = self
                .inner
                .containers
                .lock()
                .map(|m| m.iter().map(|(k, c)| (k.clone(), c.id.clone())).collect())
                .unwrap_or_default();
            // Forget the cgroups of containers that are gone.
            if let Ok(mut cg) = self.inner.cgroups.lock() {
                cg.retain(|id, _| live.iter().any(|(_, l)| l == id));
            }
            let stats = futures::future::join_all(
                live.into_iter()
                    .map(|(key, id)| async move { self.container_usage(key, &id).await }),
            )
            .await;
            stats.into_iter().flatten().collect()
        })
    }
}

fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A usage sample from the engine's stats of one container: CPU time from
/// `cpu_stats`, memory from `memory_stats.usage` and the working set as
/// that less the inactive file cache of `memory_stats.stats` (cgroup v2
/// `inactive_file`, v1 `total_inactive_file`), as `docker stats` shows it.
/// `None` when the engine gave no CPU figure (the container is gone).
fn usage_from_stats(
    key: &Key,
    stat: &bollard::models::ContainerStatsResponse,
    timestamp: f64,
) -> Option<pb::TaskUsage> {
    use crate::runtime::cgroup_usage::{inactive_file, working_set};
    let cpu_ns = stat.cpu_stats.as_ref()?.cpu_usage.as_ref()?.total_usage?;
    let mem = stat.memory_stats.as_ref();
    let usage = mem.and_then(|m| m.usage).unwrap_or(0);
    let inactive = mem
        .and_then(|m| m.stats.as_ref())
        .and_then(|st| inactive_file(|k| st.get(k).copied()));
    Some(pb::TaskUsage {
        framework_id: key.0.0.clone(),
        task_id: key.1.0.clone(),
        cpu_seconds: cpu_ns as f64 / 1e9,
        mem_rss_bytes: usage,
        mem_working_set_bytes: working_set(usage, inactive),
        timestamp,
    })
}

impl DockerRuntime {
    async fn container_usage(&self, key: Key, id: &str) -> Option<pb::TaskUsage> {
        if let Some(dirs) = self.cgroup_dirs(id).await {
            let s = crate::runtime::cgroup_usage::read_dirs(&dirs);
            if let (Some(cpu), Some(mem), Some(ws)) = (s.cpu_seconds, s.memory_usage, s.working_set)
            {
                return Some(pb::TaskUsage {
                    framework_id: key.0.0,
                    task_id: key.1.0,
                    cpu_seconds: cpu,
                    mem_rss_bytes: mem,
                    mem_working_set_bytes: ws,
                    timestamp: now_epoch(),
                });
            }
            // Gone (the container stopped) or unreadable: look again next
            // time, and ask the engine now.
            if let Ok(mut cg) = self.inner.cgroups.lock() {
                cg.remove(id);
            }
        }
        self.engine_usage(key, id).await
    }

    /// A sample from the engine's stats API (one one-shot call).
    async fn engine_usage(&self, key: Key, id: &str) -> Option<pb::TaskUsage> {
        let mut s = self.inner.docker.stats(
            id,
            Some(StatsOptions {
                stream: false,
                one_shot: true,
            }),
        );
        let stat = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .ok()
            .flatten()?
            .ok()?;
        usage_from_stats(&key, &stat, now_epoch())
    }

    /// The container's cgroup directories (memory and CPU accounting),
    /// found once through its main process; `None` when this host cannot
    /// read them (the engine runs elsewhere, another cgroup namespace).
    async fn cgroup_dirs(&self, id: &str) -> Option<Vec<std::path::PathBuf>> {
        if let Some(known) = self.inner.cgroups.lock().ok()?.get(id) {
            return known.clone();
        }
        let pid = self
            .inner
            .docker
            .inspect_container(id, None)
            .await
            .ok()?
            .state
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)?;
        let found = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .map(|text| {
                crate::runtime::cgroup_usage::dirs_of(&text, std::path::Path::new("/sys/fs/cgroup"))
            })
            // The directories must be this container's (its id in their
            // names) and give both CPU time and memory.
            .filter(|dirs| {
                let s = crate::runtime::cgroup_usage::read_dirs(dirs);
                !dirs.is_empty()
                    && dirs.iter().all(|d| d.to_string_lossy().contains(id))
                    && s.cpu_seconds.is_some()
                    && s.memory_usage.is_some()
            });
        if found.is_none() {
            tracing::debug!(container = %id, "its cgroup files are not readable here; the engine's stats API answers for it");
        }
        if let Ok(mut cg) = self.inner.cgroups.lock() {
            cg.insert(id.to_string(), found.clone());
        }
        found
    }
}

#[cfg(test)]
mod tests;
