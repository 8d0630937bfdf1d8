//! An app definition as Marathon shows it (and as the API documents it):
//! Marathon's field names only.

use super::*;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Docker {
    pub image: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// `DOCKER` (with an image), or `MESOS` (a command app that only has
    /// secret volumes).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<Docker>,
    pub port_mappings: Vec<PortMapping>,
    /// Secret files: `{"containerPath", "secret"}` (a reference, never a value).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<SecretVolume>,
}

/// An `env` value: a plain string, or a reference to one of the app's
/// `secrets` (the value is never shown).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EnvValue {
    Plain(String),
    Secret { secret: String },
}

/// A secret the app uses: its path in the master's store.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SecretSource {
    pub source: String,
}

/// A port of a host-networking app: Marathon's `portDefinitions` item.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PortDefinition {
    /// The service port: the cluster-wide port internal routers serve this
    /// port on (0 in a definition: assigned from `--service-ports`). The
    /// task's host port is any free one, or this one with `requirePorts`;
    /// tasks read it as `$PORT0`…, `$PORT_<NAME>`.
    pub port: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// `expose` (`public`|`internal`), `vhost`, `path`, and any others.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl From<&super::PortDefinition> for PortDefinition {
    fn from(p: &super::PortDefinition) -> Self {
        PortDefinition {
            port: p.port,
            name: p.name.clone(),
            protocol: p.protocol.clone(),
            labels: p.labels.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Network {
    pub mode: NetworkMode,
}

/// An app definition: what `POST /v2/apps` takes and what the API shows.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppDefinition {
    /// Path-like, e.g. `/shop/web`.
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    pub instances: u32,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub env: BTreeMap<String, EnvValue>,
    /// The app's secrets by name (`{"db": {"source": "/prod/db/password"}}`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretSource>,
    pub labels: BTreeMap<String, String>,
    pub health_checks: Vec<HealthCheck>,
    pub readiness_checks: Vec<ReadinessCheck>,
    /// `[field, operator]` or `[field, operator, value]`.
    #[schema(value_type = Vec<Vec<String>>)]
    pub constraints: Vec<Constraint>,
    pub upgrade_strategy: UpgradeStrategy,
    pub backoff_seconds: f64,
    pub backoff_factor: f64,
    pub max_launch_delay_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<f64>,
    pub kill_selection: KillSelection,
    pub networks: Vec<Network>,
    pub port_definitions: Vec<PortDefinition>,
    /// Host networking: each port's host port is its `port` instead of any
    /// free one.
    pub require_ports: bool,
    /// Roles of the resources instances may use (`*`: unreserved).
    pub accepted_resource_roles: Vec<String>,
    pub version: String,
}

impl From<&App> for AppDefinition {
    fn from(a: &App) -> Self {
        AppDefinition {
            id: a.id.clone(),
            cmd: a.cmd.clone(),
            args: (!a.args.is_empty()).then(|| a.args.clone()),
            container: match &a.image {
                Some(i) => Some(Container {
                    kind: "DOCKER".into(),
                    docker: Some(Docker { image: i.clone() }),
                    port_mappings: a.port_mappings.clone(),
                    volumes: a.secret_volumes.clone(),
                }),
                None if !a.secret_volumes.is_empty() => Some(Container {
                    kind: "MESOS".into(),
                    docker: None,
                    port_mappings: Vec::new(),
                    volumes: a.secret_volumes.clone(),
                }),
                None => None,
            },
            instances: a.instances,
            cpus: a.cpus,
            mem: a.mem,
            disk: a.disk,
            env: a
                .env
                .iter()
                .map(|(k, v)| (k.clone(), EnvValue::Plain(v.clone())))
                .chain(
                    a.env_secrets
                        .iter()
                        .map(|(k, s)| (k.clone(), EnvValue::Secret { secret: s.clone() })),
                )
                .collect(),
            secrets: a
                .secrets
                .iter()
                .map(|(n, p)| (n.clone(), SecretSource { source: p.clone() }))
                .collect(),
            labels: a.labels.clone(),
            health_checks: a.health_checks.clone(),
            readiness_checks: a.readiness_checks.clone(),
            constraints: a.constraints.clone(),
            upgrade_strategy: a.upgrade_strategy,
            backoff_seconds: a.backoff_seconds,
            backoff_factor: a.backoff_factor,
            max_launch_delay_seconds: a.max_launch_delay_seconds,
            task_kill_grace_period_seconds: (a.task_kill_grace_period_seconds > 0.0)
                .then_some(a.task_kill_grace_period_seconds),
            kill_selection: a.kill_selection,
            networks: vec![Network { mode: a.network }],
            port_definitions: a
                .port_definitions
                .iter()
                .map(PortDefinition::from)
                .collect(),
            require_ports: a.require_ports,
            accepted_resource_roles: a.accepted_resource_roles.clone(),
            version: a.version.clone(),
        }
    }
}
