//! Parsing and validating a Marathon-style app definition, field by field.

use super::*;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

struct V<'a> {
    obj: &'a Map<String, Value>,
    errs: Vec<FieldError>,
}

impl<'a> V<'a> {
    fn err(&mut self, path: &str, msg: impl Into<String>) {
        push(&mut self.errs, path, msg);
    }

    fn num(&mut self, key: &str, default: f64, min: f64, max: f64) -> f64 {
        match self.obj.get(key) {
            None | Some(Value::Null) => default,
            Some(Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if !(min..=max).contains(&x) {
                    self.err(
                        &format!("/{key}"),
                        format!("must be between {min} and {max}, got {x}"),
                    );
                }
                x
            }
            Some(_) => {
                self.err(&format!("/{key}"), "must be a number");
                default
            }
        }
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.err(&format!("/{key}"), "must be a string");
                None
            }
        }
    }

    fn string_map(&mut self, key: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match self.obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        Value::Object(o) if key == "env" && o.contains_key("secret") => {
                            self.err(
                                &format!("/{key}/{k}"),
                                "secret references are not supported yet; use a plain value",
                            );
                        }
                        _ => self.err(&format!("/{key}/{k}"), "must be a string"),
                    }
                }
            }
            Some(_) => self.err(&format!("/{key}"), "must be an object of strings"),
        }
        out
    }
}

fn push(errs: &mut Vec<FieldError>, path: &str, msg: impl Into<String>) {
    match errs.iter_mut().find(|e| e.path == path) {
        Some(e) => e.errors.push(msg.into()),
        None => errs.push(FieldError {
            path: path.into(),
            errors: vec![msg.into()],
        }),
    }
}

/// Normalises and checks an app id: absolute, `/`-separated segments of
/// lowercase letters, digits, `-` and `.`.
pub fn normalize_id(raw: &str) -> Result<String, String> {
    let id = if raw.starts_with('/') {
        raw.to_string()
    } else {
        format!("/{raw}")
    };
    let id = id.trim_end_matches('/').to_string();
    if id.is_empty() || id == "/" {
        return Err("must name the app, e.g. /shop/web".into());
    }
    for seg in id[1..].split('/') {
        if seg.is_empty() {
            return Err(format!("{raw:?} has an empty path segment"));
        }
        let ok = seg
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && seg
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && seg
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok || seg == "." || seg == ".." {
            return Err(format!(
                "segment {seg:?} must be lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
            ));
        }
    }
    if id.len() > 200 {
        return Err("is longer than 200 characters".into());
    }
    Ok(id)
}

pub(super) fn parse_constraint(
    v: &Value,
    path: &str,
    errs: &mut Vec<FieldError>,
) -> Option<Constraint> {
    let Some(arr) = v.as_array() else {
        push(
            errs,
            path,
            "a constraint is [field, operator] or [field, operator, value]",
        );
        return None;
    };
    let strs: Vec<Option<&str>> = arr.iter().map(|x| x.as_str()).collect();
    if !(2..=3).contains(&arr.len()) || strs.iter().any(|s| s.is_none()) {
        push(
            errs,
            path,
            "a constraint is [field, operator] or [field, operator, value] of strings",
        );
        return None;
    }
    let field = strs[0].unwrap_or_default().to_string();
    let op = match strs[1].unwrap_or_default() {
        "UNIQUE" => Operator::Unique,
        "CLUSTER" => Operator::Cluster,
        "GROUP_BY" => Operator::GroupBy,
        "LIKE" => Operator::Like,
        "UNLIKE" => Operator::Unlike,
        "MAX_PER" => Operator::MaxPer,
        "IS" => Operator::Is,
        other => {
            push(
                errs,
                path,
                format!(
                    "unknown operator {other:?} (use UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER or IS)"
                ),
            );
            return None;
        }
    };
    let value = strs.get(2).copied().flatten().map(str::to_string);
    let needs_value = matches!(
        op,
        Operator::Like | Operator::Unlike | Operator::MaxPer | Operator::Is
    );
    if needs_value && value.is_none() {
        push(
            errs,
            path,
            format!("{} needs a value", strs[1].unwrap_or_default()),
        );
        return None;
    }
    if op == Operator::MaxPer
        && value
            .as_deref()
            .and_then(|v| v.parse::<u32>().ok())
            .is_none_or(|n| n == 0)
    {
        push(errs, path, "MAX_PER needs a positive integer value");
        return None;
    }
    if matches!(op, Operator::GroupBy)
        && value.as_deref().is_some_and(|v| v.parse::<u32>().is_err())
    {
        push(errs, path, "GROUP_BY takes an optional number of groups");
        return None;
    }
    Some(Constraint {
        field,
        operator: op,
        value,
    })
}

/// Parses and validates a Marathon-style app definition. `Err` lists every
/// problem found.
pub fn parse_app(v: &Value) -> Result<App, Vec<FieldError>> {
    let Some(obj) = v.as_object() else {
        return Err(vec![FieldError {
            path: "/".into(),
            errors: vec!["an app definition is a JSON object".into()],
        }]);
    };
    let mut x = V {
        obj,
        errs: Vec::new(),
    };
    let id = match x.string("id") {
        None => {
            x.err("/id", "is required");
            String::new()
        }
        Some(raw) => match normalize_id(&raw) {
            Ok(id) => id,
            Err(e) => {
                x.err("/id", e);
                String::new()
            }
        },
    };
    let cmd = x.string("cmd");
    let args: Vec<String> = match obj.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.iter().all(|s| s.is_string()) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            x.err("/args", "must be an array of strings");
            Vec::new()
        }
    };
    if cmd.is_some() && !args.is_empty() {
        x.err("/cmd", "give either cmd or args, not both");
    }
    let instances = x.num("instances", 1.0, 0.0, 10_000.0);
    if instances.fract() != 0.0 {
        x.err("/instances", "must be a whole number");
    }
    let cpus = x.num("cpus", 1.0, 0.001, 1024.0);
    let mem = x.num("mem", 128.0, 1.0, 4_194_304.0);
    let disk = x.num("disk", 0.0, 0.0, 1e9);
    let env = x.string_map("env");
    let labels = x.string_map("labels");
    for k in env.keys() {
        if k.is_empty()
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || k.starts_with(|c: char| c.is_ascii_digit())
        {
            x.err(
                &format!("/env/{k}"),
                "variable names are letters, digits and _, not starting with a digit",
            );
        }
    }

    // container
    let mut image = None;
    let mut port_mappings = Vec::new();
    if let Some(c) = obj.get("container").filter(|c| !c.is_null()) {
        match c.as_object() {
            None => x.err("/container", "must be an object"),
            Some(c) => {
                let ty = c.get("type").and_then(|t| t.as_str()).unwrap_or("DOCKER");
                if ty != "DOCKER" && ty != "MESOS" {
                    x.err(
                        "/container/type",
                        format!("unknown container type {ty:?} (DOCKER or MESOS)"),
                    );
                }
                match c.get("docker").and_then(|d| d.get("image")) {
                    Some(Value::String(i)) if !i.trim().is_empty() => image = Some(i.clone()),
                    Some(_) => x.err("/container/docker/image", "must be a non-empty string"),
                    None if ty == "DOCKER" => x.err(
                        "/container/docker/image",
                        "is required for a DOCKER container",
                    ),
                    None => {}
                }
                let pm = c
                    .get("portMappings")
                    .or_else(|| c.get("docker").and_then(|d| d.get("portMappings")));
                if let Some(pm) = pm.filter(|p| !p.is_null()) {
                    match pm.as_array() {
                        None => x.err("/container/portMappings", "must be an array"),
                        Some(list) => {
                            for (i, p) in list.iter().enumerate() {
                                let path = format!("/container/portMappings/{i}");
                                let port = |k: &str| {
                                    p.get(k).and_then(|v| v.as_u64()).filter(|n| *n <= 65535)
                                };
                                let container_port = port("containerPort").unwrap_or(0) as u32;
                                if p.get("containerPort").is_some()
                                    && port("containerPort").is_none()
                                {
                                    x.err(
                                        &format!("{path}/containerPort"),
                                        "must be a port number 0-65535",
                                    );
                                }
                                if p.get("hostPort").is_some() && port("hostPort").is_none() {
                                    x.err(
                                        &format!("{path}/hostPort"),
                                        "must be a port number 0-65535",
                                    );
                                }
                                let protocol = p
                                    .get("protocol")
                                    .and_then(|v| v.as_str())
                                    .unwrap_or("tcp")
                                    .to_string();
                                if protocol != "tcp" && protocol != "udp" {
                                    x.err(&format!("{path}/protocol"), "must be tcp or udp");
                                }
                                port_mappings.push(PortMapping {
                                    container_port,
                                    host_port: port("hostPort").unwrap_or(0) as u32,
                                    name: p
                                        .get("name")
                                        .and_then(|v| v.as_str())
                                        .unwrap_or_default()
                                        .to_string(),
                                    protocol,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    if cmd.is_none() && args.is_empty() && image.is_none() {
        x.err("/cmd", "give a cmd, args, or a container image");
    }

    // networks
    let network = match obj
        .get("networks")
        .and_then(|n| n.as_array())
        .and_then(|a| a.first())
    {
        None => {
            if port_mappings.is_empty() {
                NetworkMode::Host
            } else {
                NetworkMode::Bridge
            }
        }
        Some(n) => match n.get("mode").and_then(|m| m.as_str()) {
            Some("host") => NetworkMode::Host,
            Some("container/bridge") => NetworkMode::Bridge,
            other => {
                x.err(
                    "/networks/0/mode",
                    format!("unknown network mode {other:?} (host or container/bridge)"),
                );
                NetworkMode::Host
            }
        },
    };
    if network == NetworkMode::Bridge && image.is_none() {
        x.err("/networks", "bridge networking needs a DOCKER container");
    }

    // portDefinitions (host networking)
    let mut port_definitions = Vec::new();
    if let Some(pd) = obj.get("portDefinitions").filter(|p| !p.is_null()) {
        match pd.as_array() {
            None => x.err("/portDefinitions", "must be an array"),
            Some(list) => {
                for (i, p) in list.iter().enumerate() {
                    let port = p
                        .get("port")
                        .and_then(|v| v.as_u64())
                        .filter(|n| *n <= 65535);
                    if port.is_none() && p.get("port").is_some() {
                        x.err(
                            &format!("/portDefinitions/{i}/port"),
                            "must be a port number 0-65535",
                        );
                    }
                    port_definitions.push(PortDefinition {
                        port: port.unwrap_or(0) as u32,
                        name: p
                            .get("name")
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_string(),
                        protocol: p
                            .get("protocol")
                            .and_then(|v| v.as_str())
                            .unwrap_or("tcp")
                            .to_string(),
                    });
                }
            }
        }
    }
    let mut names = std::collections::HashSet::new();
    for n in port_mappings
        .iter()
        .map(|p| &p.name)
        .chain(port_definitions.iter().map(|p| &p.name))
    {
        if !n.is_empty() && !names.insert(n.clone()) {
            x.err("/portMappings", format!("port name {n:?} is used twice"));
        }
    }

    // health checks
    let mut health_checks = Vec::new();
    if let Some(hc) = obj.get("healthChecks").filter(|h| !h.is_null()) {
        match hc.as_array() {
            None => x.err("/healthChecks", "must be an array"),
            Some(list) => {
                for (i, h) in list.iter().enumerate() {
                    let path = format!("/healthChecks/{i}");
                    let protocol = match h
                        .get("protocol")
                        .and_then(|p| p.as_str())
                        .unwrap_or("MESOS_HTTP")
                    {
                        "MESOS_HTTP" | "HTTP" => HealthProtocol::MesosHttp,
                        "MESOS_TCP" | "TCP" => HealthProtocol::MesosTcp,
                        "COMMAND" => HealthProtocol::Command,
                        other => {
                            x.err(&format!("{path}/protocol"), format!("unknown health check protocol {other:?} (MESOS_HTTP, MESOS_TCP or COMMAND)"));
                            continue;
                        }
                    };
                    let num = |k: &str, d: f64| h.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
                    let check = HealthCheck {
                        protocol,
                        path: h
                            .get("path")
                            .and_then(|v| v.as_str())
                            .unwrap_or("/")
                            .to_string(),
                        port_index: num("portIndex", 0.0) as u32,
                        command: h
                            .get("command")
                            .and_then(|c| c.get("value").or(Some(c)))
                            .and_then(|v| v.as_str())
                            .unwrap_or_default()
                            .to_string(),
                        grace_period_seconds: num("gracePeriodSeconds", 300.0),
                        interval_seconds: num("intervalSeconds", 60.0),
                        timeout_seconds: num("timeoutSeconds", 20.0),
                        max_consecutive_failures: num("maxConsecutiveFailures", 3.0) as u32,
                    };
                    if check.interval_seconds <= 0.0
                        || check.timeout_seconds <= 0.0
                        || check.grace_period_seconds < 0.0
                    {
                        x.err(&path, "intervalSeconds and timeoutSeconds must be > 0, gracePeriodSeconds >= 0");
                    }
                    if protocol == HealthProtocol::Command && check.command.is_empty() {
                        x.err(
                            &format!("{path}/command"),
                            "a COMMAND check needs a command",
                        );
                    }
                    if protocol != HealthProtocol::Command
                        && (check.port_index as usize)
                            >= port_mappings.len().max(port_definitions.len())
                    {
                        x.err(&format!("{path}/portIndex"), "points past the app's ports");
                    }
                    health_checks.push(check);
                }
            }
        }
    }

    let mut readiness_checks = Vec::new();
    if let Some(rc) = obj.get("readinessChecks").filter(|h| !h.is_null()) {
        match rc.as_array() {
            None => x.err("/readinessChecks", "must be an array"),
            Some(list) => {
                if list.len() > 1 {
                    x.err(
                        "/readinessChecks",
                        format!(
                            "at most one readiness check per app (as in Marathon); {} given",
                            list.len()
                        ),
                    );
                }
                for (i, r) in list.iter().enumerate() {
                    let s = |k: &str, d: &str| {
                        r.get(k).and_then(|v| v.as_str()).unwrap_or(d).to_string()
                    };
                    let n = |k: &str, d: f64| r.get(k).and_then(|v| v.as_f64()).unwrap_or(d);
                    let check = ReadinessCheck {
                        name: s("name", "readinessCheck"),
                        protocol: s("protocol", "HTTP"),
                        path: s("path", "/"),
                        port_name: s("portName", "http"),
                        interval_seconds: n("intervalSeconds", 30.0),
                        timeout_seconds: n("timeoutSeconds", 10.0),
                        http_status_codes_for_ready: r
                            .get("httpStatusCodesForReady")
                            .and_then(|v| v.as_array())
                            .map(|a| {
                                a.iter()
                                    .filter_map(|c| c.as_u64().map(|c| c as u16))
                                    .collect()
                            })
                            .unwrap_or_else(|| vec![200]),
                    };
                    if check.protocol != "HTTP" {
                        x.err(
                            &format!("/readinessChecks/{i}/protocol"),
                            "only HTTP readiness checks are supported",
                        );
                    }
                    if !names.contains(&check.port_name) {
                        x.err(
                            &format!("/readinessChecks/{i}/portName"),
                            format!("no port is named {:?}", check.port_name),
                        );
                    }
                    readiness_checks.push(check);
                }
            }
        }
    }

    let mut constraints = Vec::new();
    if let Some(cs) = obj.get("constraints").filter(|c| !c.is_null()) {
        match cs.as_array() {
            None => x.err("/constraints", "must be an array"),
            Some(list) => {
                for (i, c) in list.iter().enumerate() {
                    if let Some(c) = parse_constraint(c, &format!("/constraints/{i}"), &mut x.errs)
                    {
                        constraints.push(c);
                    }
                }
            }
        }
    }

    let us = obj.get("upgradeStrategy").cloned().unwrap_or(Value::Null);
    let min_h = us
        .get("minimumHealthCapacity")
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .unwrap_or(1.0);
    let max_o = us
        .get("maximumOverCapacity")
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .unwrap_or(1.0);
    if !(0.0..=1.0).contains(&min_h) {
        x.err(
            "/upgradeStrategy/minimumHealthCapacity",
            "must be between 0 and 1",
        );
    }
    if !(0.0..=1.0).contains(&max_o) {
        x.err(
            "/upgradeStrategy/maximumOverCapacity",
            "must be between 0 and 1",
        );
    }
    if min_h == 1.0 && max_o == 0.0 {
        x.err(
            "/upgradeStrategy",
            "minimumHealthCapacity 1 with maximumOverCapacity 0 leaves no room to replace anything",
        );
    }
    let backoff_seconds = x.num("backoffSeconds", 1.0, 0.0, 86_400.0);
    let backoff_factor = x.num("backoffFactor", 1.15, 1.0, 100.0);
    let max_launch_delay_seconds = x.num("maxLaunchDelaySeconds", 300.0, 0.0, 86_400.0);
    let kill_selection = match x.string("killSelection").as_deref() {
        None | Some("YOUNGEST_FIRST") => KillSelection::YoungestFirst,
        Some("OLDEST_FIRST") => KillSelection::OldestFirst,
        Some(other) => {
            x.err(
                "/killSelection",
                format!("unknown value {other:?} (YOUNGEST_FIRST or OLDEST_FIRST)"),
            );
            KillSelection::YoungestFirst
        }
    };
    for k in obj.keys() {
        const KNOWN: &[&str] = &[
            "id",
            "cmd",
            "args",
            "container",
            "portDefinitions",
            "networks",
            "instances",
            "cpus",
            "mem",
            "disk",
            "env",
            "labels",
            "healthChecks",
            "readinessChecks",
            "constraints",
            "upgradeStrategy",
            "backoffSeconds",
            "backoffFactor",
            "maxLaunchDelaySeconds",
            "killSelection",
            "version",
            "secrets",
            "user",
            "fetch",
            "unreachableStrategy",
            "acceptedResourceRoles",
            "dependencies",
            "versionInfo",
            "tasksRunning",
            "tasksStaged",
            "tasksHealthy",
            "tasksUnhealthy",
            "deployments",
            "tasks",
            "lastTaskFailure",
        ];
        if !KNOWN.contains(&k.as_str()) {
            x.err(&format!("/{k}"), "unknown field");
        }
    }
    if !x.errs.is_empty() {
        return Err(x.errs);
    }
    Ok(App {
        id,
        cmd,
        args,
        image,
        network,
        port_mappings,
        port_definitions,
        instances: instances as u32,
        cpus,
        mem,
        disk,
        env,
        labels,
        health_checks,
        readiness_checks,
        constraints,
        upgrade_strategy: UpgradeStrategy {
            minimum_health_capacity: min_h,
            maximum_over_capacity: max_o,
        },
        backoff_seconds,
        backoff_factor,
        max_launch_delay_seconds,
        kill_selection,
        version: String::new(),
    })
}
