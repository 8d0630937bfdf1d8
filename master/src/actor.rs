//! The master actor: one task owns [`Master`], fed by a channel. It drains
//! commands in batches, runs event-driven allocation after each batch, ticks
//! timers, and performs the [`Output`]s (stream sends, registry writes).

use crate::auth::Caller;
use crate::auth::acl::Permission;
use crate::state::{CallError, ConnId, Master, Output, Pending};
use crate::store::{Registry, RegistryOp};
use crate::view::{Gauges, State};
use agora_core::info::FrameworkInfo;
use agora_core::protocol::{
    Accept, Acknowledge, Decline, Event, Kill, MasterMessage, Reconcile, Register, StatusUpdate,
    TaskUsage,
};
use agora_core::{FrameworkId, Invalid, TaskId};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Events queued per framework stream before the master gives up on a slow
/// reader (the stream is closed; the scheduler resubscribes and reconciles).
pub const FRAMEWORK_QUEUE: usize = 200_000;
/// Messages queued per agent stream.
pub const AGENT_QUEUE: usize = 50_000;
/// How many queued commands one batch handles before allocating.
const BATCH: usize = 4096;

/// Events to one framework stream (converted to protobuf by the stream).
pub type EventTx = mpsc::Sender<Event>;
/// Messages to one agent link.
pub type AgentTx = mpsc::Sender<MasterMessage>;

/// A unary scheduler call, already converted from the wire.
#[derive(Debug)]
pub enum Call {
    Accept(Accept),
    Decline(Decline),
    Revive(FrameworkId),
    Suppress(FrameworkId),
    Kill(Kill),
    Acknowledge(Acknowledge),
    Reconcile(Reconcile),
    Teardown(FrameworkId),
}

impl Call {
    /// The framework the call is made for.
    pub fn framework_id(&self) -> &FrameworkId {
        match self {
            Call::Accept(c) => &c.framework_id,
            Call::Decline(c) => &c.framework_id,
            Call::Kill(c) => &c.framework_id,
            Call::Acknowledge(c) => &c.framework_id,
            Call::Reconcile(c) => &c.framework_id,
            Call::Revive(id) | Call::Suppress(id) | Call::Teardown(id) => id,
        }
    }
}

/// Whether `caller` may make `call`, decided against the framework's
/// registered principal: its own calls only by that principal (or an
/// admin); kill and teardown also by `kill_tasks`/`teardown_frameworks`
/// rules; a launch also needs `launch_tasks` for the framework's role. A
/// framework the master does not know is left to the state machine.
fn authorize(master: &Master, call: &Call, caller: &Caller) -> Result<(), CallError> {
    if matches!(caller, Caller::Unrestricted) {
        return Ok(());
    }
    let fid = call.framework_id();
    let Some(owner) = master.framework_principal(fid) else {
        return Ok(());
    };
    let r = match call {
        Call::Kill(_) => caller.check(&Permission::KillTasks {
            framework: fid,
            owner,
        }),
        Call::Teardown(_) => caller.check(&Permission::TeardownFramework {
            framework: fid,
            owner,
        }),
        Call::Accept(a) => caller.may_act_for(fid, owner).and_then(|()| {
            if a.tasks.is_empty() {
                return Ok(());
            }
            let role = master.framework_role(fid).unwrap_or_default();
            caller.check(&Permission::LaunchTasks { role })
        }),
        _ => caller.may_act_for(fid, owner),
    };
    r.map_err(|d| {
        tracing::info!(framework_id = %fid, denied = %d, "refusing a scheduler call");
        CallError::PermissionDenied(d.to_string())
    })
}

pub enum Command {
    Subscribe {
        conn: ConnId,
        info: FrameworkInfo,
        events: EventTx,
        reply: oneshot::Sender<Result<FrameworkId, CallError>>,
        /// Who subscribes: a known framework may be resubscribed only by
        /// the principal that registered it (or an admin).
        caller: Caller,
    },
    FrameworkClosed(ConnId),
    Call(Call, Caller, oneshot::Sender<Result<(), CallError>>),
    AgentAttach {
        conn: ConnId,
        tx: AgentTx,
    },
    /// A registration, or why it could not be read.
    AgentRegister(ConnId, Result<Register, Invalid>),
    AgentHeartbeat(ConnId),
    AgentUpdates(ConnId, Vec<StatusUpdate>),
    AgentUsage(ConnId, Vec<TaskUsage>),
    AgentClosed(ConnId),
    Persisted(Vec<Pending>),
    State(oneshot::Sender<State>),
    OperatorKill {
        task_id: TaskId,
        framework: Option<FrameworkId>,
        reply: oneshot::Sender<Result<FrameworkId, CallError>>,
        /// Checked for `kill_tasks` against the task's framework.
        caller: Caller,
    },
    Gauges(oneshot::Sender<(Gauges, Vec<f64>)>),
    /// Questions of the secret store and of agent identity checks (see
    /// [`SecretsQuery`]).
    Secrets(SecretsQuery),
}

/// What the secret store's edges ask the state.
pub enum SecretsQuery {
    /// Live tasks referencing a path (every path when `None`).
    Users(
        Option<agora_core::secrets::SecretPath>,
        oneshot::Sender<Vec<crate::state::SecretUser>>,
    ),
    /// The versions of a path that live tasks reference explicitly.
    VersionsInUse(agora_core::secrets::SecretPath, oneshot::Sender<Vec<u64>>),
    /// One task's references, for the agent that runs it.
    TaskSecrets {
        agent: agora_core::AgentId,
        framework: FrameworkId,
        task: TaskId,
        reply: oneshot::Sender<Result<crate::state::TaskSecrets, String>>,
    },
    /// Whether a framework is subscribed.
    FrameworkKnown(FrameworkId, oneshot::Sender<Result<(), CallError>>),
    /// The host name an agent registered with, to check its certificate
    /// (`None`: no such agent).
    AgentHostname(agora_core::AgentId, oneshot::Sender<Option<String>>),
}

/// A cheap, cloneable way to talk to the actor.
#[derive(Clone)]
pub struct MasterHandle {
    tx: mpsc::Sender<Command>,
    next_conn: Arc<AtomicU64>,
}

#[derive(Debug, thiserror::Error)]
#[error("the master is shutting down")]
pub struct Stopped;

impl MasterHandle {
    pub fn next_conn(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub async fn send(&self, cmd: Command) -> Result<(), Stopped> {
        self.tx.send(cmd).await.map_err(|_| Stopped)
    }

    /// Sends from a `Drop` (cannot await): tries, else spawns.
    pub fn send_later(&self, cmd: Command) {
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.tx.try_send(cmd) {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(cmd).await;
            });
        }
    }

    /// A call with authentication off (tests, in-process tools).
    pub async fn call(&self, call: Call) -> Result<Result<(), CallError>, Stopped> {
        self.call_as(call, Caller::Unrestricted).await
    }

    /// A call by `caller`, authorized by the actor (see [`Call`]).
    pub async fn call_as(
        &self,
        call: Call,
        caller: Caller,
    ) -> Result<Result<(), CallError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Call(call, caller, reply)).await?;
        rx.await.map_err(|_| Stopped)
    }

    pub async fn state(&self) -> Result<State, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::State(reply)).await?;
        rx.await.map_err(|_| Stopped)
    }

    pub async fn operator_kill(
        &self,
        task_id: TaskId,
        framework: Option<FrameworkId>,
        caller: Caller,
    ) -> Result<Result<FrameworkId, CallError>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::OperatorKill {
            task_id,
            framework,
            reply,
            caller,
        })
        .await?;
        rx.await.map_err(|_| Stopped)
    }

    /// Asks the state a secret-store question; `make` builds the query
    /// around the reply channel.
    pub async fn secrets_query<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> SecretsQuery,
    ) -> Result<T, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Secrets(make(reply))).await?;
        rx.await.map_err(|_| Stopped)
    }

    pub async fn gauges(&self) -> Result<(Gauges, Vec<f64>), Stopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Gauges(reply)).await?;
        rx.await.map_err(|_| Stopped)
    }
}

/// Starts the actor (and the registry writer thread) and returns its handle.
pub fn spawn(
    master: Master,
    registry: Box<dyn Registry>,
    shutdown: shutdown::Shutdown,
) -> MasterHandle {
    let (tx, rx) = mpsc::channel(65_536);
    let handle = MasterHandle {
        tx: tx.clone(),
        next_conn: Arc::new(AtomicU64::new(1)),
    };
    let store_tx = spawn_registry_writer(registry, tx);
    tokio::spawn(run(master, rx, store_tx, shutdown));
    handle
}

/// The shutdown signal servers take (a watch channel): `channel()` gives the
/// trigger and the receiver.
pub mod shutdown {
    use tokio::sync::watch;

    #[derive(Clone)]
    pub struct Shutdown(watch::Receiver<bool>);

    pub struct Trigger(watch::Sender<bool>);

    pub fn channel() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger(tx), Shutdown(rx))
    }

    impl Trigger {
        pub fn fire(&self) {
            let _ = self.0.send(true);
        }
    }

    impl Shutdown {
        pub async fn wait(&mut self) {
            while !*self.0.borrow() {
                if self.0.changed().await.is_err() {
                    // Trigger dropped: treat as shutdown.
                    return;
                }
            }
        }
    }
}

type StoreMsg = (RegistryOp, Option<Pending>);

fn spawn_registry_writer(
    mut registry: Box<dyn Registry>,
    actor: mpsc::Sender<Command>,
) -> mpsc::UnboundedSender<StoreMsg> {
    let (tx, mut rx) = mpsc::unbounded_channel::<StoreMsg>();
    std::thread::Builder::new()
        .name("agora-registry".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut ops = vec![first.0];
                let mut pending: Vec<Pending> = first.1.into_iter().collect();
                while let Ok((op, p)) = rx.try_recv() {
                    ops.push(op);
                    pending.extend(p);
                    if ops.len() >= 10_000 {
                        break;
                    }
                }
                match registry.apply(&ops) {
                    Ok(()) => {
                        if !pending.is_empty() && actor.blocking_send(Command::Persisted(pending)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, ops = ops.len(), "registry write failed; agents awaiting admission will retry");
                    }
                }
            }
        })
        .expect("spawning the registry thread");
    tx
}

struct Io {
    frameworks: HashMap<ConnId, EventTx>,
    agents: HashMap<ConnId, AgentTx>,
    store: mpsc::UnboundedSender<StoreMsg>,
    metrics_runs: Vec<f64>,
}

async fn run(
    mut master: Master,
    mut rx: mpsc::Receiver<Command>,
    store: mpsc::UnboundedSender<StoreMsg>,
    mut shutdown: shutdown::Shutdown,
) {
    let mut io = Io {
        frameworks: HashMap::new(),
        agents: HashMap::new(),
        store,
        metrics_runs: Vec::new(),
    };
    let tick_every = (master.config().agent_timeout / 10)
        .min(master.config().allocation_interval)
        .max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval(tick_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let now = tokio::time::Instant::now().into_std();
                handle(&mut master, &mut io, cmd, now, &mut out);
                for _ in 0..BATCH {
                    match rx.try_recv() {
                        Ok(cmd) => handle(&mut master, &mut io, cmd, now, &mut out),
                        Err(_) => break,
                    }
                }
                // Perform before allocating so acks/updates are not delayed.
                perform(&mut master, &mut io, &mut out, now);
                master.allocate(now, &mut out);
            }
            _ = ticker.tick() => {
                let now = tokio::time::Instant::now().into_std();
                master.tick(now, &mut out);
                master.allocate(now, &mut out);
            }
        }
        let now = tokio::time::Instant::now().into_std();
        perform(&mut master, &mut io, &mut out, now);
        io.metrics_runs.append(&mut master.allocation_runs);
        if io.metrics_runs.len() > 100_000 {
            io.metrics_runs.drain(..50_000);
        }
    }
    tracing::info!("master actor stopped");
}

fn handle(
    master: &mut Master,
    io: &mut Io,
    cmd: Command,
    now: std::time::Instant,
    out: &mut Vec<Output>,
) {
    match cmd {
        Command::Subscribe {
            conn,
            info,
            events,
            reply,
            caller,
        } => {
            // A framework the master knows with a principal is resubscribed
            // by that principal only (failover); one recovered from an
            // agent's report (after a master restart) has none yet and is
            // bound to the first principal that subscribes it.
            if let Some(id) = &info.id
                && let Some(Some(owner)) = master.framework_principal(id)
                && let Err(d) = caller.may_act_for(id, Some(owner))
            {
                tracing::info!(framework_id = %id, denied = %d, "refusing a resubscription");
                let _ = reply.send(Err(CallError::PermissionDenied(d.to_string())));
                return;
            }
            io.frameworks.insert(conn, events);
            let r = master.subscribe(conn, info, now, out);
            match &r {
                Ok(id) => master.bind_framework_principal(id, caller.principal()),
                Err(_) => {
                    io.frameworks.remove(&conn);
                }
            }
            let _ = reply.send(r);
        }
        Command::FrameworkClosed(conn) => {
            io.frameworks.remove(&conn);
            master.framework_closed(conn, now, out);
        }
        Command::Call(call, caller, reply) => {
            if let Err(e) = authorize(master, &call, &caller) {
                let _ = reply.send(Err(e));
                return;
            }
            let r = match call {
                Call::Accept(r) => master.accept(r, now, out),
                Call::Decline(r) => master.decline(r, now),
                Call::Revive(id) => master.revive(&id),
                Call::Suppress(id) => master.suppress(&id),
                Call::Kill(r) => master.kill(r, now, out),
                Call::Acknowledge(r) => master.acknowledge(r, out),
                Call::Reconcile(r) => master.reconcile(r, now, out),
                Call::Teardown(id) => master.teardown(&id, now, out),
            };
            let _ = reply.send(r);
        }
        Command::AgentAttach { conn, tx } => {
            io.agents.insert(conn, tx);
        }
        Command::AgentRegister(conn, reg) => {
            let r = reg.and_then(|reg| master.register_agent(conn, reg, now, out));
            if let Err(e) = r {
                tracing::warn!(conn, error = %e, "refusing agent registration");
                out.push(Output::ToAgent(conn, MasterMessage::Refused(e.to_string())));
                out.push(Output::CloseAgent(conn));
            }
        }
        Command::AgentHeartbeat(conn) => master.agent_heartbeat(conn, now, out),
        Command::AgentUpdates(conn, updates) => master.status_updates(conn, updates, now, out),
        Command::AgentUsage(conn, usage) => master.usage(conn, usage, now),
        Command::AgentClosed(conn) => {
            io.agents.remove(&conn);
            master.agent_closed(conn, out);
        }
        Command::Persisted(pending) => {
            for p in pending {
                master.persisted(p, now, out);
            }
        }
        Command::State(reply) => {
            let _ = reply.send(master.snapshot());
        }
        Command::OperatorKill {
            task_id,
            framework,
            reply,
            caller,
        } => {
            let r = master
                .live_task_owner(&task_id, framework.as_ref())
                .and_then(|fid| {
                    let owner = master.framework_principal(&fid).flatten();
                    caller
                        .check(&Permission::KillTasks {
                            framework: &fid,
                            owner,
                        })
                        .map_err(|d| CallError::PermissionDenied(d.to_string()))?;
                    master.operator_kill(&task_id, Some(&fid), out)
                });
            let _ = reply.send(r);
        }
        Command::Gauges(reply) => {
            let runs = std::mem::take(&mut io.metrics_runs);
            let _ = reply.send((master.gauges(), runs));
        }
        Command::Secrets(q) => match q {
            SecretsQuery::Users(path, reply) => {
                let _ = reply.send(master.secret_users(path.as_ref()));
            }
            SecretsQuery::TaskSecrets {
                agent,
                framework,
                task,
                reply,
            } => {
                let _ = reply.send(master.task_secrets(&agent, &framework, &task));
            }
            SecretsQuery::VersionsInUse(path, reply) => {
                let _ = reply.send(master.secret_versions_in_use(&path));
            }
            SecretsQuery::FrameworkKnown(id, reply) => {
                let _ = reply.send(master.framework_known(&id));
            }
            SecretsQuery::AgentHostname(id, reply) => {
                let _ = reply.send(master.agent_hostname(&id));
            }
        },
    }
}

/// Performs outputs; a stream whose queue is full or closed is treated as
/// disconnected (which may produce more outputs, handled in the same loop).
fn perform(master: &mut Master, io: &mut Io, out: &mut Vec<Output>, now: std::time::Instant) {
    while !out.is_empty() {
        let batch = std::mem::take(out);
        for o in batch {
            match o {
                Output::ToFramework(conn, ev) => {
                    if let Some(tx) = io.frameworks.get(&conn)
                        && tx.try_send(ev).is_err()
                    {
                        tracing::warn!(conn, "framework stream full or closed; disconnecting it");
                        io.frameworks.remove(&conn);
                        master.framework_closed(conn, now, out);
                    }
                }
                Output::CloseFramework(conn) => {
                    io.frameworks.remove(&conn);
                }
                Output::ToAgent(conn, msg) => {
                    if let Some(tx) = io.agents.get(&conn)
                        && tx.try_send(msg).is_err()
                    {
                        tracing::warn!(conn, "agent stream full or closed; disconnecting it");
                        io.agents.remove(&conn);
                        master.agent_closed(conn, out);
                    }
                }
                Output::CloseAgent(conn) => {
                    io.agents.remove(&conn);
                }
                Output::Persist(op, pending) => {
                    let _ = io.store.send((op, pending));
                }
            }
        }
    }
}
