//! Task descriptions, health checks and statuses.
//!
//! Conversions take the wire value by value and move its strings: status
//! updates and launches are the master's hot path. Field names are only
//! formatted when something is wrong.

use super::{Invalid, at, duration, own_agent_id, own_task_id, port, resources, task_state};
use crate::pb;
use agora_core::info::{
    CommandInfo, ContainerInfo, HealthCheck, HealthProtocol, PortMapping, TaskInfo, TaskSource,
    TaskStatus, limits,
};
use agora_core::secrets::{SecretPath, SecretRef, SecretTarget, SecretUse};

// ------------------------------------------------------------- health checks

pub fn health_check(field: &str, h: pb::HealthCheck) -> Result<HealthCheck, Invalid> {
    let protocol = match pb::health_check::Protocol::try_from(h.protocol) {
        Ok(pb::health_check::Protocol::Http) => HealthProtocol::Http,
        Ok(pb::health_check::Protocol::Tcp) => HealthProtocol::Tcp,
        Ok(pb::health_check::Protocol::Command) => HealthProtocol::Command,
        Err(_) => {
            return Err(Invalid::new(
                format!("{field}.protocol"),
                format!("unknown protocol {}", h.protocol),
            ));
        }
    };
    let mut ok_statuses = Vec::with_capacity(h.ok_statuses.len());
    for s in &h.ok_statuses {
        match u16::try_from(*s) {
            Ok(c) if (100..=599).contains(&c) => ok_statuses.push(c),
            _ => {
                return Err(Invalid::new(
                    format!("{field}.ok_statuses"),
                    format!("{s} is not an HTTP status (100 to 599)"),
                ));
            }
        }
    }
    Ok(HealthCheck {
        protocol,
        path: h.path,
        port: port("port", h.port).map_err(at(field))?,
        command: h.command,
        grace_period: duration(
            "grace_period_seconds",
            h.grace_period_seconds,
            limits::CHECK_PERIOD,
        )
        .map_err(at(field))?,
        interval: duration("interval_seconds", h.interval_seconds, limits::CHECK_PERIOD)
            .map_err(at(field))?,
        timeout: duration("timeout_seconds", h.timeout_seconds, limits::CHECK_TIMEOUT)
            .map_err(at(field))?,
        max_consecutive_failures: h.max_consecutive_failures,
        ok_statuses,
    })
}

impl From<HealthCheck> for pb::HealthCheck {
    fn from(h: HealthCheck) -> Self {
        pb::HealthCheck {
            protocol: match h.protocol {
                HealthProtocol::Http => pb::health_check::Protocol::Http,
                HealthProtocol::Tcp => pb::health_check::Protocol::Tcp,
                HealthProtocol::Command => pb::health_check::Protocol::Command,
            } as i32,
            path: h.path,
            port: u32::from(h.port),
            command: h.command,
            grace_period_seconds: h.grace_period.as_secs_f64(),
            interval_seconds: h.interval.as_secs_f64(),
            timeout_seconds: h.timeout.as_secs_f64(),
            max_consecutive_failures: h.max_consecutive_failures,
            ok_statuses: h.ok_statuses.into_iter().map(u32::from).collect(),
        }
    }
}

impl From<&HealthCheck> for pb::HealthCheck {
    fn from(h: &HealthCheck) -> Self {
        h.clone().into()
    }
}

// ---------------------------------------------------------------------- tasks

pub fn command(field: &str, c: pb::CommandInfo) -> Result<CommandInfo, Invalid> {
    let mut env = Vec::with_capacity(c.env.len());
    for v in c.env {
        if v.name.is_empty() || v.name.contains('=') || v.name.contains('\0') {
            return Err(Invalid::new(
                format!("{field}.env"),
                format!(
                    "{:?} is not a variable name (non-empty, no '=' or NUL)",
                    v.name
                ),
            ));
        }
        if v.value.contains('\0') {
            // The value is never echoed: it may be a credential.
            return Err(Invalid::new(
                format!("{field}.env.{}", v.name),
                "the value contains a NUL byte",
            ));
        }
        env.push((v.name, v.value));
    }
    Ok(CommandInfo {
        value: c.value,
        args: c.args,
        env,
        shell: c.shell,
    })
}

impl From<CommandInfo> for pb::CommandInfo {
    fn from(c: CommandInfo) -> Self {
        pb::CommandInfo {
            value: c.value,
            args: c.args,
            env: c
                .env
                .into_iter()
                .map(|(name, value)| pb::EnvVar { name, value })
                .collect(),
            shell: c.shell,
        }
    }
}

pub fn container(field: &str, c: pb::ContainerInfo) -> Result<ContainerInfo, Invalid> {
    let mut port_mappings = Vec::with_capacity(c.port_mappings.len());
    for (i, m) in c.port_mappings.into_iter().enumerate() {
        let within = |e: Invalid| e.within(&format!("{field}.port_mappings[{i}]"));
        port_mappings.push(PortMapping {
            host_port: port("host_port", m.host_port).map_err(within)?,
            container_port: port("container_port", m.container_port).map_err(within)?,
            protocol: m.protocol,
            name: m.name,
        });
    }
    Ok(ContainerInfo {
        image: c.image,
        network: c.network,
        port_mappings,
    })
}

impl From<ContainerInfo> for pb::ContainerInfo {
    fn from(c: ContainerInfo) -> Self {
        pb::ContainerInfo {
            image: c.image,
            network: c.network,
            port_mappings: c
                .port_mappings
                .into_iter()
                .map(|m| pb::PortMapping {
                    host_port: u32::from(m.host_port),
                    container_port: u32::from(m.container_port),
                    protocol: m.protocol,
                    name: m.name,
                })
                .collect(),
        }
    }
}

pub fn task_info(field: &str, t: pb::TaskInfo) -> Result<TaskInfo, Invalid> {
    let checks = |name: &str, list: Vec<pb::HealthCheck>| {
        list.into_iter()
            .enumerate()
            .map(|(i, h)| health_check(&format!("{field}.{name}[{i}]"), h))
            .collect::<Result<Vec<_>, _>>()
    };
    if t.secrets.len() > MAX_TASK_SECRETS {
        return Err(Invalid::new(
            format!("{field}.secrets"),
            format!("at most {MAX_TASK_SECRETS} secrets per task"),
        ));
    }
    Ok(TaskInfo {
        id: own_task_id("task_id", t.task_id).map_err(at(field))?,
        name: t.name,
        agent: if t.agent_id.is_empty() {
            None
        } else {
            Some(own_agent_id("agent_id", t.agent_id).map_err(at(field))?)
        },
        resources: resources("resources", t.resources.as_ref()).map_err(at(field))?,
        command: t
            .command
            .map(|c| command(&format!("{field}.command"), c))
            .transpose()?,
        container: t
            .container
            .map(|c| container(&format!("{field}.container"), c))
            .transpose()?,
        labels: t.labels.into_iter().collect(),
        kill_grace: duration(
            "kill_grace_seconds",
            t.kill_grace_seconds,
            limits::KILL_GRACE,
        )
        .map_err(at(field))?,
        health_checks: checks("health_checks", t.health_checks)?,
        readiness_checks: checks("readiness_checks", t.readiness_checks)?,
        secrets: t
            .secrets
            .into_iter()
            .enumerate()
            .map(|(i, u)| secret_use(&format!("{field}.secrets[{i}]"), u))
            .collect::<Result<Vec<_>, _>>()?,
    })
}

/// Most secrets one task may reference.
pub const MAX_TASK_SECRETS: usize = 64;

/// A task's secret reference: a valid path, and an env name or a file path
/// the runtime can use (a file path without `..`, NUL or newlines).
pub fn secret_use(field: &str, u: pb::SecretUse) -> Result<SecretUse, Invalid> {
    let path = SecretPath::parse(&u.path)
        .map_err(|e| Invalid::new(format!("{field}.path"), e.reason.to_string()))?;
    let target = match u.target {
        Some(pb::secret_use::Target::Env(name)) => {
            if !valid_env_name(&name) {
                return Err(Invalid::new(
                    format!("{field}.env"),
                    "an environment variable name is letters, digits and `_`, not starting with a digit",
                ));
            }
            if name == "HOST" || name.starts_with("AGORA_") {
                // The agent sets these; a secret must not shadow them (the
                // agent reads HOST back to find where to probe a task).
                return Err(Invalid::new(
                    format!("{field}.env"),
                    format!("{name} is set by the agent (HOST and AGORA_*); choose another name"),
                ));
            }
            SecretTarget::Env(name)
        }
        Some(pb::secret_use::Target::File(file)) => {
            if file.is_empty()
                || file.len() > 1024
                || file.ends_with('/')
                || file.split('/').any(|s| s == "..")
                || file.bytes().any(|b| b == 0 || b == b'\n')
            {
                return Err(Invalid::new(
                    format!("{field}.file"),
                    "a file path is non-empty, at most 1024 bytes, without `..` segments, NUL or newlines, and does not end in `/`",
                ));
            }
            SecretTarget::File(file)
        }
        None => {
            return Err(Invalid::new(
                format!("{field}.target"),
                "say how the task uses the secret: `env` or `file`",
            ));
        }
    };
    Ok(SecretUse {
        target,
        secret: SecretRef {
            path,
            version: u.version,
        },
    })
}

fn valid_env_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 255
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

impl From<SecretUse> for pb::SecretUse {
    fn from(u: SecretUse) -> Self {
        pb::SecretUse {
            target: Some(match u.target {
                SecretTarget::Env(n) => pb::secret_use::Target::Env(n),
                SecretTarget::File(f) => pb::secret_use::Target::File(f),
            }),
            path: u.secret.path.as_str().to_string(),
            version: u.secret.version,
        }
    }
}

impl From<TaskInfo> for pb::TaskInfo {
    fn from(t: TaskInfo) -> Self {
        pb::TaskInfo {
            task_id: t.id.0,
            name: t.name,
            agent_id: t.agent.map(|a| a.0).unwrap_or_default(),
            resources: Some((&t.resources).into()),
            command: t.command.map(Into::into),
            container: t.container.map(Into::into),
            labels: t.labels.into_iter().collect(),
            kill_grace_seconds: t.kill_grace.as_secs_f64(),
            health_checks: t.health_checks.into_iter().map(Into::into).collect(),
            readiness_checks: t.readiness_checks.into_iter().map(Into::into).collect(),
            secrets: t.secrets.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<&TaskInfo> for pb::TaskInfo {
    fn from(t: &TaskInfo) -> Self {
        t.clone().into()
    }
}

fn source(s: i32) -> TaskSource {
    match pb::TaskSource::try_from(s) {
        Ok(pb::TaskSource::SourceMaster) => TaskSource::Master,
        Ok(pb::TaskSource::SourceAgent) => TaskSource::Agent,
        Ok(pb::TaskSource::SourceExecutor) => TaskSource::Executor,
        _ => TaskSource::Unspecified,
    }
}

pub fn task_status(field: &str, s: pb::TaskStatus) -> Result<TaskStatus, Invalid> {
    if !s.timestamp.is_finite() {
        return Err(Invalid::new(
            format!("{field}.timestamp"),
            "is not a finite number",
        ));
    }
    Ok(TaskStatus {
        task_id: own_task_id("task_id", s.task_id).map_err(at(field))?,
        state: task_state("state", s.state).map_err(at(field))?,
        agent_id: if s.agent_id.is_empty() {
            None
        } else {
            Some(own_agent_id("agent_id", s.agent_id).map_err(at(field))?)
        },
        message: s.message,
        reason: s.reason,
        source: source(s.source),
        uuid: (!s.uuid.is_empty()).then_some(s.uuid),
        timestamp: s.timestamp,
        healthy: s.has_health.then_some(s.healthy),
        exit_code: s.has_exit_code.then_some(s.exit_code),
        ready: s.has_ready.then_some(s.ready),
    })
}

impl From<TaskStatus> for pb::TaskStatus {
    fn from(s: TaskStatus) -> Self {
        pb::TaskStatus {
            task_id: s.task_id.0,
            state: pb::TaskState::from(s.state) as i32,
            agent_id: s.agent_id.map(|a| a.0).unwrap_or_default(),
            message: s.message,
            reason: s.reason,
            source: match s.source {
                TaskSource::Unspecified => pb::TaskSource::SourceUnspecified,
                TaskSource::Master => pb::TaskSource::SourceMaster,
                TaskSource::Agent => pb::TaskSource::SourceAgent,
                TaskSource::Executor => pb::TaskSource::SourceExecutor,
            } as i32,
            uuid: s.uuid.unwrap_or_default(),
            timestamp: s.timestamp,
            healthy: s.healthy.unwrap_or(false),
            has_health: s.healthy.is_some(),
            exit_code: s.exit_code.unwrap_or(0),
            has_exit_code: s.exit_code.is_some(),
            ready: s.ready.unwrap_or(false),
            has_ready: s.ready.is_some(),
        }
    }
}

impl From<&TaskStatus> for pb::TaskStatus {
    fn from(s: &TaskStatus) -> Self {
        s.clone().into()
    }
}
