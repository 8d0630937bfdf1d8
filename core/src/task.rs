//! The task lifecycle: states and the one function that says which
//! transitions are allowed.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Task states, with the meaning of Mesos v1 `TaskState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    /// Accepted by the master, on its way to the agent.
    Staging,
    /// The agent is starting it (e.g. pulling, creating the container).
    Starting,
    Running,
    /// A kill was requested and is in progress.
    Killing,
    /// Exited with status 0.
    Finished,
    /// Exited non-zero, or could not be started.
    Failed,
    /// Killed on request.
    Killed,
    /// The launch was invalid; it never ran.
    Error,
    /// Non-partition-aware frameworks: the agent was lost; the task is gone.
    Lost,
    /// The master dropped the task before it reached the agent.
    Dropped,
    /// Partition-aware frameworks: its agent is unreachable; it may come back.
    Unreachable,
    /// Its agent is known to be gone for good.
    Gone,
    /// An operator marked its agent gone.
    GoneByOperator,
    /// The master does not know the task (reconciliation answer).
    Unknown,
}

/// Every state, for exhaustive tests and metrics.
pub const ALL_TASK_STATES: [TaskState; 14] = [
    TaskState::Staging,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Killing,
    TaskState::Finished,
    TaskState::Failed,
    TaskState::Killed,
    TaskState::Error,
    TaskState::Lost,
    TaskState::Dropped,
    TaskState::Unreachable,
    TaskState::Gone,
    TaskState::GoneByOperator,
    TaskState::Unknown,
];

impl TaskState {
    /// A terminal task never changes state again and holds no resources.
    pub fn is_terminal(self) -> bool {
        use TaskState::*;
        matches!(
            self,
            Finished | Failed | Killed | Error | Lost | Dropped | Gone | GoneByOperator
        )
    }

    /// Whether the task is considered to hold resources on its agent.
    pub fn holds_resources(self) -> bool {
        !self.is_terminal() && self != TaskState::Unknown
    }

    /// Whether a task may move from `self` to `to`. The one place transitions are decided.
    ///
    /// - terminal states are final;
    /// - a non-terminal state may repeat (e.g. RUNNING → RUNNING carrying a health change);
    /// - progress is forward only: STAGING → STARTING → RUNNING → KILLING;
    /// - any live state may become terminal or UNREACHABLE;
    /// - UNREACHABLE may return to any live state when its agent comes back;
    /// - UNKNOWN is only ever a reconciliation answer, never a stored state.
    pub fn can_transition(self, to: TaskState) -> bool {
        use TaskState::*;
        if self.is_terminal() || self == Unknown || to == Unknown {
            return false;
        }
        if self == to {
            return true;
        }
        if to.is_terminal() || to == Unreachable {
            return true;
        }
        match self {
            Staging => matches!(to, Starting | Running | Killing),
            Starting => matches!(to, Running | Killing),
            Running => matches!(to, Killing),
            Killing => false,
            Unreachable => matches!(to, Staging | Starting | Running | Killing),
            _ => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        use TaskState::*;
        match self {
            Staging => "TASK_STAGING",
            Starting => "TASK_STARTING",
            Running => "TASK_RUNNING",
            Killing => "TASK_KILLING",
            Finished => "TASK_FINISHED",
            Failed => "TASK_FAILED",
            Killed => "TASK_KILLED",
            Error => "TASK_ERROR",
            Lost => "TASK_LOST",
            Dropped => "TASK_DROPPED",
            Unreachable => "TASK_UNREACHABLE",
            Gone => "TASK_GONE",
            GoneByOperator => "TASK_GONE_BY_OPERATOR",
            Unknown => "TASK_UNKNOWN",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task cannot go from {from} to {to}")]
pub struct InvalidTransition {
    pub from: TaskState,
    pub to: TaskState,
}

/// Applies a transition if allowed.
pub fn transition(from: TaskState, to: TaskState) -> Result<TaskState, InvalidTransition> {
    if from.can_transition(to) {
        Ok(to)
    } else {
        Err(InvalidTransition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::TaskState::*;
    use super::*;

    /// The whole table, written out literally (not derived from the rules):
    /// row = from, column = to, in `ALL_TASK_STATES` order
    /// (Staging Starting Running Killing Finished Failed Killed Error Lost
    /// Dropped Unreachable Gone GoneByOperator Unknown); `1` = allowed.
    const TABLE: [(TaskState, &str); 14] = [
        (Staging, "1111111111111."),
        (Starting, ".111111111111."),
        (Running, "..11111111111."),
        (Killing, "...1111111111."),
        (Finished, ".............."),
        (Failed, ".............."),
        (Killed, ".............."),
        (Error, ".............."),
        (Lost, ".............."),
        (Dropped, ".............."),
        (Unreachable, "1111111111111."),
        (Gone, ".............."),
        (GoneByOperator, ".............."),
        (Unknown, ".............."),
    ];

    #[test]
    fn transition_table_is_exhaustive() {
        for (row, (from, allowed)) in TABLE.iter().enumerate() {
            assert_eq!(*from, ALL_TASK_STATES[row]);
            for (col, to) in ALL_TASK_STATES.iter().enumerate() {
                let expected = allowed.as_bytes()[col] == b'1';
                assert_eq!(
                    from.can_transition(*to),
                    expected,
                    "{from} -> {to} should be {expected}"
                );
                assert_eq!(transition(*from, *to).is_ok(), expected);
            }
        }
    }

    #[test]
    fn terminal_states_are_final_and_free_resources() {
        for s in ALL_TASK_STATES {
            if s.is_terminal() {
                assert!(!s.holds_resources());
                assert!(ALL_TASK_STATES.iter().all(|t| !s.can_transition(*t)));
            }
        }
        assert!(Running.holds_resources());
        assert!(Unreachable.holds_resources());
        assert!(!Running.can_transition(Starting));
        assert!(Unreachable.can_transition(Running));
    }
}
