//! Service ports and virtual hosts: cluster-wide names an app claims, so
//! they are checked against every other app. A service port (a port
//! mapping's `servicePort`, a port definition's `port`) of 0 is
//! assigned from the framework's range (kept across versions of the app);
//! a given one must be free; two apps may not claim the same virtual host
//! and path.

use super::Services;
use crate::app::{App, FieldError};
use std::collections::{BTreeMap, BTreeSet};

/// The default `--service-ports` range.
pub const DEFAULT_SERVICE_PORTS: (u32, u32) = (10_000, 20_000);

/// The JSON pointer of the service port of an app's port `i`.
fn service_port_path(app: &App, i: usize) -> String {
    match app.network {
        crate::app::NetworkMode::Bridge => format!("{}/servicePort", port_path(app, i)),
        crate::app::NetworkMode::Host => format!("{}/port", port_path(app, i)),
    }
}

/// The JSON pointer of an app's port `i`.
fn port_path(app: &App, i: usize) -> String {
    match app.network {
        crate::app::NetworkMode::Bridge => format!("/container/portMappings/{i}"),
        crate::app::NetworkMode::Host => format!("/portDefinitions/{i}"),
    }
}

fn push(errs: &mut Vec<FieldError>, path: String, msg: String) {
    match errs.iter_mut().find(|e| e.path == path) {
        Some(e) => e.errors.push(msg),
        None => errs.push(FieldError {
            path,
            errors: vec![msg],
        }),
    }
}

/// `(vhost, path)` pairs an app's ports claim (vhosts lowercased, path
/// `/` when unset), with the port index.
fn routes(app: &App) -> Vec<((String, String), usize)> {
    let mut out = Vec::new();
    for (i, p) in app.ports().iter().enumerate() {
        let Some(v) = p.labels.get("vhost") else {
            continue;
        };
        let path = p.labels.get("path").cloned().unwrap_or_else(|| "/".into());
        for h in v.split(',').map(|h| h.trim().to_ascii_lowercase()) {
            out.push(((h, path.clone()), i));
        }
    }
    out
}

impl Services {
    /// Sets the range service ports are assigned from.
    pub fn set_service_ports(&mut self, first: u32, last: u32) {
        self.service_ports = Some((first.min(last), first.max(last)));
    }

    /// Assigns the service ports left at 0 in stored apps (apps stored
    /// before service ports existed). Rows to store are marked.
    pub fn assign_missing_service_ports(&mut self) {
        let ids: Vec<String> = self
            .apps
            .values()
            .filter(|st| st.app.ports().iter().any(|p| p.service_port == 0))
            .map(|st| st.app.id.clone())
            .collect();
        for id in ids {
            let Some(mut app) = self.apps.get(&id).map(|st| st.app.clone()) else {
                continue;
            };
            match self.claim_ports(&mut app) {
                Ok(()) => {
                    if let Some(st) = self.app_mut(&id) {
                        st.app
                            .service_ports_mut()
                            .into_iter()
                            .zip(app.ports())
                            .for_each(|(sp, p)| *sp = p.service_port);
                    }
                }
                Err(e) => {
                    tracing::warn!(app_id = %id, problems = ?e, "cannot assign service ports")
                }
            }
        }
    }

    fn service_port_range(&self) -> (u32, u32) {
        self.service_ports.unwrap_or(DEFAULT_SERVICE_PORTS)
    }

    /// Checks the cluster-wide claims of `app` against every other app and
    /// assigns its service ports left at 0: the one its current version
    /// has for the same port, if any, else the lowest free one in the
    /// range. `Err` names every conflict (and the app holding the claim).
    pub fn claim_ports(&self, app: &mut App) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        let mut held: BTreeMap<u32, String> = BTreeMap::new();
        let mut vhosts: BTreeMap<(String, String), String> = BTreeMap::new();
        for (id, st) in &self.apps {
            if *id == app.id {
                continue;
            }
            for p in st.app.ports() {
                if p.service_port != 0 {
                    held.insert(p.service_port, id.clone());
                }
            }
            for (r, _) in routes(&st.app) {
                vhosts.insert(r, id.clone());
            }
        }
        // Given ones: free, and not twice in this app.
        let mut mine = BTreeSet::new();
        for (i, p) in app.ports().iter().enumerate() {
            let sp = p.service_port;
            if sp == 0 {
                continue;
            }
            if let Some(other) = held.get(&sp) {
                push(
                    &mut errs,
                    service_port_path(app, i),
                    format!("service port {sp} is held by app {other}"),
                );
            } else if !mine.insert(sp) {
                push(
                    &mut errs,
                    service_port_path(app, i),
                    format!("service port {sp} is given twice in {}", app.id),
                );
            }
        }
        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (r, i) in routes(app) {
            let path = format!("{}/labels/vhost", port_path(app, i));
            if let Some(other) = vhosts.get(&r) {
                push(
                    &mut errs,
                    path,
                    format!(
                        "virtual host {} with path {} is claimed by app {other} as well as by {}",
                        r.0, r.1, app.id
                    ),
                );
            } else if let Some(j) = seen.insert(r.clone(), i).filter(|j| *j != i) {
                push(
                    &mut errs,
                    path,
                    format!(
                        "virtual host {} with path {} is claimed by ports {j} and {i} of {}",
                        r.0, r.1, app.id
                    ),
                );
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        // Assign the missing ones: the current version's first.
        let before: Vec<u32> = self
            .apps
            .get(&app.id)
            .map(|st| st.app.ports().iter().map(|p| p.service_port).collect())
            .unwrap_or_default();
        let taken = |p: u32, mine: &BTreeSet<u32>| held.contains_key(&p) || mine.contains(&p);
        let (first, last) = self.service_port_range();
        let mut next = first;
        let id = app.id.clone();
        for (i, sp) in app.service_ports_mut().into_iter().enumerate() {
            if *sp != 0 {
                continue;
            }
            if let Some(&b) = before.get(i).filter(|b| **b != 0 && !taken(**b, &mine)) {
                *sp = b;
                mine.insert(b);
                continue;
            }
            while next <= last && taken(next, &mine) {
                next += 1;
            }
            if next > last {
                push(
                    &mut errs,
                    "/".into(),
                    format!(
                        "no free service port left in the range {first}-{last} for {id} (give the service ports, or widen --service-ports)"
                    ),
                );
                break;
            }
            *sp = next;
            mine.insert(next);
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}
