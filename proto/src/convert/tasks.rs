//! Task descriptions, health checks and statuses.

use super::{Invalid, agent_id, duration, opt_id, port, resources, task_id, task_state};
use crate::pb;
use agora_core::info::{
    CommandInfo, ContainerInfo, HealthCheck, HealthProtocol, PortMapping, TaskInfo, TaskSource,
    TaskStatus, limits,
};

// ------------------------------------------------------------- health checks

pub fn health_check(field: &str, h: &pb::HealthCheck) -> Result<HealthCheck, Invalid> {
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
        path: h.path.clone(),
        port: port(&format!("{field}.port"), h.port)?,
        command: h.command.clone(),
        grace_period: duration(
            &format!("{field}.grace_period_seconds"),
            h.grace_period_seconds,
            limits::CHECK_PERIOD,
        )?,
        interval: duration(
            &format!("{field}.interval_seconds"),
            h.interval_seconds,
            limits::CHECK_PERIOD,
        )?,
        timeout: duration(
            &format!("{field}.timeout_seconds"),
            h.timeout_seconds,
            limits::CHECK_TIMEOUT,
        )?,
        max_consecutive_failures: h.max_consecutive_failures,
        ok_statuses,
    })
}

impl From<&HealthCheck> for pb::HealthCheck {
    fn from(h: &HealthCheck) -> Self {
        pb::HealthCheck {
            protocol: match h.protocol {
                HealthProtocol::Http => pb::health_check::Protocol::Http,
                HealthProtocol::Tcp => pb::health_check::Protocol::Tcp,
                HealthProtocol::Command => pb::health_check::Protocol::Command,
            } as i32,
            path: h.path.clone(),
            port: u32::from(h.port),
            command: h.command.clone(),
            grace_period_seconds: h.grace_period.as_secs_f64(),
            interval_seconds: h.interval.as_secs_f64(),
            timeout_seconds: h.timeout.as_secs_f64(),
            max_consecutive_failures: h.max_consecutive_failures,
            ok_statuses: h.ok_statuses.iter().map(|c| u32::from(*c)).collect(),
        }
    }
}

// ---------------------------------------------------------------------- tasks

pub fn command(field: &str, c: &pb::CommandInfo) -> Result<CommandInfo, Invalid> {
    let mut env = Vec::with_capacity(c.env.len());
    for v in &c.env {
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
        env.push((v.name.clone(), v.value.clone()));
    }
    Ok(CommandInfo {
        value: c.value.clone(),
        args: c.args.clone(),
        env,
        shell: c.shell,
    })
}

impl From<&CommandInfo> for pb::CommandInfo {
    fn from(c: &CommandInfo) -> Self {
        pb::CommandInfo {
            value: c.value.clone(),
            args: c.args.clone(),
            env: c
                .env
                .iter()
                .map(|(name, value)| pb::EnvVar {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            shell: c.shell,
        }
    }
}

pub fn container(field: &str, c: &pb::ContainerInfo) -> Result<ContainerInfo, Invalid> {
    let mut port_mappings = Vec::with_capacity(c.port_mappings.len());
    for (i, m) in c.port_mappings.iter().enumerate() {
        port_mappings.push(PortMapping {
            host_port: port(
                &format!("{field}.port_mappings[{i}].host_port"),
                m.host_port,
            )?,
            container_port: port(
                &format!("{field}.port_mappings[{i}].container_port"),
                m.container_port,
            )?,
            protocol: m.protocol.clone(),
            name: m.name.clone(),
        });
    }
    Ok(ContainerInfo {
        image: c.image.clone(),
        network: c.network.clone(),
        port_mappings,
    })
}

impl From<&ContainerInfo> for pb::ContainerInfo {
    fn from(c: &ContainerInfo) -> Self {
        pb::ContainerInfo {
            image: c.image.clone(),
            network: c.network.clone(),
            port_mappings: c
                .port_mappings
                .iter()
                .map(|m| pb::PortMapping {
                    host_port: u32::from(m.host_port),
                    container_port: u32::from(m.container_port),
                    protocol: m.protocol.clone(),
                    name: m.name.clone(),
                })
                .collect(),
        }
    }
}

pub fn task_info(field: &str, t: &pb::TaskInfo) -> Result<TaskInfo, Invalid> {
    let checks = |name: &str, list: &[pb::HealthCheck]| {
        list.iter()
            .enumerate()
            .map(|(i, h)| health_check(&format!("{field}.{name}[{i}]"), h))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(TaskInfo {
        id: task_id(&format!("{field}.task_id"), &t.task_id)?,
        name: t.name.clone(),
        agent: opt_id(&format!("{field}.agent_id"), &t.agent_id, agent_id)?,
        resources: resources(&format!("{field}.resources"), t.resources.as_ref())?,
        command: t
            .command
            .as_ref()
            .map(|c| command(&format!("{field}.command"), c))
            .transpose()?,
        container: t
            .container
            .as_ref()
            .map(|c| container(&format!("{field}.container"), c))
            .transpose()?,
        labels: t
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        kill_grace: duration(
            &format!("{field}.kill_grace_seconds"),
            t.kill_grace_seconds,
            limits::KILL_GRACE,
        )?,
        health_checks: checks("health_checks", &t.health_checks)?,
        readiness_checks: checks("readiness_checks", &t.readiness_checks)?,
    })
}

impl From<&TaskInfo> for pb::TaskInfo {
    fn from(t: &TaskInfo) -> Self {
        pb::TaskInfo {
            task_id: t.id.0.clone(),
            name: t.name.clone(),
            agent_id: t.agent.as_ref().map(|a| a.0.clone()).unwrap_or_default(),
            resources: Some((&t.resources).into()),
            command: t.command.as_ref().map(Into::into),
            container: t.container.as_ref().map(Into::into),
            labels: t
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            kill_grace_seconds: t.kill_grace.as_secs_f64(),
            health_checks: t.health_checks.iter().map(Into::into).collect(),
            readiness_checks: t.readiness_checks.iter().map(Into::into).collect(),
        }
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

pub fn task_status(field: &str, s: &pb::TaskStatus) -> Result<TaskStatus, Invalid> {
    if !s.timestamp.is_finite() {
        return Err(Invalid::new(
            format!("{field}.timestamp"),
            "is not a finite number",
        ));
    }
    Ok(TaskStatus {
        task_id: task_id(&format!("{field}.task_id"), &s.task_id)?,
        state: task_state(&format!("{field}.state"), s.state)?,
        agent_id: opt_id(&format!("{field}.agent_id"), &s.agent_id, agent_id)?,
        message: s.message.clone(),
        reason: s.reason.clone(),
        source: source(s.source),
        uuid: (!s.uuid.is_empty()).then(|| s.uuid.clone()),
        timestamp: s.timestamp,
        healthy: s.has_health.then_some(s.healthy),
        exit_code: s.has_exit_code.then_some(s.exit_code),
        ready: s.has_ready.then_some(s.ready),
    })
}

impl From<&TaskStatus> for pb::TaskStatus {
    fn from(s: &TaskStatus) -> Self {
        pb::TaskStatus {
            task_id: s.task_id.0.clone(),
            state: pb::TaskState::from(s.state) as i32,
            agent_id: s.agent_id.as_ref().map(|a| a.0.clone()).unwrap_or_default(),
            message: s.message.clone(),
            reason: s.reason.clone(),
            source: match s.source {
                TaskSource::Unspecified => pb::TaskSource::SourceUnspecified,
                TaskSource::Master => pb::TaskSource::SourceMaster,
                TaskSource::Agent => pb::TaskSource::SourceAgent,
                TaskSource::Executor => pb::TaskSource::SourceExecutor,
            } as i32,
            uuid: s.uuid.clone().unwrap_or_default(),
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
