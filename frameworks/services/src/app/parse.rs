//! Parsing and validating a Marathon-style app definition, field by field.
//! Every field Agora accepts is honoured; one it does not implement is
//! refused with a 422 naming it (or accepted only with a value that asks
//! for nothing, e.g. `"volumes": []`); response-only fields (`version`,
//! `tasksRunning`, …) are ignored so that a definition read back can be
//! sent again.

use super::checks::{health_checks, readiness_checks};
use super::fields::{Errors, Obj, empty};
use super::ports::placement;
use super::*;
use serde_json::Value;

/// Most instances one app may have.
pub const MAX_INSTANCES: u64 = 10_000;

/// Fields Marathon puts in its answers; ignored in a definition.
const READ_ONLY: &[&str] = &[
    "version",
    "versionInfo",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "tasks",
    "lastTaskFailure",
];

/// Words an app id may not use as a segment: they name an app's
/// sub-resources in the API (`/v2/apps/shop/tasks` is the tasks of `/shop`).
pub const RESERVED_ID_SEGMENTS: [&str; 3] = ["tasks", "restart", "versions"];

/// Normalises and checks an app id: absolute, `/`-separated segments of
/// lowercase letters, digits, `-` and `.`, none a reserved word.
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
    if let Some(seg) = id[1..]
        .split('/')
        .find(|s| RESERVED_ID_SEGMENTS.contains(s))
    {
        return Err(format!(
            "{id} uses the reserved word {seg:?} as a segment (it names a sub-resource in /v2/apps/{{appId}}/{seg}); reserved: tasks, restart, versions"
        ));
    }
    if id.len() > 200 {
        return Err("is longer than 200 characters".into());
    }
    Ok(id)
}

pub(super) fn parse_constraint(v: &Value, path: &str, errs: &mut Errors) -> Option<Constraint> {
    let Some(arr) = v.as_array() else {
        errs.push(
            path,
            "a constraint is [field, operator] or [field, operator, value]",
        );
        return None;
    };
    let strs: Vec<Option<&str>> = arr.iter().map(|x| x.as_str()).collect();
    if !(2..=3).contains(&arr.len()) || strs.iter().any(|s| s.is_none()) {
        errs.push(
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
            errs.push(
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
        errs.push(
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
        errs.push(path, "MAX_PER needs a positive integer value");
        return None;
    }
    if matches!(op, Operator::GroupBy)
        && value.as_deref().is_some_and(|v| v.parse::<u32>().is_err())
    {
        errs.push(path, "GROUP_BY takes an optional number of groups");
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
    let mut e = Errors::default();
    let Some(o) = v.as_object().map(|map| Obj {
        path: String::new(),
        map,
    }) else {
        return Err(vec![FieldError {
            path: "/".into(),
            errors: vec!["an app definition is a JSON object".into()],
        }]);
    };
    let mut known: Vec<&str> = vec![
        "id",
        "cmd",
        "args",
        "container",
        "portDefinitions",
        "ports",
        "networks",
        "instances",
        "cpus",
        "mem",
        "disk",
        "gpus",
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
        "taskKillGracePeriodSeconds",
        "secrets",
        "user",
        "fetch",
        "uris",
        "storeUrls",
        "unreachableStrategy",
        "acceptedResourceRoles",
        "dependencies",
        "residency",
        "requirePorts",
    ];
    known.extend(READ_ONLY);
    o.only(&mut e, &known);
    let e = &mut e;

    let id = match o.string(e, "id") {
        None => {
            e.push("/id", "is required");
            String::new()
        }
        Some(raw) => match normalize_id(&raw) {
            Ok(id) => id,
            Err(m) => {
                e.push("/id", m);
                String::new()
            }
        },
    };
    let cmd = o.string(e, "cmd");
    let mut args = Vec::new();
    for (path, a) in o.array(e, "args") {
        match a.as_str() {
            Some(s) => args.push(s.to_string()),
            None => e.push(&path, "must be a string"),
        }
    }
    if cmd.is_some() && !args.is_empty() {
        e.push("/cmd", "give either cmd or args, not both");
    }
    let instances = o.whole(e, "instances", 1, 0, MAX_INSTANCES) as u32;
    let cpus = o.num(e, "cpus", 1.0, 0.001, 1024.0);
    let mem = o.num(e, "mem", 128.0, 1.0, 4_194_304.0);
    let disk = o.num(e, "disk", 0.0, 0.0, 1e9);
    o.unsupported(
        e,
        "gpus",
        |v| v.as_f64() == Some(0.0),
        "agents offer no GPUs",
    );
    let env = o.string_map(e, "env");
    let labels = o.string_map(e, "labels");
    if let Some(v) = labels.get(LABEL_DRAIN_SECONDS)
        && !v
            .trim()
            .parse::<f64>()
            .is_ok_and(|x| x.is_finite() && (0.0..=MAX_DRAIN_SECONDS).contains(&x))
    {
        e.push(
            &format!("/labels/{LABEL_DRAIN_SECONDS}"),
            format!("must be a number of seconds between 0 and 3600, got {v:?}"),
        );
    }
    for k in env.keys() {
        if k.is_empty()
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || k.starts_with(|c: char| c.is_ascii_digit())
        {
            e.push(
                &format!("/env/{k}"),
                "variable names are letters, digits and _, not starting with a digit",
            );
        }
    }
    o.unsupported(
        e,
        "secrets",
        empty,
        "the secret store comes later; use plain env values",
    );
    o.unsupported(e, "user", |_| false, "tasks run as the agent's user");
    o.unsupported(
        e,
        "fetch",
        empty,
        "nothing is fetched into the sandbox; build it into the image",
    );
    o.unsupported(
        e,
        "uris",
        empty,
        "nothing is fetched into the sandbox; build it into the image",
    );
    o.unsupported(e, "storeUrls", empty, "nothing is fetched");
    o.unsupported(
        e,
        "unreachableStrategy",
        |_| false,
        "unreachable instances are replaced at once and the surplus is killed when they return",
    );
    let accepted_resource_roles = accepted_resource_roles(&o, e);
    o.unsupported(e, "dependencies", empty, "apps are deployed independently");
    o.unsupported(e, "residency", |_| false, "there are no persistent volumes");
    let p = placement(&o, e);
    let require_ports = match o.get("requirePorts") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            e.push("/requirePorts", "must be true or false");
            false
        }
    };
    if require_ports && p.network == NetworkMode::Bridge {
        e.push(
            "/requirePorts",
            "is for host networking (portDefinitions); with bridge networking give portMappings a hostPort",
        );
    }
    if cmd.is_none() && args.is_empty() && p.image.is_none() {
        e.push("/cmd", "give a cmd, args, or a container image");
    }
    let ports = match p.network {
        NetworkMode::Bridge => p.port_mappings.len(),
        NetworkMode::Host => p.port_definitions.len(),
    };
    let health_checks = health_checks(&o, e, ports);
    let names: std::collections::HashSet<String> = p
        .port_mappings
        .iter()
        .map(|m| m.name.clone())
        .chain(p.port_definitions.iter().map(|d| d.name.clone()))
        .filter(|n| !n.is_empty())
        .collect();
    let readiness_checks = readiness_checks(&o, e, &names);

    let mut constraints = Vec::new();
    for (path, c) in o.array(e, "constraints") {
        if let Some(c) = parse_constraint(c, &path, e) {
            constraints.push(c);
        }
    }

    let (mut min_h, mut max_o) = (1.0, 1.0);
    if let Some(us) = o
        .get("upgradeStrategy")
        .and_then(|u| Obj::of(u, "/upgradeStrategy".into(), e))
    {
        us.only(e, &["minimumHealthCapacity", "maximumOverCapacity"]);
        min_h = us.num(e, "minimumHealthCapacity", 1.0, 0.0, 1.0);
        max_o = us.num(e, "maximumOverCapacity", 1.0, 0.0, 1.0);
    }
    if min_h == 1.0 && max_o == 0.0 {
        e.push(
            "/upgradeStrategy",
            "minimumHealthCapacity 1 with maximumOverCapacity 0 leaves no room to replace anything",
        );
    }
    let backoff_seconds = o.num(e, "backoffSeconds", 1.0, 0.0, 86_400.0);
    let backoff_factor = o.num(e, "backoffFactor", 1.15, 1.0, 100.0);
    let max_launch_delay_seconds = o.num(e, "maxLaunchDelaySeconds", 300.0, 0.0, 86_400.0);
    // The agent waits at most an hour between SIGTERM and SIGKILL.
    let task_kill_grace_period_seconds = o.num(e, "taskKillGracePeriodSeconds", 0.0, 0.0, 3_600.0);
    let kill_selection = match o.string(e, "killSelection").as_deref() {
        None | Some("YOUNGEST_FIRST") => KillSelection::YoungestFirst,
        Some("OLDEST_FIRST") => KillSelection::OldestFirst,
        Some(other) => {
            e.push(
                "/killSelection",
                format!("unknown value {other:?} (YOUNGEST_FIRST or OLDEST_FIRST)"),
            );
            KillSelection::YoungestFirst
        }
    };
    if !e.0.is_empty() {
        return Err(std::mem::take(&mut e.0));
    }
    Ok(App {
        id,
        cmd,
        args,
        image: p.image,
        network: p.network,
        port_mappings: p.port_mappings,
        port_definitions: p.port_definitions,
        require_ports,
        instances,
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
        task_kill_grace_period_seconds,
        kill_selection,
        accepted_resource_roles,
        version: String::new(),
    })
}

/// `acceptedResourceRoles` (Marathon): the roles of the resources the app's
/// instances may use; absent means `["*"]` (unreserved only). Not empty
/// (Marathon refuses `[]` too); each a role name or `*`; duplicates are
/// dropped (a set, as in Marathon). Whether the framework can be offered
/// resources of those roles at all is checked against its role when the
/// app is put (`Services::check_roles`).
fn accepted_resource_roles(o: &Obj, e: &mut Errors) -> Vec<String> {
    const KEY: &str = "acceptedResourceRoles";
    if o.get(KEY).is_none() {
        return default_accepted_resource_roles();
    }
    let items = o.array(e, KEY);
    if items.is_empty() {
        if matches!(o.get(KEY), Some(Value::Array(_))) {
            e.push(
                &format!("/{KEY}"),
                "must not be empty: leave it out for [\"*\"] (unreserved resources only), or list roles, e.g. [\"public\"] or [\"*\", \"public\"]",
            );
        }
        return default_accepted_resource_roles();
    }
    let mut roles = Vec::new();
    for (path, v) in items {
        match v.as_str() {
            None => e.push(
                &path,
                "must be a string (a role name, or \"*\" for unreserved resources)",
            ),
            Some(r) if r == agora_core::info::DEFAULT_ROLE => roles.push(r.to_string()),
            Some(r) => match agora_core::ids::validate_id("a role name", r) {
                Ok(()) => roles.push(r.to_string()),
                Err(m) => e.push(&path, m),
            },
        }
    }
    roles.sort();
    roles.dedup();
    roles
}

/// Unreserved resources only: what DC/OS configured Marathon with
/// (`--default_accepted_resource_roles '*'`), so that nothing lands on a
/// public agent unless it asks. (Marathon's own default, without that flag,
/// is every role it is offered.)
pub fn default_accepted_resource_roles() -> Vec<String> {
    vec![agora_core::info::DEFAULT_ROLE.to_string()]
}
