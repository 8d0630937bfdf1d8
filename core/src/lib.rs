//! Agora's domain: identifiers, resources, lifecycles and the DRF allocator.
//!
//! # Layout
//! - [`ids`]: newtype identifiers and validation of ids from the network.
//! - [`resources`]: exact fixed-point resources with port ranges.
//! - [`task`]: the task state machine (`TaskState::can_transition`).
//! - [`lifecycle`]: agent, framework and offer lifecycles.
//! - [`info`]: what frameworks ask to run and what is reported back
//!   (task and framework descriptions, statuses, offers).
//! - [`protocol`]: scheduler calls and events, agent-link messages.
//! - [`allocator`]: the synchronous hierarchical-DRF allocator.
//! - [`endpoints`]: versioned endpoint sets for discovery and routing.
//! - [`secrets`]: secret paths and references (never values on the wire).
//! - [`autoscale`]: autoscaling policies and the decision algorithm (HPA-like,
//!   with scale to zero), driven by a `now` the caller passes in.
//!
//! No IO, no async, no wire types: the master wraps these in one actor and
//! `agora-proto` converts at the edge.

pub mod allocator;
pub mod autoscale;
pub mod endpoints;
pub mod ids;
pub mod info;
pub mod lifecycle;
pub mod protocol;
pub mod resources;
pub mod secrets;
pub mod task;

pub use ids::{AgentId, FrameworkId, Invalid, OfferId, TaskId};
pub use resources::{Ranges, ResourceError, Resources, Scalars};
pub use task::TaskState;
