//! Agent, framework and offer lifecycles: each an enum, an event enum, and one
//! `on` function holding every transition. The master applies the result and
//! performs side effects; nothing here does IO.

use serde::{Deserialize, Serialize};

/// A refused lifecycle step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} in state {state} cannot take event {event}")]
pub struct InvalidStep {
    pub what: &'static str,
    pub state: String,
    pub event: String,
}

fn invalid<S: std::fmt::Debug, E: std::fmt::Debug>(what: &'static str, s: S, e: E) -> InvalidStep {
    InvalidStep {
        what,
        state: format!("{s:?}"),
        event: format!("{e:?}"),
    }
}

// ------------------------------------------------------------------ agent

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Known from the registry after a master restart; not yet re-registered.
    Recovered,
    /// Connected and heartbeating; its resources are offered.
    Active,
    /// Its stream broke; waiting for it to come back within the agent timeout.
    Disconnected,
    /// Silent past the agent timeout; its tasks were reported UNREACHABLE/LOST.
    Unreachable,
    /// Removed for good; it may not register again with this id.
    Gone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentEvent {
    /// (Re-)registration accepted.
    Registered,
    /// Its stream closed.
    StreamClosed,
    /// No heartbeat within the agent timeout.
    TimedOut,
    /// Operator (or policy) removed it.
    MarkedGone,
}

impl AgentState {
    pub fn on(self, ev: AgentEvent) -> Result<AgentState, InvalidStep> {
        use AgentEvent::*;
        use AgentState::*;
        let next = match (self, ev) {
            (Gone, _) => return Err(invalid("agent", self, ev)),
            (_, MarkedGone) => Gone,
            (_, Registered) => Active,
            (Active, StreamClosed) => Disconnected,
            (Active | Disconnected | Recovered, TimedOut) => Unreachable,
            (Disconnected | Recovered | Unreachable, StreamClosed) => self,
            (Unreachable, TimedOut) => return Err(invalid("agent", self, ev)),
        };
        Ok(next)
    }

    /// Whether its free resources may be offered.
    pub fn offers_resources(self) -> bool {
        self == AgentState::Active
    }
}

// -------------------------------------------------------------- framework

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameworkState {
    /// Subscribed with an open event stream.
    Connected,
    /// Stream gone; its tasks keep running until the failover timeout.
    Disconnected,
    /// Known only from tasks reported by re-registering agents (after a
    /// master restart); waiting for the scheduler to resubscribe.
    Recovered,
    /// Torn down (TEARDOWN or failover timeout): its tasks are killed.
    Completed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameworkEvent {
    Subscribed,
    StreamClosed,
    FailoverTimeout,
    Teardown,
}

impl FrameworkState {
    pub fn on(self, ev: FrameworkEvent) -> Result<FrameworkState, InvalidStep> {
        use FrameworkEvent::*;
        use FrameworkState::*;
        let next = match (self, ev) {
            (Completed, _) => return Err(invalid("framework", self, ev)),
            (_, Subscribed) => Connected,
            (_, Teardown) => Completed,
            (Connected, StreamClosed) => Disconnected,
            (Disconnected | Recovered, StreamClosed) => self,
            (Disconnected | Recovered, FailoverTimeout) => Completed,
            (Connected, FailoverTimeout) => return Err(invalid("framework", self, ev)),
        };
        Ok(next)
    }

    /// Whether it should receive offers.
    pub fn receives_offers(self) -> bool {
        self == FrameworkState::Connected
    }
}

// ------------------------------------------------------------------ offer

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferState {
    Outstanding,
    Accepted,
    Declined,
    /// Withdrawn by the master (agent lost, framework gone, offer timeout).
    Rescinded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfferEvent {
    Accept,
    Decline,
    Rescind,
}

impl OfferState {
    /// An offer serves exactly one ACCEPT or DECLINE, or is rescinded; after
    /// that it is dead and any further use is refused.
    pub fn on(self, ev: OfferEvent) -> Result<OfferState, InvalidStep> {
        match (self, ev) {
            (OfferState::Outstanding, OfferEvent::Accept) => Ok(OfferState::Accepted),
            (OfferState::Outstanding, OfferEvent::Decline) => Ok(OfferState::Declined),
            (OfferState::Outstanding, OfferEvent::Rescind) => Ok(OfferState::Rescinded),
            _ => Err(invalid("offer", self, ev)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The tables are written out literally, not derived from the rules.

    #[test]
    fn agent_table() {
        use AgentEvent::*;
        use AgentState::*;
        let events = [Registered, StreamClosed, TimedOut, MarkedGone];
        let table: [(AgentState, [Option<AgentState>; 4]); 5] = [
            (
                Recovered,
                [Some(Active), Some(Recovered), Some(Unreachable), Some(Gone)],
            ),
            (
                Active,
                [
                    Some(Active),
                    Some(Disconnected),
                    Some(Unreachable),
                    Some(Gone),
                ],
            ),
            (
                Disconnected,
                [
                    Some(Active),
                    Some(Disconnected),
                    Some(Unreachable),
                    Some(Gone),
                ],
            ),
            (
                Unreachable,
                [Some(Active), Some(Unreachable), None, Some(Gone)],
            ),
            (Gone, [None, None, None, None]),
        ];
        for (s, row) in table {
            for (e, want) in events.iter().zip(row) {
                assert_eq!(s.on(*e).ok(), want, "{s:?} on {e:?}");
            }
        }
        assert!(Active.offers_resources());
        for s in [Recovered, Disconnected, Unreachable, Gone] {
            assert!(!s.offers_resources(), "{s:?}");
        }
    }

    #[test]
    fn framework_table() {
        use FrameworkEvent::*;
        use FrameworkState::*;
        let events = [Subscribed, StreamClosed, FailoverTimeout, Teardown];
        let table: [(FrameworkState, [Option<FrameworkState>; 4]); 4] = [
            (
                Connected,
                [Some(Connected), Some(Disconnected), None, Some(Completed)],
            ),
            (
                Disconnected,
                [
                    Some(Connected),
                    Some(Disconnected),
                    Some(Completed),
                    Some(Completed),
                ],
            ),
            (
                Recovered,
                [
                    Some(Connected),
                    Some(Recovered),
                    Some(Completed),
                    Some(Completed),
                ],
            ),
            (Completed, [None, None, None, None]),
        ];
        for (s, row) in table {
            for (e, want) in events.iter().zip(row) {
                assert_eq!(s.on(*e).ok(), want, "{s:?} on {e:?}");
            }
        }
        assert!(Connected.receives_offers());
        for s in [Disconnected, Recovered, Completed] {
            assert!(!s.receives_offers(), "{s:?}");
        }
    }

    #[test]
    fn offer_serves_one_use() {
        use OfferEvent::*;
        use OfferState::*;
        let events = [Accept, Decline, Rescind];
        let table: [(OfferState, [Option<OfferState>; 3]); 4] = [
            (
                Outstanding,
                [Some(Accepted), Some(Declined), Some(Rescinded)],
            ),
            (Accepted, [None, None, None]),
            (Declined, [None, None, None]),
            (Rescinded, [None, None, None]),
        ];
        for (s, row) in table {
            for (e, want) in events.iter().zip(row) {
                assert_eq!(s.on(*e).ok(), want, "{s:?} on {e:?}");
            }
        }
    }
}
