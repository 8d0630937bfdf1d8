//! Endpoint sets: which instances of each app port take traffic, versioned
//! so that discovery (DNS, the HTTP API) and the routers can follow them as a
//! stream — one full snapshot, then deltas.
//!
//! The services framework is the source of truth. It decides for every
//! instance whether it serves ([`endpoint_state`]), publishes the sets of an
//! app whenever they change ([`Publisher::publish_app`]), and subscribers keep
//! a [`View`] that applies the updates in order. Every publication that
//! changes something is one new version; a subscriber that misses a version
//! (a gap) asks for a snapshot again instead of guessing.
//!
//! Nothing here does IO: the framework wraps a [`Publisher`] in its actor and
//! streams [`Update`]s; routers and the DNS server hold a [`View`].

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::task::TaskState;

/// One port of one app: the unit of discovery and routing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointKey {
    /// The app's absolute id, e.g. `/demo/web`.
    pub app_id: String,
    /// The port's index in the app's port list.
    pub port_index: u32,
}

/// Whether an endpoint takes new requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    /// Running, healthy and ready: routers send it new requests.
    Serving,
    /// About to be killed: no new requests; requests in flight finish.
    Draining,
}

/// One instance's address for one app port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub task_id: String,
    /// The agent's address (host name or IP) the port is bound on.
    pub host: String,
    /// The host port.
    pub port: u32,
    pub state: EndpointState,
}

/// What is known of an app port besides its instances.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMeta {
    /// The port's name (`http`), if the app names it.
    pub name: Option<String>,
    /// `tcp` or `udp` (Marathon's `protocol`).
    pub protocol: String,
    /// The cluster-wide port internal routers listen on for this app port
    /// (Marathon's `servicePort`).
    pub service_port: Option<u32>,
    /// Served by edge routers (port label `expose: public`); otherwise
    /// reachable only inside the cluster.
    pub public: bool,
    /// Virtual hosts the edge router routes to this port (port label
    /// `vhost`, comma-separated).
    pub vhosts: Vec<String>,
    /// Path prefix routed to this port (port label `path`; `/` when unset).
    pub path: Option<String>,
    /// Every label of the port as the app gives it.
    pub labels: BTreeMap<String, String>,
    /// The app may be scaled to zero by its autoscaler (`min: 0`): a
    /// router with no serving endpoint for this port holds new requests
    /// (connections, for TCP) and reports them as `held` in a
    /// [`LoadReport`] at once, so that the framework wakes the app; they
    /// are forwarded when the first instance serves (see
    /// docs/autoscaling.md). Without it, no endpoint means 503 at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scale_to_zero: bool,
}

/// What one router measured for the app ports it routes, posted to the
/// framework (`POST /v1/endpoints/load`) about once a second, and at once
/// when it starts holding a request for a port with no serving endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadReport {
    /// The router's id (the same as `router=` on its endpoint stream).
    pub router: String,
    /// The sliding window the rates and latencies are computed over, in
    /// milliseconds.
    pub window_ms: u64,
    /// One entry per app port the router routes to (ports it saw no
    /// request for in the window may be left out).
    pub sets: Vec<SetLoad>,
}

/// One app port's load as one router saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetLoad {
    pub key: EndpointKey,
    /// Requests (connections, for TCP) that completed in the window.
    pub requests: u64,
    /// `requests` per second of window.
    pub rps: f64,
    /// Requests in flight to the port's endpoints now.
    pub in_flight: u64,
    /// Latency percentiles over the window in milliseconds (`None`: no
    /// request completed in it; TCP ports report none).
    #[serde(default)]
    pub latency_p50_ms: Option<f64>,
    #[serde(default)]
    pub latency_p95_ms: Option<f64>,
    /// Requests held now because the port has no serving endpoint
    /// ([`PortMeta::scale_to_zero`]); more than zero asks for a wake.
    #[serde(default)]
    pub held: u64,
}

/// The endpoints of one app port, sorted by task id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSet {
    pub key: EndpointKey,
    pub meta: PortMeta,
    pub endpoints: Vec<Endpoint>,
}

impl EndpointSet {
    /// Builds a set, sorting its endpoints so that equal sets compare equal.
    pub fn new(key: EndpointKey, meta: PortMeta, mut endpoints: Vec<Endpoint>) -> EndpointSet {
        endpoints.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        EndpointSet {
            key,
            meta,
            endpoints,
        }
    }

    /// The endpoints taking new requests.
    pub fn serving(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints
            .iter()
            .filter(|e| e.state == EndpointState::Serving)
    }
}

/// What the framework knows of an instance that decides whether it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceFacts {
    pub state: TaskState,
    /// The app has health checks.
    pub health_checked: bool,
    /// The last health result, if any.
    pub healthy: Option<bool>,
    /// The app has a readiness check.
    pub readiness_checked: bool,
    /// The readiness check passed, if it ran.
    pub ready: Option<bool>,
    /// The framework is about to kill the instance.
    pub draining: bool,
}

/// Whether an instance belongs in its app's endpoint sets, and how.
///
/// Only running instances are listed. An instance the framework is about to
/// kill is listed as draining while it still runs (so routers stop sending
/// it new requests and let the ones in flight finish). Otherwise it serves
/// once every check the app has passed: health when the app has health
/// checks, readiness when it has a readiness check. An instance whose checks
/// have not passed yet is not listed at all.
pub fn endpoint_state(f: &InstanceFacts) -> Option<EndpointState> {
    if f.state != TaskState::Running {
        return None;
    }
    if f.draining {
        return Some(EndpointState::Draining);
    }
    if f.health_checked && f.healthy != Some(true) {
        return None;
    }
    if f.readiness_checked && f.ready != Some(true) {
        return None;
    }
    Some(EndpointState::Serving)
}

/// One change to the sets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "op")]
pub enum Change {
    /// The set is now this (created or changed).
    Put { set: EndpointSet },
    /// The app port is gone (app deleted or port removed).
    Remove { key: EndpointKey },
}

/// The changes that lead from `version - 1` to `version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub version: u64,
    pub changes: Vec<Change>,
}

/// Every set at one version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u64,
    pub sets: Vec<EndpointSet>,
}

/// Updates kept so that a subscriber that fell a little behind catches up
/// without a snapshot.
pub const DEFAULT_HISTORY: usize = 1024;

/// The framework's side: the current sets, their version and recent updates.
#[derive(Debug)]
pub struct Publisher {
    version: u64,
    sets: BTreeMap<EndpointKey, EndpointSet>,
    history: VecDeque<Update>,
    history_cap: usize,
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher::new(DEFAULT_HISTORY)
    }
}

impl Publisher {
    /// A publisher keeping the last `history_cap` updates (at least one).
    pub fn new(history_cap: usize) -> Publisher {
        Publisher {
            version: 0,
            sets: BTreeMap::new(),
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
        }
    }

    /// The current version (0 before anything was published).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Replaces every set of `app_id` by `sets` (sets of other apps in it
    /// are ignored). Returns the update when something changed; publishing
    /// the same sets again changes nothing and makes no version.
    pub fn publish_app(&mut self, app_id: &str, sets: Vec<EndpointSet>) -> Option<&Update> {
        let mut fresh: BTreeMap<EndpointKey, EndpointSet> = sets
            .into_iter()
            .filter(|s| s.key.app_id == app_id)
            .map(|s| {
                let s = EndpointSet::new(s.key, s.meta, s.endpoints);
                (s.key.clone(), s)
            })
            .collect();
        let mut changes = Vec::new();
        let old: Vec<EndpointKey> = self.app_keys(app_id).cloned().collect();
        for key in old {
            match fresh.remove(&key) {
                Some(set) if self.sets.get(&key) == Some(&set) => {}
                Some(set) => {
                    self.sets.insert(key, set.clone());
                    changes.push(Change::Put { set });
                }
                None => {
                    self.sets.remove(&key);
                    changes.push(Change::Remove { key });
                }
            }
        }
        for (key, set) in fresh {
            self.sets.insert(key, set.clone());
            changes.push(Change::Put { set });
        }
        self.record(changes)
    }

    /// Removes every set of `app_id` (the app is gone).
    pub fn remove_app(&mut self, app_id: &str) -> Option<&Update> {
        self.publish_app(app_id, Vec::new())
    }

    fn app_keys<'a>(&'a self, app_id: &'a str) -> impl Iterator<Item = &'a EndpointKey> + 'a {
        let from = EndpointKey {
            app_id: app_id.to_string(),
            port_index: 0,
        };
        self.sets
            .range(from..)
            .map(|(k, _)| k)
            .take_while(move |k| k.app_id == app_id)
    }

    fn record(&mut self, changes: Vec<Change>) -> Option<&Update> {
        if changes.is_empty() {
            return None;
        }
        self.version += 1;
        if self.history.len() == self.history_cap {
            self.history.pop_front();
        }
        self.history.push_back(Update {
            version: self.version,
            changes,
        });
        self.history.back()
    }

    /// Every set now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.version,
            sets: self.sets.values().cloned().collect(),
        }
    }

    /// The sets of one app now.
    pub fn app(&self, app_id: &str) -> Vec<&EndpointSet> {
        self.app_keys(app_id).map(|k| &self.sets[k]).collect()
    }

    /// The updates after `version`, if they are all still kept; `None`
    /// means the subscriber must start again from a snapshot.
    pub fn since(&self, version: u64) -> Option<Vec<Update>> {
        if version > self.version {
            return None;
        }
        if version == self.version {
            return Some(Vec::new());
        }
        let first = self.history.front()?.version;
        if version + 1 < first {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|u| u.version > version)
                .cloned()
                .collect(),
        )
    }
}

/// An update that does not follow the view's version: the subscriber
/// missed some and must take a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("endpoint update {got} does not follow version {have}: take a snapshot again")]
pub struct Gap {
    pub have: u64,
    pub got: u64,
}

/// A subscriber's copy of the sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    version: u64,
    sets: BTreeMap<EndpointKey, EndpointSet>,
}

impl View {
    /// A view starting from a snapshot.
    pub fn from_snapshot(s: Snapshot) -> View {
        View {
            version: s.version,
            sets: s.sets.into_iter().map(|s| (s.key.clone(), s)).collect(),
        }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Applies the next update. An update already applied (version not
    /// above the view's) is ignored; one that skips a version is a [`Gap`]
    /// and changes nothing.
    pub fn apply(&mut self, u: &Update) -> Result<(), Gap> {
        if u.version <= self.version {
            return Ok(());
        }
        if u.version != self.version + 1 {
            return Err(Gap {
                have: self.version,
                got: u.version,
            });
        }
        for c in &u.changes {
            match c {
                Change::Put { set } => {
                    self.sets.insert(set.key.clone(), set.clone());
                }
                Change::Remove { key } => {
                    self.sets.remove(key);
                }
            }
        }
        self.version = u.version;
        Ok(())
    }

    pub fn get(&self, key: &EndpointKey) -> Option<&EndpointSet> {
        self.sets.get(key)
    }

    pub fn sets(&self) -> impl Iterator<Item = &EndpointSet> {
        self.sets.values()
    }
}

/// The DNS name of an app in `domain`: its path segments reversed, so
/// `/demo/web` in `agora` is `web.demo.agora`. `None` when the id cannot
/// be a DNS name without ambiguity: a segment holding a dot (`/a.b` would
/// collide with `/b/a`), a label over 63 bytes, or a name over 253.
pub fn dns_name(app_id: &str, domain: &str) -> Option<String> {
    let domain = domain.trim_matches('.');
    let segs: Vec<&str> = app_id.trim_start_matches('/').split('/').collect();
    if segs.iter().any(|s| !dns_label(s)) || domain.is_empty() {
        return None;
    }
    let mut name: Vec<&str> = segs.into_iter().rev().collect();
    name.push(domain);
    let name = name.join(".");
    (name.len() <= 253).then_some(name)
}

/// The SRV owner name of an app port: `_<port name>._<protocol>.<app name>`,
/// or `_<port index>…` when the port has no name.
pub fn srv_name(app_name: &str, meta: &PortMeta, port_index: u32) -> String {
    let port = match &meta.name {
        Some(n) => n.clone(),
        None => port_index.to_string(),
    };
    let proto = if meta.protocol.is_empty() {
        "tcp"
    } else {
        meta.protocol.as_str()
    };
    format!("_{port}._{proto}.{app_name}")
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests;
