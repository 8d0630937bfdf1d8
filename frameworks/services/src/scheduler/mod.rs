//! The services framework's core: a synchronous state machine (no IO).
//!
//! It holds the apps and their instances and turns offers, status updates,
//! app changes and clock ticks into [`Action`]s (launch, decline, kill,
//! suppress, revive) that the actor performs through the SDK.
//!
//! Placement honours resources, ports and constraints; an app that cannot be
//! placed says why. Scaling down kills by `killSelection`. Instances that
//! fail, are lost or become unreachable are replaced, with exponential launch
//! backoff for crash loops; surplus instances (an unreachable agent came
//! back) are killed so the count converges to `instances`. A change of
//! anything but `instances` starts a rolling deployment (see [`Deployment`]).

use crate::app::App;
use agora_core::TaskState;
use agora_proto::pb;
use agora_sdk::TaskStatus;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod deployment;
#[cfg(test)]
mod deployment_tests;
mod endpoints;
#[cfg(test)]
mod endpoints_tests;
mod index;
mod ops;
mod placement;
mod roles;
mod service_ports;
mod task;
#[cfg(test)]
mod tests;

pub use index::Changes;
use index::{AppIndex, classify};
pub use ops::Checkpoint;
pub use service_ports::DEFAULT_SERVICE_PORTS;

/// Label on every task: which app it belongs to.
pub const LABEL_APP: &str = "agora.app_id";
/// Label on every task: which version of the app it runs.
pub const LABEL_VERSION: &str = "agora.app_version";

/// Something for the actor to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Launch {
        offer: agora_core::OfferId,
        tasks: Vec<pb::TaskInfo>,
    },
    Decline {
        offers: Vec<agora_core::OfferId>,
        refuse: Duration,
    },
    Kill {
        task_id: String,
        agent_id: String,
    },
    Suppress,
    Revive,
}

/// One running (or starting) copy of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub task_id: String,
    pub app_id: String,
    pub version: String,
    pub agent_id: String,
    /// The agent's hostname (Marathon's `host`; hostname constraints).
    pub host: String,
    /// The agent's internal address when the instance was launched: where
    /// its host ports are bound (they stay there for the container's life,
    /// whatever the agent says after a restart). `None` from agents that
    /// send none, then `host` stands for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::IpAddr>,
    pub attributes: BTreeMap<String, String>,
    pub ports: Vec<u32>,
    pub state: TaskState,
    pub healthy: Option<bool>,
    /// Its readiness check passed (apps with readiness checks only).
    #[serde(default)]
    pub ready: Option<bool>,
    /// Launch order, for killSelection.
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub staged_at: f64,
    pub running_since: Option<f64>,
    pub killing: bool,
    /// When the kill was last sent (seconds since the epoch); unset after a
    /// restart, so a pending kill is sent again at once.
    #[serde(default, skip)]
    pub kill_sent_at: Option<f64>,
    pub message: String,
    /// Draining (retired while serving): its kill is sent once the routers
    /// have drained it, or at this time (seconds since the epoch) at the
    /// latest. Stored, so that a restart mid-drain still kills it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_until: Option<f64>,
    /// The endpoint version that first listed it as draining (not stored:
    /// versions start again with the framework).
    #[serde(default, skip)]
    pub drain_version: Option<u64>,
}

/// A kill that has not ended the task after this long is sent again: a
/// kill can be lost (agent restarting, master failing over), and one more
/// is harmless.
pub const KILL_RETRY_SECONDS: f64 = 10.0;

impl Instance {
    /// Where routers and discovery clients reach it: its agent's internal
    /// address, else the agent's hostname.
    pub fn reach_host(&self) -> String {
        match self.address {
            Some(ip) => ip.to_string(),
            None => self.host.clone(),
        }
    }

    /// Marks the instance as being killed and says so to the master.
    fn kill(&mut self, now: f64) -> Action {
        self.killing = true;
        self.kill_sent_at = Some(now);
        Action::Kill {
            task_id: self.task_id.clone(),
            agent_id: self.agent_id.clone(),
        }
    }

    /// Counts toward `instances`: launched and not ending or gone.
    pub fn is_live(&self) -> bool {
        !self.killing && !self.state.is_terminal() && self.state != TaskState::Unreachable
    }
}

/// Per-app bookkeeping beside its definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppState {
    pub app: App,
    /// Current launch delay (crash-loop backoff), seconds.
    pub delay: f64,
    /// No launch before this time (seconds since the epoch).
    pub next_launch_at: f64,
    /// Why instances are missing, if they are.
    pub waiting: Option<String>,
    /// The deployment in progress, if any.
    pub deployment: Option<Deployment>,
    /// The last instance that failed (Marathon's `lastTaskFailure`): why
    /// launches fail, e.g. a secret that cannot be resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task_failure: Option<TaskFailure>,
}

/// An instance that failed, as Marathon's `lastTaskFailure` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub task_id: String,
    pub state: TaskState,
    pub message: String,
    pub host: String,
    pub agent_id: String,
    pub version: String,
    /// Seconds since the epoch.
    pub timestamp: f64,
}

/// A rolling replacement of an app's instances by a new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub app_id: String,
    /// The version being rolled out (the app's current one).
    pub version: String,
    /// The definition before this deployment (for rollback).
    pub previous: Box<App>,
    pub started_at: f64,
    /// Human-readable steps done so far.
    pub steps: Vec<String>,
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The framework's state. Apps and instances are read through accessors and
/// changed only through methods, which keep the per-app indexes, the set of
/// apps to converge and the rows to store up to date: a status update costs
/// O(log instances), whatever the size of the app.
#[derive(Default)]
pub struct Services {
    apps: BTreeMap<String, AppState>,
    instances: BTreeMap<String, Instance>,
    index: HashMap<String, AppIndex>,
    /// Apps whose definition or instances changed since they were last
    /// converged.
    touched: BTreeSet<String>,
    /// Apps whose endpoint sets may have changed since they were last
    /// published.
    published: BTreeSet<String>,
    /// Apps missing instances of their current version (they want offers).
    wanting: BTreeSet<String>,
    /// Rows to store.
    changes: Changes,
    seq: u64,
    suppressed: bool,
    /// Instances draining (task ids): retired, kill not sent yet.
    drains: BTreeSet<String>,
    /// Where service ports are assigned from (`None`: the default range).
    service_ports: Option<(u32, u32)>,
    /// The framework's role (empty: `*`); see `roles`.
    role: String,
    /// Apps an autoscaler may take to zero instances (`min: 0`): their
    /// endpoint sets say so (`PortMeta::scale_to_zero`), so routers hold
    /// requests for them instead of refusing.
    scale_to_zero: BTreeSet<String>,
}

impl Services {
    pub fn new() -> Self {
        Services::default()
    }

    /// Rebuilds from persisted apps and instances (framework restart).
    pub fn restore(apps: Vec<AppState>, instances: Vec<Instance>) -> Self {
        let seq = instances.iter().map(|i| i.seq).max().unwrap_or(0);
        let mut s = Services {
            apps: apps.into_iter().map(|a| (a.app.id.clone(), a)).collect(),
            seq,
            ..Services::default()
        };
        for i in instances {
            s.insert_instance(i);
        }
        s.touched = s.apps.keys().cloned().collect();
        s.published = s.touched.clone();
        s.changes = Changes::default();
        s
    }

    pub fn apps(&self) -> &BTreeMap<String, AppState> {
        &self.apps
    }

    pub fn app(&self, id: &str) -> Option<&AppState> {
        self.apps.get(id)
    }

    pub fn instances(&self) -> &BTreeMap<String, Instance> {
        &self.instances
    }

    pub fn instance(&self, task_id: &str) -> Option<&Instance> {
        self.instances.get(task_id)
    }

    /// The rows changed since the last call (for the store).
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Gives back changes that could not be stored: the next
    /// [`Services::take_changes`] returns them again.
    pub fn unsaved(&mut self, c: Changes) {
        self.changes.apps.extend(c.apps);
        self.changes.instances.extend(c.instances);
    }

    /// Live instances of an app (launched, not ending, not gone), by launch
    /// order.
    pub fn live(&self, app_id: &str) -> impl Iterator<Item = &Instance> {
        self.index
            .get(app_id)
            .into_iter()
            .flat_map(|ix| {
                let mut all: Vec<&(u64, String)> =
                    ix.live_new.iter().chain(ix.live_old.iter()).collect();
                all.sort_unstable();
                all
            })
            .filter_map(|(_, id)| self.instances.get(id))
    }

    pub fn instances_of(&self, app_id: &str) -> impl Iterator<Item = &Instance> {
        self.index
            .get(app_id)
            .into_iter()
            .flat_map(|ix| ix.all.iter())
            .filter_map(|id| self.instances.get(id))
    }

    fn insert_instance(&mut self, i: Instance) {
        let c = classify(&i, self.apps.get(&i.app_id).map(|s| &s.app));
        let ix = self.index.entry(i.app_id.clone()).or_default();
        ix.all.insert(i.task_id.clone());
        ix.add(&i, c);
        self.published.insert(i.app_id.clone());
        self.touched.insert(i.app_id.clone());
        self.changes.instances.insert(i.task_id.clone());
        if i.drain_until.is_some() {
            self.drains.insert(i.task_id.clone());
        }
        self.instances.insert(i.task_id.clone(), i);
    }

    fn remove_instance(&mut self, task_id: &str) -> Option<Instance> {
        let i = self.instances.remove(task_id)?;
        self.drains.remove(task_id);
        let c = classify(&i, self.apps.get(&i.app_id).map(|s| &s.app));
        if let Some(ix) = self.index.get_mut(&i.app_id) {
            ix.remove(&i, c);
            ix.all.remove(task_id);
            if ix.all.is_empty() {
                self.index.remove(&i.app_id);
            }
        }
        self.published.insert(i.app_id.clone());
        self.touched.insert(i.app_id.clone());
        self.changes.instances.insert(task_id.to_string());
        Some(i)
    }

    /// Changes one instance through `f`, keeping its app's index right.
    fn modify<R>(&mut self, task_id: &str, f: impl FnOnce(&mut Instance) -> R) -> Option<R> {
        let i = self.instances.get_mut(task_id)?;
        let app = self.apps.get(&i.app_id).map(|s| &s.app);
        let before = classify(i, app);
        let r = f(i);
        if i.drain_until.is_some() {
            self.drains.insert(task_id.to_string());
        } else {
            self.drains.remove(task_id);
        }
        let after = classify(i, app);
        if before != after
            && let Some(ix) = self.index.get_mut(&i.app_id)
        {
            ix.remove(i, before);
            ix.add(i, after);
        }
        self.published.insert(i.app_id.clone());
        self.touched.insert(i.app_id.clone());
        self.changes.instances.insert(task_id.to_string());
        Some(r)
    }

    /// An app to change: marked to store and to converge.
    /// Marks an app's row to be stored again (e.g. upgraded on load).
    pub fn mark_app_changed(&mut self, id: &str) {
        self.app_mut(id);
    }

    fn app_mut(&mut self, id: &str) -> Option<&mut AppState> {
        let st = self.apps.get_mut(id)?;
        self.published.insert(id.to_string());
        self.touched.insert(id.to_string());
        self.changes.apps.insert(id.to_string());
        Some(st)
    }

    /// Classifies an app's instances again (its version or checks changed).
    fn reindex(&mut self, app_id: &str) {
        let Some(ix) = self.index.get_mut(app_id) else {
            return;
        };
        let app = self.apps.get(app_id).map(|s| &s.app);
        let mut fresh = AppIndex {
            all: std::mem::take(&mut ix.all),
            ..AppIndex::default()
        };
        for id in &fresh.all.clone() {
            if let Some(i) = self.instances.get(id) {
                fresh.add(i, classify(i, app));
            }
        }
        *ix = fresh;
        self.published.insert(app_id.to_string());
        self.touched.insert(app_id.to_string());
    }

    /// Checks every index against the instances (for tests).
    pub fn check_indexes(&self) -> Result<(), String> {
        let mut expect: HashMap<String, AppIndex> = HashMap::new();
        for i in self.instances.values() {
            let ix = expect.entry(i.app_id.clone()).or_default();
            ix.all.insert(i.task_id.clone());
            ix.add(i, classify(i, self.apps.get(&i.app_id).map(|s| &s.app)));
        }
        if expect != self.index {
            return Err(format!(
                "indexes differ from the instances: kept {:?}, expected {:?}",
                self.index, expect
            ));
        }
        for id in self.apps.keys() {
            let (target, _) = self.targets(&self.apps[id]);
            let missing = self.index.get(id).map_or(0, |ix| ix.live_new.len()) < target;
            if missing && !self.touched.contains(id) && !self.wanting.contains(id) {
                return Err(format!("{id} misses instances but does not want offers"));
            }
        }
        Ok(())
    }

    /// Creates or replaces an app. Returns the deployment started, if any.
    pub fn put_app(&mut self, mut app: App, force_restart: bool) -> Option<Deployment> {
        let now = now_s();
        app.version = version_string(now, self.seq);
        self.seq += 1;
        let id = app.id.clone();
        let d = match self.app_mut(&id) {
            None => {
                self.apps.insert(
                    id.clone(),
                    AppState {
                        app,
                        delay: 0.0,
                        next_launch_at: 0.0,
                        waiting: None,
                        deployment: None,
                        last_task_failure: None,
                    },
                );
                self.published.insert(id.clone());
                self.touched.insert(id.clone());
                self.changes.apps.insert(id.clone());
                None
            }
            Some(st) => {
                let scale_only = st.app.same_config(&app) && !force_restart;
                if scale_only {
                    // Same version: only the count changes.
                    app.version = st.app.version.clone();
                    st.app = app;
                    None
                } else {
                    let d = Deployment {
                        id: uuid::Uuid::new_v4().to_string(),
                        app_id: app.id.clone(),
                        version: app.version.clone(),
                        previous: Box::new(
                            st.deployment
                                .as_ref()
                                .map(|d| (*d.previous).clone())
                                .unwrap_or_else(|| st.app.clone()),
                        ),
                        started_at: now,
                        steps: vec![format!("deploy version {}", app.version)],
                    };
                    st.app = app;
                    st.delay = 0.0;
                    st.next_launch_at = 0.0;
                    st.deployment = Some(d.clone());
                    Some(d)
                }
            }
        };
        self.reindex(&id);
        if let Some(d) = &d {
            let _g =
                tracing::info_span!("deployment", app_id = %id, deployment_id = %d.id).entered();
            tracing::info!(version = %d.version, "deployment started");
        }
        d
    }

    /// Records a step of an app's deployment (if it has one), in a span
    /// carrying the app and deployment ids.
    fn step(&mut self, app_id: &str, step: String) {
        if self.apps.get(app_id).is_none_or(|s| s.deployment.is_none()) {
            return;
        }
        if let Some(d) = self.app_mut(app_id).and_then(|s| s.deployment.as_mut()) {
            let _g = tracing::info_span!("deployment", app_id = %app_id, deployment_id = %d.id)
                .entered();
            tracing::info!(step = %step, "deployment step");
            d.steps.push(step);
        }
    }

    /// Forgets instances whose launch was withdrawn before it was sent (the
    /// state that created them could not be stored).
    pub fn unlaunch(&mut self, task_ids: &[String]) {
        for id in task_ids {
            if self
                .instances
                .get(id)
                .is_some_and(|i| i.state == TaskState::Staging && !i.killing)
            {
                self.remove_instance(id);
            }
        }
    }

    /// Deletes an app: its instances are killed.
    pub fn delete_app(&mut self, id: &str) -> Vec<Action> {
        let policy = self
            .apps
            .remove(id)
            .and_then(|st| endpoints::DrainPolicy::of(&st.app));
        self.changes.apps.insert(id.to_string());
        // Its endpoint sets go (even with no instance to reindex).
        self.published.insert(id.to_string());
        self.wanting.remove(id);
        self.reindex(id);
        let now = now_s();
        let ids: Vec<String> = self
            .instances_of(id)
            .filter(|i| !i.state.is_terminal() && !i.killing)
            .map(|i| i.task_id.clone())
            .collect();
        ids.iter()
            .filter_map(|t| self.retire(t, now, policy))
            .collect()
    }

    /// A status update for one of our tasks.
    pub fn update(&mut self, s: &TaskStatus) -> Vec<Action> {
        let now = now_s();
        let span = tracing::info_span!(
            "status_update",
            task_id = %s.task_id,
            app_id = tracing::field::Empty,
            state = %s.state.as_str()
        );
        let _g = span.enter();
        let Some(inst) = self.instances.get(s.task_id.as_str()) else {
            tracing::debug!("not one of ours");
            // Not ours (any more): make sure it does not keep running.
            if !s.state.is_terminal() && s.state != TaskState::Unknown {
                return vec![Action::Kill {
                    task_id: s.task_id.0.clone(),
                    agent_id: s.agent_id.0.clone(),
                }];
            }
            return Vec::new();
        };
        let app_id = inst.app_id.clone();
        let killing = inst.killing;
        span.record("app_id", tracing::field::display(&app_id));
        tracing::debug!(message = %s.message, "status update");
        self.modify(s.task_id.as_str(), |inst| {
            let was_running = inst.state == TaskState::Running;
            inst.state = s.state;
            inst.message = s.message.clone();
            if let Some(h) = s.healthy {
                inst.healthy = Some(h);
            }
            if s.ready == Some(true) {
                inst.ready = Some(true);
            }
            if s.state == TaskState::Running && !was_running {
                inst.running_since = Some(now);
            }
        });
        let mut out = Vec::new();
        if s.state == TaskState::Unknown {
            // The master does not know it: gone.
            self.remove_instance(s.task_id.as_str());
        } else if s.state.is_terminal() {
            let gone = self.remove_instance(s.task_id.as_str());
            // A launch refused because its offer went away is not a crash.
            let failed = !killing
                && (s.state == TaskState::Failed
                    || (s.state == TaskState::Error && s.reason != "REASON_INVALID_OFFERS"));
            if failed && let Some(st) = self.app_mut(&app_id) {
                st.last_task_failure = gone.map(|i| TaskFailure {
                    task_id: i.task_id,
                    state: s.state,
                    message: s.message.clone(),
                    host: i.host,
                    agent_id: i.agent_id,
                    version: i.version,
                    timestamp: now,
                });
                // Crash loop backoff: delay grows by the factor, capped.
                let a = &st.app;
                st.delay = if st.delay == 0.0 {
                    a.backoff_seconds
                } else {
                    (st.delay * a.backoff_factor).min(a.max_launch_delay_seconds)
                };
                st.next_launch_at = now + st.delay;
            }
        } else if s.healthy == Some(false) && !killing {
            // Unhealthy past maxConsecutiveFailures (the agent counts): replace.
            if let Some(a) = self.modify(s.task_id.as_str(), |i| i.kill(now)) {
                out.push(a);
            }
        } else if s.healthy == Some(true)
            && self
                .apps
                .get(&app_id)
                .is_some_and(|st| st.delay != 0.0 || st.next_launch_at != 0.0)
            && let Some(st) = self.app_mut(&app_id)
        {
            st.delay = 0.0;
            st.next_launch_at = 0.0;
        }
        out.extend(self.converge());
        out
    }

    /// Periodic: resets backoff for apps whose instances have stayed up,
    /// re-sends kills that have not ended their task, then converges.
    pub fn tick(&mut self) -> Vec<Action> {
        self.tick_at(now_s())
    }

    fn tick_at(&mut self, now: f64) -> Vec<Action> {
        let resend: Vec<String> = self
            .instances
            .values()
            .filter(|i| {
                i.killing
                    && i.drain_until.is_none()
                    && !i.state.is_terminal()
                    && i.kill_sent_at.is_none_or(|t| now - t >= KILL_RETRY_SECONDS)
            })
            .map(|i| i.task_id.clone())
            .collect();
        let mut out: Vec<Action> = resend
            .iter()
            .filter_map(|t| {
                tracing::info!(task_id = %t, "task still not ended after its kill; killing again");
                // Only the kill time changes, which is not stored.
                let i = self.instances.get_mut(t)?;
                Some(i.kill(now))
            })
            .collect();
        let delayed: Vec<String> = self
            .apps
            .values()
            .filter(|st| st.delay != 0.0 && st.app.health_checks.is_empty())
            .map(|st| st.app.id.clone())
            .collect();
        for id in delayed {
            let Some(delay) = self.apps.get(&id).map(|s| s.delay) else {
                continue;
            };
            let stable = self.instances_of(&id).any(|i| {
                i.state == TaskState::Running
                    && i.running_since
                        .is_some_and(|t| now - t >= (2.0 * delay).max(10.0))
            });
            if stable && let Some(st) = self.app_mut(&id) {
                st.delay = 0.0;
                st.next_launch_at = 0.0;
            }
        }
        out.extend(self.converge());
        out
    }
}

fn version_string(now: f64, seq: u64) -> String {
    format!("{:.0}-{seq}", now * 1000.0)
}

/// Ready for a deployment step: running, healthy when health-checked, and
/// past its readiness check when it has one.
fn ready(i: &Instance, app: &App) -> bool {
    i.state == TaskState::Running
        && (app.health_checks.is_empty() || i.healthy == Some(true))
        && (app.readiness_checks.is_empty() || i.ready == Some(true))
}
