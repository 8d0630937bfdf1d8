//! The running framework: one actor task owns [`Services`] and the store; an
//! SDK driver feeds it scheduler events and the REST API feeds it requests.
//!
//! The actor works in bursts (group commit): it handles one message, then
//! whatever else is already queued (at most [`MAX_BURST`]), stores what they
//! all changed in one write, and only then acknowledges the burst's status
//! updates, answers its API requests and performs its actions. A status
//! update is never acknowledged before its effect is stored: if the write
//! fails, the agent sends the update again.

use crate::app::App;
use crate::scheduler::{Action, AppState, Deployment, Instance, Services};
use crate::store::{StateStore, Store};
use agora_core::{AgentId, FrameworkId, OfferId, TaskId};
use agora_proto::pb;
use agora_sdk::{Client, Driver, FrameworkConfig, Offer, Scheduler, SdkError, TaskStatus};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone)]
pub struct ServicesConfig {
    /// The master, e.g. `http://127.0.0.1:5050`.
    pub master: String,
    /// Where `services.redb` lives.
    pub data_dir: PathBuf,
    pub name: String,
    pub role: String,
    pub failover_timeout: Duration,
}

/// A request from the API, answered by the actor.
pub enum Request {
    /// Create (`create = true`: fail if it exists) or replace an app.
    PutApp {
        app: Box<App>,
        create: bool,
        force_restart: bool,
        reply: oneshot::Sender<Result<Option<Deployment>, ApiError>>,
    },
    /// Change only the instance count.
    Scale {
        id: String,
        instances: u32,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    DeleteApp {
        id: String,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// Snapshot of apps and instances.
    View { reply: oneshot::Sender<View> },
    /// Roll back (or with `force`, just stop) a deployment.
    CancelDeployment {
        id: String,
        force: bool,
        reply: oneshot::Sender<Result<Option<Deployment>, ApiError>>,
    },
}

/// What the API reads.
#[derive(Clone)]
pub struct View {
    pub apps: Vec<AppState>,
    pub instances: Vec<Instance>,
    pub framework_id: Option<String>,
    pub connected: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("an app with id {0} already exists")]
    Exists(String),
    #[error("app {0} does not exist")]
    NoApp(String),
    #[error("deployment {0} does not exist")]
    NoDeployment(String),
    #[error("the services framework is stopping")]
    Stopped,
    #[error("cannot persist the change: {0}")]
    Store(String),
}

/// What the actor needs from the master: the SDK's [`Client`] in
/// production, a recorder in tests.
pub trait MasterLink: Clone + Send + Sync + 'static {
    fn accept(
        &self,
        offer: &OfferId,
        tasks: Vec<pb::TaskInfo>,
        refuse: Duration,
    ) -> impl Future<Output = Result<(), SdkError>> + Send;
    fn decline(
        &self,
        offers: &[OfferId],
        refuse: Duration,
    ) -> impl Future<Output = Result<(), SdkError>> + Send;
    fn kill(
        &self,
        task: &TaskId,
        agent: &AgentId,
    ) -> impl Future<Output = Result<(), SdkError>> + Send;
    fn suppress(&self) -> impl Future<Output = Result<(), SdkError>> + Send;
    fn revive(&self) -> impl Future<Output = Result<(), SdkError>> + Send;
    fn reconcile(
        &self,
        tasks: Vec<(TaskId, Option<AgentId>)>,
    ) -> impl Future<Output = Result<(), SdkError>> + Send;
    /// Acknowledges updates whose effect is stored (those without a uuid
    /// need none). A lost acknowledgement only means the update comes back.
    fn acknowledge(&self, statuses: Vec<TaskStatus>) -> impl Future<Output = ()> + Send;
}

impl MasterLink for Client {
    async fn accept(
        &self,
        offer: &OfferId,
        tasks: Vec<pb::TaskInfo>,
        refuse: Duration,
    ) -> Result<(), SdkError> {
        Client::accept(self, std::slice::from_ref(offer), tasks, Some(refuse)).await
    }
    async fn decline(&self, offers: &[OfferId], refuse: Duration) -> Result<(), SdkError> {
        Client::decline(self, offers, Some(refuse)).await
    }
    async fn kill(&self, task: &TaskId, agent: &AgentId) -> Result<(), SdkError> {
        Client::kill(self, task, Some(agent)).await
    }
    async fn suppress(&self) -> Result<(), SdkError> {
        Client::suppress(self).await
    }
    async fn revive(&self) -> Result<(), SdkError> {
        Client::revive(self).await
    }
    async fn reconcile(&self, tasks: Vec<(TaskId, Option<AgentId>)>) -> Result<(), SdkError> {
        Client::reconcile(self, tasks).await
    }
    async fn acknowledge(&self, statuses: Vec<TaskStatus>) {
        // One call per burst, off the actor's path.
        let c = self.clone();
        tokio::spawn(async move {
            if let Err(e) = c.acknowledge_all(&statuses).await {
                tracing::debug!(error = %e, updates = statuses.len(), "acknowledging updates failed; they will be sent again");
            }
        });
    }
}

enum Msg<L> {
    Subscribed(L, FrameworkId),
    Offers(Vec<Offer>),
    Rescinded,
    Update(TaskStatus),
    Disconnected,
    Api(Request),
}

/// Forwards SDK callbacks to the actor. The driver does not acknowledge
/// (`auto_acknowledge` is off): the actor does, once an update's effect is
/// stored.
struct Bridge(mpsc::Sender<Msg<Client>>);

impl Scheduler for Bridge {
    async fn subscribed(&mut self, client: &Client, id: &FrameworkId) {
        let _ = self
            .0
            .send(Msg::Subscribed(client.clone(), id.clone()))
            .await;
    }
    async fn offers(&mut self, _c: &Client, offers: Vec<Offer>) {
        let _ = self.0.send(Msg::Offers(offers)).await;
    }
    async fn rescinded(&mut self, _c: &Client, _o: OfferId) {
        let _ = self.0.send(Msg::Rescinded).await;
    }
    async fn update(&mut self, _c: &Client, status: TaskStatus) {
        // Queued, not awaited: the actor stores a burst of updates at once
        // (the bounded queue still pushes back on the driver).
        let _ = self.0.send(Msg::Update(status)).await;
    }
    async fn disconnected(&mut self) {
        let _ = self.0.send(Msg::Disconnected).await;
    }
}

/// A handle for the API.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Msg<Client>>,
    events: tokio::sync::broadcast::Sender<serde_json::Value>,
}

impl Handle {
    /// Marathon-style events (status updates, health changes, deployment
    /// steps, app changes) as they happen.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<serde_json::Value> {
        self.events.subscribe()
    }

    pub async fn request(&self, r: Request) -> Result<(), ApiError> {
        self.tx
            .send(Msg::Api(r))
            .await
            .map_err(|_| ApiError::Stopped)
    }

    pub async fn view(&self) -> Result<View, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.request(Request::View { reply }).await?;
        rx.await.map_err(|_| ApiError::Stopped)
    }
}

/// How the services framework subscribes: its stored framework id, and
/// manual acknowledgements (an update is acknowledged once stored).
fn framework_config(cfg: &ServicesConfig, framework_id: Option<String>) -> FrameworkConfig {
    let mut fcfg = FrameworkConfig::new(cfg.master.clone(), cfg.name.clone());
    fcfg.role = cfg.role.clone();
    fcfg.failover_timeout = cfg.failover_timeout;
    fcfg.framework_id = framework_id.map(FrameworkId::new);
    fcfg.reconcile_interval = Duration::from_secs(60);
    fcfg.auto_acknowledge = false;
    fcfg
}

/// Starts the framework: loads the store, subscribes (resuming its
/// framework id), and returns the API handle and the actor's join handle.
pub fn start(
    cfg: ServicesConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(Handle, tokio::task::JoinHandle<()>), crate::store::StoreError> {
    let mut store = Store::open(&cfg.data_dir)?;
    let snap = store.load()?;
    let services = Services::restore(snap.apps, snap.instances);
    let (tx, rx) = mpsc::channel(1024);
    let fcfg = framework_config(&cfg, snap.framework_id.clone());
    let driver = Driver::new(fcfg, Bridge(tx.clone())).with_stop(stop.clone());
    tokio::spawn(async move {
        if let Err(e) = driver.run().await {
            tracing::error!(error = %e, "the services framework's driver stopped");
        }
    });
    let (events, _) = tokio::sync::broadcast::channel(4096);
    let actor = Actor::new(services, store, snap.framework_id, events.clone());
    let join = tokio::spawn(actor.run(rx, stop));
    Ok((Handle { tx, events }, join))
}

/// Messages handled in one burst are stored in one write; this bounds how
/// long a burst keeps its first update unacknowledged.
pub const MAX_BURST: usize = 1024;

/// An API answer given once the burst's write is done.
type Reply = Box<dyn FnOnce(Result<(), ApiError>) + Send + Sync>;

/// What a burst leaves to do once its changes are stored.
#[derive(Default)]
struct Pending {
    acks: Vec<TaskStatus>,
    replies: Vec<Reply>,
    actions: Vec<Action>,
}

struct Actor<L, S> {
    services: Services,
    store: S,
    link: Option<L>,
    framework_id: Option<String>,
    events: tokio::sync::broadcast::Sender<serde_json::Value>,
    pending: Pending,
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// (deployment id, number of steps done) per app, to see what a burst
/// changed.
fn deployments_of(s: &Services) -> std::collections::BTreeMap<String, (String, usize)> {
    s.apps()
        .values()
        .filter_map(|a| {
            a.deployment
                .as_ref()
                .map(|d| (a.app.id.clone(), (d.id.clone(), d.steps.len())))
        })
        .collect()
}

impl<L: MasterLink, S: StateStore> Actor<L, S> {
    fn new(
        services: Services,
        store: S,
        framework_id: Option<String>,
        events: tokio::sync::broadcast::Sender<serde_json::Value>,
    ) -> Self {
        Actor {
            services,
            store,
            link: None,
            framework_id,
            events,
            pending: Pending::default(),
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg<L>>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks: u64 = 0;
        loop {
            let before = deployments_of(&self.services);
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => {
                        self.handle(m).await;
                        // Group commit: whatever else is already queued joins
                        // this burst and is stored with it.
                        for _ in 1..MAX_BURST {
                            match rx.try_recv() {
                                Ok(m) => self.handle(m).await,
                                Err(_) => break,
                            }
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(30) {
                        self.reconcile_stale().await;
                    }
                    let acts = self.services.tick();
                    self.pending.actions.extend(acts);
                }
                _ = stop.changed() => {
                    if *stop.borrow() { return; }
                }
            };
            self.emit_deployment_events(before);
            self.commit().await;
        }
    }

    /// Stores what the burst changed (one transaction), then acknowledges its
    /// status updates, answers its API requests and performs its actions. If
    /// the write fails: no acknowledgement (the agents send the updates
    /// again), the requests are answered with the error, and nothing is
    /// launched from state that is not stored (the offers are declined);
    /// kills, declines and suppress/revive still go (they are harmless to
    /// repeat). What was not stored is written by the next successful commit.
    async fn commit(&mut self) {
        let p = std::mem::take(&mut self.pending);
        let changes = self.services.take_changes();
        let stored = self
            .store
            .save(self.services.apps(), self.services.instances(), &changes)
            .map_err(|e| {
                tracing::error!(error = %e, "cannot persist services state; updates stay unacknowledged");
                ApiError::Store(e.to_string())
            });
        if stored.is_err() {
            // Written by the next successful commit.
            self.services.unsaved(changes);
        }
        let mut actions = p.actions;
        match &stored {
            Ok(()) => {
                if !p.acks.is_empty()
                    && let Some(link) = &self.link
                {
                    link.acknowledge(p.acks).await;
                }
            }
            Err(_) => actions = self.withdraw_launches(actions),
        }
        for reply in p.replies {
            reply(stored.clone());
        }
        self.perform(actions).await;
    }

    /// Launches become declines, and their instances are forgotten.
    fn withdraw_launches(&mut self, actions: Vec<Action>) -> Vec<Action> {
        actions
            .into_iter()
            .map(|a| match a {
                Action::Launch { offer, tasks } => {
                    let ids: Vec<String> = tasks.into_iter().map(|t| t.task_id).collect();
                    self.services.unlaunch(&ids);
                    Action::Decline {
                        offers: vec![offer],
                        refuse: Duration::from_secs(1),
                    }
                }
                other => other,
            })
            .collect()
    }

    /// Asks the master about instances that have not started after 30 s
    /// (a launch lost on the way is answered TASK_UNKNOWN and replaced).
    async fn reconcile_stale(&self) {
        let Some(link) = &self.link else { return };
        let cutoff = now_s() - 30.0;
        let stale: Vec<(TaskId, Option<AgentId>)> = self
            .services
            .instances()
            .values()
            .filter(|i| i.running_since.is_none() && i.staged_at < cutoff)
            .map(|i| {
                (
                    TaskId::new(i.task_id.as_str()),
                    Some(AgentId::new(i.agent_id.as_str())),
                )
            })
            .collect();
        if !stale.is_empty()
            && let Err(e) = link.reconcile(stale).await
        {
            tracing::debug!(error = %e, "reconciling stale instances failed");
        }
    }

    fn emit(&self, v: serde_json::Value) {
        let _ = self.events.send(v);
    }

    fn emit_deployment_events(&self, before: std::collections::BTreeMap<String, (String, usize)>) {
        let after = deployments_of(&self.services);
        for (app, (id, _)) in &after {
            let done = before
                .get(app)
                .filter(|(b, _)| b == id)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            if done == 0 {
                self.emit(serde_json::json!({"eventType": "deployment_info", "id": id, "appId": app, "timestamp": now_s()}));
            }
            let steps = self
                .services
                .app(app)
                .and_then(|a| a.deployment.as_ref())
                .map(|d| d.steps.as_slice())
                .unwrap_or_default();
            for step in steps.iter().skip(done) {
                self.emit(serde_json::json!({"eventType": "deployment_step_success", "id": id, "appId": app, "step": step, "timestamp": now_s()}));
            }
        }
        for (app, (id, _)) in before {
            if after.get(&app).is_none_or(|(a, _)| a != &id) {
                let ok = self.services.apps().contains_key(&app);
                let kind = if ok {
                    "deployment_success"
                } else {
                    "deployment_failed"
                };
                self.emit(serde_json::json!({"eventType": kind, "id": id, "appId": app, "timestamp": now_s()}));
            }
        }
    }

    async fn handle(&mut self, m: Msg<L>) {
        match m {
            Msg::Subscribed(link, id) => {
                if self.framework_id.as_deref() != Some(id.as_str()) {
                    if let Err(e) = self.store.set_framework_id(id.as_str()) {
                        tracing::error!(error = %e, "cannot persist the framework id");
                    }
                    self.framework_id = Some(id.0.clone());
                }
                // Ask about every instance we remember, so ones the master
                // never heard of (crash before launch) are cleared.
                let known: Vec<(TaskId, Option<AgentId>)> = self
                    .services
                    .instances()
                    .values()
                    .map(|i| {
                        (
                            TaskId::new(i.task_id.as_str()),
                            Some(AgentId::new(i.agent_id.as_str())),
                        )
                    })
                    .collect();
                if !known.is_empty()
                    && let Err(e) = link.reconcile(known).await
                {
                    tracing::warn!(error = %e, "explicit reconciliation failed");
                }
                self.link = Some(link);
                self.services.reset_offer_state();
                let acts = self.services.converge();
                self.pending.actions.extend(acts);
            }
            Msg::Offers(offers) => {
                let acts = self.services.offers(offers);
                self.pending.actions.extend(acts);
            }
            Msg::Rescinded | Msg::Disconnected => {}
            Msg::Update(status) => {
                let inst = self.services.instance(status.task_id.as_str());
                if let Some(i) = inst {
                    self.emit(serde_json::json!({
                        "eventType": "status_update_event", "taskId": status.task_id.0, "appId": i.app_id,
                        "agentId": status.agent_id.0, "host": i.host, "ports": i.ports, "version": i.version,
                        "taskStatus": status.state.as_str(), "message": status.message, "timestamp": now_s(),
                    }));
                    if let Some(h) = status.healthy
                        && i.healthy != Some(h)
                    {
                        self.emit(serde_json::json!({
                            "eventType": "health_status_changed_event", "appId": i.app_id, "taskId": status.task_id.0,
                            "alive": h, "message": status.message, "timestamp": now_s(),
                        }));
                    }
                }
                let acts = self.services.update(&status);
                self.pending.actions.extend(acts);
                // Acknowledged only once this burst is stored.
                self.pending.acks.push(status);
            }
            Msg::Api(r) => self.api(r),
        }
    }

    /// Answers `reply` after the burst's write.
    fn after_commit(&mut self, reply: impl FnOnce(Result<(), ApiError>) + Send + Sync + 'static) {
        self.pending.replies.push(Box::new(reply));
    }

    fn api(&mut self, r: Request) {
        match r {
            Request::View { reply } => {
                let _ = reply.send(View {
                    apps: self.services.apps().values().cloned().collect(),
                    instances: self.services.instances().values().cloned().collect(),
                    framework_id: self.framework_id.clone(),
                    connected: self.link.is_some(),
                });
            }
            Request::PutApp {
                app,
                create,
                force_restart,
                reply,
            } => {
                if create && self.services.apps().contains_key(&app.id) {
                    let _ = reply.send(Err(ApiError::Exists(app.id)));
                    return;
                }
                let id = app.id.clone();
                let d = self.services.put_app(*app, force_restart);
                self.emit(serde_json::json!({"eventType": "api_post_event", "appId": id, "timestamp": now_s()}));
                self.after_commit(move |r| {
                    let _ = reply.send(r.map(|_| d));
                });
                let acts = self.services.converge();
                self.pending.actions.extend(acts);
            }
            Request::Scale {
                id,
                instances,
                reply,
            } => {
                let Some(mut app) = self.services.app(&id).map(|s| s.app.clone()) else {
                    let _ = reply.send(Err(ApiError::NoApp(id)));
                    return;
                };
                app.instances = instances;
                self.services.put_app(app, false);
                self.after_commit(move |r| {
                    let _ = reply.send(r);
                });
                let acts = self.services.converge();
                self.pending.actions.extend(acts);
            }
            Request::DeleteApp { id, reply } => {
                if !self.services.apps().contains_key(&id) {
                    let _ = reply.send(Err(ApiError::NoApp(id)));
                    return;
                }
                let acts = self.services.delete_app(&id);
                self.pending.actions.extend(acts);
                self.emit(serde_json::json!({"eventType": "app_terminated_event", "appId": id, "timestamp": now_s()}));
                self.after_commit(move |r| {
                    let _ = reply.send(r);
                });
            }
            Request::CancelDeployment { id, force, reply } => {
                let found = self
                    .services
                    .apps()
                    .values()
                    .find(|s| s.deployment.as_ref().is_some_and(|d| d.id == id))
                    .map(|s| (s.app.id.clone(), s.deployment.clone()));
                let Some((app_id, Some(d))) = found else {
                    let _ = reply.send(Err(ApiError::NoDeployment(id)));
                    return;
                };
                let result = if force {
                    self.services.stop_deployment(&app_id);
                    None
                } else {
                    // Roll back: deploy the previous definition.
                    self.services.put_app((*d.previous).clone(), true)
                };
                self.after_commit(move |r| {
                    let _ = reply.send(r.map(|_| result));
                });
                let acts = self.services.converge();
                self.pending.actions.extend(acts);
            }
        }
    }

    async fn perform(&mut self, actions: Vec<Action>) {
        let Some(link) = self.link.clone() else {
            return;
        };
        for a in actions {
            let r = match &a {
                Action::Launch { offer, tasks } => {
                    link.accept(offer, tasks.clone(), Duration::from_secs(1))
                        .await
                }
                Action::Decline { offers, refuse } => link.decline(offers, *refuse).await,
                Action::Kill { task_id, agent_id } => {
                    link.kill(
                        &TaskId::new(task_id.as_str()),
                        &AgentId::new(agent_id.as_str()),
                    )
                    .await
                }
                Action::Suppress => link.suppress().await,
                Action::Revive => link.revive().await,
            };
            if let Err(e) = r {
                // Name the action, not its payload (task infos carry env values).
                let what = match &a {
                    Action::Launch { offer, tasks } => {
                        format!("launch of {} task(s) on offer {offer}", tasks.len())
                    }
                    Action::Decline { offers, .. } => {
                        format!("decline of {} offer(s)", offers.len())
                    }
                    Action::Kill { task_id, .. } => format!("kill of {task_id}"),
                    Action::Suppress => "suppress".into(),
                    Action::Revive => "revive".into(),
                };
                tracing::warn!(action = %what, error = %e, "action failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_core::{Resources, TaskState};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    /// (task id, uuid) of an acknowledged update.
    type Ack = (String, Vec<u8>);

    /// Records what the actor asks of the master.
    #[derive(Clone, Default)]
    struct Recorder {
        acks: Arc<Mutex<Vec<Ack>>>,
        launched: Arc<Mutex<Vec<String>>>,
    }

    impl Recorder {
        fn acks(&self) -> Vec<Ack> {
            self.acks.lock().unwrap().clone()
        }
    }

    impl MasterLink for Recorder {
        async fn accept(
            &self,
            _offer: &OfferId,
            tasks: Vec<pb::TaskInfo>,
            _refuse: Duration,
        ) -> Result<(), SdkError> {
            let mut l = self.launched.lock().unwrap();
            l.extend(tasks.into_iter().map(|t| t.task_id));
            Ok(())
        }
        async fn decline(&self, _o: &[OfferId], _r: Duration) -> Result<(), SdkError> {
            Ok(())
        }
        async fn kill(&self, _t: &TaskId, _a: &AgentId) -> Result<(), SdkError> {
            Ok(())
        }
        async fn suppress(&self) -> Result<(), SdkError> {
            Ok(())
        }
        async fn revive(&self) -> Result<(), SdkError> {
            Ok(())
        }
        async fn reconcile(&self, _t: Vec<(TaskId, Option<AgentId>)>) -> Result<(), SdkError> {
            Ok(())
        }
        async fn acknowledge(&self, statuses: Vec<TaskStatus>) {
            let mut a = self.acks.lock().unwrap();
            a.extend(
                statuses
                    .into_iter()
                    .filter(|s| !s.uuid.is_empty())
                    .map(|s| (s.task_id.0, s.uuid)),
            );
        }
    }

    /// A store whose writes fail while `fail` is set; keeps what it stored.
    struct FlakyStore {
        fail: Arc<AtomicBool>,
        stored: Arc<Mutex<BTreeMap<String, Instance>>>,
    }

    impl StateStore for FlakyStore {
        fn save(
            &mut self,
            _apps: &BTreeMap<String, AppState>,
            instances: &BTreeMap<String, Instance>,
            changes: &crate::scheduler::Changes,
        ) -> Result<(), crate::store::StoreError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(crate::store::StoreError {
                    path: "flaky".into(),
                    message: "disk full".into(),
                });
            }
            let mut stored = self.stored.lock().unwrap();
            for k in &changes.instances {
                match instances.get(k) {
                    Some(i) => stored.insert(k.clone(), i.clone()),
                    None => stored.remove(k),
                };
            }
            Ok(())
        }
        fn set_framework_id(&mut self, _id: &str) -> Result<(), crate::store::StoreError> {
            Ok(())
        }
    }

    fn running(task: &str, uuid: u8) -> TaskStatus {
        TaskStatus {
            task_id: TaskId::new(task),
            agent_id: AgentId::new("ag"),
            state: TaskState::Running,
            message: String::new(),
            reason: String::new(),
            exit_code: None,
            healthy: None,
            ready: None,
            uuid: vec![uuid],
        }
    }

    fn offer(id: &str) -> Offer {
        Offer {
            id: OfferId::new(id),
            agent_id: AgentId::new("ag"),
            hostname: "h".into(),
            resources: Resources::parse("cpus:4;mem:1024").unwrap(),
            attributes: vec![],
        }
    }

    async fn scale(tx: &mpsc::Sender<Msg<Recorder>>, n: u32) -> Result<(), ApiError> {
        let (reply, rx) = oneshot::channel();
        let req = Request::Scale {
            id: "/a".into(),
            instances: n,
            reply,
        };
        tx.send(Msg::Api(req)).await.ok().unwrap();
        rx.await.unwrap()
    }

    /// Issue 7, bug 9: an update whose effect could not be stored is not
    /// acknowledged (so the agent sends it again); once stored, it is.
    #[tokio::test]
    async fn an_update_is_acknowledged_only_once_its_effect_is_stored() {
        let mut s = Services::new();
        let app = crate::app::parse_app(
            &serde_json::json!({"id": "/a", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16}),
        )
        .unwrap();
        s.put_app(app, false);
        s.offers(vec![offer("o1")]);
        let task = s.instances().keys().next().unwrap().clone();

        let fail = Arc::new(AtomicBool::new(true));
        let stored = Arc::new(Mutex::new(BTreeMap::new()));
        let store = FlakyStore {
            fail: fail.clone(),
            stored: stored.clone(),
        };
        let (events, _) = tokio::sync::broadcast::channel(16);
        let actor = Actor::new(s, store, Some("fw".into()), events);
        let (tx, rx) = mpsc::channel(16);
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let join = tokio::spawn(actor.run(rx, stop_rx));
        let link = Recorder::default();
        tx.send(Msg::Subscribed(link.clone(), FrameworkId::new("fw")))
            .await
            .ok()
            .unwrap();

        // The store fails: the update is applied but not acknowledged, and
        // the API request that follows it says the write failed.
        tx.send(Msg::Update(running(&task, 7))).await.ok().unwrap();
        assert!(matches!(scale(&tx, 1).await, Err(ApiError::Store(_))));
        assert!(
            link.acks().is_empty(),
            "acknowledged unstored updates: {:?}",
            link.acks()
        );
        assert!(stored.lock().unwrap().is_empty());
        // Nothing launches from state that is not stored.
        tx.send(Msg::Offers(vec![offer("o2")])).await.ok().unwrap();
        assert!(scale(&tx, 2).await.is_err());
        assert!(link.launched.lock().unwrap().is_empty());

        // The store is back and the agent sends the update again: stored,
        // then acknowledged.
        fail.store(false, Ordering::SeqCst);
        tx.send(Msg::Update(running(&task, 7))).await.ok().unwrap();
        assert!(scale(&tx, 1).await.is_ok());
        assert_eq!(link.acks(), vec![(task.clone(), vec![7])]);
        assert_eq!(stored.lock().unwrap()[&task].state, TaskState::Running);
        join.abort();
    }

    #[test]
    fn the_driver_leaves_acknowledgements_to_the_actor() {
        let cfg = ServicesConfig {
            master: "http://127.0.0.1:5050".into(),
            data_dir: PathBuf::from("/nonexistent"),
            name: "services".into(),
            role: "*".into(),
            failover_timeout: Duration::from_secs(60),
        };
        let f = framework_config(&cfg, Some("fw-1".into()));
        assert!(!f.auto_acknowledge);
        assert_eq!(f.framework_id, Some(FrameworkId::new("fw-1")));
    }
}
