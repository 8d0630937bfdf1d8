//! The running framework: one actor task owns [`Services`] and the store; an
//! SDK driver feeds it scheduler events and the REST API feeds it requests.

use crate::app::App;
use crate::scheduler::{Action, AppState, Deployment, Instance, Services};
use crate::store::Store;
use agora_core::{AgentId, FrameworkId, OfferId, TaskId};
use agora_sdk::{Client, Driver, FrameworkConfig, Offer, Scheduler, TaskStatus};
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

enum Msg {
    Subscribed(Client, FrameworkId),
    Offers(Vec<Offer>),
    Rescinded,
    Update(TaskStatus, oneshot::Sender<()>),
    Disconnected,
    Api(Request),
}

/// Forwards SDK callbacks to the actor. Status updates are acknowledged only
/// after the actor has processed (and persisted) them.
struct Bridge(mpsc::Sender<Msg>);

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
        let (tx, rx) = oneshot::channel();
        if self.0.send(Msg::Update(status, tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
    async fn disconnected(&mut self) {
        let _ = self.0.send(Msg::Disconnected).await;
    }
}

/// A handle for the API.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Msg>,
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
    let mut fcfg = FrameworkConfig::new(cfg.master.clone(), cfg.name.clone());
    fcfg.role = cfg.role.clone();
    fcfg.failover_timeout = cfg.failover_timeout;
    fcfg.framework_id = snap.framework_id.clone().map(FrameworkId::new);
    fcfg.reconcile_interval = Duration::from_secs(60);
    let driver = Driver::new(fcfg, Bridge(tx.clone())).with_stop(stop.clone());
    tokio::spawn(async move {
        if let Err(e) = driver.run().await {
            tracing::error!(error = %e, "the services framework's driver stopped");
        }
    });
    let (events, _) = tokio::sync::broadcast::channel(4096);
    let actor = Actor {
        services,
        store,
        client: None,
        framework_id: snap.framework_id,
        events: events.clone(),
    };
    let join = tokio::spawn(actor.run(rx, stop));
    Ok((Handle { tx, events }, join))
}

struct Actor {
    services: Services,
    store: Store,
    client: Option<Client>,
    framework_id: Option<String>,
    events: tokio::sync::broadcast::Sender<serde_json::Value>,
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// (deployment id, steps done) per app, to see what a message changed.
fn deployments_of(s: &Services) -> std::collections::BTreeMap<String, (String, Vec<String>)> {
    s.apps
        .values()
        .filter_map(|a| {
            a.deployment
                .as_ref()
                .map(|d| (a.app.id.clone(), (d.id.clone(), d.steps.clone())))
        })
        .collect()
}

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks: u64 = 0;
        loop {
            let before = deployments_of(&self.services);
            let actions = tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => self.handle(m).await,
                    None => return,
                },
                _ = tick.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(30) {
                        self.reconcile_stale().await;
                    }
                    self.services.tick()
                }
                _ = stop.changed() => {
                    if *stop.borrow() { return; }
                    Vec::new()
                }
            };
            self.emit_deployment_events(before);
            self.perform(actions).await;
        }
    }

    /// Asks the master about instances that have not started after 30 s
    /// (a launch lost on the way is answered TASK_UNKNOWN and replaced).
    async fn reconcile_stale(&self) {
        let Some(client) = &self.client else { return };
        let cutoff = now_s() - 30.0;
        let stale: Vec<(TaskId, Option<AgentId>)> = self
            .services
            .instances
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
            && let Err(e) = client.reconcile(stale).await
        {
            tracing::debug!(error = %e, "reconciling stale instances failed");
        }
    }

    fn emit(&self, v: serde_json::Value) {
        let _ = self.events.send(v);
    }

    fn emit_deployment_events(
        &self,
        before: std::collections::BTreeMap<String, (String, Vec<String>)>,
    ) {
        let after = deployments_of(&self.services);
        for (app, (id, steps)) in &after {
            let done = before
                .get(app)
                .filter(|(b, _)| b == id)
                .map(|(_, s)| s.len())
                .unwrap_or(0);
            if done == 0 {
                self.emit(serde_json::json!({"eventType": "deployment_info", "id": id, "appId": app, "timestamp": now_s()}));
            }
            for step in steps.iter().skip(done) {
                self.emit(serde_json::json!({"eventType": "deployment_step_success", "id": id, "appId": app, "step": step, "timestamp": now_s()}));
            }
        }
        for (app, (id, _)) in before {
            if after.get(&app).is_none_or(|(a, _)| a != &id) {
                let ok = self.services.apps.contains_key(&app);
                let kind = if ok {
                    "deployment_success"
                } else {
                    "deployment_failed"
                };
                self.emit(serde_json::json!({"eventType": kind, "id": id, "appId": app, "timestamp": now_s()}));
            }
        }
    }

    fn persist(&mut self) -> Result<(), ApiError> {
        self.store
            .save(&self.services.apps, &self.services.instances)
            .map_err(|e| {
                tracing::error!(error = %e, "cannot persist services state");
                ApiError::Store(e.to_string())
            })
    }

    async fn handle(&mut self, m: Msg) -> Vec<Action> {
        match m {
            Msg::Subscribed(client, id) => {
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
                    .instances
                    .values()
                    .map(|i| {
                        (
                            TaskId::new(i.task_id.as_str()),
                            Some(AgentId::new(i.agent_id.as_str())),
                        )
                    })
                    .collect();
                if !known.is_empty()
                    && let Err(e) = client.reconcile(known).await
                {
                    tracing::warn!(error = %e, "explicit reconciliation failed");
                }
                self.client = Some(client);
                self.services.reset_offer_state();
                self.services.converge()
            }
            Msg::Offers(offers) => {
                let acts = self.services.offers(offers);
                let _ = self.persist();
                acts
            }
            Msg::Rescinded => Vec::new(),
            Msg::Update(status, done) => {
                let inst = self
                    .services
                    .instances
                    .get(status.task_id.as_str())
                    .cloned();
                if let Some(i) = &inst {
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
                let _ = self.persist();
                let _ = done.send(());
                acts
            }
            Msg::Disconnected => Vec::new(),
            Msg::Api(r) => self.api(r),
        }
    }

    fn api(&mut self, r: Request) -> Vec<Action> {
        match r {
            Request::View { reply } => {
                let _ = reply.send(View {
                    apps: self.services.apps.values().cloned().collect(),
                    instances: self.services.instances.values().cloned().collect(),
                    framework_id: self.framework_id.clone(),
                    connected: self.client.is_some(),
                });
                Vec::new()
            }
            Request::PutApp {
                app,
                create,
                force_restart,
                reply,
            } => {
                if create && self.services.apps.contains_key(&app.id) {
                    let _ = reply.send(Err(ApiError::Exists(app.id)));
                    return Vec::new();
                }
                let id = app.id.clone();
                let d = self.services.put_app(*app, force_restart);
                self.emit(serde_json::json!({"eventType": "api_post_event", "appId": id, "timestamp": now_s()}));
                let r = self.persist().map(|_| d);
                let _ = reply.send(r);
                self.services.converge()
            }
            Request::Scale {
                id,
                instances,
                reply,
            } => {
                let Some(mut app) = self.services.apps.get(&id).map(|s| s.app.clone()) else {
                    let _ = reply.send(Err(ApiError::NoApp(id)));
                    return Vec::new();
                };
                app.instances = instances;
                self.services.put_app(app, false);
                let _ = reply.send(self.persist());
                self.services.converge()
            }
            Request::DeleteApp { id, reply } => {
                if !self.services.apps.contains_key(&id) {
                    let _ = reply.send(Err(ApiError::NoApp(id)));
                    return Vec::new();
                }
                let acts = self.services.delete_app(&id);
                self.emit(serde_json::json!({"eventType": "app_terminated_event", "appId": id, "timestamp": now_s()}));
                let _ = reply.send(self.persist());
                acts
            }
            Request::CancelDeployment { id, force, reply } => {
                let found = self
                    .services
                    .apps
                    .values()
                    .find(|s| s.deployment.as_ref().is_some_and(|d| d.id == id))
                    .map(|s| (s.app.id.clone(), s.deployment.clone()));
                let Some((app_id, Some(d))) = found else {
                    let _ = reply.send(Err(ApiError::NoDeployment(id)));
                    return Vec::new();
                };
                let result = if force {
                    if let Some(s) = self.services.apps.get_mut(&app_id) {
                        s.deployment = None;
                    }
                    None
                } else {
                    // Roll back: deploy the previous definition.
                    let _ = app_id;
                    self.services.put_app((*d.previous).clone(), true)
                };
                let _ = reply.send(self.persist().map(|_| result));
                self.services.converge()
            }
        }
    }

    async fn perform(&mut self, actions: Vec<Action>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        for a in actions {
            let r = match &a {
                Action::Launch { offer, tasks } => {
                    client
                        .accept(
                            std::slice::from_ref(offer),
                            tasks.clone(),
                            Some(Duration::from_secs(1)),
                        )
                        .await
                }
                Action::Decline { offers, refuse } => client.decline(offers, Some(*refuse)).await,
                Action::Kill { task_id, agent_id } => {
                    client
                        .kill(
                            &TaskId::new(task_id.as_str()),
                            Some(&AgentId::new(agent_id.as_str())),
                        )
                        .await
                }
                Action::Suppress => client.suppress().await,
                Action::Revive => client.revive().await,
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
