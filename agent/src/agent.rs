//! The agent: registers with the master over one bidirectional gRPC stream,
//! heartbeats, launches and kills tasks through a [`ContainerRuntime`], and
//! delivers status updates at least once.
//!
//! Status updates are queued per task; only the head of a task's queue is in
//! flight. It is re-sent with exponential backoff until the framework's
//! acknowledgement (by uuid) comes back through the master, and re-sent at
//! once after every re-registration. One agent is one task owning its state.

use crate::runtime::{ContainerRuntime, LaunchSpec, RuntimeEvent};
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

/// How to reach the master.
#[derive(Clone)]
pub enum Connector {
    /// An address like `http://127.0.0.1:5050` (a new connection per attempt).
    Address(String),
    /// A shared channel (many hollow agents multiplexed on one connection).
    Channel(Channel),
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub hostname: String,
    pub resources: Resources,
    pub attributes: Vec<(String, String)>,
    /// The agent's own HTTP API, if any, advertised to the master.
    pub endpoint: String,
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
    /// How often task usage (CPU time, memory) is reported to the master.
    pub usage_interval: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            hostname: "localhost".into(),
            resources: Resources::default(),
            attributes: Vec::new(),
            endpoint: String::new(),
            status_retry_min: Duration::from_secs(2),
            status_retry_max: Duration::from_secs(60),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            master_silence_heartbeats: 5,
            register_timeout: Duration::from_secs(15),
            work_dir: None,
            usage_interval: Duration::from_secs(10),
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
    info: pb::TaskInfo,
    state: TaskState,
    queue: VecDeque<Pending>,
    /// When the head was last sent and the current backoff.
    next_retry: Option<Instant>,
    backoff: Duration,
    /// A kill arrived while the task was still launching (no container or
    /// process to signal yet): it is carried out once the task runs.
    kill_requested: bool,
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
    /// Where health checkers report (merged with the runtime's events).
    health_sink: crate::runtime::EventSink,
    /// Keeps the control channel open: dropping every handle does not stop
    /// the agent (only `Control::Stop` does).
    _control_keepalive: mpsc::UnboundedSender<Control>,
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
    let agent = Agent {
        health_sink: merged_tx,
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
        _control_keepalive: control_tx.clone(),
    };
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
    async fn run(
        mut self,
        connector: Connector,
        mut events: mpsc::UnboundedReceiver<RuntimeEvent>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) -> Result<(), AgentError> {
        self.recover().await?;
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
            }
            backoff = (backoff * 2).min(self.cfg.reconnect_max);
        }
    }

    fn register_message(&self) -> pb::AgentMessage {
        let tasks = self
            .tasks
            .iter()
            .map(|((fid, _), t)| pb::AgentTask {
                task: Some(t.info.clone()),
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
        };
        let mut client = pb::agent_link_client::AgentLinkClient::new(channel)
            .max_decoding_message_size(64 << 20);
        let (out_tx, out_rx) = mpsc::channel::<pb::AgentMessage>(16_384);
        out_tx
            .send(self.register_message())
            .await
            .map_err(|_| SessionError::Connect("outbound closed".into()))?;
        let mut inbound = client
            .attach(ReceiverStream::new(out_rx))
            .await
            .map_err(|e| SessionError::Connect(e.to_string()))?
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
                        let hb = r.heartbeat_interval_seconds;
                        break if hb.is_finite() && hb > 0.0 { Duration::from_secs_f64(hb.min(3600.0)) } else { Duration::from_secs(2) };
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
        let mut usage = tokio::time::interval(self.cfg.usage_interval);
        usage.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    let tasks = self.runtime.usage().await;
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
            for (fid, tid) in std::mem::take(&mut self.to_cleanup) {
                self.runtime.cleanup(&fid, &tid).await;
            }
            for (fid, tid) in std::mem::take(&mut self.deferred_kills) {
                tracing::info!(task_id = %tid, "carrying out the kill that arrived while it was launching");
                self.kill(&fid, &tid).await;
            }
        }
    }

    // ------------------------------------------------------------ checkpoint

    fn checkpoint_path(&self) -> Option<std::path::PathBuf> {
        self.cfg.work_dir.as_ref().map(|d| d.join("checkpoint.pb"))
    }

    fn checkpoint(&self) -> pb::AgentCheckpoint {
        pb::AgentCheckpoint {
            agent_id: self
                .agent_id
                .as_ref()
                .map(|a| a.0.clone())
                .unwrap_or_default(),
            frameworks: self.frameworks.values().cloned().collect(),
            tasks: self
                .tasks
                .iter()
                .map(|((fid, _), t)| pb::CheckpointTask {
                    framework_id: fid.0.clone(),
                    task: Some(t.info.clone()),
                    state: pb::TaskState::from(t.state) as i32,
                    pending: t.queue.iter().map(|p| p.update.clone()).collect(),
                    handle: String::new(),
                })
                .collect(),
        }
    }

    /// Writes the checkpoint (atomically: temp file + rename) and publishes
    /// the task list, if anything changed.
    fn persist(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let summary: Vec<TaskSummary> = self
            .tasks
            .iter()
            .map(|((fid, tid), t)| TaskSummary {
                framework_id: fid.0.clone(),
                task_id: tid.0.clone(),
                name: t.info.name.clone(),
                state: t.state,
                unacknowledged_updates: t.queue.len(),
            })
            .collect();
        let _ = self.tasks_tx.send(summary);
        let Some(path) = self.checkpoint_path() else {
            return;
        };
        use prost::Message;
        let bytes = self.checkpoint().encode_to_vec();
        let tmp = path.with_extension("pb.tmp");
        let res = (|| -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = res {
            tracing::error!(path = %path.display(), error = %e, "cannot write the agent checkpoint");
        }
    }

    /// Loads the checkpoint (if any) and re-attaches to the runtime's tasks.
    async fn recover(&mut self) -> Result<(), AgentError> {
        let Some(path) = self.checkpoint_path() else {
            return Ok(());
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A fresh work dir: remove containers a previous agent with no
                // checkpoint may have left (orphans).
                let _ = self.runtime.recover(Vec::new()).await;
                return Ok(());
            }
            Err(e) => {
                return Err(AgentError::Checkpoint {
                    path: path.display().to_string(),
                    message: e.to_string(),
                });
            }
        };
        use prost::Message;
        let cp =
            pb::AgentCheckpoint::decode(bytes.as_slice()).map_err(|e| AgentError::Checkpoint {
                path: path.display().to_string(),
                message: format!("corrupt ({e}); move it away to start this agent afresh"),
            })?;
        if !cp.agent_id.is_empty() {
            self.agent_id = Some(AgentId::new(cp.agent_id.as_str()));
        }
        for f in cp.frameworks {
            self.frameworks
                .insert(FrameworkId::new(f.framework_id.as_str()), f);
        }
        let mut specs = Vec::new();
        for t in cp.tasks {
            let Some(info) = t.task else { continue };
            let fid = FrameworkId::new(t.framework_id.as_str());
            let tid = TaskId::new(info.task_id.as_str());
            let state =
                agora_proto::convert::task_state("state", t.state).unwrap_or(TaskState::Staging);
            let now = Instant::now();
            let queue: VecDeque<Pending> = t
                .pending
                .into_iter()
                .map(|u| {
                    let terminal = u
                        .status
                        .as_ref()
                        .and_then(|s| s.task_state().ok())
                        .is_some_and(|s| s.is_terminal());
                    Pending {
                        update: u,
                        terminal,
                    }
                })
                .collect();
            if !state.is_terminal() {
                specs.push(LaunchSpec {
                    framework_id: fid.clone(),
                    task: info.clone(),
                });
            }
            self.tasks.insert(
                (fid, tid),
                TaskRecord {
                    alive: Arc::new(std::sync::atomic::AtomicBool::new(!state.is_terminal())),
                    checking: false,
                    health: crate::health::Verdicts::new(info.health_checks.len()),
                    next_retry: (!queue.is_empty()).then_some(now),
                    info,
                    state,
                    queue,
                    backoff: self.cfg.status_retry_min,
                    kill_requested: false,
                },
            );
        }
        let n = specs.len();
        let gone = self.runtime.recover(specs).await;
        tracing::info!(tasks = n, gone = gone.len(), "recovered from checkpoint");
        for (fid, tid) in gone {
            self.record(
                RuntimeEvent::new(&fid, &tid, TaskState::Failed)
                    .reason(crate::runtime::REASON_CONTAINER_GONE)
                    .message("the task's container disappeared while the agent was down"),
            );
        }
        // Checks of tasks still running start again.
        for ((fid, tid), t) in self.tasks.iter_mut() {
            if t.state == TaskState::Running {
                start_checks(t, &self.runtime, &self.health_sink, fid, tid);
            }
        }
        self.dirty = true;
        self.persist();
        Ok(())
    }

    fn earliest_retry(&self) -> Option<Instant> {
        self.tasks.values().filter_map(|t| t.next_retry).min()
    }

    /// Queues a runtime event as a status update.
    fn record(&mut self, ev: RuntimeEvent) {
        let key = (ev.framework_id.clone(), ev.task_id.clone());
        let Some(t) = self.tasks.get_mut(&key) else {
            tracing::debug!(task_id = %ev.task_id, "event for unknown task ignored");
            return;
        };
        if !t.state.can_transition(ev.state) {
            tracing::debug!(task_id = %ev.task_id, from = %t.state, to = %ev.state, "ignoring impossible transition");
            return;
        }
        let mut ev = ev;
        if let (Some(i), Some(h)) = (ev.check, ev.healthy) {
            // One check's verdict: the framework hears the task's health,
            // and only when it changes.
            match t.health.record(i, h) {
                Some(now) => {
                    ev.healthy = Some(now);
                    if now && t.info.health_checks.len() > 1 {
                        ev.message =
                            format!("all {} health checks passed", t.info.health_checks.len());
                    }
                }
                None => return,
            }
        }
        t.state = ev.state;
        let status = pb::TaskStatus {
            task_id: ev.task_id.0.clone(),
            state: pb::TaskState::from(ev.state) as i32,
            agent_id: self
                .agent_id
                .as_ref()
                .map(|a| a.0.clone())
                .unwrap_or_default(),
            message: ev.message,
            reason: ev.reason,
            source: pb::TaskSource::SourceAgent as i32,
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            exit_code: ev.exit_code.unwrap_or(0),
            has_exit_code: ev.exit_code.is_some(),
            healthy: ev.healthy.unwrap_or(false),
            has_health: ev.healthy.is_some(),
            ready: ev.ready.unwrap_or(false),
            has_ready: ev.ready.is_some(),
        };
        if ev.state.is_terminal() {
            t.alive.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        if ev.state == TaskState::Running && t.kill_requested {
            t.kill_requested = false;
            self.deferred_kills.push(key.clone());
        }
        if ev.state == TaskState::Running && ev.healthy.is_none() && ev.ready.is_none() {
            start_checks(
                t,
                &self.runtime,
                &self.health_sink,
                &ev.framework_id,
                &ev.task_id,
            );
        }
        self.dirty = true;
        let was_empty = t.queue.is_empty();
        t.queue.push_back(Pending {
            update: pb::StatusUpdate {
                framework_id: ev.framework_id.0,
                status: Some(status),
            },
            terminal: ev.state.is_terminal(),
        });
        if was_empty {
            t.next_retry = Some(Instant::now());
            t.backoff = self.cfg.status_retry_min;
        }
    }

    /// Sends every due queue head (batched in one message).
    async fn flush_due(&mut self, out: &mpsc::Sender<pb::AgentMessage>, now: Instant) {
        let mut batch = Vec::new();
        let max = self.cfg.status_retry_max;
        for t in self.tasks.values_mut() {
            let Some(due) = t.next_retry else { continue };
            if due > now {
                continue;
            }
            let Some(head) = t.queue.front() else {
                t.next_retry = None;
                continue;
            };
            batch.push(head.update.clone());
            t.next_retry = Some(now + t.backoff);
            t.backoff = (t.backoff * 2).min(max);
        }
        for chunk in batch.chunks(1000) {
            let m = msg(pb::agent_message::Message::Updates(pb::StatusUpdates {
                updates: chunk.to_vec(),
            }));
            if out.send(m).await.is_err() {
                return;
            }
        }
    }

    async fn on_master(&mut self, m: pb::MasterMessage, out: &mpsc::Sender<pb::AgentMessage>) {
        use pb::master_message::Message;
        match m.message {
            Some(Message::RunTasks(run)) => {
                let Some(fi) = run.framework else { return };
                let fid = FrameworkId::new(fi.framework_id.as_str());
                self.frameworks.insert(fid.clone(), fi);
                let mut launch: Vec<pb::TaskInfo> = Vec::new();
                for task in run.tasks {
                    let tid = TaskId::new(task.task_id.as_str());
                    let key = (fid.clone(), tid.clone());
                    if self.tasks.contains_key(&key) {
                        tracing::warn!(task_id = %tid, "duplicate launch ignored");
                        continue;
                    }
                    self.tasks.insert(
                        key,
                        TaskRecord {
                            alive: Arc::new(std::sync::atomic::AtomicBool::new(true)),
                            checking: false,
                            health: crate::health::Verdicts::new(task.health_checks.len()),
                            info: task.clone(),
                            state: TaskState::Staging,
                            queue: VecDeque::new(),
                            next_retry: None,
                            backoff: self.cfg.status_retry_min,
                            kill_requested: false,
                        },
                    );
                    launch.push(task);
                }
                // Checkpoint before launching: a crash in between leaves an
                // orphan that the next recovery removes, never an unknown task.
                self.dirty = true;
                self.persist();
                for task in launch {
                    tracing::debug!(framework_id = %fid, task_id = %task.task_id, "launching");
                    self.runtime
                        .launch(LaunchSpec {
                            framework_id: fid.clone(),
                            task,
                        })
                        .await;
                }
            }
            Some(Message::KillTask(k)) => {
                let fid = FrameworkId::new(k.framework_id.as_str());
                let tid = TaskId::new(k.task_id.as_str());
                self.kill(&fid, &tid).await;
            }
            Some(Message::ShutdownFramework(s)) => {
                let fid = FrameworkId::new(s.framework_id.as_str());
                let ids: Vec<TaskId> = self
                    .tasks
                    .iter()
                    .filter(|((f, _), t)| f == &fid && !t.state.is_terminal())
                    .map(|((_, t), _)| t.clone())
                    .collect();
                for tid in ids {
                    self.kill(&fid, &tid).await;
                }
            }
            Some(Message::Acks(acks)) => {
                let mut resend = false;
                for a in acks.acks {
                    let key = (
                        FrameworkId::new(a.framework_id.as_str()),
                        TaskId::new(a.task_id.as_str()),
                    );
                    let Some(t) = self.tasks.get_mut(&key) else {
                        continue;
                    };
                    let matches = t
                        .queue
                        .front()
                        .and_then(|h| h.update.status.as_ref())
                        .is_some_and(|s| s.uuid == a.uuid);
                    if !matches {
                        continue; // stale or duplicate acknowledgement
                    }
                    let head = t.queue.pop_front();
                    self.dirty = true;
                    if t.queue.is_empty() {
                        t.next_retry = None;
                        if head.is_some_and(|h| h.terminal) {
                            self.tasks.remove(&key);
                            self.to_cleanup.push(key);
                        }
                    } else {
                        t.next_retry = Some(Instant::now());
                        t.backoff = self.cfg.status_retry_min;
                        resend = true;
                    }
                }
                if resend {
                    self.flush_due(out, Instant::now()).await;
                }
            }
            Some(Message::Registered(_))
            | Some(Message::Pong(_))
            | Some(Message::Refused(_))
            | None => {}
        }
    }

    async fn kill(&mut self, fid: &FrameworkId, tid: &TaskId) {
        let Some(t) = self.tasks.get_mut(&(fid.clone(), tid.clone())) else {
            tracing::info!(task_id = %tid, "kill for a task this agent does not have: ignored");
            return;
        };
        if t.state.is_terminal() {
            return;
        }
        if matches!(t.state, TaskState::Staging | TaskState::Starting) {
            // The runtime may not have a container or process yet; the
            // kill is repeated as soon as the task reports RUNNING.
            t.kill_requested = true;
        }
        // Grace between SIGTERM and SIGKILL; unset (0) means the default 5 s.
        let grace = if t.info.kill_grace_seconds > 0.0 {
            Duration::from_secs_f64(t.info.kill_grace_seconds.min(3600.0))
        } else {
            DEFAULT_KILL_GRACE
        };
        self.runtime.kill(fid, tid, grace).await;
    }
}

/// Starts the task's readiness and health checkers, once.
fn start_checks(
    t: &mut TaskRecord,
    runtime: &Arc<dyn ContainerRuntime>,
    sink: &crate::runtime::EventSink,
    fw: &FrameworkId,
    tid: &TaskId,
) {
    if t.checking {
        return;
    }
    t.checking = true;
    let live = |alive: Arc<std::sync::atomic::AtomicBool>| {
        move || alive.load(std::sync::atomic::Ordering::Relaxed)
    };
    if let Some(check) = t.info.readiness_checks.first().cloned() {
        crate::health::spawn_readiness(
            check,
            runtime.clone(),
            sink.clone(),
            fw.clone(),
            tid.clone(),
            live(t.alive.clone()),
        );
    }
    for (i, check) in t.info.health_checks.iter().enumerate() {
        crate::health::spawn_checker(
            i,
            check.clone(),
            runtime.clone(),
            sink.clone(),
            fw.clone(),
            tid.clone(),
            live(t.alive.clone()),
        );
    }
}

enum SessionError {
    Connect(String),
    Refused(String),
}
