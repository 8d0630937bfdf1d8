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

use crate::app::{App, Constraint, HealthProtocol, KillSelection, NetworkMode, Operator};
use agora_core::{Resources, TaskState};
use agora_proto::pb;
use agora_sdk::{Offer, TaskStatus};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    pub host: String,
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
}

/// A kill that has not ended the task after this long is sent again: a
/// kill can be lost (agent restarting, master failing over), and one more
/// is harmless.
pub const KILL_RETRY_SECONDS: f64 = 10.0;

impl Instance {
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

/// What changed since the last [`Services::take_changes`]: the rows the
/// store must write (or delete, when the key is gone from memory).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    pub apps: BTreeSet<String>,
    pub instances: BTreeSet<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.apps.is_empty() && self.instances.is_empty()
    }

    /// Rows to write or delete.
    pub fn len(&self) -> usize {
        self.apps.len() + self.instances.len()
    }
}

/// Per-app index of its instances, kept up to date on every change so that
/// deciding about an app costs O(1), not O(instances).
#[derive(Debug, Default, Clone, PartialEq)]
struct AppIndex {
    /// Every instance of the app (any state).
    all: BTreeSet<String>,
    /// Live instances of the app's current version, by launch order.
    live_new: BTreeSet<(u64, String)>,
    /// Live instances of older versions, by launch order.
    live_old: BTreeSet<(u64, String)>,
    /// Of `live_new`, those ready for a deployment step.
    new_ready: usize,
    /// Being killed and not ended yet.
    stopping: usize,
}

/// Where one instance counts in its app's index.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Class {
    live_new: bool,
    live_old: bool,
    ready: bool,
    stopping: bool,
}

fn classify(i: &Instance, app: Option<&App>) -> Class {
    let live = i.is_live();
    let new = app.is_some_and(|a| a.version == i.version);
    Class {
        live_new: live && new,
        live_old: live && !new,
        ready: live && new && app.is_some_and(|a| ready(i, a)),
        stopping: i.killing && !i.state.is_terminal(),
    }
}

impl AppIndex {
    fn add(&mut self, i: &Instance, c: Class) {
        if c.live_new {
            self.live_new.insert((i.seq, i.task_id.clone()));
        }
        if c.live_old {
            self.live_old.insert((i.seq, i.task_id.clone()));
        }
        self.new_ready += usize::from(c.ready);
        self.stopping += usize::from(c.stopping);
    }

    fn remove(&mut self, i: &Instance, c: Class) {
        if c.live_new {
            self.live_new.remove(&(i.seq, i.task_id.clone()));
        }
        if c.live_old {
            self.live_old.remove(&(i.seq, i.task_id.clone()));
        }
        self.new_ready -= usize::from(c.ready);
        self.stopping -= usize::from(c.stopping);
    }
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
    /// Apps missing instances of their current version (they want offers).
    wanting: BTreeSet<String>,
    /// Rows to store.
    changes: Changes,
    seq: u64,
    suppressed: bool,
}

#[derive(Default)]
struct Rejections {
    resources: usize,
    ports: usize,
    constraint: Option<String>,
    largest: Option<Resources>,
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
        self.touched.insert(i.app_id.clone());
        self.changes.instances.insert(i.task_id.clone());
        self.instances.insert(i.task_id.clone(), i);
    }

    fn remove_instance(&mut self, task_id: &str) -> Option<Instance> {
        let i = self.instances.remove(task_id)?;
        let c = classify(&i, self.apps.get(&i.app_id).map(|s| &s.app));
        if let Some(ix) = self.index.get_mut(&i.app_id) {
            ix.remove(&i, c);
            ix.all.remove(task_id);
            if ix.all.is_empty() {
                self.index.remove(&i.app_id);
            }
        }
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
        let after = classify(i, app);
        if before != after
            && let Some(ix) = self.index.get_mut(&i.app_id)
        {
            ix.remove(i, before);
            ix.add(i, after);
        }
        self.touched.insert(i.app_id.clone());
        self.changes.instances.insert(task_id.to_string());
        Some(r)
    }

    /// An app to change: marked to store and to converge.
    fn app_mut(&mut self, id: &str) -> Option<&mut AppState> {
        let st = self.apps.get_mut(id)?;
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
                    },
                );
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
        d
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

    /// Stops an app's deployment where it is (`DELETE
    /// /v2/deployments/{id}?force=true`).
    pub fn stop_deployment(&mut self, app_id: &str) {
        if let Some(s) = self.app_mut(app_id) {
            s.deployment = None;
        }
    }

    /// Deletes an app: its instances are killed.
    pub fn delete_app(&mut self, id: &str) -> Vec<Action> {
        self.apps.remove(id);
        self.changes.apps.insert(id.to_string());
        self.wanting.remove(id);
        self.reindex(id);
        let now = now_s();
        let ids: Vec<String> = self
            .instances_of(id)
            .filter(|i| !i.state.is_terminal() && !i.killing)
            .map(|i| i.task_id.clone())
            .collect();
        ids.iter()
            .filter_map(|t| self.modify(t, |i| i.kill(now)))
            .collect()
    }

    /// Desired count of instances of `version` and of older versions, for
    /// an app in a rolling deployment (or not). O(1): read from the index.
    fn targets(&self, st: &AppState) -> (usize, usize) {
        let n = st.app.instances as usize;
        let Some(_) = &st.deployment else {
            return (n, 0);
        };
        let empty = AppIndex::default();
        let ix = self.index.get(&st.app.id).unwrap_or(&empty);
        let us = st.app.upgrade_strategy;
        let new_live = ix.live_new.len();
        let new_ready = ix.new_ready;
        let old_live = ix.live_old.len();
        // Instances being killed still run until their end is reported:
        // they count against the over-capacity budget.
        let stopping = ix.stopping;
        let max_total = n + (us.maximum_over_capacity * n as f64).floor() as usize;
        let min_healthy = (us.minimum_health_capacity * n as f64).ceil() as usize;
        // New instances we may have: within the over-capacity budget.
        let new_target = n.min(new_live + max_total.saturating_sub(new_live + old_live + stopping));
        // Old instances we must keep so healthy capacity stays >= minimum.
        let old_keep = min_healthy.saturating_sub(new_ready).min(old_live);
        (new_target.max(new_live.min(n)), old_keep)
    }

    /// Live instances of the app's current version.
    fn have(&self, app_id: &str) -> usize {
        self.index.get(app_id).map_or(0, |ix| ix.live_new.len())
    }

    /// Decides what to do with offers.
    pub fn offers(&mut self, offers: Vec<Offer>) -> Vec<Action> {
        let now = now_s();
        let mut out = Vec::new();
        let mut decline = Vec::new();
        let mut wanted_any = false;
        let mut soonest: Option<f64> = None;
        let mut rejections: HashMap<String, Rejections> = HashMap::new();
        let app_ids: Vec<String> = self.apps.keys().cloned().collect();
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut tasks = Vec::new();
            for id in &app_ids {
                while let Some(st) = self.apps.get(id) {
                    let (new_target, _) = self.targets(st);
                    if self.have(id) >= new_target {
                        break;
                    }
                    wanted_any = true;
                    if st.next_launch_at > now {
                        // Come back when the backoff ends, not later.
                        let wait = st.next_launch_at - now;
                        soonest = Some(soonest.map_or(wait, |s: f64| s.min(wait)));
                        break;
                    }
                    let app = st.app.clone();
                    let rej = rejections.entry(id.clone()).or_default();
                    let Some((task, used, ports)) = fit(&app, &offer, &left, rej) else {
                        break;
                    };
                    if let Some(why) = self.constraint_violation(&app, &offer) {
                        rej.constraint = Some(why);
                        break;
                    }
                    left = left.checked_sub(&used).unwrap_or_default();
                    self.seq += 1;
                    self.insert_instance(Instance {
                        task_id: task.task_id.clone(),
                        app_id: app.id.clone(),
                        version: app.version.clone(),
                        agent_id: offer.agent_id.0.clone(),
                        host: offer.hostname.clone(),
                        attributes: offer.attributes.iter().cloned().collect(),
                        ports,
                        state: TaskState::Staging,
                        healthy: None,
                        ready: None,
                        seq: self.seq,
                        staged_at: now,
                        running_since: None,
                        killing: false,
                        kill_sent_at: None,
                        message: String::new(),
                    });
                    if self.apps.get(id).is_some_and(|s| s.deployment.is_some())
                        && let Some(d) = self.app_mut(id).and_then(|s| s.deployment.as_mut())
                    {
                        d.steps.push(format!("launch {}", task.task_id));
                    }
                    tasks.push(task);
                }
            }
            if tasks.is_empty() {
                decline.push(offer.id);
            } else {
                out.push(Action::Launch {
                    offer: offer.id,
                    tasks,
                });
            }
        }
        // Say why apps that still miss instances are waiting.
        for id in &app_ids {
            let Some(st) = self.apps.get(id) else {
                continue;
            };
            let (new_target, _) = self.targets(st);
            let have = self.have(id);
            let waiting = if have >= new_target {
                None
            } else if st.next_launch_at > now {
                Some(format!(
                    "launch delayed {:.1}s by backoff after failures (delay now {:.1}s)",
                    st.next_launch_at - now,
                    st.delay
                ))
            } else {
                match rejections.get(id) {
                    Some(r) => Some(describe(r, &st.app, have, new_target)),
                    // Not offered anything this time: keep the last reason.
                    None => st.waiting.clone(),
                }
            };
            if st.waiting != waiting
                && let Some(s) = self.app_mut(id)
            {
                s.waiting = waiting;
            }
        }
        if !decline.is_empty() {
            // Nothing wanted: a long filter; wanted but unfit: retry soon.
            let refuse = if wanted_any {
                Duration::from_secs_f64(soonest.unwrap_or(5.0).clamp(0.1, 5.0))
            } else {
                Duration::from_secs(120)
            };
            out.push(Action::Decline {
                offers: decline,
                refuse,
            });
        }
        out.extend(self.converge());
        out
    }

    fn constraint_violation(&self, app: &App, offer: &Offer) -> Option<String> {
        if app.constraints.is_empty() {
            return None;
        }
        let peers: Vec<&Instance> = self.live(&app.id).collect();
        for c in &app.constraints {
            if !constraint_ok(c, offer, &peers) {
                let op = serde_json::to_value(c.operator)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                return Some(match &c.value {
                    Some(v) => format!("{}:{}:{}", c.field, op, v),
                    None => format!("{}:{}", c.field, op),
                });
            }
        }
        None
    }

    /// Kills surplus (scale down, deployment progress, returned unreachable
    /// instances) and decides suppress/revive. Only apps touched since they
    /// were last converged are looked at, each in O(1) unless it has
    /// instances to kill.
    pub fn converge(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        let now = now_s();
        for id in std::mem::take(&mut self.touched) {
            let Some(st) = self.apps.get(&id) else {
                self.wanting.remove(&id);
                continue;
            };
            let n = st.app.instances as usize;
            let kill_selection = st.app.kill_selection;
            let in_deployment = st.deployment.is_some();
            let (new_target, old_keep) = self.targets(st);
            let empty = AppIndex::default();
            let ix = self.index.get(&id).unwrap_or(&empty);
            let (current, old) = (ix.live_new.len(), ix.live_old.len());
            // Surplus goes by killSelection: youngest (highest launch order)
            // or oldest first.
            let pick = |set: &BTreeSet<(u64, String)>, k: usize| -> Vec<String> {
                match kill_selection {
                    KillSelection::YoungestFirst => {
                        set.iter().rev().take(k).map(|(_, t)| t.clone()).collect()
                    }
                    KillSelection::OldestFirst => {
                        set.iter().take(k).map(|(_, t)| t.clone()).collect()
                    }
                }
            };
            let mut kill: Vec<String> = Vec::new();
            if current > n {
                kill.extend(pick(&ix.live_new, current - n));
            }
            if in_deployment && old > old_keep {
                kill.extend(pick(&ix.live_old, old - old_keep));
            }
            if current < new_target {
                self.wanting.insert(id.clone());
            } else {
                self.wanting.remove(&id);
            }
            let done = in_deployment
                && old <= old_keep
                && old_keep == 0
                && current >= n
                && ix.new_ready == current;
            for t in kill {
                if let Some(a) = self.modify(&t, |i| i.kill(now)) {
                    out.push(a);
                    if let Some(d) = self.app_mut(&id).and_then(|s| s.deployment.as_mut()) {
                        d.steps.push(format!("kill {t}"));
                    }
                }
            }
            if done && let Some(s) = self.app_mut(&id) {
                if let Some(d) = s.deployment.as_mut() {
                    d.steps.push("done".into());
                }
                s.deployment = None;
            }
        }
        let need_offers = !self.wanting.is_empty();
        if need_offers && self.suppressed {
            self.suppressed = false;
            out.push(Action::Revive);
        } else if !need_offers && !self.suppressed {
            self.suppressed = true;
            out.push(Action::Suppress);
        }
        out
    }

    /// Forces the next `converge` to re-evaluate suppress/revive (after a
    /// reconnection the master's view may differ).
    pub fn reset_offer_state(&mut self) {
        self.suppressed = true;
    }

    /// A status update for one of our tasks.
    pub fn update(&mut self, s: &TaskStatus) -> Vec<Action> {
        let now = now_s();
        let Some(inst) = self.instances.get(s.task_id.as_str()) else {
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
            self.remove_instance(s.task_id.as_str());
            // A launch refused because its offer went away is not a crash.
            let failed = !killing
                && (s.state == TaskState::Failed
                    || (s.state == TaskState::Error && s.reason != "REASON_INVALID_OFFERS"));
            if failed && let Some(st) = self.app_mut(&app_id) {
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

fn field_value<'a>(field: &str, offer: &'a Offer) -> Option<&'a str> {
    if field == "hostname" {
        Some(offer.hostname.as_str())
    } else {
        offer.attribute(field)
    }
}

fn inst_value<'a>(field: &str, i: &'a Instance) -> Option<&'a str> {
    if field == "hostname" {
        Some(i.host.as_str())
    } else {
        i.attributes.get(field).map(String::as_str)
    }
}

fn constraint_ok(c: &Constraint, offer: &Offer, peers: &[&Instance]) -> bool {
    let v = field_value(&c.field, offer);
    let count = |val: &str| {
        peers
            .iter()
            .filter(|p| inst_value(&c.field, p) == Some(val))
            .count()
    };
    let full_match = |pat: &str, val: &str| {
        regex_lite::Regex::new(&format!("^(?:{pat})$"))
            .map(|r| r.is_match(val))
            .unwrap_or(false)
    };
    match c.operator {
        Operator::Unique => v.is_some_and(|v| count(v) == 0),
        Operator::Cluster => match (&c.value, v) {
            (Some(want), Some(v)) => v == want,
            (None, Some(v)) => peers.iter().all(|p| inst_value(&c.field, p) == Some(v)),
            _ => false,
        },
        Operator::Is => v.is_some_and(|v| Some(v) == c.value.as_deref()),
        Operator::Like => v.is_some_and(|v| full_match(c.value.as_deref().unwrap_or(""), v)),
        Operator::Unlike => v.is_none_or(|v| !full_match(c.value.as_deref().unwrap_or(""), v)),
        Operator::MaxPer => {
            let max: usize = c.value.as_deref().and_then(|s| s.parse().ok()).unwrap_or(1);
            v.is_some_and(|v| count(v) < max)
        }
        Operator::GroupBy => {
            let Some(v) = v else { return false };
            let mine = count(v);
            let mut values: Vec<&str> = peers
                .iter()
                .filter_map(|p| inst_value(&c.field, p))
                .collect();
            values.sort_unstable();
            values.dedup();
            let min_other = values.iter().map(|o| count(o)).min().unwrap_or(0);
            // Spread evenly: place where the group is smallest.
            mine <= min_other || !values.contains(&v)
        }
    }
}

/// The task for one instance if it fits in `left`: (task, resources used, host ports).
fn fit(
    app: &App,
    offer: &Offer,
    left: &Resources,
    rej: &mut Rejections,
) -> Option<(pb::TaskInfo, Resources, Vec<u32>)> {
    let mut need = Resources::new(app.cpus, app.mem.ceil() as u64, app.disk.ceil() as u64).ok()?;
    if !left.contains(&need) {
        rej.resources += 1;
        if rej
            .largest
            .as_ref()
            .is_none_or(|l| l.cpus_milli < offer.resources.cpus_milli)
        {
            rej.largest = Some(offer.resources.clone());
        }
        return None;
    }
    // Ports: fixed host ports must be free; 0 takes any free one.
    let fixed: Vec<u32> = match app.network {
        NetworkMode::Bridge => app.port_mappings.iter().map(|p| p.host_port).collect(),
        NetworkMode::Host => app.port_definitions.iter().map(|p| p.port).collect(),
    };
    let mut free = left.ports.clone();
    let mut ports = Vec::new();
    for want in &fixed {
        let p = if *want != 0 {
            free.contains_value(*want).then_some(*want)
        } else {
            free.ranges().first().map(|(b, _)| *b)
        };
        let Some(p) = p else {
            rej.ports += 1;
            return None;
        };
        free = free.difference(&agora_core::Ranges::range(p, p).ok()?);
        ports.push(p);
    }
    need.ports = agora_core::Ranges::from_ranges(ports.iter().map(|p| (*p, *p))).ok()?;

    let task_id = format!(
        "{}.{}",
        app.id.trim_start_matches('/').replace('/', "_"),
        uuid::Uuid::new_v4().simple()
    );
    let mut env: Vec<pb::EnvVar> = app
        .env
        .iter()
        .map(|(k, v)| pb::EnvVar {
            name: k.clone(),
            value: v.clone(),
        })
        .collect();
    env.push(pb::EnvVar {
        name: "AGORA_APP_ID".into(),
        value: app.id.clone(),
    });
    env.push(pb::EnvVar {
        name: "HOST".into(),
        value: offer.hostname.clone(),
    });
    let names: Vec<&str> = match app.network {
        NetworkMode::Bridge => app.port_mappings.iter().map(|p| p.name.as_str()).collect(),
        NetworkMode::Host => app
            .port_definitions
            .iter()
            .map(|p| p.name.as_str())
            .collect(),
    };
    for (i, p) in ports.iter().enumerate() {
        env.push(pb::EnvVar {
            name: format!("PORT{i}"),
            value: p.to_string(),
        });
        if let Some(n) = names.get(i).filter(|n| !n.is_empty()) {
            env.push(pb::EnvVar {
                name: format!("PORT_{}", n.to_ascii_uppercase().replace('-', "_")),
                value: p.to_string(),
            });
        }
    }
    let mut labels: HashMap<String, String> = app.labels.clone().into_iter().collect();
    labels.insert(LABEL_APP.into(), app.id.clone());
    labels.insert(LABEL_VERSION.into(), app.version.clone());
    let command = match (&app.cmd, app.args.is_empty()) {
        (Some(c), _) => Some(pb::CommandInfo {
            value: c.clone(),
            args: vec![],
            env,
            shell: true,
        }),
        (None, false) => Some(pb::CommandInfo {
            value: String::new(),
            args: app.args.clone(),
            env,
            shell: false,
        }),
        (None, true) => Some(pb::CommandInfo {
            value: String::new(),
            args: vec![],
            env,
            shell: false,
        }),
    };
    let container = app.image.as_ref().map(|image| pb::ContainerInfo {
        image: image.clone(),
        network: match app.network {
            NetworkMode::Bridge => "bridge".into(),
            NetworkMode::Host => "host".into(),
        },
        port_mappings: app
            .port_mappings
            .iter()
            .zip(ports.iter())
            .map(|(m, hp)| pb::PortMapping {
                host_port: *hp,
                container_port: m.container_port,
                protocol: m.protocol.clone(),
                name: m.name.clone(),
            })
            .collect(),
    });
    let task = pb::TaskInfo {
        task_id,
        name: app.id.clone(),
        agent_id: offer.agent_id.0.clone(),
        resources: Some(pb::Resources::from(&need)),
        command,
        container,
        labels,
        kill_grace_seconds: 0.0,
        health_checks: app
            .health_checks
            .iter()
            .map(|h| pb::HealthCheck {
                protocol: match h.protocol {
                    HealthProtocol::MesosHttp => pb::health_check::Protocol::Http,
                    HealthProtocol::MesosTcp => pb::health_check::Protocol::Tcp,
                    HealthProtocol::Command => pb::health_check::Protocol::Command,
                } as i32,
                path: h.path.clone(),
                port: ports.get(h.port_index as usize).copied().unwrap_or(0),
                command: h.command.clone(),
                grace_period_seconds: h.grace_period_seconds,
                interval_seconds: h.interval_seconds,
                timeout_seconds: h.timeout_seconds,
                max_consecutive_failures: h.max_consecutive_failures,
                ok_statuses: vec![],
            })
            .collect(),
        readiness_checks: app
            .readiness_checks
            .iter()
            .map(|r| pb::HealthCheck {
                protocol: pb::health_check::Protocol::Http as i32,
                path: r.path.clone(),
                port: names
                    .iter()
                    .position(|n| *n == r.port_name)
                    .and_then(|i| ports.get(i).copied())
                    .unwrap_or(0),
                command: String::new(),
                grace_period_seconds: 0.0,
                interval_seconds: r.interval_seconds,
                timeout_seconds: r.timeout_seconds,
                max_consecutive_failures: 1,
                ok_statuses: r
                    .http_status_codes_for_ready
                    .iter()
                    .map(|c| u32::from(*c))
                    .collect(),
            })
            .collect(),
    };
    Some((task, need, ports))
}

fn describe(r: &Rejections, app: &App, have: usize, want: usize) -> String {
    if let Some(c) = &r.constraint {
        return format!("constraint {c}: {have} of {want} placed, no further agent matches");
    }
    if r.resources > 0 {
        let largest = r
            .largest
            .as_ref()
            .map(|l| format!(" (largest offer: {l})"))
            .unwrap_or_default();
        return format!(
            "no offer has enough resources: each instance needs cpus {} mem {} disk {}{largest}; {have} of {want} placed",
            app.cpus, app.mem, app.disk
        );
    }
    if r.ports > 0 {
        return format!(
            "no offer has the {} port(s) each instance needs; {have} of {want} placed",
            app.host_ports_needed()
        );
    }
    format!("waiting for offers; {have} of {want} placed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::parse_app;
    use agora_core::{AgentId, OfferId, TaskId};
    use serde_json::json;

    fn offer(id: &str, host: &str, res: &str) -> Offer {
        Offer {
            id: OfferId::new(format!("o-{id}")),
            agent_id: AgentId::new(format!("a-{host}")),
            hostname: host.into(),
            resources: Resources::parse(res).unwrap(),
            attributes: vec![(
                "zone".into(),
                if host.ends_with('1') {
                    "a".into()
                } else {
                    "b".into()
                },
            )],
        }
    }

    fn status(t: &str, s: TaskState) -> TaskStatus {
        TaskStatus {
            task_id: TaskId::new(t),
            agent_id: AgentId::new("a"),
            state: s,
            message: String::new(),
            reason: String::new(),
            exit_code: None,
            healthy: None,
            ready: None,
            uuid: vec![],
        }
    }

    fn launched(actions: &[Action]) -> Vec<pb::TaskInfo> {
        actions
            .iter()
            .flat_map(|a| match a {
                Action::Launch { tasks, .. } => tasks.clone(),
                _ => vec![],
            })
            .collect()
    }

    fn app(v: serde_json::Value) -> App {
        parse_app(&v).unwrap()
    }

    fn run_all(s: &mut Services) {
        let ids: Vec<String> = s.instances.keys().cloned().collect();
        for id in ids {
            s.update(&status(&id, TaskState::Running));
        }
    }

    #[test]
    fn deploys_scales_and_kills_youngest_first() {
        let mut s = Services::new();
        s.put_app(
            app(json!({"id": "web", "cmd": "serve", "instances": 3, "cpus": 1, "mem": 64})),
            false,
        );
        let acts = s.offers(vec![offer("1", "h1", "cpus:8;mem:4096")]);
        let t = launched(&acts);
        assert_eq!(t.len(), 3);
        let env: Vec<&str> = t[0]
            .command
            .as_ref()
            .unwrap()
            .env
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert!(env.contains(&"AGORA_APP_ID") && env.contains(&"HOST"));
        assert!(acts.contains(&Action::Suppress));
        run_all(&mut s);

        let mut a = s.apps["/web"].app.clone();
        a.instances = 6;
        assert!(
            s.put_app(a.clone(), false).is_none(),
            "a scale is not a deployment"
        );
        let acts = s.converge();
        assert!(acts.contains(&Action::Revive));
        let t = launched(&s.offers(vec![offer("2", "h1", "cpus:5;mem:4096")]));
        assert_eq!(t.len(), 3);
        run_all(&mut s);
        assert_eq!(s.live("/web").count(), 6);

        a.instances = 2;
        s.put_app(a, false);
        let killed = kills(&s.converge());
        assert_eq!(killed.len(), 4);
        let mut by_age: Vec<&Instance> = s.instances.values().collect();
        by_age.sort_by_key(|i| i.seq);
        let youngest: Vec<String> = by_age[2..].iter().map(|i| i.task_id.clone()).collect();
        let mut k = killed.clone();
        k.sort();
        let mut y = youngest;
        y.sort();
        assert_eq!(k, y, "the four youngest go");
        for t in killed {
            s.update(&status(&t, TaskState::Killed));
        }
        assert_eq!(s.live("/web").count(), 2);
    }

    #[test]
    fn unique_hostname_places_one_per_host_and_says_why() {
        let mut s = Services::new();
        s.put_app(app(json!({"id": "u", "cmd": "x", "instances": 3, "cpus": 0.1, "mem": 16, "constraints": [["hostname", "UNIQUE"]]})), false);
        let t = launched(&s.offers(vec![
            offer("1", "h1", "cpus:4;mem:1024"),
            offer("2", "h2", "cpus:4;mem:1024"),
        ]));
        assert_eq!(t.len(), 2);
        let w = s.apps["/u"].waiting.clone().unwrap();
        assert!(
            w.contains("constraint hostname:UNIQUE: 2 of 3 placed, no further agent matches"),
            "{w}"
        );
        // Another offer from a used host is declined.
        let acts = s.offers(vec![offer("3", "h1", "cpus:4;mem:1024")]);
        assert!(launched(&acts).is_empty());
        assert!(matches!(acts[0], Action::Decline { .. }));
    }

    #[test]
    fn an_app_too_big_for_any_agent_waits_with_a_reason() {
        let mut s = Services::new();
        s.put_app(app(json!({"id": "big", "cmd": "x", "cpus": 100})), false);
        assert!(launched(&s.offers(vec![offer("1", "h1", "cpus:4;mem:1024")])).is_empty());
        let w = s.apps["/big"].waiting.clone().unwrap();
        assert!(
            w.contains("no offer has enough resources") && w.contains("cpus 100"),
            "{w}"
        );
    }

    #[test]
    fn crash_loops_back_off_by_the_factor_up_to_the_cap() {
        let mut s = Services::new();
        s.put_app(app(json!({"id": "crash", "cmd": "exit 1", "backoffSeconds": 1, "backoffFactor": 2, "maxLaunchDelaySeconds": 5})), false);
        let mut delays = Vec::new();
        for round in 0..5 {
            // Force the delay window open to simulate time passing.
            if let Some(st) = s.apps.get_mut("/crash") {
                st.next_launch_at = 0.0;
            }
            let t = launched(&s.offers(vec![offer(&round.to_string(), "h1", "cpus:4;mem:1024")]));
            assert_eq!(t.len(), 1);
            s.update(&status(&t[0].task_id, TaskState::Failed));
            delays.push(s.apps["/crash"].delay);
        }
        assert_eq!(delays, vec![1.0, 2.0, 4.0, 5.0, 5.0]);
        // While delayed, offers are declined and the reason is shown.
        let acts = s.offers(vec![offer("x", "h1", "cpus:4;mem:1024")]);
        assert!(launched(&acts).is_empty());
        assert!(
            s.apps["/crash"]
                .waiting
                .as_deref()
                .unwrap_or("")
                .contains("backoff")
        );
    }

    fn kills(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Kill { task_id, .. } => Some(task_id.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_kill_that_does_not_end_the_task_is_sent_again() {
        let mut s = Services::new();
        s.put_app(
            app(json!({"id": "web", "cmd": "serve", "instances": 2, "cpus": 1, "mem": 64})),
            false,
        );
        s.offers(vec![offer("1", "h1", "cpus:8;mem:4096")]);
        run_all(&mut s);
        let mut a = s.apps["/web"].app.clone();
        a.instances = 1;
        s.put_app(a, false);
        let killed = kills(&s.converge());
        assert_eq!(killed.len(), 1);
        let sent = s.instances[&killed[0]].kill_sent_at.unwrap();

        // Within the retry period: nothing more.
        assert!(kills(&s.tick_at(sent + KILL_RETRY_SECONDS - 1.0)).is_empty());
        // Past it, the task still running: the kill goes again, once.
        let now = sent + KILL_RETRY_SECONDS;
        assert_eq!(kills(&s.tick_at(now)), killed);
        assert!(kills(&s.tick_at(now + 1.0)).is_empty());
        // Once it ends, no more kills.
        s.update(&status(&killed[0], TaskState::Killed));
        assert!(kills(&s.tick_at(now + 2.0 * KILL_RETRY_SECONDS)).is_empty());
        assert_eq!(s.live("/web").count(), 1);

        // After a restart (kill time not stored) a pending kill goes at once.
        let mut a = s.apps["/web"].app.clone();
        a.instances = 0;
        s.put_app(a, false);
        let killed = kills(&s.converge());
        s.instances.get_mut(&killed[0]).unwrap().kill_sent_at = None;
        assert_eq!(kills(&s.tick_at(now)), killed);
    }

    #[test]
    fn unreachable_instances_are_replaced_and_the_surplus_killed_on_return() {
        let mut s = Services::new();
        s.put_app(
            app(json!({"id": "r", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16})),
            false,
        );
        launched(&s.offers(vec![offer("1", "h1", "cpus:4;mem:1024")]));
        run_all(&mut s);
        let first = s.instances.keys().next().unwrap().clone();
        s.update(&status(&first, TaskState::Unreachable));
        assert_eq!(s.live("/r").count(), 1);
        let replacement = launched(&s.offers(vec![offer("2", "h2", "cpus:4;mem:1024")]));
        assert_eq!(replacement.len(), 1);
        s.update(&status(&replacement[0].task_id, TaskState::Running));
        // The unreachable one comes back: one too many, one is killed.
        let acts = s.update(&status(&first, TaskState::Running));
        let kills = acts
            .iter()
            .filter(|a| matches!(a, Action::Kill { .. }))
            .count();
        assert_eq!(kills, 1);
        assert_eq!(s.live("/r").count(), 2);
    }

    #[test]
    fn a_config_change_rolls_within_the_strategy() {
        let mut s = Services::new();
        s.put_app(
            app(
                json!({"id": "roll", "cmd": "x", "instances": 4, "cpus": 0.1, "mem": 16,
            "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0}}),
            ),
            false,
        );
        launched(&s.offers(vec![offer("1", "h1", "cpus:8;mem:4096")]));
        run_all(&mut s);
        let mut a = s.apps["/roll"].app.clone();
        a.env.insert("V".into(), "2".into());
        let d = s.put_app(a, false).expect("a deployment");
        assert_eq!(d.previous.env.get("V"), None);
        // Kills are acknowledged (the task ends) as they are asked for.
        fn settle(s: &mut Services, mut acts: Vec<Action>) {
            while let Some(a) = acts.pop() {
                if let Action::Kill { task_id, .. } = a {
                    acts.extend(s.update(&status(&task_id, TaskState::Killed)));
                }
            }
        }
        // Never more than 4 instances in existence, never fewer than 2 running.
        for round in 0..20 {
            let acts = s.converge();
            settle(&mut s, acts);
            let existing = s.instances_of("/roll").count();
            let running = s
                .live("/roll")
                .filter(|i| i.state == TaskState::Running)
                .count();
            assert!(existing <= 4, "round {round}: {existing} instances");
            assert!(running >= 2, "round {round}: {running} running");
            let acts = s.offers(vec![offer(&format!("r{round}"), "h1", "cpus:8;mem:4096")]);
            assert!(
                s.instances_of("/roll").count() <= 4,
                "round {round}: over capacity after launches"
            );
            settle(&mut s, acts);
            let ids: Vec<String> = s
                .instances
                .values()
                .filter(|i| i.state != TaskState::Running)
                .map(|i| i.task_id.clone())
                .collect();
            for id in ids {
                let acts = s.update(&status(&id, TaskState::Running));
                settle(&mut s, acts);
            }
            if s.apps["/roll"].deployment.is_none() {
                break;
            }
        }
        assert!(s.apps["/roll"].deployment.is_none(), "deployment finished");
        let v = s.apps["/roll"].app.version.clone();
        assert_eq!(s.live("/roll").filter(|i| i.version == v).count(), 4);
        assert_eq!(s.live("/roll").count(), 4);
    }
}
