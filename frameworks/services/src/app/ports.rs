//! `container`, `networks`, `portDefinitions` (and the legacy `ports`) of a
//! definition.

use super::fields::{Errors, Obj, empty};
use super::{NetworkMode, PortDefinition, PortMapping, SecretVolume};
use serde_json::Value;
use std::collections::BTreeMap;

/// What the container and network fields say.
pub(super) struct Placement {
    pub(super) image: Option<String>,
    pub(super) network: NetworkMode,
    pub(super) port_mappings: Vec<PortMapping>,
    pub(super) port_definitions: Vec<PortDefinition>,
    /// `container.volumes` (secrets only), each with its JSON pointer.
    pub(super) volumes: Vec<(String, SecretVolume)>,
}

fn port(o: &Obj, e: &mut Errors, key: &str) -> u32 {
    o.whole(e, key, 0, 0, 65_535) as u32
}

fn protocol(o: &Obj, e: &mut Errors) -> String {
    let p = o.string(e, "protocol").unwrap_or_else(|| "tcp".into());
    if p != "tcp" && p != "udp" {
        e.push(&o.at("protocol"), "must be tcp or udp");
    }
    p
}

/// A virtual host: a DNS name of letters, digits and `-` labels (1–63
/// bytes, not starting or ending with `-`), at most 253 bytes.
pub fn valid_vhost(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A path prefix: starts with `/`, no `..` segment, no query, fragment,
/// space or control character.
pub fn valid_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= 1024
        && !p.split('/').any(|s| s == "..")
        && !p
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
}

/// A port's labels, checking those the router reads: `expose`
/// (`public`|`internal`), `vhost` (comma-separated DNS names), `path`.
fn port_labels(p: &Obj, e: &mut Errors) -> BTreeMap<String, String> {
    let labels = p.string_map(e, "labels");
    let at = |k: &str| format!("{}/labels/{k}", p.path);
    if let Some(v) = labels.get("expose")
        && v != "public"
        && v != "internal"
    {
        e.push(
            &at("expose"),
            format!("must be public or internal, got {v:?}"),
        );
    }
    if let Some(v) = labels.get("vhost") {
        for h in v.split(',').map(str::trim) {
            if !valid_vhost(h) {
                e.push(
                    &at("vhost"),
                    format!(
                        "{h:?} is not a DNS name (comma-separated names of letters, digits, '-' and '.')"
                    ),
                );
            }
        }
    }
    if let Some(v) = labels.get("path")
        && !valid_path(v)
    {
        e.push(
            &at("path"),
            format!("{v:?} must start with '/' and hold no '..' segment, space, '?' or '#'"),
        );
    }
    // The routers' per-route request timeout: seconds, above 0, at most a
    // day (what they honour; anything else would be ignored silently).
    if let Some(v) = labels.get("timeout")
        && !v
            .trim()
            .parse::<f64>()
            .is_ok_and(|t| t.is_finite() && t > 0.0 && t <= 86_400.0)
    {
        e.push(
            &at("timeout"),
            format!("{v:?} must be a number of seconds above 0 and at most 86400"),
        );
    }
    labels
}

fn port_mappings(list: Vec<(String, &Value)>, e: &mut Errors) -> Vec<PortMapping> {
    let mut out = Vec::new();
    for (path, p) in list {
        let Some(p) = Obj::of(p, path, e) else {
            continue;
        };
        p.only(
            e,
            &[
                "containerPort",
                "hostPort",
                "servicePort",
                "name",
                "protocol",
                "labels",
                "networkNames",
            ],
        );
        p.unsupported(e, "networkNames", empty, "there is one network per app");
        out.push(PortMapping {
            container_port: port(&p, e, "containerPort"),
            host_port: port(&p, e, "hostPort"),
            service_port: port(&p, e, "servicePort"),
            name: p.string(e, "name").unwrap_or_default(),
            protocol: protocol(&p, e),
            labels: port_labels(&p, e),
        });
    }
    out
}

fn port_definitions(o: &Obj, e: &mut Errors) -> Vec<PortDefinition> {
    let defs = o.array(e, "portDefinitions");
    let legacy = o.array(e, "ports");
    if !defs.is_empty() && !legacy.is_empty() {
        e.push(
            &o.at("ports"),
            "give portDefinitions or the legacy ports, not both",
        );
    }
    let mut out = Vec::new();
    for (path, p) in defs {
        let Some(p) = Obj::of(p, path, e) else {
            continue;
        };
        // Marathon's fields only: `port` is the service port (0: assigned).
        p.only(e, &["port", "name", "protocol", "labels"]);
        out.push(PortDefinition {
            port: port(&p, e, "port"),
            name: p.string(e, "name").unwrap_or_default(),
            protocol: protocol(&p, e),
            labels: port_labels(&p, e),
        });
    }
    // Marathon's legacy form: a list of service ports (0: assigned).
    for (path, p) in legacy {
        match p.as_u64().filter(|n| *n <= 65_535) {
            Some(n) => out.push(PortDefinition {
                port: n as u32,
                name: String::new(),
                protocol: "tcp".into(),
                labels: BTreeMap::new(),
            }),
            None => e.push(&path, "must be a port number 0-65535"),
        }
    }
    out
}

pub(super) fn placement(o: &Obj, e: &mut Errors) -> Placement {
    let mut image = None;
    let mut mappings = Vec::new();
    let mut volumes = Vec::new();
    if let Some(c) = o
        .get("container")
        .and_then(|c| Obj::of(c, o.at("container"), e))
    {
        c.only(e, &["type", "docker", "portMappings", "volumes"]);
        for (path, v) in c.array(e, "volumes") {
            let Some(v) = Obj::of(v, path.clone(), e) else {
                continue;
            };
            if v.get("secret").is_none() {
                e.push(
                    &path,
                    "only secret volumes are supported ({\"containerPath\": \"/run/secrets/db\", \"secret\": \"db\"}); other volumes are not implemented (a task's files live in its sandbox)",
                );
                continue;
            }
            v.only(e, &["containerPath", "secret"]);
            let container_path = v.string(e, "containerPath");
            if container_path.is_none() {
                e.push(&v.at("containerPath"), "is required");
            }
            let secret = v.string(e, "secret").unwrap_or_default();
            volumes.push((
                path,
                SecretVolume {
                    container_path: container_path.unwrap_or_default(),
                    secret,
                },
            ));
        }
        let ty = c.string(e, "type").unwrap_or_else(|| "DOCKER".into());
        if ty != "DOCKER" && ty != "MESOS" {
            e.push(
                &c.at("type"),
                format!("unknown container type {ty:?} (DOCKER or MESOS)"),
            );
        }
        let mut legacy_mappings = Vec::new();
        match c.get("docker").and_then(|d| Obj::of(d, c.at("docker"), e)) {
            Some(d) => {
                d.only(
                    e,
                    &[
                        "image",
                        "portMappings",
                        "network",
                        "forcePullImage",
                        "privileged",
                        "parameters",
                        "pullConfig",
                    ],
                );
                match d.get("image") {
                    Some(Value::String(i)) if !i.trim().is_empty() => image = Some(i.clone()),
                    Some(_) => e.push(&d.at("image"), "must be a non-empty string"),
                    None if ty == "DOCKER" => {
                        e.push(&d.at("image"), "is required for a DOCKER container")
                    }
                    None => {}
                }
                d.unsupported(
                    e,
                    "network",
                    |_| false,
                    "Marathon's legacy form; use networks: [{\"mode\": \"container/bridge\"}] or [{\"mode\": \"host\"}]",
                );
                d.unsupported(
                    e,
                    "forcePullImage",
                    |v| v == &Value::Bool(false),
                    "images are never pulled (there is no registry): build them on the agents",
                );
                d.unsupported(
                    e,
                    "privileged",
                    |v| v == &Value::Bool(false),
                    "containers never run privileged",
                );
                d.unsupported(
                    e,
                    "parameters",
                    empty,
                    "extra docker run parameters are not passed",
                );
                d.unsupported(e, "pullConfig", |_| false, "images are never pulled");
                legacy_mappings = d.array(e, "portMappings");
            }
            None if ty == "DOCKER" && c.get("docker").is_none() => {
                e.push(
                    &c.at("docker"),
                    "is required for a DOCKER container (docker.image)",
                );
            }
            None => {}
        }
        let list = c.array(e, "portMappings");
        if !list.is_empty() && !legacy_mappings.is_empty() {
            e.push(
                &c.at("docker/portMappings"),
                "give container.portMappings or the legacy container.docker.portMappings, not both",
            );
        }
        mappings = port_mappings(
            if list.is_empty() {
                legacy_mappings
            } else {
                list
            },
            e,
        );
    }

    let nets = o.array(e, "networks");
    if nets.len() > 1 {
        e.push(&o.at("networks"), "at most one network per app");
    }
    let network = match nets.first() {
        None if mappings.is_empty() => NetworkMode::Host,
        None => NetworkMode::Bridge,
        Some((path, n)) => match Obj::of(n, path.clone(), e) {
            None => NetworkMode::Host,
            Some(n) => {
                n.only(e, &["mode", "name", "labels"]);
                n.unsupported(
                    e,
                    "name",
                    |_| false,
                    "only the host and bridge networks exist",
                );
                n.unsupported(e, "labels", empty, "network labels have no meaning");
                match n.string(e, "mode").as_deref() {
                    Some("host") => NetworkMode::Host,
                    Some("container/bridge") => NetworkMode::Bridge,
                    other => {
                        e.push(
                            &n.at("mode"),
                            format!("unknown network mode {other:?} (host or container/bridge)"),
                        );
                        NetworkMode::Host
                    }
                }
            }
        },
    };
    if network == NetworkMode::Bridge && image.is_none() {
        e.push(
            &o.at("networks"),
            "bridge networking needs a DOCKER container",
        );
    }
    let definitions = port_definitions(o, e);
    match network {
        NetworkMode::Host if !mappings.is_empty() => e.push(
            &o.at("container/portMappings"),
            "port mappings need bridge networking; with host networking use portDefinitions",
        ),
        NetworkMode::Bridge if !definitions.is_empty() => e.push(
            &o.at("portDefinitions"),
            "portDefinitions are for host networking; with bridge networking use container.portMappings",
        ),
        _ => {}
    }
    let mut names = std::collections::HashSet::new();
    for n in mappings
        .iter()
        .map(|p| &p.name)
        .chain(definitions.iter().map(|p| &p.name))
    {
        if !n.is_empty() && !names.insert(n.clone()) {
            e.push(
                &o.at("portMappings"),
                format!("port name {n:?} is used twice"),
            );
        }
    }
    Placement {
        image,
        network,
        port_mappings: mappings,
        port_definitions: definitions,
        volumes,
    }
}
