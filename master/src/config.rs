//! Master configuration (defaults chosen for fast failure detection).

use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// Identifies this master incarnation; prefixes agent, framework and offer ids.
    pub master_id: String,
    /// How often agents must heartbeat.
    pub agent_heartbeat_interval: Duration,
    /// An agent silent for this long becomes unreachable (Mesos: 75 s).
    pub agent_timeout: Duration,
    /// After a master restart, how long an agent known from the registry
    /// has to re-register before it is unreachable (Mesos
    /// `agent_reregister_timeout`: 10 min). Longer than `agent_timeout`: an
    /// agent reconnects with back-off (up to 10 s plus a 5 s connect
    /// timeout), and marking it unreachable too early would have frameworks
    /// replace tasks that are still running.
    pub agent_reregister_timeout: Duration,
    /// HEARTBEAT events to frameworks (Mesos: 15 s).
    pub framework_heartbeat_interval: Duration,
    /// Outstanding offers older than this are rescinded. `None`: never.
    pub offer_timeout: Option<Duration>,
    /// Full allocation cycle period; event-driven runs happen in between.
    pub allocation_interval: Duration,
    /// Decline filter when the framework gives none (Mesos: 5 s).
    pub default_refuse: Duration,
    /// Most offers put in one OFFERS event.
    pub max_offers_per_event: usize,
    /// Terminal tasks kept per framework for `/state` and reconciliation (Mesos: 1,000).
    pub completed_tasks_per_framework: usize,
    /// Torn-down frameworks kept for `/state` (Mesos: 50).
    pub max_completed_frameworks: usize,
    /// An agent unreachable this long is removed for good; its remaining
    /// tasks become TASK_GONE (Mesos `registry_max_agent_age`: 14 days).
    pub agent_gc_after: Duration,
    /// Address advertised by `/redirect`.
    pub advertise: String,
    /// **The authentication switch.** `Some(file)`: bearer tokens are
    /// required on HTTP and Scheduler calls and this ACL file decides what
    /// each principal may do (reloaded when it changes and on SIGHUP).
    /// `None`: everything is open (`agora dev`, `--insecure`).
    pub acls: Option<PathBuf>,
    /// With `acls`: when no token exists yet, create one for principal
    /// `admin` and write it to this file (mode 0600).
    pub bootstrap_token_file: Option<PathBuf>,
    /// How often the ACL file's modification time is checked.
    pub acl_poll_interval: Duration,
    /// The secret store (`--secrets-key-file`); `None`: this master has none.
    pub secrets: Option<crate::secrets::SecretsConfig>,
    /// Which frameworks may read which secrets (allow-all by default; the
    /// ACL layer replaces it).
    pub secret_policy: crate::secrets::SharedSecretPolicy,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            master_id: new_master_id(),
            agent_heartbeat_interval: Duration::from_secs(2),
            agent_timeout: Duration::from_secs(10),
            agent_reregister_timeout: Duration::from_secs(120),
            framework_heartbeat_interval: Duration::from_secs(15),
            offer_timeout: Some(Duration::from_secs(30)),
            allocation_interval: Duration::from_secs(1),
            default_refuse: Duration::from_secs(5),
            max_offers_per_event: 500,
            completed_tasks_per_framework: 1000,
            max_completed_frameworks: 50,
            agent_gc_after: Duration::from_secs(14 * 86_400),
            advertise: "127.0.0.1:5050".to_string(),
            acls: None,
            bootstrap_token_file: None,
            acl_poll_interval: Duration::from_secs(2),
            secrets: None,
            secret_policy: Default::default(),
        }
    }
}

/// A fresh, short, unique master id.
pub fn new_master_id() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("m{}", &u[..12])
}
