//! The Agora framework SDK: write a scheduler in Rust.
//!
//! Implement [`Scheduler`] (callbacks for offers, status updates, …), then
//! run it with a [`Driver`]. The driver subscribes to the master, calls your
//! callbacks in order, and takes care of the protocol chores:
//!
//! - **reconnection** with exponential backoff, resubscribing with the same
//!   framework id so tasks survive a scheduler restart within the failover
//!   timeout;
//! - **acknowledgements**: every status update that needs one is
//!   acknowledged after your [`Scheduler::update`] returns (batched into one
//!   call under load); turn it off with [`FrameworkConfig::auto_acknowledge`]
//!   and call [`Client::acknowledge`] yourself;
//! - **reconciliation**: implicit reconciliation right after every
//!   (re)subscription and then periodically;
//! - **heartbeat watchdog**: if the master is silent for several heartbeat
//!   intervals the connection is treated as lost and re-established.
//!
//! ```no_run
//! use agora_sdk::{Client, Driver, FrameworkConfig, Offer, Scheduler, TaskStatus};
//!
//! struct Hello { launched: bool }
//!
//! impl Scheduler for Hello {
//!     async fn offers(&mut self, client: &Client, offers: Vec<Offer>) {
//!         for offer in offers {
//!             if !self.launched {
//!                 let task = agora_sdk::task("hello-1", "cpus:0.1;mem:32", "echo hello").unwrap();
//!                 self.launched = client.launch(&offer, vec![task]).await.is_ok();
//!             } else {
//!                 let _ = client.decline(&[offer.id], None).await;
//!             }
//!         }
//!     }
//!     async fn update(&mut self, _client: &Client, status: TaskStatus) {
//!         println!("{} is {}", status.task_id, status.state);
//!     }
//! }
//!
//! # async fn run() -> Result<(), agora_sdk::SdkError> {
//! let cfg = FrameworkConfig::new("http://127.0.0.1:5050", "hello");
//! Driver::new(cfg, Hello { launched: false }).run().await
//! # }
//! ```
//!
//! # Layout
//! - this file: [`Scheduler`], [`Driver`], [`FrameworkConfig`];
//! - [`client`]: [`Client`], the calls (accept, decline, kill, …);
//! - [`types`]: [`Offer`], [`TaskStatus`] and the [`task`] helper.

pub mod client;
pub mod types;

pub use agora_core::protocol::TaskUsage;
pub use agora_core::{AgentId, FrameworkId, OfferId, Resources, TaskId, TaskState};
pub use agora_proto::pb;
pub use client::{Client, SecretVersion, SecretVersionsError};
pub use types::{Offer, TaskStatus, task};

use futures::StreamExt;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

/// Errors the SDK reports.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("invalid master address {address:?}: {message}")]
    Address { address: String, message: String },
    #[error("the master refused the call: {0}")]
    Refused(String),
    #[error("not subscribed yet: wait for Scheduler::subscribed")]
    NotSubscribed,
    #[error("the master cannot be reached: {0}")]
    Unavailable(String),
    #[error("framework {0} was torn down by the master; start without a framework id")]
    TornDown(String),
    #[error("invalid {0}")]
    Invalid(String),
    /// UNAUTHENTICATED or PERMISSION_DENIED on SUBSCRIBE: retrying with the
    /// same credentials cannot help, so the driver stops.
    #[error(
        "the master refused the subscription: {0} (set FrameworkConfig::token to a token whose principal the master's ACLs allow)"
    )]
    Unauthorized(String),
}

impl From<tonic::Status> for SdkError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                SdkError::Unavailable(s.message().to_string())
            }
            _ => SdkError::Refused(s.message().to_string()),
        }
    }
}

/// Framework settings.
#[derive(Clone, Debug)]
pub struct FrameworkConfig {
    /// The master, e.g. `http://127.0.0.1:5050`.
    pub master: String,
    pub name: String,
    /// Resources are shared between roles by weighted DRF. Default `*`.
    pub role: String,
    pub user: String,
    /// Resume as this framework (after a scheduler restart).
    pub framework_id: Option<FrameworkId>,
    /// How long the master keeps our tasks while we are disconnected.
    pub failover_timeout: Duration,
    /// Receive TASK_UNREACHABLE (may come back) instead of TASK_LOST.
    pub partition_aware: bool,
    /// Acknowledge updates after `Scheduler::update` returns.
    pub auto_acknowledge: bool,
    /// Implicit reconciliation period (also done on every subscription).
    pub reconcile_interval: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Missed heartbeats before the connection is considered dead.
    pub heartbeat_misses: u32,
    /// TLS for an `https://` master: the cluster CA to verify it with
    /// (`agora_tls::client_config`). Frameworks present no certificate.
    pub tls: Option<std::sync::Arc<agora_tls::ClientConfig>>,
    /// Bearer token sent as `authorization` metadata on every call (needed
    /// when the master runs with ACLs). Zeroized on drop, redacted in `Debug`.
    pub token: Option<std::sync::Arc<agora_core::secrets::SecretValue>>,
}

impl FrameworkConfig {
    pub fn new(master: impl Into<String>, name: impl Into<String>) -> Self {
        FrameworkConfig {
            master: master.into(),
            name: name.into(),
            role: "*".into(),
            user: String::new(),
            framework_id: None,
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            partition_aware: true,
            auto_acknowledge: true,
            reconcile_interval: Duration::from_secs(300),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            heartbeat_misses: 5,
            tls: None,
            token: None,
        }
    }
}

/// Your scheduler. Every method has a default except [`Scheduler::offers`].
/// Callbacks run one at a time, in the order events arrive.
pub trait Scheduler: Send + 'static {
    /// Subscribed (first time or again after a reconnection).
    fn subscribed(
        &mut self,
        _client: &Client,
        _framework_id: &FrameworkId,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// New offers. Accept or decline each one: an ignored offer is held
    /// until the master's offer timeout rescinds it.
    fn offers(&mut self, client: &Client, offers: Vec<Offer>) -> impl Future<Output = ()> + Send;
    /// An offer was withdrawn; it can no longer be accepted.
    fn rescinded(&mut self, _client: &Client, _offer: OfferId) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// A task status update (acknowledged after this returns, if automatic).
    fn update(&mut self, _client: &Client, _status: TaskStatus) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// An agent was lost.
    fn failure(
        &mut self,
        _client: &Client,
        _agent: AgentId,
        _message: String,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// The master reported an error (e.g. another scheduler took over).
    fn error(&mut self, _client: &Client, _message: String) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Resource usage of some of this framework's live tasks (CPU time,
    /// memory), as their agents report it; a report that does not parse is
    /// dropped. Autoscalers turn consecutive samples into rates.
    fn usage(
        &mut self,
        _client: &Client,
        _usage: Vec<TaskUsage>,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// The connection to the master was lost; the driver reconnects.
    fn disconnected(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Runs a [`Scheduler`] against a master.
pub struct Driver<S: Scheduler> {
    cfg: FrameworkConfig,
    scheduler: S,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

enum Outcome {
    Reconnect,
    Stop,
}

impl<S: Scheduler> Driver<S> {
    pub fn new(cfg: FrameworkConfig, scheduler: S) -> Self {
        Driver {
            cfg,
            scheduler,
            stop: None,
        }
    }

    /// Stops the driver (without tearing the framework down) when the
    /// watched value becomes `true`.
    pub fn with_stop(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Runs until stopped or until the master tears the framework down.
    /// Returns the scheduler back for inspection.
    pub async fn run(self) -> Result<(), SdkError> {
        self.run_returning().await.map(|_| ())
    }

    pub async fn run_returning(mut self) -> Result<S, SdkError> {
        let endpoint = Endpoint::from_shared(self.cfg.master.clone())
            .map_err(|e| SdkError::Address {
                address: self.cfg.master.clone(),
                message: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if self.cfg.tls.is_none() && self.cfg.master.starts_with("https://") {
            return Err(SdkError::Address {
                address: self.cfg.master.clone(),
                message:
                    "an https master needs a CA certificate to verify it (FrameworkConfig::tls, \
                          e.g. from the cluster's ca.crt)"
                        .into(),
            });
        }
        if self.cfg.tls.is_some() && !self.cfg.master.starts_with("https://") {
            // Silently plain text would send the bearer token in the clear.
            return Err(SdkError::Address {
                address: self.cfg.master.clone(),
                message: "FrameworkConfig::tls is set but the master address is not https://: \
                          use https:// (or leave tls unset for a plain-text master)"
                    .into(),
            });
        }
        let channel = agora_tls::channel_lazy(endpoint, self.cfg.tls.clone());
        let client = Client::new(channel, self.cfg.token.as_deref())?;
        if let Some(id) = &self.cfg.framework_id {
            client.set_framework_id(id.clone());
        }
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let ack_task = tokio::spawn(client::ack_loop(client.clone(), ack_rx));
        let mut backoff = self.cfg.reconnect_min;
        let result = loop {
            match self.session(&client, &ack_tx).await {
                Ok(Outcome::Stop) => break Ok(()),
                Ok(Outcome::Reconnect) => {}
                Err(e @ (SdkError::TornDown(_) | SdkError::Unauthorized(_))) => break Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "subscription failed; retrying");
                }
            }
            let pause = backoff;
            backoff = (backoff * 2).min(self.cfg.reconnect_max);
            if self.stopped_within(pause).await {
                break Ok(());
            }
            // Reset the backoff when a session got going (see session()).
            if client.framework_id().is_some() && client.take_session_ok() {
                backoff = self.cfg.reconnect_min;
            }
        };
        ack_task.abort();
        result.map(|_| self.scheduler)
    }

    async fn stopped_within(&mut self, d: Duration) -> bool {
        match &mut self.stop {
            Some(stop) => {
                let wait = async {
                    while !*stop.borrow() {
                        if stop.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                };
                tokio::time::timeout(d, wait).await.is_ok()
            }
            None => {
                tokio::time::sleep(d).await;
                false
            }
        }
    }

    async fn session(
        &mut self,
        client: &Client,
        acks: &mpsc::UnboundedSender<pb::Acknowledgement>,
    ) -> Result<Outcome, SdkError> {
        let info = pb::FrameworkInfo {
            framework_id: client.framework_id().map(|f| f.0).unwrap_or_default(),
            name: self.cfg.name.clone(),
            role: self.cfg.role.clone(),
            user: self.cfg.user.clone(),
            failover_timeout_seconds: self.cfg.failover_timeout.as_secs_f64(),
            partition_aware: self.cfg.partition_aware,
            hostname: String::new(),
            capabilities: vec![],
        };
        let mut stream = match client
            .raw()
            .subscribe(pb::SubscribeRequest {
                framework: Some(info),
            })
            .await
        {
            Ok(s) => s.into_inner(),
            Err(s)
                if s.code() == tonic::Code::FailedPrecondition
                    && s.message().contains("torn down") =>
            {
                return Err(SdkError::TornDown(s.message().to_string()));
            }
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) =>
            {
                tracing::error!(error = %s.message(), "the master refused the subscription");
                return Err(SdkError::Unauthorized(s.message().to_string()));
            }
            Err(s) => return Err(s.into()),
        };
        let mut heartbeat = Duration::from_secs(15);
        let mut reconcile = tokio::time::interval(self.cfg.reconcile_interval);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reconcile.tick().await;
        let mut stop = self.stop.clone();
        loop {
            let silence = heartbeat * self.cfg.heartbeat_misses.max(2);
            let stopped = async {
                match &mut stop {
                    Some(s) => {
                        while !*s.borrow() {
                            if s.changed().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let next = tokio::select! {
                n = tokio::time::timeout(silence, stream.next()) => n,
                _ = reconcile.tick() => {
                    if let Err(e) = client.reconcile(vec![]).await {
                        tracing::debug!(error = %e, "periodic reconciliation failed");
                    }
                    continue;
                }
                _ = stopped => return Ok(Outcome::Stop),
            };
            let ev = match next {
                Err(_) => {
                    tracing::warn!(?silence, "no heartbeat from the master; reconnecting");
                    self.scheduler.disconnected().await;
                    return Ok(Outcome::Reconnect);
                }
                Ok(None) => {
                    self.scheduler.disconnected().await;
                    return Ok(Outcome::Reconnect);
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "event stream error");
                    self.scheduler.disconnected().await;
                    return Ok(Outcome::Reconnect);
                }
                Ok(Some(Ok(ev))) => ev,
            };
            use pb::event::Event;
            match ev.event {
                Some(Event::Subscribed(s)) => {
                    let id = FrameworkId::new(s.framework_id.as_str());
                    client.set_framework_id(id.clone());
                    client.mark_session_ok();
                    if s.heartbeat_interval_seconds.is_finite()
                        && s.heartbeat_interval_seconds > 0.0
                    {
                        heartbeat =
                            Duration::from_secs_f64(s.heartbeat_interval_seconds.min(3600.0));
                    }
                    tracing::info!(framework_id = %id, "subscribed");
                    self.scheduler.subscribed(client, &id).await;
                    if let Err(e) = client.reconcile(vec![]).await {
                        tracing::debug!(error = %e, "reconciliation after subscribe failed");
                    }
                }
                Some(Event::Offers(o)) => {
                    let offers = o
                        .offers
                        .into_iter()
                        .filter_map(|o| Offer::try_from(o).ok())
                        .collect();
                    self.scheduler.offers(client, offers).await;
                }
                Some(Event::Rescind(r)) => {
                    self.scheduler
                        .rescinded(client, OfferId::new(r.offer_id))
                        .await;
                }
                Some(Event::Update(u)) => {
                    let Some(st) = u.status else { continue };
                    let Ok(status) = TaskStatus::try_from(st) else {
                        continue;
                    };
                    let ack = (self.cfg.auto_acknowledge && !status.uuid.is_empty()).then(|| {
                        pb::Acknowledgement {
                            agent_id: status.agent_id.0.clone(),
                            task_id: status.task_id.0.clone(),
                            uuid: status.uuid.clone(),
                        }
                    });
                    self.scheduler.update(client, status).await;
                    if let Some(a) = ack {
                        let _ = acks.send(a);
                    }
                }
                Some(Event::Failure(f)) => {
                    self.scheduler
                        .failure(client, AgentId::new(f.agent_id), f.message)
                        .await;
                }
                Some(Event::Error(e)) => {
                    self.scheduler.error(client, e.message).await;
                }
                Some(Event::Usage(u)) => {
                    let usage: Vec<TaskUsage> = u
                        .tasks
                        .into_iter()
                        .filter_map(|t| TaskUsage::try_from(t).ok())
                        .collect();
                    if !usage.is_empty() {
                        self.scheduler.usage(client, usage).await;
                    }
                }
                Some(Event::Heartbeat(_)) | None => {}
            }
        }
    }
}
