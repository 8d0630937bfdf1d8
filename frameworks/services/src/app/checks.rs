//! Health and readiness checks of a definition.

use super::fields::{Errors, Obj};
use super::{HealthCheck, HealthProtocol, ReadinessCheck};
use serde_json::Value;

/// Longest interval, timeout or grace period accepted, in seconds (a day).
pub(super) const MAX_CHECK_SECONDS: f64 = 86_400.0;

/// `healthChecks`; `ports` is how many ports each instance has.
pub(super) fn health_checks(o: &Obj, e: &mut Errors, ports: usize) -> Vec<HealthCheck> {
    let mut out = Vec::new();
    for (path, h) in o.array(e, "healthChecks") {
        let Some(h) = Obj::of(h, path.clone(), e) else {
            continue;
        };
        h.only(
            e,
            &[
                "protocol",
                "path",
                "portIndex",
                "command",
                "gracePeriodSeconds",
                "intervalSeconds",
                "timeoutSeconds",
                "maxConsecutiveFailures",
                "port",
                "delaySeconds",
                "ipProtocol",
                "ignoreHttp1xx",
            ],
        );
        h.unsupported(
            e,
            "port",
            |_| false,
            "name the port with portIndex (ports are assigned per instance)",
        );
        h.unsupported(
            e,
            "delaySeconds",
            |v| v.as_f64() == Some(0.0),
            "checks start at once; use gracePeriodSeconds to ignore early failures",
        );
        h.unsupported(e, "ipProtocol", |v| v == "IPv4", "checks use IPv4");
        h.unsupported(
            e,
            "ignoreHttp1xx",
            |v| v == &Value::Bool(false),
            "a 1xx answer is a failure",
        );
        let protocol = match h.string(e, "protocol").as_deref().unwrap_or("MESOS_HTTP") {
            // Marathon's scheduler-run HTTP/TCP checks run on the agent here.
            "MESOS_HTTP" | "HTTP" => HealthProtocol::MesosHttp,
            "MESOS_TCP" | "TCP" => HealthProtocol::MesosTcp,
            "COMMAND" => HealthProtocol::Command,
            other => {
                e.push(
                    &h.at("protocol"),
                    format!(
                        "unknown health check protocol {other:?} (MESOS_HTTP, MESOS_TCP or COMMAND)"
                    ),
                );
                continue;
            }
        };
        let command = match h.get("command") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(c)) => match c.get("value") {
                Some(Value::String(s)) if c.len() == 1 => s.clone(),
                _ => {
                    e.push(&h.at("command"), "must be {\"value\": \"<shell command>\"}");
                    String::new()
                }
            },
            Some(_) => {
                e.push(&h.at("command"), "must be {\"value\": \"<shell command>\"}");
                String::new()
            }
        };
        let check = HealthCheck {
            protocol,
            path: h.string(e, "path").unwrap_or_else(|| "/".into()),
            port_index: h.whole(e, "portIndex", 0, 0, 1023) as u32,
            command,
            grace_period_seconds: h.num(e, "gracePeriodSeconds", 300.0, 0.0, MAX_CHECK_SECONDS),
            interval_seconds: h.positive(e, "intervalSeconds", 60.0, MAX_CHECK_SECONDS),
            timeout_seconds: h.positive(e, "timeoutSeconds", 20.0, MAX_CHECK_SECONDS),
            max_consecutive_failures: h.whole(e, "maxConsecutiveFailures", 3, 0, 1_000_000) as u32,
        };
        if protocol == HealthProtocol::Command && check.command.is_empty() {
            e.push(&h.at("command"), "a COMMAND check needs a command");
        }
        if protocol != HealthProtocol::Command
            && h.get("portIndex").is_none_or(|v| v.is_u64())
            && (check.port_index as usize) >= ports
        {
            e.push(&h.at("portIndex"), "points past the app's ports");
        }
        out.push(check);
    }
    out
}

/// `readinessChecks`; `names` are the app's port names.
pub(super) fn readiness_checks(
    o: &Obj,
    e: &mut Errors,
    names: &std::collections::HashSet<String>,
) -> Vec<ReadinessCheck> {
    let list = o.array(e, "readinessChecks");
    if list.len() > 1 {
        e.push(
            &o.at("readinessChecks"),
            format!(
                "at most one readiness check per app (as in Marathon); {} given",
                list.len()
            ),
        );
    }
    let mut out = Vec::new();
    for (path, r) in list {
        let Some(r) = Obj::of(r, path, e) else {
            continue;
        };
        r.only(
            e,
            &[
                "name",
                "protocol",
                "path",
                "portName",
                "intervalSeconds",
                "timeoutSeconds",
                "httpStatusCodesForReady",
                "preserveLastResponse",
            ],
        );
        r.unsupported(
            e,
            "preserveLastResponse",
            |v| v == &Value::Bool(false),
            "responses are not kept",
        );
        let mut codes = Vec::new();
        for (p, c) in r.array(e, "httpStatusCodesForReady") {
            match c.as_u64().filter(|c| (100..=599).contains(c)) {
                Some(c) => codes.push(c as u16),
                None => e.push(&p, "must be an HTTP status code (100-599)"),
            }
        }
        if r.get("httpStatusCodesForReady").is_none() {
            codes.push(200);
        } else if codes.is_empty()
            && r.get("httpStatusCodesForReady")
                .is_some_and(|v| v.is_array())
        {
            e.push(
                &r.at("httpStatusCodesForReady"),
                "needs at least one status code",
            );
        }
        let check = ReadinessCheck {
            name: r
                .string(e, "name")
                .unwrap_or_else(|| "readinessCheck".into()),
            protocol: r.string(e, "protocol").unwrap_or_else(|| "HTTP".into()),
            path: r.string(e, "path").unwrap_or_else(|| "/".into()),
            port_name: r.string(e, "portName").unwrap_or_else(|| "http".into()),
            interval_seconds: r.positive(e, "intervalSeconds", 30.0, MAX_CHECK_SECONDS),
            timeout_seconds: r.positive(e, "timeoutSeconds", 10.0, MAX_CHECK_SECONDS),
            http_status_codes_for_ready: codes,
        };
        if check.protocol != "HTTP" {
            e.push(
                &r.at("protocol"),
                "only HTTP readiness checks are supported",
            );
        }
        if !names.contains(&check.port_name) {
            e.push(
                &r.at("portName"),
                format!("no port is named {:?}", check.port_name),
            );
        }
        out.push(check);
    }
    out
}
