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
    let (env, env_secrets) = env_field(&o, e);
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
    let secrets = secrets_field(&o, e);
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
    let secret_volumes = check_secret_uses(&secrets, &env_secrets, &p, e);
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
        secrets,
        env_secrets,
        secret_volumes,
        secret_versions: BTreeMap::new(),
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

/// `env`: plain strings, or secret references `{"secret": "<name>"}`
/// (Marathon/DC/OS). Returns (plain values, variable → secret name).
fn env_field(o: &Obj, e: &mut Errors) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut plain = BTreeMap::new();
    let mut secret = BTreeMap::new();
    match o.get("env") {
        None => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let at = format!("/env/{k}");
                if k.is_empty()
                    || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    || k.starts_with(|c: char| c.is_ascii_digit())
                {
                    e.push(
                        &at,
                        "variable names are letters, digits and _, not starting with a digit",
                    );
                }
                match v {
                    Value::String(s) => {
                        plain.insert(k.clone(), s.clone());
                    }
                    Value::Object(r) => match (r.len(), r.get("secret")) {
                        (1, Some(Value::String(_))) if k == "HOST" || k.starts_with("AGORA_") => {
                            e.push(
                                &at,
                                "HOST and AGORA_* are set by the agent; deliver the secret under another name",
                            );
                        }
                        (1, Some(Value::String(name))) => {
                            secret.insert(k.clone(), name.clone());
                        }
                        _ => e.push(
                            &at,
                            "must be a string, or a secret reference {\"secret\": \"<name in secrets>\"}",
                        ),
                    },
                    _ => e.push(
                        &at,
                        "must be a string, or a secret reference {\"secret\": \"<name in secrets>\"}",
                    ),
                }
            }
        }
        Some(_) => e.push("/env", "must be an object of strings or secret references"),
    }
    (plain, secret)
}

/// A name an app gives a secret: letters, digits, `_`, `-`, `.`, at most
/// 128 bytes.
fn valid_secret_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `secrets`: `{"<name>": {"source": "/path/in/the/store"}}`. Returns
/// name → normalised path.
fn secrets_field(o: &Obj, e: &mut Errors) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(v) = o.get("secrets") else {
        return out;
    };
    let Some(m) = v.as_object() else {
        e.push(
            "/secrets",
            "must be an object: {\"<name>\": {\"source\": \"/path/in/the/secret/store\"}}",
        );
        return out;
    };
    for (name, def) in m {
        let at = format!("/secrets/{name}");
        if !valid_secret_name(name) {
            e.push(
                &at,
                "a secret's name is letters, digits, `_`, `-` and `.` (at most 128)",
            );
        }
        let Some(d) = Obj::of(def, at.clone(), e) else {
            continue;
        };
        d.only(e, &["source"]);
        match d.string(e, "source") {
            None if d.get("source").is_none() => e.push(
                &d.at("source"),
                "is required: the secret's path in the master's store, e.g. /prod/db/password",
            ),
            None => {}
            Some(src) => match agora_core::secrets::SecretPath::parse(&src) {
                Ok(p) => {
                    out.insert(name.clone(), p.as_str().to_string());
                }
                Err(bad) => e.push(&d.at("source"), bad.to_string()),
            },
        }
    }
    out
}

/// Most secret uses (env variables and files) one app may have: what a
/// task may carry.
pub const MAX_SECRET_USES: usize = agora_proto::convert::MAX_TASK_SECRETS;

/// Every env reference and secret volume names a secret of `secrets`, and
/// every volume's path suits the app (absolute in a container, relative to
/// the sandbox for a command app). Returns the volumes.
fn check_secret_uses(
    secrets: &BTreeMap<String, String>,
    env_secrets: &BTreeMap<String, String>,
    p: &super::ports::Placement,
    e: &mut Errors,
) -> Vec<SecretVolume> {
    let undefined = |name: &str| {
        if secrets.is_empty() {
            format!(
                "names the secret {name:?}, but the app defines no secrets: add \"secrets\": {{\"{name}\": {{\"source\": \"/path/in/the/store\"}}}}"
            )
        } else {
            let known: Vec<&str> = secrets.keys().map(String::as_str).collect();
            format!(
                "names the secret {name:?}, which `secrets` does not define (it defines {})",
                known.join(", ")
            )
        }
    };
    for (var, name) in env_secrets {
        if !secrets.contains_key(name) {
            e.push(&format!("/env/{var}"), undefined(name));
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (path, v) in &p.volumes {
        if !secrets.contains_key(&v.secret) {
            e.push(&format!("{path}/secret"), undefined(&v.secret));
        }
        let cp = &v.container_path;
        let at = format!("{path}/containerPath");
        if cp.is_empty() {
            // Reported as missing already.
        } else if cp.len() > 1024
            || cp.ends_with('/')
            || cp.split('/').any(|s| s == ".." || s == ".")
            || cp.chars().any(|c| c.is_control())
        {
            e.push(
                &at,
                "a secret file path is at most 1024 bytes, without `.` or `..` segments or control characters, and does not end in `/`",
            );
        } else if p.image.is_some() && !cp.starts_with('/') {
            e.push(
                &at,
                format!(
                    "must be absolute inside the container, e.g. /run/secrets/{}",
                    v.secret
                ),
            );
        } else if p.image.is_none() && cp.starts_with('/') {
            e.push(
                &at,
                format!(
                    "an app without a container image runs in its sandbox: give a path relative to it, e.g. secrets/{}",
                    v.secret
                ),
            );
        } else if !seen.insert(cp.trim_start_matches('/').to_string()) {
            e.push(&at, format!("{cp:?} is used by another secret volume"));
        }
        out.push(v.clone());
    }
    if env_secrets.len() + out.len() > MAX_SECRET_USES {
        e.push(
            "/secrets",
            format!(
                "an app uses at most {MAX_SECRET_USES} secrets (env variables and files together)"
            ),
        );
    }
    out
}
