//! The agent: registers with the master over one bidirectional gRPC stream,
//! heartbeats, launches and kills tasks through a [`ContainerRuntime`], and
//! delivers status updates at least once.
//!
//! Status updates are queued per task; only the head of a task's queue is in
//! flight. It is re-sent with exponential backoff until the framework's
//! acknowledgement (by uuid) comes back through the master, and re-sent at
//! once after every re-registration. One agent is one task owning its state.

use crate::runtime::{ContainerRuntime, LaunchSpec, RuntimeEvent};
use agora_core::info::TaskInfo;
use agora_core::{AgentId, FrameworkId, Resources, TaskId, TaskState};
use agora_proto::pb;
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// Grace period between SIGTERM and SIGKILL when the task names none.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// How often task usage is sampled and reported by default.
pub const DEFAULT_USAGE_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest usage interval the agent honours (a shorter one is raised
/// to this).
pub const MIN_USAGE_INTERVAL: Duration = Duration::from_millis(100);

/// How to reach the master.
#[derive(Clone)]
pub enum Connector {
    /// An address like `http://127.0.0.1:5050` (a new connection per attempt).
    Address(String),
    /// A shared channel (many hollow agents multiplexed on one connection).
    Channel(Channel),
    /// An `https://` address, with mutual TLS: the files are read again on
    /// every connection attempt, so a renewed certificate is used on the
    /// next reconnection.
    Tls {
        address: String,
        files: agora_tls::ClientTlsFiles,
    },
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub hostname: String,
    pub resources: Resources,
    pub attributes: Vec<(String, String)>,
    /// The agent's own HTTP API, if any, advertised to the master.
    pub endpoint: String,
    /// The agent's internal address (never a wildcard), advertised to the
    /// master: its tasks' host ports are bound there (the runtime is told
    /// separately) and routers reach its instances there. `None`: not
    /// advertised (frameworks fall back to the hostname).
    pub address: Option<std::net::IpAddr>,
    /// The role all its resources are reserved for (`*`: unreserved).
    pub role: String,
    /// First retry delay for an unacknowledged status update (Mesos: 10 s).
    pub status_retry_min: Duration,
    /// Retry delay cap (Mesos: 10 min).
    pub status_retry_max: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Reconnect when the master has been silent for this many heartbeat intervals.
    pub master_silence_heartbeats: u32,
    /// Give up waiting for REGISTERED after this long and retry.
    pub register_timeout: Duration,
    /// Where the agent checkpoints its id, tasks and unacknowledged updates
    /// (`checkpoint.pb`). `None`: nothing survives a restart (hollow agents).
    pub work_dir: Option<std::path::PathBuf>,
    /// How often task usage (CPU time, memory) is sampled and reported to
    /// the master (default 1 s; at least [`MIN_USAGE_INTERVAL`]). A sample
    /// that takes longer delays the next one: samples are skipped, never
    /// queued.
    pub usage_interval: Duration,
    /// Where file secrets go: a directory on a tmpfs (checked at start),
    /// under which the agent keeps `<agent id>/<framework>/<task>/`.
    /// `None`: tasks with file secrets fail (env secrets still work).
    pub secrets_dir: Option<std::path::PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            hostname: "localhost".into(),
            resources: Resources::default(),
            attributes: Vec::new(),
            endpoint: String::new(),
            address: None,
            role: agora_core::info::DEFAULT_ROLE.to_string(),
            status_retry_min: Duration::from_secs(2),
            status_retry_max: Duration::from_secs(60),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            master_silence_heartbeats: 5,
            register_timeout: Duration::from_secs(15),
            work_dir: None,
            usage_interval: DEFAULT_USAGE_INTERVAL,
            secrets_dir: None,
        }
    }
}

/// Test and operator hooks into a running agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Drop the master connection and stay away (a network partition).
    Partition,
    /// Reconnect after a partition.
    Heal,
    /// Stop the agent (tasks are left as they are).
    Stop,
}

/// A running agent's handle.
#[derive(Clone)]
pub struct AgentHandle {
    control: mpsc::UnboundedSender<Control>,
    agent_id: watch::Receiver<Option<AgentId>>,
    tasks: watch::Receiver<Vec<TaskSummary>>,
}

/// A task as the agent sees it (for its HTTP API).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskSummary {
    pub framework_id: String,
    pub task_id: String,
    pub name: String,
    pub state: TaskState,
    pub unacknowledged_updates: usize,
}

impl AgentHandle {
    pub fn control(&self, c: Control) {
        let _ = self.control.send(c);
    }

    pub fn agent_id(&self) -> Option<AgentId> {
        self.agent_id.borrow().clone()
    }

    /// The agent's tasks (live, or terminal but not yet acknowledged).
    pub fn tasks(&self) -> Vec<TaskSummary> {
        self.tasks.borrow().clone()
    }

    /// Waits until the agent has registered at least once.
    pub async fn registered(&self) -> AgentId {
        let mut rx = self.agent_id.clone();
        loop {
            if let Some(id) = rx.borrow().clone() {
                return id;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the master refused this agent: {0}")]
    Refused(String),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
    #[error(transparent)]
    Recover(#[from] crate::runtime::RecoverError),
    #[error("{0}")]
    Secrets(String),
}

struct Pending {
    update: pb::StatusUpdate,
    terminal: bool,
}

struct TaskRecord {
    /// Set to false when the task ends: stops its health checker.
    alive: Arc<std::sync::atomic::AtomicBool>,
    /// Its readiness and health checkers were started.
    checking: bool,
    /// The verdicts of its health checks, combined.
    health: crate::health::Verdicts,
    /// The task as validated at launch (or recovery).
    info: TaskInfo,
    state: TaskState,
    queue: VecDeque<Pending>,
    /// When the head was last sent and the current backoff.
    next_retry: Option<Instant>,
    backoff: Duration,
    /// A kill arrived while the task was still launching (no container or
    /// process to signal yet): it is carried out once the task runs.
    kill_requested: bool,
    /// A kill was ordered (whatever the state then): checkpointed until the
    /// task ends, and ordered again after a recovery.
    kill_ordered: bool,
}

impl TaskRecord {
    fn new(info: TaskInfo, state: TaskState, backoff: Duration) -> TaskRecord {
        TaskRecord {
            alive: Arc::new(std::sync::atomic::AtomicBool::new(!state.is_terminal())),
            checking: false,
            health: crate::health::Verdicts::new(info.health_checks.len()),
            info,
            state,
            queue: VecDeque::new(),
            next_retry: None,
            backoff,
            kill_requested: false,
            kill_ordered: false,
        }
    }
}

struct Agent {
    cfg: AgentConfig,
    runtime: Arc<dyn ContainerRuntime>,
    agent_id: Option<AgentId>,
    frameworks: HashMap<FrameworkId, pb::FrameworkInfo>,
    tasks: HashMap<(FrameworkId, TaskId), TaskRecord>,
    id_tx: watch::Sender<Option<AgentId>>,
    tasks_tx: watch::Sender<Vec<TaskSummary>>,
    /// State changed since the last checkpoint/publication.
    dirty: bool,
    /// Terminal tasks acknowledged since the last flush: their runtime leftovers are released.
    to_cleanup: Vec<(FrameworkId, TaskId)>,
    /// Tasks killed while launching that have now started: killed next.
    deferred_kills: Vec<(FrameworkId, TaskId)>,
    /// The kill orders last written to `kills.json`.
    kills_written: Vec<(String, String)>,
    /// Where health checkers report (merged with the runtime's events).
    health_sink: crate::runtime::EventSink,
    /// Keeps the control channel open: dropping every handle does not stop
    /// the agent (only `Control::Stop` does).
    _control_keepalive: mpsc::UnboundedSender<Control>,
    /// Where tasks' secret values come from: the master, over the current
    /// connection (set by each session).
    resolver: Option<Arc<dyn crate::secrets::SecretResolver>>,
    /// The secrets directory (`cfg.secrets_dir`, checked to be tmpfs).
    secrets_root: Option<crate::secrets::SecretsDir>,
}

/// Starts an agent. `events` must be the receiving end of the sink given to
/// `runtime`.
pub fn spawn(
    cfg: AgentConfig,
    runtime: Arc<dyn ContainerRuntime>,
    events: mpsc::UnboundedReceiver<RuntimeEvent>,
    connector: Connector,
) -> (AgentHandle, tokio::task::JoinHandle<Result<(), AgentError>>) {
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (id_tx, id_rx) = watch::channel(None);
    let (tasks_tx, tasks_rx) = watch::channel(Vec::new());
    // One stream of events: the runtime's, and the health checkers'.
    let (merged_tx, merged_rx) = mpsc::unbounded_channel();
    let forward = merged_tx.clone();
    let mut runtime_events = events;
    tokio::spawn(async move {
        while let Some(ev) = runtime_events.recv().await {
            if forward.send(ev).is_err() {
                return;
            }
        }
    });
    let events = merged_rx;
    let agent = Agent::new(cfg, runtime, merged_tx, control_tx.clone(), id_tx, tasks_tx);
    let join = tokio::spawn(agent.run(connector, events, control_rx));
    (
        AgentHandle {
            control: control_tx,
            agent_id: id_rx,
            tasks: tasks_rx,
        },
        join,
    )
}

enum SessionEnd {
    Lost,
    Partitioned,
    Stop,
}

fn msg(m: pb::agent_message::Message) -> pb::AgentMessage {
    pb::AgentMessage { message: Some(m) }
}

impl Drop for Agent {
    /// The agent is going away (stopped, or its task ended): its health and
    /// readiness checkers stop with it rather than probing on (they would
    /// otherwise probe whatever takes the ports next).
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.alive.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Agent {
    fn new(
        cfg: AgentConfig,
        runtime: Arc<dyn ContainerRuntime>,
        health_sink: crate::runtime::EventSink,
        control: mpsc::UnboundedSender<Control>,
        id_tx: watch::Sender<Option<AgentId>>,
        tasks_tx: watch::Sender<Vec<TaskSummary>>,
    ) -> Agent {
        Agent {
            health_sink,
            cfg,
            runtime,
            agent_id: None,
            frameworks: HashMap::new(),
            tasks: HashMap::new(),
            id_tx,
            tasks_tx,
            dirty: false,
            to_cleanup: Vec::new(),
            deferred_kills: Vec::new(),
            kills_written: Vec::new(),
            _control_keepalive: control,
            resolver: None,
            secrets_root: None,
        }
    }

    async fn run(
        mut self,
        connector: Connector,
        mut events: mpsc::UnboundedReceiver<RuntimeEvent>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) -> Result<(), AgentError> {
        if let Some(dir) = &self.cfg.secrets_dir {
            self.secrets_root =
                Some(crate::secrets::SecretsDir::open(dir).map_err(AgentError::Secrets)?);
        }
        self.recover().await?;
        self.sweep_secrets();
        let mut backoff = self.cfg.reconnect_min;
        let mut partitioned = false;
        loop {
            if partitioned {
                // Keep recording runtime events while cut off.
                tokio::select! {
                    c = control.recv() => match c {
                        Some(Control::Heal) => partitioned = false,
                        Some(Control::Stop) | None => return Ok(()),
                        Some(Control::Partition) => {}
                    },
                    Some(ev) = events.recv() => { self.record(ev); self.persist(); }
                }
                self.after_events().await;
                continue;
            }
            match self.session(&connector, &mut events, &mut control).await {
                Ok(SessionEnd::Stop) => return Ok(()),
                Ok(SessionEnd::Partitioned) => {
                    partitioned = true;
                    backoff = self.cfg.reconnect_min;
                    continue;
                }
                Ok(SessionEnd::Lost) => {
                    backoff = self.cfg.reconnect_min;
                }
                Err(SessionError::Refused(m)) => return Err(AgentError::Refused(m)),
                Err(SessionError::Connect(e)) => {
                    tracing::debug!(error = %e, "cannot reach master; retrying");
                }
                Err(SessionError::Tls(e)) => {
                    tracing::warn!(error = %e, "cannot attach to the master over TLS; retrying");
                }
            }
            // Backoff with jitter, still recording events and obeying control.
            let jitter = Duration::from_millis(u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 100);
            let sleep = tokio::time::sleep(backoff + jitter);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    c = control.recv() => match c {
                        Some(Control::Stop) | None => return Ok(()),
                        Some(Control::Partition) => { partitioned = true; break; }
                        Some(Control::Heal) => {}
                    },
                    Some(ev) = events.recv() => { self.record(ev); self.persist(); }
                }
                self.after_events().await;
            }
            backoff = (backoff * 2).min(self.cfg.reconnect_max);
        }
    }

    fn register_message(&self) -> pb::AgentMessage {
        let tasks = self
            .tasks
            .iter()
            .map(|((fid, _), t)| pb::AgentTask {
                task: Some((&t.info).into()),
                framework_id: fid.0.clone(),
                state: pb::TaskState::from(t.state) as i32,
            })
            .collect();
        msg(pb::agent_message::Message::Register(pb::Register {
            agent: Some(pb::AgentInfo {
                agent_id: self
                    .agent_id
                    .as_ref()
                    .map(|a| a.0.clone())
                    .unwrap_or_default(),
                hostname: self.cfg.hostname.clone(),
                resources: Some(pb::Resources::from(&self.cfg.resources)),
                attributes: self
                    .cfg
                    .attributes
                    .iter()
                    .map(|(n, v)| pb::Attribute {
                        name: n.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                endpoint: self.cfg.endpoint.clone(),
                address: self
                    .cfg
                    .address
                    .map(|ip| ip.to_string())
                    .unwrap_or_default(),
                role: self.cfg.role.clone(),
            }),
            tasks,
            frameworks: self.frameworks.values().cloned().collect(),
        }))
    }

    async fn session(
        &mut self,
        connector: &Connector,
        events: &mut mpsc::UnboundedReceiver<RuntimeEvent>,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Result<SessionEnd, SessionError> {
        let channel = match connector {
            Connector::Channel(c) => c.clone(),
            Connector::Address(a) => Endpoint::from_shared(a.clone())
                .map_err(|e| SessionError::Connect(e.to_string()))?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| SessionError::Connect(e.to_string()))?,
            Connector::Tls { address, files } => {
                let tls = files
                    .config()
                    .map_err(|e| SessionError::Tls(e.to_string()))?;
                let endpoint = Endpoint::from_shared(address.clone())
                    .map_err(|e| SessionError::Connect(e.to_string()))?
                    .connect_timeout(Duration::from_secs(5));
                agora_tls::channel(endpoint, Some(tls))
                    .await
                    .map_err(|e| SessionError::Tls(error_chain(&e)))?
            }
        };
        // Secrets are resolved over the same connection.
        self.resolver = Some(Arc::new(crate::secrets::ChannelResolver(channel.clone())));
        let mut client = pb::agent_link_client::AgentLinkClient::new(channel)
            .max_decoding_message_size(64 << 20);
        let (out_tx, out_rx) = mpsc::channel::<pb::AgentMessage>(16_384);
        out_tx
            .send(self.register_message())
            .await
            .map_err(|_| SessionError::Connect("outbound closed".into()))?;
        let tls = matches!(connector, Connector::Tls { .. });
        let mut inbound = client
            .attach(ReceiverStream::new(out_rx))
            .await
            .map_err(|e| match e.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    SessionError::Tls(format!("the master refused this agent: {}", e.message()))
                }
                // A refused client certificate shows up as a broken
                // connection (TLS 1.3 reports it after the handshake).
                _ if tls => SessionError::Tls(error_chain(&e)),
                _ => SessionError::Connect(e.to_string()),
            })?
            .into_inner();

        // Wait for REGISTERED.
        let deadline = tokio::time::sleep(self.cfg.register_timeout);
        tokio::pin!(deadline);
        let heartbeat = loop {
            tokio::select! {
                _ = &mut deadline => return Err(SessionError::Connect("no answer to registration".into())),
                m = inbound.next() => match m {
                    Some(Ok(pb::MasterMessage { message: Some(pb::master_message::Message::Registered(r)) })) => {
                        let id = AgentId::new(r.agent_id.as_str());
                        tracing::info!(agent_id = %id, master_id = %r.master_id, "registered with master");
                        self.agent_id = Some(id.clone());
                        let _ = self.id_tx.send(Some(id));
                        self.dirty = true;
                        self.persist();
                        break heartbeat_interval(r.heartbeat_interval_seconds);
                    }
                    Some(Ok(pb::MasterMessage { message: Some(pb::master_message::Message::Refused(r)) })) => {
                        return Err(SessionError::Refused(r.message));
                    }
                    Some(Ok(other)) => {
                        // Launches can only follow registration; anything else is handled later.
                        self.on_master(other, &out_tx).await;
                    }
                    Some(Err(e)) => return Err(SessionError::Connect(e.to_string())),
                    None => return Err(SessionError::Connect("master closed the stream".into())),
                },
                c = control.recv() => match c {
                    Some(Control::Stop) | None => return Ok(SessionEnd::Stop),
                    Some(Control::Partition) => return Ok(SessionEnd::Partitioned),
                    Some(Control::Heal) => {}
                },
                Some(ev) = events.recv() => { self.record(ev); self.persist(); }
            }
        };

        // Re-send every unacknowledged head now.
        let now = Instant::now();
        for t in self.tasks.values_mut() {
            if !t.queue.is_empty() {
                t.next_retry = Some(now);
                t.backoff = self.cfg.status_retry_min;
            }
        }
        self.flush_due(&out_tx, now).await;

        let mut hb = tokio::time::interval(heartbeat);
        hb.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let silence = heartbeat * self.cfg.master_silence_heartbeats.max(2);
        let mut last_heard = Instant::now();
        let mut retry_at = self.earliest_retry();
        let mut usage = tokio::time::interval(self.cfg.usage_interval.max(MIN_USAGE_INTERVAL));
        usage.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut sampler = UsageSampler::new(self.runtime.clone(), self.cfg.usage_interval);
        loop {
            let retry_sleep = tokio::time::sleep_until(
                retry_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                m = inbound.next() => match m {
                    Some(Ok(m)) => {
                        last_heard = Instant::now();
                        if let Some(pb::master_message::Message::Refused(r)) = &m.message {
                            return Err(SessionError::Refused(r.message.clone()));
                        }
                        self.on_master(m, &out_tx).await;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "master stream broke; reconnecting");
                        return Ok(SessionEnd::Lost);
                    }
                    None => {
                        tracing::warn!("master closed the stream; reconnecting");
                        return Ok(SessionEnd::Lost);
                    }
                },
                Some(ev) = events.recv() => {
                    self.record(ev);
                    while let Ok(ev) = events.try_recv() {
                        self.record(ev);
                    }
                    self.flush_due(&out_tx, Instant::now()).await;
                }
                _ = hb.tick() => {
                    if last_heard.elapsed() > silence {
                        tracing::warn!(silent_for = ?last_heard.elapsed(), "master silent; reconnecting");
                        return Ok(SessionEnd::Lost);
                    }
                    let _ = out_tx.try_send(msg(pb::agent_message::Message::Heartbeat(pb::AgentHeartbeat {})));
                }
                _ = retry_sleep, if retry_at.is_some() => {
                    self.flush_due(&out_tx, Instant::now()).await;
                }
                _ = usage.tick() => {
                    sampler.start();
                }
                tasks = sampler.done() => {
                    if !tasks.is_empty() {
                        let _ = out_tx.try_send(msg(pb::agent_message::Message::Usage(pb::UsageReport { tasks })));
                    }
                }
                c = control.recv() => match c {
                    Some(Control::Stop) | None => return Ok(SessionEnd::Stop),
                    Some(Control::Partition) => return Ok(SessionEnd::Partitioned),
                    Some(Control::Heal) => {}
                },
            }
            retry_at = self.earliest_retry();
            self.persist();
            self.after_events().await;
        }
    }

    /// What recorded events leave to do, connected or not: release the
    /// acknowledged tasks, carry out the kills that waited for a launch.
    async fn after_events(&mut self) {
        for (fid, tid) in std::mem::take(&mut self.to_cleanup) {
            self.runtime.cleanup(&fid, &tid).await;
        }
        for (fid, tid) in std::mem::take(&mut self.deferred_kills) {
            tracing::info!(task_id = %tid, "carrying out the kill that arrived while it was launching");
            self.kill(&fid, &tid).await;
        }
        self.persist();
    }
}

impl Agent {
    /// This agent's secrets directory (`<secrets dir>/<agent id>`), once
    /// it has an id.
    fn secrets_dir(&self) -> Option<crate::secrets::SecretsDir> {
        let root = self.secrets_root.as_ref()?;
        let id = self.agent_id.as_ref()?;
        Some(root.for_agent(id))
    }

    /// Removes the secret files of every task that is not live (agent
    /// start: tasks that ended or were forgotten while it was down).
    fn sweep_secrets(&self) {
        let Some(dir) = self.secrets_dir() else {
            return;
        };
        let live: Vec<(FrameworkId, TaskId)> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.state.is_terminal())
            .map(|(k, _)| k.clone())
            .collect();
        let n = dir.sweep(&live);
        if n > 0 {
            tracing::info!(
                tasks = n,
                "removed the secret files of tasks that are not live"
            );
        }
    }

    /// A task ended: its secret files go.
    fn drop_secret_files(&self, fid: &FrameworkId, tid: &TaskId) {
        if let Some(dir) = self.secrets_dir() {
            dir.remove(fid, tid);
        }
    }
}

/// Takes usage samples off the agent's loop (a Docker engine may take a
/// while to answer), one at a time: a tick that comes while a sample is
/// still being taken is skipped, not queued, and the loop goes on serving
/// the master meanwhile. An unfinished sample is abandoned with the
/// session.
struct UsageSampler {
    runtime: Arc<dyn ContainerRuntime>,
    interval: Duration,
    running: Option<(tokio::task::JoinHandle<Vec<pb::TaskUsage>>, Instant)>,
    /// Ticks skipped because a sample was still being taken.
    skipped: u64,
    /// A sample took longer than the interval (warned once per session).
    warned: bool,
}

impl UsageSampler {
    fn new(runtime: Arc<dyn ContainerRuntime>, interval: Duration) -> Self {
        UsageSampler {
            runtime,
            interval,
            running: None,
            skipped: 0,
            warned: false,
        }
    }

    /// Starts a sample unless one is being taken (then the tick is
    /// skipped); true if it started one.
    fn start(&mut self) -> bool {
        if self.running.is_some() {
            self.skipped += 1;
            tracing::debug!(
                skipped = self.skipped,
                "the previous usage sample is still being taken; skipping this one"
            );
            return false;
        }
        let rt = self.runtime.clone();
        self.running = Some((
            tokio::spawn(async move { rt.usage().await }),
            Instant::now(),
        ));
        true
    }

    /// The sample being taken, once done (never, while none is).
    /// Cancel-safe: dropped before it finishes, the sample keeps running
    /// and the next call waits for it.
    async fn done(&mut self) -> Vec<pb::TaskUsage> {
        let Some((handle, started)) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let r = handle.await;
        let took = started.elapsed();
        self.running = None;
        if took > self.interval && !self.warned {
            self.warned = true;
            tracing::warn!(
                took = ?took,
                interval = ?self.interval,
                "sampling task usage took longer than the usage interval: samples are skipped while one is being taken (raise --usage-interval)"
            );
        }
        r.unwrap_or_default()
    }
}

impl Drop for UsageSampler {
    fn drop(&mut self) {
        if let Some((h, _)) = &self.running {
            h.abort();
        }
    }
}

/// The heartbeat interval the master asks for: a finite, positive number of
/// seconds up to an hour; anything else (NaN, ∞, ≤ 0) gives the default 2 s
/// and a warning, never a panic.
fn heartbeat_interval(secs: f64) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(2);
    match agora_proto::convert::duration(
        "registered.heartbeat_interval_seconds",
        secs,
        Duration::from_secs(3600),
    ) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => DEFAULT,
        Err(e) => {
            tracing::warn!(error = %e, "using a 2 s heartbeat");
            DEFAULT
        }
    }
}

enum SessionError {
    Connect(String),
    Refused(String),
    /// TLS material, handshake or authentication: logged at warn (an
    /// operator must act), retried (the files may be fixed meanwhile).
    Tls(String),
}

/// An error with its sources (tonic's transport errors hide the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

mod checkpoint;
mod master;
mod updates;

#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod secrets_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod usage_tests;
