//! The running framework: one actor task owns [`Services`] and the store; an
//! SDK driver feeds it scheduler events and the REST API feeds it requests.
//!
//! The actor works in bursts (group commit): it handles one message, then
//! whatever else is already queued (at most [`MAX_BURST`]), stores what they
//! all changed in one write, and only then acknowledges the burst's status
//! updates and performs its actions. A status update is never acknowledged
//! before its effect is stored: if the write fails, the agent sends the
//! update again. An API change is stored on its own, before anything of it
//! is done or answered; if that write fails, the change is undone in memory
//! too (`requests.rs`).

use crate::app::App;
use crate::endpoints::Hub;
use crate::scheduler::{Action, AppState, Deployment, Instance, Services};
use crate::store::{StateStore, Store};
pub use autoscale::MAX_INSTANCES as MAX_POLICY_INSTANCES;
use link::Bridge;
pub use link::MasterLink;
use std::sync::Arc;

mod autoscale;
mod link;
mod requests;
#[cfg(test)]
mod tests;

use agora_core::{AgentId, FrameworkId, TaskId};
use agora_sdk::{Client, Driver, FrameworkConfig, Offer, TaskStatus};
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
    /// Range service ports are assigned from (`--service-ports`).
    pub service_ports: (u32, u32),
    /// TLS to an `https://` master (the cluster CA; no client certificate).
    pub master_tls: Option<std::sync::Arc<agora_tls::ClientConfig>>,
    /// Bearer token for the master (when it runs with ACLs).
    pub master_token: Option<std::sync::Arc<agora_core::secrets::SecretValue>>,
    /// Require a bearer token (verified by the master) on the REST API but
    /// its open routes (see `api_auth`).
    pub api_tokens: bool,
    /// With `api_tokens`: the principals that may join the drains and ack
    /// them (`--drain-principals`); empty: any principal with a valid token.
    pub drain_principals: Vec<String>,
}

/// A request from the API, answered by the actor.
pub enum Request {
    /// Create (`create = true`: fail if it exists) or replace an app.
    PutApp {
        app: Box<App>,
        create: bool,
        force_restart: bool,
        /// `?force=true`: a change of `instances` of an autoscaled app
        /// applies and suspends its policy (else it is refused).
        force: bool,
        reply: oneshot::Sender<Result<Option<Deployment>, ApiError>>,
    },
    /// `POST /v2/apps/{id}/restart`: a new version of the app as it is now,
    /// read and changed in one step (a DELETE or scale in between is
    /// neither undone nor reverted).
    Restart {
        id: String,
        /// The secret versions the new version pins (the latest of each
        /// path the app uses), when the master could tell.
        secret_versions: Option<std::collections::BTreeMap<String, u64>>,
        reply: oneshot::Sender<Result<Option<Deployment>, ApiError>>,
    },
    /// Change only the instance count.
    Scale {
        id: String,
        instances: u32,
        /// Scale an autoscaled app anyway, suspending its policy.
        force: bool,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    DeleteApp {
        id: String,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// Kill an app's tasks: `task` alone, or every one (on `host` only, if
    /// given); with `scale`, lower `instances` so they are not replaced.
    KillTasks {
        app_id: String,
        task: Option<String>,
        host: Option<String>,
        scale: bool,
        reply: oneshot::Sender<Result<Killed, ApiError>>,
    },
    /// Snapshot of apps and instances.
    View { reply: oneshot::Sender<View> },
    /// Ask the master about secret paths (an app's references, before it
    /// is put).
    SecretVersions {
        paths: Vec<String>,
        reply:
            oneshot::Sender<Result<Vec<agora_sdk::SecretVersion>, agora_sdk::SecretVersionsError>>,
    },
    /// Create or replace an app's autoscaling policy (validated); a
    /// suspended one acts again.
    PutPolicy {
        app_id: String,
        policy: Box<agora_core::autoscale::Policy>,
        reply: oneshot::Sender<Result<crate::autoscale::AutoscalerView, ApiError>>,
    },
    /// One app's policy and status (`Some`), or every one.
    Policies {
        app_id: Option<String>,
        reply: oneshot::Sender<Vec<crate::autoscale::AutoscalerView>>,
    },
    DeletePolicy {
        app_id: String,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// A router's load report (`POST /v1/endpoints/load`).
    Load {
        report: Box<agora_core::endpoints::LoadReport>,
    },
    /// The autoscalers' `/metrics` lines.
    Metrics { reply: oneshot::Sender<String> },
    /// Roll back (or with `force`, just stop) a deployment.
    CancelDeployment {
        id: String,
        force: bool,
        reply: oneshot::Sender<Result<Option<Deployment>, ApiError>>,
    },
}

/// What a task kill did: the instances killed (as they were), and the
/// app's version when it was scaled.
#[derive(Debug, Clone)]
pub struct Killed {
    pub tasks: Vec<Instance>,
    pub scaled_version: Option<String>,
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
    #[error("task {task} of app {app} does not exist")]
    NoTask { app: String, task: String },
    #[error("deployment {0} does not exist")]
    NoDeployment(String),
    #[error("app {0} has no autoscaling policy")]
    NoPolicy(String),
    /// A manual scale of an app whose autoscaler sets its instance count.
    #[error(
        "app {id} is autoscaled (min {min}, max {max}): change its policy instead (agora app autoscale {id} --min N --max M ..., or PUT /v1/autoscalers{id}), or force the scale (agora app scale {id} N --force, or ?force=true), which suspends the autoscaler until its policy is PUT again"
    )]
    Autoscaled { id: String, min: u32, max: u32 },
    /// A kill with `scale=true` of an autoscaled app's tasks.
    #[error(
        "app {id} is autoscaled: its autoscaler decides how many instances run, so tasks cannot be killed with scale=true; kill without scale (the instance is replaced only if the load asks for it), or change the policy (agora app autoscale {id} ...), or suspend it with a forced scale (agora app scale {id} N --force)"
    )]
    AutoscaledKill { id: String },
    #[error("the services framework is stopping")]
    Stopped,
    #[error("cannot persist the change: {0}")]
    Store(String),
    /// The definition conflicts with another app (service port, virtual
    /// host): every conflict, each at its JSON pointer.
    #[error("the app definition conflicts with other apps")]
    Invalid(Vec<crate::app::FieldError>),
}

pub(crate) enum Msg<L> {
    Subscribed(L, FrameworkId),
    Offers(Vec<Offer>),
    Rescinded,
    Update(TaskStatus),
    /// Agents' usage samples of our tasks (through the master).
    Usage(Vec<agora_core::protocol::TaskUsage>),
    Disconnected,
    Api(Request),
}

/// A handle for the API.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Msg<Client>>,
    events: tokio::sync::broadcast::Sender<serde_json::Value>,
    hub: Arc<Hub>,
}

impl Handle {
    /// The endpoint sets, their stream and the drain participants.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

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

    /// The master's metadata of secret paths (through the framework's
    /// connection; an error when it is not connected).
    pub async fn secret_versions(
        &self,
        paths: Vec<String>,
    ) -> Result<Result<Vec<agora_sdk::SecretVersion>, agora_sdk::SecretVersionsError>, ApiError>
    {
        let (reply, rx) = oneshot::channel();
        self.request(Request::SecretVersions { paths, reply })
            .await?;
        rx.await.map_err(|_| ApiError::Stopped)
    }
}

/// How the services framework subscribes: its stored framework id, and
/// manual acknowledgements (an update is acknowledged once stored).
fn framework_config(cfg: &ServicesConfig, framework_id: Option<String>) -> FrameworkConfig {
    let mut fcfg = FrameworkConfig::new(cfg.master.clone(), cfg.name.clone());
    fcfg.tls = cfg.master_tls.clone();
    fcfg.role = cfg.role.clone();
    fcfg.failover_timeout = cfg.failover_timeout;
    fcfg.framework_id = framework_id.map(FrameworkId::new);
    fcfg.reconcile_interval = Duration::from_secs(60);
    fcfg.auto_acknowledge = false;
    fcfg.token = cfg.master_token.clone();
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
    let mut services = Services::restore(snap.apps, snap.instances);
    for id in &snap.upgraded {
        tracing::info!(app_id = %id, "stored app upgraded to the current format");
        services.mark_app_changed(id);
    }
    services.set_service_ports(cfg.service_ports.0, cfg.service_ports.1);
    services.set_role(&cfg.role);
    services.assign_missing_service_ports();
    let (tx, rx) = mpsc::channel(1024);
    let fcfg = framework_config(&cfg, snap.framework_id.clone());
    let driver = Driver::new(fcfg, Bridge(tx.clone())).with_stop(stop.clone());
    tokio::spawn(async move {
        if let Err(e) = driver.run().await {
            tracing::error!(error = %e, "the services framework's driver stopped");
        }
    });
    let (events, _) = tokio::sync::broadcast::channel(4096);
    let hub = Hub::from_clock();
    let mut actor = Actor::new(
        services,
        store,
        snap.framework_id,
        events.clone(),
        hub.clone(),
    );
    actor.restore_policies(snap.policies);
    let join = tokio::spawn(actor.run(rx, stop));
    Ok((Handle { tx, events, hub }, join))
}

/// Messages handled in one burst are stored in one write; this bounds how
/// long a burst keeps its first update unacknowledged.
pub const MAX_BURST: usize = 1024;

/// What a burst leaves to do once its changes are stored.
#[derive(Default)]
struct Pending {
    acks: Vec<TaskStatus>,
    actions: Vec<Action>,
}

struct Actor<L, S> {
    services: Services,
    store: S,
    link: Option<L>,
    /// Subscribed and not disconnected since (what `/v1/info` says).
    connected: bool,
    framework_id: Option<String>,
    /// The framework id is in the store. Until it is, nothing is launched:
    /// tasks launched under an id a restart would not find again would be
    /// orphaned (and replaced) after it.
    id_stored: bool,
    events: tokio::sync::broadcast::Sender<serde_json::Value>,
    pending: Pending,
    hub: Arc<Hub>,
    /// Autoscaling policies and their live numbers (`service/autoscale.rs`).
    autoscalers: crate::autoscale::Autoscalers,
    /// The autoscalers' clock starts here (tokio's: paused in tests).
    epoch: tokio::time::Instant,
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
        hub: Arc<Hub>,
    ) -> Self {
        Actor {
            services,
            store,
            link: None,
            connected: false,
            framework_id,
            id_stored: true,
            events,
            pending: Pending::default(),
            hub,
            autoscalers: crate::autoscale::Autoscalers::default(),
            epoch: tokio::time::Instant::now(),
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg<L>>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks: u64 = 0;
        // Secret version polls: one at a time, answered here.
        let (polled_tx, mut polled) = mpsc::channel(1);
        let mut poll_at = tokio::time::Instant::now();
        let mut polling = false;
        let hub = self.hub.clone();
        // What was restored is published before anything else happens.
        let acts = self.publish_and_release();
        self.pending.actions.extend(acts);
        loop {
            let before = deployments_of(&self.services);
            // The next drain deadline, if an instance drains.
            // Also when the participants' state changes with time (the
            // start window ends, a departed router is forgotten).
            let drain_wait = self.services.next_drain_deadline().map(|d| {
                let deadline = Duration::from_secs_f64((d - now_s()).clamp(0.0, 3_600.0));
                hub.next_change()
                    .map(|c| c.saturating_duration_since(std::time::Instant::now()))
                    .map_or(deadline, |c| c.min(deadline))
            });
            tokio::select! {
                // An acknowledgement, or a participant left: drains may be over.
                _ = hub.drains.notified() => {}
                _ = tokio::time::sleep(drain_wait.unwrap_or_default()), if drain_wait.is_some() => {}
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
                Some(r) = polled.recv() => {
                    polling = false;
                    self.secrets_polled(r).await;
                }
                _ = tick.tick() => {
                    if !polling && tokio::time::Instant::now() >= poll_at {
                        polling = self.poll_secrets(&polled_tx);
                        poll_at = tokio::time::Instant::now() + crate::secrets::POLL_INTERVAL;
                    }
                    ticks += 1;
                    if ticks.is_multiple_of(30) {
                        self.reconcile_stale().await;
                    }
                    let acts = self.services.tick();
                    self.pending.actions.extend(acts);
                    self.autoscale_tick().await;
                }
                _ = stop.changed() => {
                    if *stop.borrow() { return; }
                }
            };
            self.emit_deployment_events(before);
            self.commit().await;
        }
    }

    /// Asks the master about the secret paths apps use (off the actor's
    /// path; the answer comes back through `tx`). Whether a poll started.
    fn poll_secrets(
        &self,
        tx: &mpsc::Sender<Result<Vec<agora_sdk::SecretVersion>, agora_sdk::SecretVersionsError>>,
    ) -> bool {
        let Some(link) = self.link.clone() else {
            return false;
        };
        let paths = crate::secrets::paths_in_use(self.services.apps().values().map(|a| &a.app));
        if paths.is_empty() {
            return false;
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = match tokio::time::timeout(Duration::from_secs(5), link.secret_versions(paths))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(agora_sdk::SecretVersionsError::Sdk(
                    agora_sdk::SdkError::Unavailable("no answer within 5 s".into()),
                )),
            };
            let _ = tx.send(r).await;
        });
        true
    }

    /// A poll's answer: every app whose secrets have a new rollout version
    /// gets a new version pinned to it (a rolling, health-gated
    /// deployment, stored before it starts like any API change).
    async fn secrets_polled(
        &mut self,
        r: Result<Vec<agora_sdk::SecretVersion>, agora_sdk::SecretVersionsError>,
    ) {
        let versions = match r {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "cannot poll secret versions");
                return;
            }
        };
        let rolls =
            crate::secrets::rollouts(self.services.apps().values().map(|a| &a.app), &versions);
        for (id, pins) in rolls {
            let r = self
                .change(&id, |s| {
                    let Some(mut app) = s.app(&id).map(|st| st.app.clone()) else {
                        return Err(ApiError::NoApp(id.clone()));
                    };
                    app.secret_versions = pins.clone();
                    Ok(s.put_app(app, true))
                })
                .await;
            match r {
                Ok(d) => {
                    let changed: Vec<String> =
                        pins.iter().map(|(p, v)| format!("{p}@{v}")).collect();
                    tracing::info!(app_id = %id, secrets = %changed.join(","), deployment = ?d.as_ref().map(|d| d.id.clone()), "a secret has a new version: rolling the app");
                    self.emit(serde_json::json!({"eventType": "api_post_event", "appId": id, "timestamp": now_s()}));
                }
                Err(e) => {
                    tracing::warn!(app_id = %id, error = %e, "cannot roll the app to its secrets' new versions; trying again at the next poll")
                }
            }
        }
    }

    /// Stores what the burst changed (one transaction), then acknowledges its
    /// status updates and performs its actions. If the write fails: no
    /// acknowledgement (the agents send the updates again), and nothing is
    /// launched from state that is not stored (the offers are declined);
    /// kills, declines and suppress/revive still go (they are harmless to
    /// repeat). What was not stored is written by the next successful commit.
    /// (API changes are stored on their own, before anything of them is
    /// done: see `requests.rs`.)
    async fn commit(&mut self) {
        let p = std::mem::take(&mut self.pending);
        let changes = self.services.take_changes();
        let stored = self
            .store
            .save(self.services.apps(), self.services.instances(), &changes);
        if let Err(e) = &stored {
            tracing::error!(error = %e, "cannot persist services state; updates stay unacknowledged");
            // Written by the next successful commit.
            self.services.unsaved(changes);
        }
        let mut actions = p.actions;
        actions.extend(self.publish_and_release());
        if !self.id_stored {
            self.store_framework_id();
        }
        match &stored {
            Ok(()) if !self.id_stored => actions = self.withdraw_launches(actions),
            Ok(()) => {
                if !p.acks.is_empty()
                    && let Some(link) = &self.link
                {
                    link.acknowledge(p.acks).await;
                }
            }
            Err(_) => actions = self.withdraw_launches(actions),
        }
        self.perform(actions).await;
    }

    /// Publishes the endpoint sets of the apps that changed, then sends the
    /// kills of the instances whose drain is over (see
    /// `scheduler/endpoints.rs`).
    fn publish_and_release(&mut self) -> Vec<Action> {
        let services = &mut self.services;
        self.hub.publish(|p| services.publish(p));
        self.services.release_drains(now_s(), self.hub.drained())
    }

    /// Stores the framework id the master gave; on failure, tried again at
    /// the next commit (launches wait until then).
    fn store_framework_id(&mut self) {
        let Some(id) = &self.framework_id else {
            self.id_stored = true;
            return;
        };
        match self.store.set_framework_id(id) {
            Ok(()) => self.id_stored = true,
            Err(e) => {
                tracing::error!(error = %e, "cannot persist the framework id; launching nothing until it is stored")
            }
        }
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
                    self.framework_id = Some(id.0.clone());
                    self.id_stored = false;
                    self.store_framework_id();
                }
                self.connected = true;
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
            Msg::Rescinded => {}
            Msg::Disconnected => self.connected = false,
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
                // A woken app's first serving instance ends its cold start.
                if self.autoscalers.waking() {
                    self.cold_starts();
                }
                // Acknowledged only once this burst is stored.
                self.pending.acks.push(status);
            }
            Msg::Usage(u) => {
                let now = self.clock();
                self.autoscalers.record_usage(u, now, &self.services);
            }
            Msg::Api(r) => self.api(r).await,
        }
    }

    async fn perform(&mut self, actions: Vec<Action>) {
        let Some(link) = self.link.clone() else {
            return;
        };
        use tracing::Instrument;
        for a in actions {
            let r = match &a {
                Action::Launch { offer, tasks } => {
                    let span =
                        tracing::info_span!("launch", offer_id = %offer, tasks = tasks.len());
                    link.accept(offer, tasks.clone(), Duration::from_secs(1))
                        .instrument(span)
                        .await
                }
                Action::Decline { offers, refuse } => link.decline(offers, *refuse).await,
                Action::Kill { task_id, agent_id } => {
                    let span =
                        tracing::info_span!("kill", task_id = %task_id, agent_id = %agent_id);
                    link.kill(
                        &TaskId::new(task_id.as_str()),
                        &AgentId::new(agent_id.as_str()),
                    )
                    .instrument(span)
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
                self.services.offer_call_failed(&a);
            }
        }
    }
}
