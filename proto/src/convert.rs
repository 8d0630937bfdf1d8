//! Conversions at the edge. Everything from the network is checked here so
//! that the master, agent and SDK only ever see valid domain values.

use crate::pb;
use agora_core::ids::validate_id;
use agora_core::info::{
    AgentInfo, CommandInfo, ContainerInfo, DEFAULT_ROLE, Filters, FrameworkInfo, HealthCheck,
    HealthProtocol, OfferInfo, PortMapping, TaskInfo, TaskSource, TaskStatus, limits,
};
use agora_core::protocol::{
    Accept, Ack, Acknowledge, AgentTask, Decline, Event, Kill, MasterMessage, Reconcile, Register,
    StatusUpdate, TaskUsage,
};
use agora_core::{AgentId, FrameworkId, OfferId, Ranges, Resources, TaskId, TaskState};
use std::time::Duration;

/// A wire message that does not make a valid domain value.
pub use agora_core::ids::Invalid;

/// Validates an id field (see [`validate_id`]).
pub fn id_field(field: &str, value: &str) -> Result<(), Invalid> {
    validate_id(field, value).map_err(|m| Invalid::new(field, m))
}

pub fn agent_id(field: &str, v: &str) -> Result<AgentId, Invalid> {
    id_field(field, v)?;
    Ok(AgentId::new(v))
}

pub fn framework_id(field: &str, v: &str) -> Result<FrameworkId, Invalid> {
    id_field(field, v)?;
    Ok(FrameworkId::new(v))
}

pub fn task_id(field: &str, v: &str) -> Result<TaskId, Invalid> {
    id_field(field, v)?;
    Ok(TaskId::new(v))
}

/// Wire resources → domain resources. `field` names the message for errors.
pub fn resources(field: &str, r: Option<&pb::Resources>) -> Result<Resources, Invalid> {
    let Some(r) = r else {
        return Ok(Resources::default());
    };
    let cpus_milli = agora_core::resources::cpus_to_milli(r.cpus)
        .map_err(|e| Invalid::new(format!("{field}.cpus"), e.to_string()))?;
    let ports = Ranges::from_ranges(r.ports.iter().map(|p| (p.begin, p.end)))
        .map_err(|e| Invalid::new(format!("{field}.ports"), e.to_string()))?;
    Ok(Resources {
        cpus_milli,
        mem_mib: r.mem_mib,
        disk_mib: r.disk_mib,
        ports,
    })
}

impl From<&Resources> for pb::Resources {
    fn from(r: &Resources) -> Self {
        pb::Resources {
            cpus: r.cpus(),
            mem_mib: r.mem_mib,
            disk_mib: r.disk_mib,
            ports: r
                .ports
                .ranges()
                .iter()
                .map(|(b, e)| pb::Range { begin: *b, end: *e })
                .collect(),
        }
    }
}

impl From<TaskState> for pb::TaskState {
    fn from(s: TaskState) -> Self {
        use TaskState::*;
        match s {
            Staging => pb::TaskState::TaskStaging,
            Starting => pb::TaskState::TaskStarting,
            Running => pb::TaskState::TaskRunning,
            Killing => pb::TaskState::TaskKilling,
            Finished => pb::TaskState::TaskFinished,
            Failed => pb::TaskState::TaskFailed,
            Killed => pb::TaskState::TaskKilled,
            Error => pb::TaskState::TaskError,
            Lost => pb::TaskState::TaskLost,
            Dropped => pb::TaskState::TaskDropped,
            Unreachable => pb::TaskState::TaskUnreachable,
            Gone => pb::TaskState::TaskGone,
            GoneByOperator => pb::TaskState::TaskGoneByOperator,
            Unknown => pb::TaskState::TaskUnknown,
        }
    }
}

/// Wire task state (an `i32` on the wire) → domain state.
pub fn task_state(field: &str, v: i32) -> Result<TaskState, Invalid> {
    use TaskState::*;
    let s = pb::TaskState::try_from(v)
        .map_err(|_| Invalid::new(field, format!("unknown task state {v}")))?;
    Ok(match s {
        pb::TaskState::Unspecified => {
            return Err(Invalid::new(field, "task state is missing"));
        }
        pb::TaskState::TaskStaging => Staging,
        pb::TaskState::TaskStarting => Starting,
        pb::TaskState::TaskRunning => Running,
        pb::TaskState::TaskKilling => Killing,
        pb::TaskState::TaskFinished => Finished,
        pb::TaskState::TaskFailed => Failed,
        pb::TaskState::TaskKilled => Killed,
        pb::TaskState::TaskError => Error,
        pb::TaskState::TaskLost => Lost,
        pb::TaskState::TaskDropped => Dropped,
        pb::TaskState::TaskUnreachable => Unreachable,
        pb::TaskState::TaskGone => Gone,
        pb::TaskState::TaskGoneByOperator => GoneByOperator,
        pb::TaskState::TaskUnknown => Unknown,
    })
}

impl pb::TaskStatus {
    /// The domain state of this status, if valid.
    pub fn task_state(&self) -> Result<TaskState, Invalid> {
        task_state("status.state", self.state)
    }
}

/// Wire attributes → (name, value) pairs, names validated.
pub fn attributes(list: &[pb::Attribute]) -> Result<Vec<(String, String)>, Invalid> {
    list.iter()
        .map(|a| {
            if a.name.is_empty() || a.name.len() > 128 {
                return Err(Invalid::new(
                    "attributes.name",
                    "attribute names must be 1 to 128 bytes",
                ));
            }
            if a.value.len() > 1024 {
                return Err(Invalid::new(
                    format!("attributes.{}", a.name),
                    "attribute values must be at most 1024 bytes",
                ));
            }
            Ok((a.name.clone(), a.value.clone()))
        })
        .collect()
}

fn opt_id<T>(
    field: &str,
    v: &str,
    make: fn(&str, &str) -> Result<T, Invalid>,
) -> Result<Option<T>, Invalid> {
    if v.is_empty() {
        Ok(None)
    } else {
        make(field, v).map(Some)
    }
}

/// Seconds from the network → a duration: finite, not negative, at most `max`.
pub fn duration(field: &str, secs: f64, max: Duration) -> Result<Duration, Invalid> {
    if !secs.is_finite() {
        return Err(Invalid::new(
            field,
            format!("{secs} is not a finite number of seconds"),
        ));
    }
    if secs < 0.0 {
        return Err(Invalid::new(field, format!("{secs} is negative")));
    }
    if secs > max.as_secs_f64() {
        return Err(Invalid::new(
            field,
            format!("{secs} s is longer than the {} s allowed", max.as_secs()),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn port(field: &str, p: u32) -> Result<u16, Invalid> {
    u16::try_from(p).map_err(|_| Invalid::new(field, format!("port {p} is above 65535")))
}

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

// ---------------------------------------------------------- frameworks, agents

pub fn framework_info(field: &str, f: &pb::FrameworkInfo) -> Result<FrameworkInfo, Invalid> {
    let role = if f.role.is_empty() {
        DEFAULT_ROLE.to_string()
    } else {
        if f.role != DEFAULT_ROLE {
            id_field(&format!("{field}.role"), &f.role)?;
        }
        f.role.clone()
    };
    if f.name.len() > 1024 {
        return Err(Invalid::new(format!("{field}.name"), "at most 1024 bytes"));
    }
    Ok(FrameworkInfo {
        id: opt_id(
            &format!("{field}.framework_id"),
            &f.framework_id,
            framework_id,
        )?,
        name: f.name.clone(),
        role,
        user: f.user.clone(),
        failover_timeout: duration(
            &format!("{field}.failover_timeout_seconds"),
            f.failover_timeout_seconds,
            limits::FAILOVER_TIMEOUT,
        )?,
        partition_aware: f.partition_aware,
        hostname: f.hostname.clone(),
        capabilities: f.capabilities.clone(),
    })
}

impl From<&FrameworkInfo> for pb::FrameworkInfo {
    fn from(f: &FrameworkInfo) -> Self {
        pb::FrameworkInfo {
            framework_id: f.id.as_ref().map(|i| i.0.clone()).unwrap_or_default(),
            name: f.name.clone(),
            role: f.role.clone(),
            user: f.user.clone(),
            failover_timeout_seconds: f.failover_timeout.as_secs_f64(),
            partition_aware: f.partition_aware,
            hostname: f.hostname.clone(),
            capabilities: f.capabilities.clone(),
        }
    }
}

pub fn agent_info(field: &str, a: &pb::AgentInfo) -> Result<AgentInfo, Invalid> {
    if a.hostname.is_empty() || a.hostname.len() > 255 {
        return Err(Invalid::new(
            format!("{field}.hostname"),
            "must be 1 to 255 bytes",
        ));
    }
    Ok(AgentInfo {
        id: opt_id(&format!("{field}.agent_id"), &a.agent_id, agent_id)?,
        hostname: a.hostname.clone(),
        resources: resources(&format!("{field}.resources"), a.resources.as_ref())?,
        attributes: attributes(&a.attributes)?,
        endpoint: a.endpoint.clone(),
    })
}

impl From<&AgentInfo> for pb::AgentInfo {
    fn from(a: &AgentInfo) -> Self {
        pb::AgentInfo {
            agent_id: a.id.as_ref().map(|i| i.0.clone()).unwrap_or_default(),
            hostname: a.hostname.clone(),
            resources: Some((&a.resources).into()),
            attributes: to_attributes(&a.attributes),
            endpoint: a.endpoint.clone(),
        }
    }
}

fn to_attributes(list: &[(String, String)]) -> Vec<pb::Attribute> {
    list.iter()
        .map(|(n, v)| pb::Attribute {
            name: n.clone(),
            value: v.clone(),
        })
        .collect()
}

impl From<&OfferInfo> for pb::Offer {
    fn from(o: &OfferInfo) -> Self {
        pb::Offer {
            offer_id: o.id.0.clone(),
            framework_id: o.framework.0.clone(),
            agent_id: o.agent.0.clone(),
            hostname: o.hostname.clone(),
            resources: Some((&o.resources).into()),
            attributes: to_attributes(&o.attributes),
        }
    }
}

pub fn offer_info(field: &str, o: &pb::Offer) -> Result<OfferInfo, Invalid> {
    Ok(OfferInfo {
        id: offer_id(&format!("{field}.offer_id"), &o.offer_id)?,
        framework: framework_id(&format!("{field}.framework_id"), &o.framework_id)?,
        agent: agent_id(&format!("{field}.agent_id"), &o.agent_id)?,
        hostname: o.hostname.clone(),
        resources: resources(&format!("{field}.resources"), o.resources.as_ref())?,
        attributes: attributes(&o.attributes)?,
    })
}

pub fn offer_id(field: &str, v: &str) -> Result<OfferId, Invalid> {
    id_field(field, v)?;
    Ok(OfferId::new(v))
}

pub fn filters(f: Option<&pb::Filters>) -> Result<Filters, Invalid> {
    match f {
        Some(f) if f.has_refuse_seconds => {
            let s = f.refuse_seconds;
            if s.is_nan() {
                return Err(Invalid::new("filters.refuse_seconds", "is not a number"));
            }
            // Negative means "the default" (as in Mesos); absurdly long is capped.
            Ok(Filters {
                refuse: (s >= 0.0)
                    .then(|| Duration::from_secs_f64(s.min(limits::REFUSE.as_secs_f64()))),
            })
        }
        _ => Ok(Filters::default()),
    }
}

fn offer_ids(field: &str, ids: &[String]) -> Result<Vec<OfferId>, Invalid> {
    ids.iter().map(|o| offer_id(field, o)).collect()
}

// ------------------------------------------------------------ scheduler calls

impl TryFrom<&pb::AcceptRequest> for Accept {
    type Error = Invalid;
    fn try_from(r: &pb::AcceptRequest) -> Result<Self, Invalid> {
        let mut tasks = Vec::new();
        for (i, op) in r.operations.iter().enumerate() {
            match &op.operation {
                Some(pb::operation::Operation::Launch(l)) => {
                    for (j, t) in l.tasks.iter().enumerate() {
                        tasks.push(task_info(&format!("operations[{i}].launch.tasks[{j}]"), t)?);
                    }
                }
                None => {
                    return Err(Invalid::new(
                        format!("operations[{i}]"),
                        "names no operation",
                    ));
                }
            }
        }
        Ok(Accept {
            framework_id: framework_id("framework_id", &r.framework_id)?,
            offer_ids: offer_ids("offer_ids", &r.offer_ids)?,
            tasks,
            filters: filters(r.filters.as_ref())?,
        })
    }
}

impl TryFrom<&pb::DeclineRequest> for Decline {
    type Error = Invalid;
    fn try_from(r: &pb::DeclineRequest) -> Result<Self, Invalid> {
        Ok(Decline {
            framework_id: framework_id("framework_id", &r.framework_id)?,
            offer_ids: offer_ids("offer_ids", &r.offer_ids)?,
            filters: filters(r.filters.as_ref())?,
        })
    }
}

impl TryFrom<&pb::KillRequest> for Kill {
    type Error = Invalid;
    fn try_from(r: &pb::KillRequest) -> Result<Self, Invalid> {
        Ok(Kill {
            framework_id: framework_id("framework_id", &r.framework_id)?,
            task_id: task_id("task_id", &r.task_id)?,
            agent_id: opt_id("agent_id", &r.agent_id, agent_id)?,
        })
    }
}

impl TryFrom<&pb::AcknowledgeRequest> for Acknowledge {
    type Error = Invalid;
    fn try_from(r: &pb::AcknowledgeRequest) -> Result<Self, Invalid> {
        let mut acks = Vec::with_capacity(r.acknowledgements.len());
        for a in &r.acknowledgements {
            if a.uuid.is_empty() {
                return Err(Invalid::new("acknowledgements.uuid", "is empty"));
            }
            acks.push(Ack {
                agent_id: agent_id("acknowledgements.agent_id", &a.agent_id)?,
                task_id: task_id("acknowledgements.task_id", &a.task_id)?,
                uuid: a.uuid.clone(),
            });
        }
        Ok(Acknowledge {
            framework_id: framework_id("framework_id", &r.framework_id)?,
            acks,
        })
    }
}

impl TryFrom<&pb::ReconcileRequest> for Reconcile {
    type Error = Invalid;
    fn try_from(r: &pb::ReconcileRequest) -> Result<Self, Invalid> {
        let mut tasks = Vec::with_capacity(r.tasks.len());
        for t in &r.tasks {
            tasks.push((
                task_id("tasks.task_id", &t.task_id)?,
                opt_id("tasks.agent_id", &t.agent_id, agent_id)?,
            ));
        }
        Ok(Reconcile {
            framework_id: framework_id("framework_id", &r.framework_id)?,
            tasks,
        })
    }
}

impl From<&Event> for pb::Event {
    fn from(e: &Event) -> Self {
        use pb::event::Event as E;
        let ev = match e {
            Event::Subscribed {
                framework_id,
                heartbeat_interval,
                master_id,
            } => E::Subscribed(pb::Subscribed {
                framework_id: framework_id.0.clone(),
                heartbeat_interval_seconds: heartbeat_interval.as_secs_f64(),
                master_id: master_id.clone(),
            }),
            Event::Offers(offers) => E::Offers(pb::Offers {
                offers: offers.iter().map(Into::into).collect(),
            }),
            Event::Rescind(id) => E::Rescind(pb::Rescind {
                offer_id: id.0.clone(),
            }),
            Event::Update(s) => E::Update(pb::Update {
                status: Some(s.into()),
            }),
            Event::Error(message) => E::Error(pb::Error {
                message: message.clone(),
            }),
            Event::Failure { agent_id, message } => E::Failure(pb::Failure {
                agent_id: agent_id.0.clone(),
                message: message.clone(),
            }),
            Event::Heartbeat => E::Heartbeat(pb::Heartbeat {}),
        };
        pb::Event { event: Some(ev) }
    }
}

// ----------------------------------------------------------------- agent link

impl TryFrom<&pb::Register> for Register {
    type Error = Invalid;
    fn try_from(r: &pb::Register) -> Result<Self, Invalid> {
        let agent = r
            .agent
            .as_ref()
            .ok_or_else(|| Invalid::new("register.agent", "is missing"))?;
        let mut tasks = Vec::with_capacity(r.tasks.len());
        for (i, at) in r.tasks.iter().enumerate() {
            let t = at
                .task
                .as_ref()
                .ok_or_else(|| Invalid::new(format!("tasks[{i}].task"), "is missing"))?;
            tasks.push(AgentTask {
                framework_id: framework_id(&format!("tasks[{i}].framework_id"), &at.framework_id)?,
                task: task_info(&format!("tasks[{i}].task"), t)?,
                state: task_state(&format!("tasks[{i}].state"), at.state)?,
            });
        }
        let frameworks = r
            .frameworks
            .iter()
            .enumerate()
            .map(|(i, f)| framework_info(&format!("frameworks[{i}]"), f))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Register {
            agent: agent_info("agent", agent)?,
            tasks,
            frameworks,
        })
    }
}

impl TryFrom<&pb::StatusUpdate> for StatusUpdate {
    type Error = Invalid;
    fn try_from(u: &pb::StatusUpdate) -> Result<Self, Invalid> {
        let s = u
            .status
            .as_ref()
            .ok_or_else(|| Invalid::new("update.status", "is missing"))?;
        Ok(StatusUpdate {
            framework_id: framework_id("update.framework_id", &u.framework_id)?,
            status: task_status("update.status", s)?,
        })
    }
}

impl TryFrom<&pb::TaskUsage> for TaskUsage {
    type Error = Invalid;
    fn try_from(u: &pb::TaskUsage) -> Result<Self, Invalid> {
        if !u.cpu_seconds.is_finite() || u.cpu_seconds < 0.0 {
            return Err(Invalid::new(
                "usage.cpu_seconds",
                "is not a finite, non-negative number",
            ));
        }
        if !u.timestamp.is_finite() {
            return Err(Invalid::new("usage.timestamp", "is not a finite number"));
        }
        Ok(TaskUsage {
            framework_id: framework_id("usage.framework_id", &u.framework_id)?,
            task_id: task_id("usage.task_id", &u.task_id)?,
            cpu_seconds: u.cpu_seconds,
            mem_rss_bytes: u.mem_rss_bytes,
            timestamp: u.timestamp,
        })
    }
}

impl From<&MasterMessage> for pb::MasterMessage {
    fn from(m: &MasterMessage) -> Self {
        use pb::master_message::Message as M;
        let msg = match m {
            MasterMessage::Registered {
                agent_id,
                heartbeat_interval,
                master_id,
            } => M::Registered(pb::Registered {
                agent_id: agent_id.0.clone(),
                heartbeat_interval_seconds: heartbeat_interval.as_secs_f64(),
                master_id: master_id.clone(),
            }),
            MasterMessage::RunTasks { framework, tasks } => M::RunTasks(pb::RunTasks {
                framework: Some(framework.into()),
                tasks: tasks.iter().map(Into::into).collect(),
            }),
            MasterMessage::KillTask {
                framework_id,
                task_id,
            } => M::KillTask(pb::KillTask {
                framework_id: framework_id.0.clone(),
                task_id: task_id.0.clone(),
            }),
            MasterMessage::Acks(acks) => M::Acks(pb::UpdateAcks {
                acks: acks
                    .iter()
                    .map(|a| pb::UpdateAck {
                        framework_id: a.framework_id.0.clone(),
                        task_id: a.task_id.0.clone(),
                        uuid: a.uuid.clone(),
                    })
                    .collect(),
            }),
            MasterMessage::ShutdownFramework(f) => M::ShutdownFramework(pb::ShutdownFramework {
                framework_id: f.0.clone(),
            }),
            MasterMessage::Pong => M::Pong(pb::Pong {}),
            MasterMessage::Refused(message) => M::Refused(pb::Refused {
                message: message.clone(),
            }),
        };
        pb::MasterMessage { message: Some(msg) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_core::task::ALL_TASK_STATES;

    #[test]
    fn task_states_roundtrip() {
        for s in ALL_TASK_STATES {
            let wire: pb::TaskState = s.into();
            assert_eq!(task_state("s", wire as i32).unwrap(), s);
        }
        assert!(task_state("s", 0).is_err());
        assert!(task_state("s", 999).unwrap_err().message.contains("999"));
    }

    #[test]
    fn resources_roundtrip_and_reject_bad_values() {
        let r = Resources::parse("cpus:1.5;mem:100;disk:3;ports:[10-20,30-30]").unwrap();
        let wire = pb::Resources::from(&r);
        assert_eq!(resources("r", Some(&wire)).unwrap(), r);
        let bad = pb::Resources {
            cpus: f64::NAN,
            ..Default::default()
        };
        assert_eq!(
            resources("offer", Some(&bad)).unwrap_err().field,
            "offer.cpus"
        );
        let bad = pb::Resources {
            ports: vec![pb::Range { begin: 9, end: 1 }],
            ..Default::default()
        };
        assert_eq!(resources("t", Some(&bad)).unwrap_err().field, "t.ports");
    }

    #[test]
    fn durations_from_the_network_are_checked() {
        let max = Duration::from_secs(10);
        assert_eq!(
            duration("d", 1.5, max).unwrap(),
            Duration::from_millis(1500)
        );
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 11.0] {
            let e = duration("x.interval_seconds", bad, max).unwrap_err();
            assert_eq!(e.field, "x.interval_seconds", "{bad}");
        }
    }

    #[test]
    fn health_checks_with_bad_numbers_are_refused_naming_the_field() {
        let good = pb::HealthCheck {
            protocol: pb::health_check::Protocol::Http as i32,
            port: 8080,
            interval_seconds: 10.0,
            timeout_seconds: 2.0,
            grace_period_seconds: 30.0,
            max_consecutive_failures: 3,
            ok_statuses: vec![200, 204],
            ..Default::default()
        };
        let h = health_check("c", &good).unwrap();
        assert_eq!(pb::HealthCheck::from(&h), good);
        let cases: Vec<(&str, pb::HealthCheck)> = vec![
            (
                "c.interval_seconds",
                pb::HealthCheck {
                    interval_seconds: f64::NAN,
                    ..good.clone()
                },
            ),
            (
                "c.timeout_seconds",
                pb::HealthCheck {
                    timeout_seconds: f64::INFINITY,
                    ..good.clone()
                },
            ),
            (
                "c.grace_period_seconds",
                pb::HealthCheck {
                    grace_period_seconds: -3.0,
                    ..good.clone()
                },
            ),
            (
                "c.port",
                pb::HealthCheck {
                    port: 70_000,
                    ..good.clone()
                },
            ),
            (
                "c.ok_statuses",
                pb::HealthCheck {
                    ok_statuses: vec![42],
                    ..good.clone()
                },
            ),
            (
                "c.protocol",
                pb::HealthCheck {
                    protocol: 9,
                    ..good.clone()
                },
            ),
        ];
        for (field, h) in cases {
            assert_eq!(health_check("c", &h).unwrap_err().field, field);
        }
    }

    #[test]
    fn an_accept_with_a_bad_task_names_it() {
        let t = |id: &str, grace: f64| pb::TaskInfo {
            task_id: id.into(),
            kill_grace_seconds: grace,
            ..Default::default()
        };
        let req = |tasks| pb::AcceptRequest {
            framework_id: "f".into(),
            offer_ids: vec!["o1".into()],
            operations: vec![pb::Operation {
                operation: Some(pb::operation::Operation::Launch(pb::Launch { tasks })),
            }],
            filters: None,
        };
        let ok = Accept::try_from(&req(vec![t("a", 1.0)])).unwrap();
        assert_eq!(ok.tasks[0].kill_grace, Duration::from_secs(1));
        let e = Accept::try_from(&req(vec![t("a", 1.0), t("b", f64::NAN)])).unwrap_err();
        assert_eq!(e.field, "operations[0].launch.tasks[1].kill_grace_seconds");
        let e = Accept::try_from(&req(vec![t("..", 1.0)])).unwrap_err();
        assert_eq!(e.field, "operations[0].launch.tasks[0].task_id");
    }

    #[test]
    fn task_info_and_status_roundtrip() {
        let mut labels = std::collections::HashMap::new();
        labels.insert("k".to_string(), "v".to_string());
        let wire = pb::TaskInfo {
            task_id: "t1".into(),
            name: "web".into(),
            agent_id: "a1".into(),
            resources: Some((&Resources::new(0.5, 64, 0).unwrap()).into()),
            command: Some(pb::CommandInfo {
                value: "run".into(),
                args: vec!["-x".into()],
                env: vec![pb::EnvVar {
                    name: "A".into(),
                    value: "1".into(),
                }],
                shell: true,
            }),
            container: Some(pb::ContainerInfo {
                image: "img".into(),
                network: "bridge".into(),
                port_mappings: vec![pb::PortMapping {
                    host_port: 31000,
                    container_port: 80,
                    protocol: "tcp".into(),
                    name: "http".into(),
                }],
            }),
            labels,
            kill_grace_seconds: 3.0,
            health_checks: vec![],
            readiness_checks: vec![],
        };
        let t = task_info("t", &wire).unwrap();
        assert_eq!(pb::TaskInfo::from(&t), wire);
        let st = pb::TaskStatus {
            task_id: "t1".into(),
            state: pb::TaskState::TaskRunning as i32,
            agent_id: "a1".into(),
            uuid: vec![1],
            timestamp: 12.5,
            healthy: true,
            has_health: true,
            exit_code: 0,
            has_exit_code: true,
            source: pb::TaskSource::SourceAgent as i32,
            ..Default::default()
        };
        let d = task_status("s", &st).unwrap();
        assert_eq!(d.healthy, Some(true));
        assert_eq!(d.exit_code, Some(0));
        assert_eq!(d.ready, None);
        assert_eq!(pb::TaskStatus::from(&d), st);
    }

    #[test]
    fn env_with_bad_names_is_refused_and_values_never_echoed() {
        let c = pb::CommandInfo {
            env: vec![pb::EnvVar {
                name: "A".into(),
                value: "sec\0ret".into(),
            }],
            ..Default::default()
        };
        let e = command("cmd", &c).unwrap_err();
        assert_eq!(e.field, "cmd.env.A");
        assert!(!e.to_string().contains("sec"));
        let c = pb::CommandInfo {
            env: vec![pb::EnvVar {
                name: "A=B".into(),
                value: "x".into(),
            }],
            ..Default::default()
        };
        assert_eq!(command("cmd", &c).unwrap_err().field, "cmd.env");
    }
}
