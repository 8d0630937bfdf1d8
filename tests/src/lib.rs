//! Test harness: a master on loopback, hollow agents, and SDK frameworks
//! whose callbacks are turned into a stream of [`Ev`] the test reads.

use agora_agent::{AgentConfig, AgentHandle, Connector, HollowRuntime};
use agora_core::{AgentId, FrameworkId, OfferId, Resources};
use agora_master::MasterConfig;
use agora_master::actor::shutdown::{self, Trigger};
use agora_master::store::{RedbRegistry, Registry};
use agora_master::view::State;
use agora_sdk::{Client, Driver, FrameworkConfig, Offer, Scheduler, TaskStatus};
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Timeouts short enough for tests.
pub fn test_config() -> MasterConfig {
    MasterConfig {
        agent_heartbeat_interval: Duration::from_millis(200),
        agent_timeout: Duration::from_millis(1500),
        framework_heartbeat_interval: Duration::from_millis(500),
        allocation_interval: Duration::from_millis(100),
        offer_timeout: Some(Duration::from_secs(30)),
        ..MasterConfig::default()
    }
}

/// A master on 127.0.0.1 with a redb registry in a temp dir.
pub struct Cluster {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub cfg: MasterConfig,
    trigger: Option<Trigger>,
    server: Option<JoinHandle<()>>,
}

/// Logs to stderr when `AGORA_TEST_LOG` is set (e.g. `AGORA_TEST_LOG=debug`).
pub fn init_logs() {
    if let Ok(f) = std::env::var("AGORA_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(f)
            .with_test_writer()
            .try_init();
    }
}

impl Cluster {
    pub async fn start(cfg: MasterConfig) -> Result<Cluster> {
        init_logs();
        let data_dir =
            std::env::temp_dir().join(format!("agora-test-{}", uuid::Uuid::new_v4().simple()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut c = Cluster {
            addr,
            data_dir,
            cfg,
            trigger: None,
            server: None,
        };
        c.serve(listener).await?;
        Ok(c)
    }

    async fn serve(&mut self, listener: tokio::net::TcpListener) -> Result<()> {
        // The previous incarnation may still be closing the database.
        let mut registry = None;
        for _ in 0..100 {
            match RedbRegistry::open(&self.data_dir) {
                Ok(r) => {
                    registry = Some(r);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let registry: Box<dyn Registry> = Box::new(registry.context("registry stayed locked")?);
        let (trigger, shutdown) = shutdown::channel();
        let mut cfg = self.cfg.clone();
        cfg.master_id = agora_master::config::new_master_id();
        let server = tokio::spawn(async move {
            if let Err(e) = agora_master::serve(listener, cfg, registry, shutdown, None).await {
                eprintln!("master stopped with error: {e}");
            }
        });
        self.trigger = Some(trigger);
        self.server = Some(server);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), s).await;
        }
    }

    /// Stops the master and starts a new incarnation on the same address and data dir.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        let mut listener = None;
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        self.serve(listener.context("could not rebind the master address")?)
            .await
    }

    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(&self.addr.to_string(), path).await
    }

    pub async fn state(&self) -> Result<State> {
        let (code, body) = self.get("/state").await?;
        if code != 200 {
            bail!("/state answered {code}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Starts a hollow agent (tasks run 50 ms after launch).
    pub async fn agent(
        &self,
        name: &str,
        resources: &str,
        attributes: &[(&str, &str)],
    ) -> Result<Agent> {
        self.agent_with_start_delay(name, resources, attributes, Duration::from_millis(50))
            .await
    }

    /// Starts a hollow agent whose tasks take `start_delay` to run.
    pub async fn agent_with_start_delay(
        &self,
        name: &str,
        resources: &str,
        attributes: &[(&str, &str)],
        start_delay: Duration,
    ) -> Result<Agent> {
        let cfg = AgentConfig {
            hostname: name.to_string(),
            resources: Resources::parse(resources)?,
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            status_retry_min: Duration::from_millis(300),
            status_retry_max: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(500),
            ..AgentConfig::default()
        };
        let (handle, runtime, _join) =
            agora_agent::spawn_hollow(cfg, Connector::Address(self.url()), start_delay);
        let id = tokio::time::timeout(Duration::from_secs(10), handle.registered())
            .await
            .context("agent did not register")?;
        Ok(Agent {
            id,
            handle,
            runtime,
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub struct Agent {
    pub id: AgentId,
    pub handle: AgentHandle,
    pub runtime: HollowRuntime,
}

/// What a probe framework saw.
#[derive(Debug, Clone)]
pub enum Ev {
    Subscribed(FrameworkId),
    Offers(Vec<Offer>),
    Rescinded(OfferId),
    Update(TaskStatus),
    Failure(AgentId),
    Error(String),
    Disconnected,
}

struct Probe {
    tx: mpsc::UnboundedSender<Ev>,
    /// Usage reports, with when the callback ran (kept apart from the
    /// other events: they arrive every second).
    usage_tx: mpsc::UnboundedSender<Usage>,
    client_tx: Option<tokio::sync::oneshot::Sender<Client>>,
}

/// A usage report a framework got: when its `usage` callback ran, and
/// the samples.
#[derive(Debug, Clone)]
pub struct Usage {
    pub received: std::time::SystemTime,
    pub tasks: Vec<agora_sdk::TaskUsage>,
}

impl Scheduler for Probe {
    async fn subscribed(&mut self, client: &Client, id: &FrameworkId) {
        if let Some(tx) = self.client_tx.take() {
            let _ = tx.send(client.clone());
        }
        let _ = self.tx.send(Ev::Subscribed(id.clone()));
    }
    async fn offers(&mut self, _client: &Client, offers: Vec<Offer>) {
        let _ = self.tx.send(Ev::Offers(offers));
    }
    async fn rescinded(&mut self, _client: &Client, offer: OfferId) {
        let _ = self.tx.send(Ev::Rescinded(offer));
    }
    async fn update(&mut self, _client: &Client, status: TaskStatus) {
        let _ = self.tx.send(Ev::Update(status));
    }
    async fn failure(&mut self, _client: &Client, agent: AgentId, _m: String) {
        let _ = self.tx.send(Ev::Failure(agent));
    }
    async fn error(&mut self, _client: &Client, message: String) {
        let _ = self.tx.send(Ev::Error(message));
    }
    async fn disconnected(&mut self) {
        let _ = self.tx.send(Ev::Disconnected);
    }
    async fn usage(&mut self, _client: &Client, tasks: Vec<agora_sdk::TaskUsage>) {
        let _ = self.usage_tx.send(Usage {
            received: std::time::SystemTime::now(),
            tasks,
        });
    }
}

/// A framework driven by the test through its events.
pub struct Fw {
    pub client: Client,
    pub id: FrameworkId,
    pub rx: mpsc::UnboundedReceiver<Ev>,
    /// The usage reports it got, in order.
    pub usage: mpsc::UnboundedReceiver<Usage>,
    /// Events seen by `wait` that did not match yet (kept for later waits).
    backlog: std::collections::VecDeque<Ev>,
    stop: watch::Sender<bool>,
    join: JoinHandle<Result<(), agora_sdk::SdkError>>,
}

pub fn fw_config(cluster: &Cluster, name: &str) -> FrameworkConfig {
    let mut cfg = FrameworkConfig::new(cluster.url(), name);
    cfg.reconnect_min = Duration::from_millis(50);
    cfg.reconnect_max = Duration::from_millis(500);
    cfg
}

impl Fw {
    pub async fn start(cfg: FrameworkConfig) -> Result<Fw> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (usage_tx, usage) = mpsc::unbounded_channel();
        let (client_tx, client_rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = watch::channel(false);
        let probe = Probe {
            tx,
            usage_tx,
            client_tx: Some(client_tx),
        };
        let join = tokio::spawn(Driver::new(cfg, probe).with_stop(stop_rx).run());
        let client = tokio::time::timeout(Duration::from_secs(10), client_rx)
            .await
            .context("framework did not subscribe")??;
        let id = match rx.recv().await {
            Some(Ev::Subscribed(id)) => id,
            other => bail!("expected SUBSCRIBED, got {other:?}"),
        };
        Ok(Fw {
            client,
            id,
            rx,
            usage,
            backlog: Default::default(),
            stop,
            join,
        })
    }

    /// Stops the driver (the framework disconnects; it is not torn down).
    pub async fn disconnect(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.join).await;
    }

    /// Next event matching `f`, within `within`. Events that do not match
    /// are kept, in order, for later calls.
    pub async fn wait<T>(
        &mut self,
        within: Duration,
        mut f: impl FnMut(&Ev) -> Option<T>,
    ) -> Result<T> {
        for i in 0..self.backlog.len() {
            if let Some(t) = f(&self.backlog[i]) {
                self.backlog.remove(i);
                return Ok(t);
            }
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(ev)) => {
                    if let Some(t) = f(&ev) {
                        return Ok(t);
                    }
                    self.backlog.push_back(ev);
                }
                Ok(None) => bail!("framework driver stopped"),
                Err(_) => bail!("timed out after {within:?}"),
            }
        }
    }

    pub async fn offers(&mut self) -> Result<Vec<Offer>> {
        self.wait(Duration::from_secs(10), |e| match e {
            Ev::Offers(o) if !o.is_empty() => Some(o.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for an update of `task` in `state`.
    pub async fn update(&mut self, task: &str, state: agora_core::TaskState) -> Result<TaskStatus> {
        self.wait(Duration::from_secs(10), |e| match e {
            Ev::Update(s) if s.task_id.as_str() == task && s.state == state => Some(s.clone()),
            _ => None,
        })
        .await
        .with_context(|| format!("waiting for {task} to be {state}"))
    }

    /// Collects events for `d` (and empties the backlog).
    pub async fn drain(&mut self, d: Duration) -> Vec<Ev> {
        let deadline = tokio::time::Instant::now() + d;
        let mut v: Vec<Ev> = self.backlog.drain(..).collect();
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            v.push(ev);
        }
        v
    }
}

/// Minimal HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").context("malformed answer")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(after.get(..n).unwrap_or(""));
            rest = after.get(n + 2..).unwrap_or("");
        }
        out
    } else {
        body.to_string()
    };
    Ok((code, body))
}

/// A task on `offer` running `cmd` with `res`.
pub fn task(id: &str, res: &str, cmd: &str) -> agora_proto::pb::TaskInfo {
    agora_sdk::task(id, res, cmd).expect("valid test resources")
}
