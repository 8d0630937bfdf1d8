//! Upgrades of stored app rows written by earlier versions of the
//! framework, applied as the store loads them (the upgraded rows are
//! written back at once).
//!
//! **Port definitions.** Rows written before `portDefinitions[].port` meant
//! the service port (as in Marathon) stored each host-networking port as
//! `{"port": host port (0: any), "servicePort": service port (0 or absent:
//! unassigned)}`. Rows written now store the service port only, as
//! `servicePort`, and the app's `requirePorts`. An old row is recognised by
//! the `port` key and upgraded app by app so that running apps keep what
//! they depend on:
//!
//! - **every** port had a fixed host port: the app keeps them, through
//!   `requirePorts: true` with each `port` (service port) = that host port.
//!   A service port assigned earlier that differed is replaced (logged):
//!   Marathon cannot express a fixed host port other than the service port.
//! - otherwise (some or all ports took any host port): the service ports
//!   stay as they were (0: assigned from `--service-ports` at start), and
//!   host ports are any free ones; a fixed host port of such a mixed app is
//!   dropped (logged), as Marathon's `requirePorts` is all or nothing.

use serde_json::Value;

/// Upgrades an app row (an `AppState` as JSON: its `app` and its
/// deployment's `previous` definition) in place; `true` if it changed.
pub fn app_state(id: &str, row: &mut Value) -> bool {
    let mut changed = false;
    if let Some(app) = row.get_mut("app") {
        changed |= port_definitions(id, app);
    }
    if let Some(prev) = row
        .get_mut("deployment")
        .and_then(|d| d.get_mut("previous"))
    {
        changed |= port_definitions(id, prev);
    }
    changed
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Upgrades one stored app definition's `portDefinitions`.
fn port_definitions(id: &str, app: &mut Value) -> bool {
    let Some(defs) = app.get_mut("portDefinitions").and_then(Value::as_array_mut) else {
        return false;
    };
    if !defs.iter().any(|d| d.get("port").is_some()) {
        return false;
    }
    let all_fixed = defs.iter().all(|d| num(d, "port") != 0);
    for (i, d) in defs.iter_mut().enumerate() {
        let host = num(d, "port");
        let service = num(d, "servicePort");
        let new = if all_fixed {
            if service != 0 && service != host {
                tracing::warn!(app_id = %id, port = i, old_service_port = service, host_port = host,
                    "stored app upgraded: its fixed host port is kept with requirePorts, so the service port becomes the host port");
            }
            host
        } else {
            if host != 0 {
                tracing::warn!(app_id = %id, port = i, host_port = host,
                    "stored app upgraded: a fixed host port is dropped (not every port of the app was fixed, and requirePorts is all or nothing); the task takes any free port");
            }
            service
        };
        if let Some(o) = d.as_object_mut() {
            o.remove("port");
            o.insert("servicePort".into(), Value::from(new));
        }
    }
    if let Some(o) = app.as_object_mut() {
        o.insert("requirePorts".into(), Value::Bool(all_fixed));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::App;
    use serde_json::json;

    /// An app row as the store holds it, its port definitions replaced by
    /// `defs` (in the old form, in the tests below).
    fn stored(defs: Value) -> Value {
        let app = crate::app::parse_app(&json!({"id": "/a", "cmd": "x"})).unwrap();
        let st = crate::scheduler::AppState {
            app,
            delay: 0.0,
            next_launch_at: 0.0,
            waiting: None,
            deployment: None,
            last_task_failure: None,
        };
        let mut row = serde_json::to_value(&st).unwrap();
        row["app"]["portDefinitions"] = defs;
        row["app"].as_object_mut().unwrap().remove("requirePorts");
        row
    }

    fn upgrade(defs: Value) -> (bool, App) {
        let mut row = stored(defs);
        let changed = app_state("/a", &mut row);
        let st: crate::scheduler::AppState = serde_json::from_value(row).unwrap();
        (changed, st.app)
    }

    fn service_ports(app: &App) -> Vec<u32> {
        app.port_definitions.iter().map(|p| p.port).collect()
    }

    #[test]
    fn all_fixed_host_ports_are_kept_through_require_ports() {
        let (changed, app) = upgrade(json!([
            {"port": 8080, "servicePort": 10_000, "protocol": "tcp", "name": "http"},
            {"port": 8081, "protocol": "tcp"}]));
        assert!(changed);
        assert!(app.require_ports);
        assert_eq!(service_ports(&app), [8080, 8081]);
        assert_eq!(app.host_port_requests(), [Some(8080), Some(8081)]);
        assert_eq!(app.port_definitions[0].name, "http");
    }

    #[test]
    fn any_host_port_keeps_the_service_ports() {
        let (changed, app) = upgrade(json!([
            {"port": 0, "servicePort": 10_003, "protocol": "tcp"},
            {"port": 9000, "servicePort": 10_004, "protocol": "udp"},
            {"port": 0, "protocol": "tcp"}]));
        assert!(changed);
        assert!(!app.require_ports);
        assert_eq!(service_ports(&app), [10_003, 10_004, 0]);
        assert_eq!(app.host_port_requests(), [Some(0), Some(0), Some(0)]);
        assert_eq!(app.port_definitions[1].protocol, "udp");
    }

    #[test]
    fn current_rows_and_the_previous_definition() {
        // A row in the current format is left alone, and reads back as is.
        let mut row = stored(json!([{"servicePort": 10_001, "protocol": "tcp"}]));
        row["app"]["requirePorts"] = json!(true);
        let before = row.clone();
        assert!(!app_state("/a", &mut row));
        assert_eq!(row, before);
        let st: crate::scheduler::AppState = serde_json::from_value(row.clone()).unwrap();
        assert_eq!(service_ports(&st.app), [10_001]);
        assert!(st.app.require_ports);
        // What is written now reads back the same.
        let again: crate::scheduler::AppState =
            serde_json::from_value(serde_json::to_value(&st).unwrap()).unwrap();
        assert_eq!(again, st);
        // A deployment's previous definition is upgraded too.
        let mut row = stored(json!([{"port": 0, "servicePort": 10_002, "protocol": "tcp"}]));
        let mut prev = row["app"].clone();
        prev["portDefinitions"] = json!([{"port": 7000, "servicePort": 10_002, "protocol": "tcp"}]);
        row["deployment"] = json!({"id": "d", "app_id": "/a", "version": "v1",
            "previous": prev, "started_at": 0.0, "steps": []});
        assert!(app_state("/a", &mut row));
        assert_eq!(row["deployment"]["previous"]["requirePorts"], true);
        assert_eq!(
            row["deployment"]["previous"]["portDefinitions"][0]["servicePort"],
            7000
        );
        assert_eq!(row["app"]["portDefinitions"][0]["servicePort"], 10_002);
        assert!(row["app"]["portDefinitions"][0].get("port").is_none());
    }
}
