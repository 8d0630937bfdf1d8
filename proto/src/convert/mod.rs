//! Conversions at the edge. Everything from the network is checked here so
//! that the master, agent and SDK only ever see valid domain values.
//!
//! - this file: ids, resources, task states, durations, ports;
//! - `tasks`: task descriptions, health checks, statuses;
//! - `infos`: frameworks, agents, offers, filters;
//! - `calls`: scheduler calls and events, agent-link messages.

mod calls;
mod infos;
mod tasks;
#[cfg(test)]
mod tests;

pub use infos::*;
pub use tasks::*;

use crate::pb;
use agora_core::ids::validate_id;
use agora_core::{AgentId, FrameworkId, Ranges, Resources, TaskId, TaskState};
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

/// Validates an id the caller owns, without copying it.
pub fn own_task_id(field: &str, v: String) -> Result<TaskId, Invalid> {
    id_field(field, &v)?;
    Ok(TaskId(v))
}

pub fn own_agent_id(field: &str, v: String) -> Result<AgentId, Invalid> {
    id_field(field, &v)?;
    Ok(AgentId(v))
}

pub fn own_framework_id(field: &str, v: String) -> Result<FrameworkId, Invalid> {
    id_field(field, &v)?;
    Ok(FrameworkId(v))
}

/// Names an error's field inside `outer` (formatting only on error).
pub(crate) fn at(outer: &str) -> impl FnOnce(Invalid) -> Invalid + '_ {
    move |e| e.within(outer)
}

/// Most memory or disk one resource set may hold (1 EiB): sums over a whole
/// cluster then stay far from overflowing.
pub const MAX_MIB: u64 = 1 << 40;

/// Wire resources → domain resources. `field` names the message for errors.
pub fn resources(field: &str, r: Option<&pb::Resources>) -> Result<Resources, Invalid> {
    let Some(r) = r else {
        return Ok(Resources::default());
    };
    let cpus_milli = agora_core::resources::cpus_to_milli(r.cpus)
        .map_err(|e| Invalid::new(format!("{field}.cpus"), e.to_string()))?;
    let ports = Ranges::from_ranges(r.ports.iter().map(|p| (p.begin, p.end)))
        .map_err(|e| Invalid::new(format!("{field}.ports"), e.to_string()))?;
    for (name, v) in [("mem_mib", r.mem_mib), ("disk_mib", r.disk_mib)] {
        if v > MAX_MIB {
            return Err(Invalid::new(
                format!("{field}.{name}"),
                format!("{v} MiB is more than the {MAX_MIB} MiB (1 EiB) allowed"),
            ));
        }
    }
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

pub(crate) fn port(field: &str, p: u32) -> Result<u16, Invalid> {
    u16::try_from(p).map_err(|_| Invalid::new(field, format!("port {p} is above 65535")))
}
