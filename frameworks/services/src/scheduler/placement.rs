//! Placement: matching offers against apps' resources, ports and
//! constraints, and saying why an app waits.

use super::task;
use super::{Action, Instance, Services, now_s};
use crate::app::{App, Constraint, Operator};
use agora_core::{Resources, TaskState};
use agora_sdk::Offer;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Default)]
pub(super) struct Rejections {
    pub(super) resources: usize,
    pub(super) ports: usize,
    /// Offers whose role is not in the app's `acceptedResourceRoles`.
    pub(super) roles: usize,
    pub(super) constraint: Option<String>,
    pub(super) largest: Option<Resources>,
}

impl Services {
    /// Live instances of the app's current version.
    pub(super) fn have(&self, app_id: &str) -> usize {
        self.index.get(app_id).map_or(0, |ix| ix.live_new.len())
    }

    /// Decides what to do with offers.
    pub fn offers(&mut self, offers: Vec<Offer>) -> Vec<Action> {
        let _g = tracing::info_span!("offers", offers = offers.len()).entered();
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
                    let rej = rejections.entry(id.clone()).or_default();
                    if !st.app.accepted_resource_roles.contains(&offer.role) {
                        rej.roles += 1;
                        break;
                    }
                    let app = st.app.clone();
                    let Some((used, ports)) = fit(&app, &offer, &left, rej) else {
                        break;
                    };
                    if let Some(why) = self.constraint_violation(&app, &offer) {
                        rej.constraint = Some(why);
                        break;
                    }
                    let task = task::build(&app, &offer, &used, &ports);
                    left = left.checked_sub(&used).unwrap_or_default();
                    self.seq += 1;
                    self.insert_instance(Instance {
                        task_id: task.task_id.clone(),
                        app_id: app.id.clone(),
                        version: app.version.clone(),
                        agent_id: offer.agent_id.0.clone(),
                        host: offer.hostname.clone(),
                        address: offer.address,
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
                        drain_until: None,
                        drain_version: None,
                    });
                    tracing::debug!(app_id = %id, task_id = %task.task_id, agent_id = %offer.agent_id, "placed");
                    self.step(id, format!("launch {}", task.task_id));
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

    /// After SUBSCRIBED: the master has just un-suppressed the framework
    /// (Mesos v1), so the next `converge` suppresses again if nothing
    /// needs offers, and needs no revive otherwise.
    pub fn reset_offer_state(&mut self) {
        self.suppressed = false;
    }

    /// A SUPPRESS or REVIVE call failed: the master's view did not change,
    /// so the next `converge` (every tick at least) sends it again instead
    /// of waiting for offers that will not come.
    pub fn offer_call_failed(&mut self, action: &Action) {
        match action {
            Action::Revive => self.suppressed = true,
            Action::Suppress => self.suppressed = false,
            _ => {}
        }
    }
}

/// What one instance of `app` takes from `left` (what remains of `offer`),
/// if it fits: (resources with the host ports chosen, those ports in the
/// app's port order). A miss is counted in `rej`.
fn fit(
    app: &App,
    offer: &Offer,
    left: &Resources,
    rej: &mut Rejections,
) -> Option<(Resources, Vec<u32>)> {
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
    // Ports: fixed host ports (a bridge hostPort, or a host-networking
    // port with requirePorts) must be free; 0 takes any free one.
    let mut free = left.ports.clone();
    let mut ports = Vec::new();
    for want in app.host_port_requests() {
        let p = match want {
            None => None,
            Some(0) => free.ranges().first().map(|(b, _)| *b),
            Some(want) => free.contains_value(want).then_some(want),
        };
        let Some(p) = p else {
            rej.ports += 1;
            return None;
        };
        free = free.difference(&agora_core::Ranges::range(p, p).ok()?);
        ports.push(p);
    }
    need.ports = agora_core::Ranges::from_ranges(ports.iter().map(|p| (*p, *p))).ok()?;
    Some((need, ports))
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
    if r.roles > 0 {
        return format!(
            "no offer of an accepted role: acceptedResourceRoles is [{}] ({} offer(s) of other roles declined); {have} of {want} placed",
            app.accepted_resource_roles
                .iter()
                .map(|r| format!("\"{r}\""))
                .collect::<Vec<_>>()
                .join(", "),
            r.roles
        );
    }
    format!("waiting for offers; {have} of {want} placed")
}
