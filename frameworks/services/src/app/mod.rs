//! App definitions: Marathon v2 field names and defaults, validated field by
//! field so that *every* problem is reported at once (HTTP 422 with a list of
//! `{path, errors}`), never just the first.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

mod checks;
mod fields;
mod parse;
mod ports;
#[cfg(test)]
mod tests;
mod view;

use parse::parse_constraint;
pub use parse::{
    MAX_INSTANCES, RESERVED_ID_SEGMENTS, default_accepted_resource_roles, normalize_id, parse_app,
};
pub use ports::{valid_path, valid_vhost};
/// A `portDefinitions` item as the API shows it (Marathon's fields only).
pub use view::PortDefinition as PortDefinitionView;
pub use view::{AppDefinition, Container, Docker, EnvValue, Network, SecretSource};

/// One problem in a definition: a JSON path and what is wrong there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldError {
    pub path: String,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub container_port: u32,
    pub host_port: u32,
    /// The cluster-wide port internal routers serve this port on (0 in a
    /// definition: assigned by the framework).
    #[serde(default)]
    pub service_port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub protocol: String,
    /// `expose` (`public`|`internal`), `vhost`, `path`, and any others.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A port of a host-networking app, as stored. Marathon's `port` is the
/// service port; the host port is any free one from the offer, or `port`
/// itself when the app says `requirePorts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    /// Marathon's `port`: the cluster-wide port internal routers serve this
    /// port on (0 in a definition: assigned by the framework). Stored as
    /// `servicePort`: rows written before `port` meant the service port
    /// carry a `port` key (the host port then), which the store upgrades
    /// on load (`crate::upgrade`).
    #[serde(rename = "servicePort", default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub protocol: String,
    /// `expose` (`public`|`internal`), `vhost`, `path`, and any others.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One port of an app, whatever its networking: what discovery needs.
#[derive(Debug, Clone, PartialEq)]
pub struct AppPort {
    pub name: String,
    pub protocol: String,
    pub service_port: u32,
    pub labels: BTreeMap<String, String>,
}

/// A secret as a file: `container.volumes` item `{"containerPath", "secret"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretVolume {
    /// Absolute inside a container; relative to the sandbox for a command
    /// app without a container image.
    pub container_path: String,
    /// The secret's name (a key of the app's `secrets`).
    pub secret: String,
}

/// App label: how long an instance drains before it is killed at most.
pub const LABEL_DRAIN_SECONDS: &str = "drainSeconds";
/// `drainSeconds` when the app does not say.
pub const DEFAULT_DRAIN_SECONDS: f64 = 5.0;
/// Most seconds an instance may drain.
pub const MAX_DRAIN_SECONDS: f64 = 3_600.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum NetworkMode {
    #[serde(rename = "host")]
    Host,
    #[serde(rename = "container/bridge")]
    Bridge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum HealthProtocol {
    #[serde(rename = "MESOS_HTTP")]
    MesosHttp,
    #[serde(rename = "MESOS_TCP")]
    MesosTcp,
    #[serde(rename = "COMMAND")]
    Command,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub protocol: HealthProtocol,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub port_index: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub command: String,
    pub grace_period_seconds: f64,
    pub interval_seconds: f64,
    pub timeout_seconds: f64,
    pub max_consecutive_failures: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    pub name: String,
    pub protocol: String,
    pub path: String,
    pub port_name: String,
    pub interval_seconds: f64,
    pub timeout_seconds: f64,
    pub http_status_codes_for_ready: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operator {
    Unique,
    Cluster,
    GroupBy,
    Like,
    Unlike,
    MaxPer,
    Is,
}

/// `[field, operator, value?]`; serialised as Marathon's array form.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    pub field: String,
    pub operator: Operator,
    pub value: Option<String>,
}

impl Serialize for Constraint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let op = serde_json::to_value(self.operator).map_err(serde::ser::Error::custom)?;
        let mut v = vec![Value::String(self.field.clone()), op];
        if let Some(val) = &self.value {
            v.push(Value::String(val.clone()));
        }
        v.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let mut errs = fields::Errors::default();
        parse_constraint(&v, "constraints", &mut errs).ok_or_else(|| {
            serde::de::Error::custom(
                errs.0
                    .first()
                    .map(|e| e.errors.join("; "))
                    .unwrap_or_default(),
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    pub minimum_health_capacity: f64,
    pub maximum_over_capacity: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KillSelection {
    YoungestFirst,
    OldestFirst,
}

/// A validated app definition with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Docker image (`container.docker.image`); `None`: the agent's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub network: NetworkMode,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub port_definitions: Vec<PortDefinition>,
    /// Host networking: each port's host port is its `port` (the service
    /// port) instead of any free one.
    #[serde(default)]
    pub require_ports: bool,
    pub instances: u32,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Marathon's `secrets`: the app's name for a secret → its path in the
    /// master's store (normalised, `/prod/db/password`). References only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// `env` entries that are secret references (`{"secret": "db"}`):
    /// variable → secret name (a key of `secrets`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_secrets: BTreeMap<String, String>,
    /// `container.volumes` items that are secrets, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_volumes: Vec<SecretVolume>,
    /// Agora-internal (stored, never in the /v2 JSON): the version of each
    /// secret path this app version's tasks use, pinned when the version
    /// was created and moved by a secret rollout (a new app version).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_versions: BTreeMap<String, u64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    #[serde(default)]
    pub readiness_checks: Vec<ReadinessCheck>,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    pub upgrade_strategy: UpgradeStrategy,
    pub backoff_seconds: f64,
    pub backoff_factor: f64,
    pub max_launch_delay_seconds: f64,
    pub kill_selection: KillSelection,
    /// Seconds between SIGTERM and SIGKILL when an instance is killed (0:
    /// the agent's default).
    #[serde(default)]
    pub task_kill_grace_period_seconds: f64,
    /// Roles of the resources its instances may run on (sorted, no
    /// duplicates): `*` unreserved, `public` resources of public agents.
    /// Apps stored before the field existed load with `["*"]`.
    #[serde(default = "default_accepted_resource_roles")]
    pub accepted_resource_roles: Vec<String>,
    /// When this version was created (RFC 3339-like, UTC seconds).
    #[serde(default)]
    pub version: String,
}

impl App {
    /// Everything but `instances` (and `version`): a change here needs a
    /// rolling replacement; a change of `instances` alone is a scale.
    pub fn same_config(&self, other: &App) -> bool {
        let mut a = self.clone();
        let mut b = other.clone();
        a.instances = 0;
        b.instances = 0;
        a.version.clear();
        b.version.clear();
        a == b
    }

    /// Same as [`App::same_config`], ignoring the pinned secret versions:
    /// what the user asked for is the same.
    pub fn same_definition(&self, other: &App) -> bool {
        let mut a = self.clone();
        a.secret_versions = other.secret_versions.clone();
        a.same_config(other)
    }

    /// The secret paths the app uses (sorted, no duplicates): those its
    /// env and volumes reference.
    pub fn secret_paths(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .env_secrets
            .values()
            .chain(self.secret_volumes.iter().map(|v| &v.secret))
            .filter_map(|name| self.secrets.get(name).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// How many ports each instance needs from its agent.
    pub fn host_ports_needed(&self) -> usize {
        match self.network {
            NetworkMode::Bridge => self.port_mappings.len(),
            NetworkMode::Host => self.port_definitions.len(),
        }
    }

    /// The host port each instance asks for, per port in order: `Some(0)`
    /// any free one, `Some(p)` exactly `p`; `None` when the port cannot be
    /// placed (host networking with `requirePorts` and a service port not
    /// assigned yet).
    pub fn host_port_requests(&self) -> Vec<Option<u32>> {
        match self.network {
            NetworkMode::Bridge => self
                .port_mappings
                .iter()
                .map(|p| Some(p.host_port))
                .collect(),
            NetworkMode::Host => self
                .port_definitions
                .iter()
                .map(|p| match (self.require_ports, p.port) {
                    (false, _) => Some(0),
                    (true, 0) => None,
                    (true, n) => Some(n),
                })
                .collect(),
        }
    }

    /// The app's ports (port mappings with bridge networking, port
    /// definitions with host networking), in order.
    pub fn ports(&self) -> Vec<AppPort> {
        match self.network {
            NetworkMode::Bridge => self
                .port_mappings
                .iter()
                .map(|p| AppPort {
                    name: p.name.clone(),
                    protocol: p.protocol.clone(),
                    service_port: p.service_port,
                    labels: p.labels.clone(),
                })
                .collect(),
            NetworkMode::Host => self
                .port_definitions
                .iter()
                .map(|p| AppPort {
                    name: p.name.clone(),
                    protocol: p.protocol.clone(),
                    service_port: p.port,
                    labels: p.labels.clone(),
                })
                .collect(),
        }
    }

    /// The service ports of the app's ports, in order (0: unassigned).
    pub fn service_ports_mut(&mut self) -> Vec<&mut u32> {
        match self.network {
            NetworkMode::Bridge => self
                .port_mappings
                .iter_mut()
                .map(|p| &mut p.service_port)
                .collect(),
            NetworkMode::Host => self
                .port_definitions
                .iter_mut()
                .map(|p| &mut p.port)
                .collect(),
        }
    }

    /// Seconds an instance drains before it is killed at most (label
    /// `drainSeconds`, validated when the app was parsed).
    pub fn drain_seconds(&self) -> f64 {
        self.labels
            .get(LABEL_DRAIN_SECONDS)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|x| x.is_finite() && (0.0..=MAX_DRAIN_SECONDS).contains(x))
            .unwrap_or(DEFAULT_DRAIN_SECONDS)
    }

    /// The JSON view (Marathon shape: container, networks, …).
    pub fn to_marathon(&self) -> Value {
        serde_json::to_value(view::AppDefinition::from(self)).unwrap_or(Value::Null)
    }
}
