//! Endpoint sets and draining: which instances take traffic for each app
//! port (published after every burst, for the apps that changed), and the
//! kill of a serving instance deferred until the routers have drained it.
//!
//! An instance the framework decides to kill while it serves (deployment
//! step, scale-down, app deletion, surplus, task kill) is *retired*: it is
//! marked killing (so it counts as on its way out: not serving capacity,
//! but against the over-capacity budget) and draining until a deadline
//! (`drainSeconds`). The mark is stored with the instance, so a restart
//! still kills it. Once its draining is published, its kill is sent as soon
//! as every drain participant (connected, or departed and not forgotten:
//! see `crate::endpoints`) acknowledged that version as drained, or at the
//! deadline; for a while after the framework starts (the routers are not
//! known yet), only at the deadline. An instance that does not serve (not
//! running, checks not passed) or whose app has no ports is killed at once.

use super::{Action, Instance, Services};
use crate::app::App;
use crate::endpoints::Drained;
use agora_core::endpoints::{
    Endpoint, EndpointKey, EndpointSet, EndpointState, InstanceFacts, PortMeta, Publisher, Update,
    endpoint_state,
};

/// How an app's instances drain: seconds at most, and what decides
/// whether one serves.
#[derive(Debug, Clone, Copy)]
pub(super) struct DrainPolicy {
    seconds: f64,
    health_checked: bool,
    readiness_checked: bool,
}

impl DrainPolicy {
    /// `None`: the app's instances are killed at once (no ports, so no
    /// router sends them anything, or `drainSeconds` 0).
    pub(super) fn of(app: &App) -> Option<DrainPolicy> {
        let seconds = app.drain_seconds();
        (seconds > 0.0 && app.host_ports_needed() > 0).then_some(DrainPolicy {
            seconds,
            health_checked: !app.health_checks.is_empty(),
            readiness_checked: !app.readiness_checks.is_empty(),
        })
    }
}

fn facts(i: &Instance, health_checked: bool, readiness_checked: bool) -> InstanceFacts {
    InstanceFacts {
        state: i.state,
        health_checked,
        healthy: i.healthy,
        readiness_checked,
        ready: i.ready,
        // Retired (draining) or killed and not ended yet.
        draining: i.killing,
    }
}

fn meta(p: &crate::app::AppPort, scale_to_zero: bool) -> PortMeta {
    PortMeta {
        name: (!p.name.is_empty()).then(|| p.name.clone()),
        protocol: p.protocol.clone(),
        service_port: (p.service_port != 0).then_some(p.service_port),
        public: p.labels.get("expose").is_some_and(|e| e == "public"),
        vhosts: p
            .labels
            .get("vhost")
            .map(|v| {
                v.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        path: p.labels.get("path").cloned(),
        labels: p.labels.clone(),
        scale_to_zero,
    }
}

impl Services {
    /// Marks an app as one its autoscaler may take to zero (or not): its
    /// endpoint sets are published again when that changes.
    pub fn set_scale_to_zero(&mut self, app_id: &str, on: bool) {
        let changed = if on {
            self.scale_to_zero.insert(app_id.to_string())
        } else {
            self.scale_to_zero.remove(app_id)
        };
        if changed {
            self.published.insert(app_id.to_string());
        }
    }

    /// An app's live instances that serve (running, past their health and
    /// readiness checks: what its endpoint sets list as serving), and how
    /// many more are live but do not serve yet (staging, starting, checks
    /// not passed). What the autoscaler counts as ready and not ready.
    pub fn readiness(&self, app_id: &str) -> (Vec<&Instance>, u32) {
        let Some(st) = self.apps.get(app_id) else {
            return (Vec::new(), 0);
        };
        let (hc, rc) = (
            !st.app.health_checks.is_empty(),
            !st.app.readiness_checks.is_empty(),
        );
        let mut ready = Vec::new();
        let mut not_ready = 0;
        for i in self.live(app_id) {
            if endpoint_state(&facts(i, hc, rc)) == Some(EndpointState::Serving) {
                ready.push(i);
            } else {
                not_ready += 1;
            }
        }
        (ready, not_ready)
    }

    /// The endpoint sets of an app now: one per port, each listing its
    /// running instances that serve or drain (see [`endpoint_state`]).
    /// None when the app is gone.
    pub fn endpoint_sets(&self, app_id: &str) -> Vec<EndpointSet> {
        let Some(st) = self.apps.get(app_id) else {
            return Vec::new();
        };
        let app = &st.app;
        let (hc, rc) = (
            !app.health_checks.is_empty(),
            !app.readiness_checks.is_empty(),
        );
        let members: Vec<(&Instance, EndpointState)> = self
            .instances_of(app_id)
            .filter_map(|i| endpoint_state(&facts(i, hc, rc)).map(|s| (i, s)))
            .collect();
        app.ports()
            .iter()
            .enumerate()
            .map(|(ix, p)| {
                let endpoints = members
                    .iter()
                    .filter_map(|(i, state)| {
                        i.ports.get(ix).map(|port| Endpoint {
                            task_id: i.task_id.clone(),
                            host: i.reach_host(),
                            port: *port,
                            state: *state,
                        })
                    })
                    .collect();
                let key = EndpointKey {
                    app_id: app_id.to_string(),
                    port_index: ix as u32,
                };
                EndpointSet::new(key, meta(p, self.scale_to_zero.contains(app_id)), endpoints)
            })
            .collect()
    }

    /// Publishes the sets of every app changed since the last call (cost:
    /// the instances of those apps), and notes on each newly draining
    /// instance the version that lists it so. Returns the updates made.
    pub fn publish(&mut self, p: &mut Publisher) -> Vec<Update> {
        let mut out = Vec::new();
        for id in std::mem::take(&mut self.published) {
            let sets = self.endpoint_sets(&id);
            if let Some(u) = p.publish_app(&id, sets) {
                out.push(u.clone());
            }
        }
        let v = p.version();
        let fresh: Vec<String> = self
            .drains
            .iter()
            .filter(|t| {
                self.instances
                    .get(*t)
                    .is_some_and(|i| i.drain_version.is_none())
            })
            .cloned()
            .collect();
        for t in fresh {
            // Not a stored field: no row to write.
            if let Some(i) = self.instances.get_mut(&t) {
                i.drain_version = Some(v);
            }
        }
        out
    }

    /// Kills an instance the framework no longer wants, or retires it when
    /// it serves traffic (see the module's doc). The kill, if sent now.
    pub(super) fn retire(
        &mut self,
        task_id: &str,
        now: f64,
        policy: Option<DrainPolicy>,
    ) -> Option<Action> {
        let i = self.instances.get(task_id)?;
        let serving = policy.filter(|p| {
            endpoint_state(&facts(i, p.health_checked, p.readiness_checked))
                == Some(EndpointState::Serving)
        });
        match serving {
            Some(p) => {
                tracing::info!(task_id, seconds = p.seconds, "draining before the kill");
                self.modify(task_id, |i| {
                    i.killing = true;
                    i.drain_until = Some(now + p.seconds);
                    i.drain_version = None;
                });
                None
            }
            // Also a draining instance killed again (e.g. by the task kill
            // API): now.
            None => self.modify(task_id, |i| {
                i.drain_until = None;
                i.drain_version = None;
                i.kill(now)
            }),
        }
    }

    /// Sends the kills of draining instances that are done: published as
    /// draining at a version every participant has drained (see
    /// [`Drained`]), or past their deadline.
    pub fn release_drains(&mut self, now: f64, drained: Drained) -> Vec<Action> {
        let done: Vec<String> = self
            .drains
            .iter()
            .filter(|t| {
                self.instances.get(*t).is_some_and(|i| {
                    i.drain_until.is_some_and(|d| now >= d)
                        || i.drain_version.is_some_and(|v| match drained {
                            Drained::Nobody => true,
                            Drained::Upto(d) => d >= v,
                            Drained::Unknown => false,
                        })
                })
            })
            .cloned()
            .collect();
        done.iter()
            .filter_map(|t| {
                tracing::info!(task_id = %t, "drained; killing");
                self.modify(t, |i| {
                    i.drain_until = None;
                    i.drain_version = None;
                    i.kill(now)
                })
            })
            .collect()
    }

    /// When the next drain ends at the latest (seconds since the epoch).
    pub fn next_drain_deadline(&self) -> Option<f64> {
        self.drains
            .iter()
            .filter_map(|t| self.instances.get(t).and_then(|i| i.drain_until))
            .min_by(f64::total_cmp)
    }

    /// Instances draining now (task ids).
    pub fn draining(&self) -> impl Iterator<Item = &String> {
        self.drains.iter()
    }
}
