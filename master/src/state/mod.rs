//! The master's state machine: synchronous, no IO, domain types only.
//!
//! Every input (a scheduler call, an agent message, a stream closing, a
//! timer tick) is a method taking `now`; side effects come back as
//! [`Output`] values that the actor ([`crate::actor`]) performs: sending on
//! a framework's or agent's stream, persisting to the registry. This keeps
//! every rule of the offer loop testable without sockets or clocks: the
//! simulator in `master/tests/` drives it through thousands of seeded
//! histories of restarts, partitions and failovers.
//!
//! # Layout
//! - this file: the state, its records, outputs, errors, shared helpers;
//! - [`frameworks`](self::frameworks): SUBSCRIBE, disconnection, failover, TEARDOWN;
//! - [`offers`](self::offers): allocation, offers, ACCEPT, DECLINE, rescinds;
//! - [`tasks`](self::tasks): KILL, ACKNOWLEDGE, status updates, usage;
//! - [`reconcile`](self::reconcile): RECONCILE and the answers deferred until
//!   an agent's fate is known;
//! - [`agents`](self::agents): registration, re-registration, heartbeats,
//!   unreachable agents;
//! - [`gc`](self::gc): timers and bounded memory;
//! - [`view`](self::view): `/state`, gauges and the invariant checker.

mod agents;
mod frameworks;
mod gc;
mod offers;
mod reconcile;
mod secrets;
mod tasks;
mod view;

use crate::config::MasterConfig;
use crate::store::{RegisteredAgent, RegistryOp};
use agora_core::allocator::Allocator;
use agora_core::info::{FrameworkInfo, TaskInfo, TaskSource, TaskStatus};
use agora_core::lifecycle::{AgentState, FrameworkState, OfferState};
use agora_core::protocol::{Event, MasterMessage, TaskUsage};
use agora_core::{AgentId, FrameworkId, Invalid, OfferId, Resources, TaskId, TaskState};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The hash seed of every map in the master: random per process, unless a
/// test fixes it first with [`use_fixed_hash_seed`].
static HASH_SEED: OnceLock<u64> = OnceLock::new();

/// Makes the master's hash maps iterate in the same order in every run of
/// this process (for a seed-replayable simulation). Returns false if maps
/// were already created with another seed.
pub fn use_fixed_hash_seed(seed: u64) -> bool {
    *HASH_SEED.get_or_init(|| seed) == seed
}

/// SipHash keyed by a per-process seed: iteration order is reproducible
/// when the seed is fixed, and not predictable from ids chosen by clients
/// otherwise.
#[derive(Clone, Debug)]
pub struct SeededState(u64);

impl Default for SeededState {
    fn default() -> Self {
        SeededState(*HASH_SEED.get_or_init(|| std::hash::RandomState::new().hash_one(0u64)))
    }
}

impl BuildHasher for SeededState {
    type Hasher = DefaultHasher;
    fn build_hasher(&self) -> DefaultHasher {
        let mut h = DefaultHasher::new();
        h.write_u64(self.0);
        h
    }
}

type Map<K, V> = HashMap<K, V, SeededState>;
type Set<K> = HashSet<K, SeededState>;

/// Identifies one open stream (a framework's event stream or an agent link).
pub type ConnId = u64;

/// Reasons carried in master-generated status updates (Mesos names).
pub use secrets::{SecretUser, TaskSecrets};

pub mod reason {
    pub const RECONCILIATION: &str = "REASON_RECONCILIATION";
    pub const AGENT_REMOVED: &str = "REASON_AGENT_REMOVED";
    pub const AGENT_UNREACHABLE: &str = "REASON_AGENT_UNREACHABLE";
    pub const AGENT_REREGISTERED: &str = "REASON_AGENT_REREGISTERED";
    pub const INVALID_OFFERS: &str = "REASON_INVALID_OFFERS";
    pub const TASK_INVALID: &str = "REASON_TASK_INVALID";
    pub const FRAMEWORK_REMOVED: &str = "REASON_FRAMEWORK_REMOVED";
    pub const TASK_UNKNOWN: &str = "REASON_TASK_UNKNOWN";
}

/// A side effect for the actor to perform.
#[derive(Debug)]
pub enum Output {
    ToFramework(ConnId, Event),
    /// Ends a framework's event stream (after sending what was queued).
    CloseFramework(ConnId),
    ToAgent(ConnId, MasterMessage),
    CloseAgent(ConnId),
    /// Persist; once durable, feed `then` back (if any) via [`Master::persisted`].
    Persist(RegistryOp, Option<Pending>),
}

/// Work waiting for the registry.
#[derive(Debug, Clone)]
pub enum Pending {
    AdmitAgent { conn: ConnId, agent: AgentId },
}

/// A refused scheduler call; the gRPC handler chooses the status code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("framework {0} is not subscribed: subscribe first (or again after a master failover)")]
    UnknownFramework(FrameworkId),
    #[error("framework {0} was torn down; subscribe again without a framework id")]
    FrameworkCompleted(FrameworkId),
    #[error("{0}")]
    InvalidOffers(String),
    #[error("{0}")]
    NotFound(String),
    /// The caller's principal may not do this (the text names the
    /// permission); PERMISSION_DENIED / 403.
    #[error("{0}")]
    PermissionDenied(String),
}

#[derive(Debug)]
struct Task {
    info: TaskInfo,
    agent: AgentId,
    state: TaskState,
    status: TaskStatus,
    usage: Option<TaskUsage>,
    /// A kill was asked for. Sent again whenever the task's agent
    /// re-registers still running it: a kill sent into a partition, or
    /// while the agent was away, is not lost.
    kill_requested: bool,
    /// Learnt from a re-registering agent rather than launched through this
    /// master: its description (secret references included) is only the
    /// agent's word, so `ResolveSecrets` refuses it (secrets are resolved
    /// at launch; a relaunch is a new task).
    adopted: bool,
}

#[derive(Debug)]
struct Framework {
    id: FrameworkId,
    info: FrameworkInfo,
    state: FrameworkState,
    conn: Option<ConnId>,
    disconnected_at: Option<Instant>,
    /// Live tasks, boxed: the map grows to many thousands of entries and
    /// moves only pointers when it does.
    tasks: Map<TaskId, Box<Task>>,
    /// Terminal tasks, oldest first, at most `completed_tasks_per_framework`.
    completed: VecDeque<Task>,
    offers: Set<OfferId>,
    last_heartbeat: Instant,
    /// Tasks that ended but whose terminal update the framework has not
    /// acknowledged yet (with that update's uuid once known, and the agent
    /// holding it). Their ids stay in use, as in Mesos: a launch reusing one
    /// would meet the agent still holding the old task.
    unacked_terminal: Map<TaskId, (AgentId, Option<Vec<u8>>)>,
    /// The authenticated principal that registered it (`None` with
    /// authentication off, or before its first SUBSCRIBE since this master
    /// started). Only it (or an admin) may resubscribe and make its calls.
    principal: Option<String>,
}

#[derive(Debug)]
struct Agent {
    id: AgentId,
    hostname: String,
    resources: Resources,
    attributes: Vec<(String, String)>,
    endpoint: String,
    /// Its internal address (where routers reach its instances).
    address: Option<std::net::IpAddr>,
    /// The role its resources are reserved for (`*`: unreserved).
    role: String,
    state: AgentState,
    conn: Option<ConnId>,
    last_seen: Instant,
    /// When it became unreachable (for garbage collection).
    unreachable_at: Option<Instant>,
    /// Tasks the master believes are on it (same set as the frameworks' `tasks`).
    tasks: Set<(FrameworkId, TaskId)>,
    offers: Set<OfferId>,
    in_allocator: bool,
    /// Seconds since the Unix epoch of its last (re-)registration.
    registered_at: Option<f64>,
    /// Frameworks torn down while it was away: their tasks there are killed
    /// (and the framework is not recovered from its report) when it is back.
    shutdowns: BTreeSet<FrameworkId>,
}

impl Agent {
    fn new(id: AgentId, state: AgentState, now: Instant) -> Self {
        Agent {
            id,
            hostname: String::new(),
            resources: Resources::default(),
            attributes: Vec::new(),
            endpoint: String::new(),
            address: None,
            role: agora_core::info::DEFAULT_ROLE.to_string(),
            state,
            conn: None,
            last_seen: now,
            unreachable_at: None,
            tasks: Set::default(),
            offers: Set::default(),
            in_allocator: false,
            registered_at: None,
            shutdowns: BTreeSet::new(),
        }
    }
}

#[derive(Debug)]
struct Offer {
    framework: FrameworkId,
    agent: AgentId,
    resources: Resources,
    created: Instant,
    state: OfferState,
}

/// A question the master cannot answer yet: the task may be on an agent that
/// was admitted before a master restart and has not re-registered. It is
/// answered once that agent is back or declared unreachable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Deferred {
    framework: FrameworkId,
    task: TaskId,
    agent: Option<AgentId>,
    kind: DeferredKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum DeferredKind {
    Reconcile,
    Kill,
}

/// Most deferred questions kept; beyond it the master stays silent and the
/// framework's own retry covers it.
const MAX_DEFERRED: usize = 100_000;

/// Counters exported on `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub offers_sent: u64,
    pub offers_declined: u64,
    pub offers_accepted: u64,
    pub offers_rescinded: u64,
    pub tasks_launched: u64,
    pub task_errors: u64,
    pub status_updates: u64,
    pub status_update_acks: u64,
    /// Updates dropped because the task lives on another agent.
    pub status_updates_misrouted: u64,
    /// Updates dropped because they carry a state only the master decides.
    pub status_updates_refused: u64,
    pub invalid_calls: u64,
    pub agents_registered: u64,
    pub agents_reregistered: u64,
    pub agents_unreachable: u64,
    pub agents_removed: u64,
    pub frameworks_subscribed: u64,
    pub frameworks_removed: u64,
    pub allocation_runs: u64,
    pub kills_deferred: u64,
    pub reconciliations_deferred: u64,
    /// Lifecycle steps the master tried that its rules refuse: always a bug.
    pub illegal_transitions: u64,
    /// Usage reports received from agents.
    pub usage_reports: u64,
    /// Usage events queued to frameworks (one per framework per report).
    pub usage_events: u64,
    /// Usage events dropped because the framework's stream was backed up.
    pub usage_events_dropped: u64,
}

impl Counters {
    /// Every counter with its `/metrics` name and help, in one place.
    pub fn named(&self) -> [(&'static str, &'static str, u64); 24] {
        [
            ("offers_sent", "Offers sent to frameworks", self.offers_sent),
            ("offers_declined", "Offers declined", self.offers_declined),
            ("offers_accepted", "Offers accepted", self.offers_accepted),
            (
                "offers_rescinded",
                "Offers rescinded (agent lost, timeout, framework gone)",
                self.offers_rescinded,
            ),
            ("tasks_launched", "Tasks launched", self.tasks_launched),
            (
                "task_errors",
                "Tasks refused with TASK_ERROR",
                self.task_errors,
            ),
            (
                "status_updates",
                "Status updates received from agents",
                self.status_updates,
            ),
            (
                "status_update_acks",
                "Status update acknowledgements from frameworks",
                self.status_update_acks,
            ),
            (
                "status_updates_misrouted",
                "Status updates dropped because their task lives on another agent",
                self.status_updates_misrouted,
            ),
            (
                "status_updates_refused",
                "Status updates dropped because an agent reported a state only the master decides",
                self.status_updates_refused,
            ),
            (
                "invalid_calls",
                "Scheduler calls refused as invalid",
                self.invalid_calls,
            ),
            (
                "agents_registered",
                "Agent first registrations",
                self.agents_registered,
            ),
            (
                "agents_reregistered",
                "Agent re-registrations",
                self.agents_reregistered,
            ),
            (
                "agents_unreachable",
                "Agents marked unreachable",
                self.agents_unreachable,
            ),
            (
                "agents_removed",
                "Agents removed after being unreachable for too long",
                self.agents_removed,
            ),
            (
                "frameworks_subscribed",
                "Framework subscriptions",
                self.frameworks_subscribed,
            ),
            (
                "frameworks_removed",
                "Frameworks torn down (TEARDOWN or failover timeout)",
                self.frameworks_removed,
            ),
            ("allocation_runs", "Allocation runs", self.allocation_runs),
            (
                "kills_deferred",
                "Kills held until the task's agent re-registers",
                self.kills_deferred,
            ),
            (
                "reconciliations_deferred",
                "Reconciliation answers held until the task's agent re-registers",
                self.reconciliations_deferred,
            ),
            (
                "illegal_transitions",
                "Lifecycle transitions the master refused (always a bug; see the error log)",
                self.illegal_transitions,
            ),
            (
                "usage_reports",
                "Task usage reports received from agents",
                self.usage_reports,
            ),
            (
                "usage_events",
                "Task usage events sent to frameworks (one per framework per agent report)",
                self.usage_events,
            ),
            (
                "usage_events_dropped",
                "Task usage events dropped because the framework's event stream was backed up",
                self.usage_events_dropped,
            ),
        ]
    }
}

/// The master's state. See the module docs.
pub struct Master {
    cfg: MasterConfig,
    allocator: Allocator,
    agents: Map<AgentId, Agent>,
    agent_conns: Map<ConnId, AgentId>,
    frameworks: Map<FrameworkId, Framework>,
    framework_conns: Map<ConnId, FrameworkId>,
    /// Torn-down frameworks, oldest first, at most `max_completed_frameworks`.
    completed_frameworks: VecDeque<Framework>,
    offers: Map<OfferId, Offer>,
    deferred: BTreeSet<Deferred>,
    /// Agents whose free resources changed since the last allocation.
    dirty: BTreeSet<AgentId>,
    full_allocation_due: bool,
    next_full_allocation: Instant,
    seq: u64,
    /// Wall-clock time at `started_at`; later wall times are derived from
    /// `now` so the state machine stays deterministic.
    started_epoch: f64,
    started_at: Instant,
    pub counters: Counters,
    /// Durations of allocation runs (seconds), drained by the actor into the histogram.
    pub allocation_runs: Vec<f64>,
}

fn status(
    task: &TaskId,
    agent: &AgentId,
    state: TaskState,
    reason: &str,
    message: impl Into<String>,
    timestamp: f64,
) -> TaskStatus {
    TaskStatus {
        agent_id: Some(agent.clone()),
        message: message.into(),
        reason: reason.to_string(),
        source: TaskSource::Master,
        timestamp,
        ..TaskStatus::new(task.clone(), state)
    }
}

impl Master {
    /// A master that remembers the agents of `registry` (they must re-register).
    pub fn new(cfg: MasterConfig, registry: Vec<RegisteredAgent>, now: Instant) -> Self {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Self::with_clock(cfg, registry, now, epoch)
    }

    /// Like [`Master::new`], with the wall-clock time (seconds since the
    /// Unix epoch) at `now` given: the state machine never reads a clock.
    pub fn with_clock(
        cfg: MasterConfig,
        registry: Vec<RegisteredAgent>,
        now: Instant,
        epoch_at_now: f64,
    ) -> Self {
        let mut m = Master {
            next_full_allocation: now,
            cfg,
            allocator: Allocator::default(),
            agents: Map::default(),
            agent_conns: Map::default(),
            frameworks: Map::default(),
            framework_conns: Map::default(),
            completed_frameworks: VecDeque::new(),
            offers: Map::default(),
            deferred: BTreeSet::new(),
            dirty: BTreeSet::new(),
            full_allocation_due: true,
            seq: 0,
            started_epoch: epoch_at_now,
            started_at: now,
            counters: Counters::default(),
            allocation_runs: Vec::new(),
        };
        for r in registry {
            let mut a = Agent::new(r.id.clone(), AgentState::Recovered, now);
            if let Some(since) = r.unreachable_since {
                a.state = AgentState::Unreachable;
                // Age it from the stored wall time, so collection survives restarts.
                let age = (m.started_epoch - since as f64).max(0.0);
                a.unreachable_at = Some(
                    now.checked_sub(Duration::from_secs_f64(age.min(1e9)))
                        .unwrap_or(now),
                );
            }
            a.hostname = r.hostname;
            a.resources = r.resources;
            a.attributes = r.attributes;
            a.role = r.role;
            m.agents.insert(r.id, a);
        }
        m
    }

    pub fn config(&self) -> &MasterConfig {
        &self.cfg
    }

    fn next_id(&mut self, kind: &str) -> String {
        self.seq += 1;
        format!("{}-{}{}", self.cfg.master_id, kind, self.seq)
    }

    /// Seconds since the Unix epoch at `now`.
    fn wall(&self, now: Instant) -> f64 {
        self.started_epoch + now.saturating_duration_since(self.started_at).as_secs_f64()
    }

    /// A lifecycle step the master's own logic asked for was refused: a bug.
    /// Logged with ids, counted on `/metrics`, and fatal in debug builds.
    fn illegal(&mut self, what: &str, ids: &str, err: &dyn std::fmt::Display) {
        self.counters.illegal_transitions += 1;
        tracing::error!(what, ids, error = %err, "illegal lifecycle transition");
        debug_assert!(false, "illegal {what} transition for {ids}: {err}");
    }

    fn partition_aware(&self, fid: &FrameworkId) -> bool {
        self.frameworks
            .get(fid)
            .is_some_and(|f| f.info.partition_aware)
    }

    /// Sends a master-generated update to the framework, if connected.
    fn send_update(&mut self, fid: &FrameworkId, st: TaskStatus, out: &mut Vec<Output>) {
        if let Some(conn) = self.frameworks.get(fid).and_then(|f| f.conn) {
            out.push(Output::ToFramework(conn, Event::Update(st)));
        }
    }

    fn to_agent(&self, agent: &AgentId, msg: MasterMessage, out: &mut Vec<Output>) -> bool {
        match self.agents.get(agent).and_then(|a| a.conn) {
            Some(conn) => {
                out.push(Output::ToAgent(conn, msg));
                true
            }
            None => false,
        }
    }

    /// Persists that `agent` is unreachable since `now`.
    fn persist_unreachable(&self, agent: &AgentId, now: Instant, out: &mut Vec<Output>) {
        out.push(Output::Persist(
            RegistryOp::MarkUnreachable(agent.clone(), self.wall(now) as u64),
            None,
        ));
    }
}
