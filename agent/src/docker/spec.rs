//! A task as the Docker engine wants it: command, environment (with the
//! `PORT*` and `HOST` variables), port bindings (on the agent's internal
//! address), limits and labels. Pure: no engine call happens here.

use super::{LABEL_FRAMEWORK, LABEL_SCOPE, LABEL_TASK};
use crate::runtime::LaunchSpec;
use agora_core::info::ContainerInfo;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use std::collections::HashMap;

/// The container to create for `spec`, whose container settings (image
/// resolved) are `container`; `scope` labels it as this agent's. Host ports
/// are bound on `host_ip` (the agent's internal address), which the task
/// also gets as `HOST`.
pub(super) fn container_body(
    spec: &LaunchSpec,
    container: &ContainerInfo,
    scope: &str,
    host_ip: std::net::IpAddr,
) -> Result<ContainerCreateBody, String> {
    let fw = &spec.framework_id;
    let t = &spec.task;
    let resources = &t.resources;
    let host_ports: Vec<u32> = resources
        .ports
        .ranges()
        .iter()
        .flat_map(|(b, e)| *b..=*e)
        .take(1000)
        .collect();

    let command = t.command.clone().unwrap_or_default();
    // HOST is the agent's to give: one from the task (a framework's idea of
    // the host) is replaced, so what the task binds is where it is bound.
    let mut env: Vec<String> = command
        .env
        .iter()
        .filter(|(name, _)| name != "HOST")
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    // Secret variables (checked UTF-8 without NUL when resolved). They
    // win over plain ones of the same name. The engine shows a
    // container's env in `docker inspect`: file secrets avoid that.
    let secret_names: Vec<&str> = spec.secrets.env.iter().map(|(n, _)| n.as_str()).collect();
    env.retain(|e| {
        !secret_names
            .iter()
            .any(|n| e.strip_prefix(n).is_some_and(|r| r.starts_with('=')))
    });
    for (name, value) in &spec.secrets.env {
        let v = std::str::from_utf8(value.expose())
            .map_err(|_| format!("secret variable {name} is not UTF-8 text"))?;
        env.push(format!("{name}={v}"));
    }
    env.push(format!("HOST={host_ip}"));
    env.push(format!("AGORA_TASK_ID={}", t.id));
    env.push(format!("AGORA_FRAMEWORK_ID={fw}"));
    let host_network = container.network == "host";

    // Port mappings: host port 0 takes the next port from the task's resources.
    let mut free_ports = host_ports.iter().copied();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed: Vec<String> = Vec::new();
    let mut assigned = Vec::new();
    for m in &container.port_mappings {
        let host = if m.host_port != 0 {
            u32::from(m.host_port)
        } else {
            free_ports
                .next()
                .ok_or("more port mappings than ports in the task's resources")?
        };
        if !resources.ports.contains_value(host) {
            return Err(format!(
                "host port {host} is not in the task's port resources {}",
                resources.ports
            ));
        }
        let proto = if m.protocol.is_empty() {
            "tcp"
        } else {
            m.protocol.as_str()
        };
        let cport = if m.container_port == 0 {
            host
        } else {
            u32::from(m.container_port)
        };
        let key = format!("{cport}/{proto}");
        exposed.push(key.clone());
        bindings.insert(
            key,
            // Never a wildcard: a port bound on 0.0.0.0 would be reachable
            // on every interface of the host (public ones included).
            Some(vec![PortBinding {
                host_ip: Some(host_ip.to_string()),
                host_port: Some(host.to_string()),
            }]),
        );
        if !m.name.is_empty() {
            env.push(format!(
                "PORT_{}={host}",
                m.name.to_ascii_uppercase().replace('-', "_")
            ));
        }
        assigned.push(host);
    }
    if container.port_mappings.is_empty() {
        assigned = host_ports.clone();
    }
    for (i, p) in assigned.iter().enumerate() {
        env.push(format!("PORT{i}={p}"));
    }
    // PORT is where the process should listen: the first mapping's
    // container port in bridge mode, the host port otherwise.
    let listen = match container.port_mappings.first() {
        Some(m) if !host_network && m.container_port != 0 => Some(u32::from(m.container_port)),
        _ => assigned.first().copied(),
    };
    if let Some(p) = listen {
        env.push(format!("PORT={p}"));
    }

    let cmd: Option<Vec<String>> = if !command.value.is_empty() {
        if command.shell || command.args.is_empty() {
            Some(vec!["/bin/sh".into(), "-c".into(), command.value.clone()])
        } else {
            let mut v = vec![command.value.clone()];
            v.extend(command.args.iter().cloned());
            Some(v)
        }
    } else if !command.args.is_empty() {
        Some(command.args.clone())
    } else {
        None
    };
    let mut labels: HashMap<String, String> = t.labels.clone().into_iter().collect();
    labels.insert(LABEL_SCOPE.into(), scope.to_string());
    labels.insert(LABEL_FRAMEWORK.into(), fw.0.clone());
    labels.insert(LABEL_TASK.into(), t.id.0.clone());
    // Saturating: resources from the network are bounded (cpus ≤ 10¹²)
    // but not by what an i64 of nanocpus or bytes can hold.
    let mem_bytes = i64::try_from(resources.mem_mib.saturating_mul(1 << 20)).unwrap_or(i64::MAX);
    let nano_cpus =
        i64::try_from(resources.cpus_milli.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    let cpu_shares =
        i64::try_from(resources.cpus_milli.saturating_mul(1024) / 1000).unwrap_or(i64::MAX);
    let body = ContainerCreateBody {
        image: Some(container.image.clone()),
        cmd,
        env: Some(env),
        labels: Some(labels),
        exposed_ports: if host_network || exposed.is_empty() {
            None
        } else {
            Some(exposed)
        },
        host_config: Some(HostConfig {
            nano_cpus: Some(nano_cpus).filter(|n| *n > 0),
            cpu_shares: Some(cpu_shares).filter(|n| *n >= 2),
            memory: Some(mem_bytes).filter(|m| *m > 0),
            memory_swap: Some(mem_bytes).filter(|m| *m > 0),
            // A tiny init (docker-init) as PID 1: it forwards signals
            // and reaps zombies, so a SIGTERM that arrives before the
            // task installs its handler still ends it (a bare PID 1
            // would ignore it until SIGKILL).
            init: Some(true),
            network_mode: Some(if host_network {
                "host".into()
            } else {
                "bridge".into()
            }),
            port_bindings: if host_network || bindings.is_empty() {
                None
            } else {
                Some(bindings)
            },
            // Secret files: the tmpfs file, read-only at its path.
            binds: if spec.secrets.files.is_empty() {
                None
            } else {
                Some(
                    spec.secrets
                        .files
                        .iter()
                        .map(|f| format!("{}:{}:ro", f.host_path.display(), f.target))
                        .collect(),
                )
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(body)
}

/// The host ports of a container (as the engine lists them) that are bound
/// on another address than `host_ip`, as `address:port`: a container
/// created before the agent's internal address changed, or by an agent
/// version that bound on `0.0.0.0`. Such bindings stay as they were for the
/// container's life.
pub(super) fn foreign_bindings(
    ports: &[bollard::models::PortSummary],
    host_ip: std::net::IpAddr,
) -> Vec<String> {
    let mut v: Vec<String> = ports
        .iter()
        .filter_map(|p| {
            let public = p.public_port?;
            let ip = p.ip.as_deref().unwrap_or("");
            let ours = ip.parse::<std::net::IpAddr>().is_ok_and(|a| a == host_ip);
            (!ours).then(|| {
                std::net::SocketAddr::new(
                    ip.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
                    public,
                )
                .to_string()
            })
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The container's own address for its host port `host_port` (bridge
/// networking: its network's IP and the mapped container port); `None`
/// when the port is not mapped or the container has no address of its own
/// (host networking).
pub(super) fn container_addr(
    n: &bollard::models::NetworkSettings,
    host_port: u16,
) -> Option<std::net::SocketAddr> {
    let wanted = host_port.to_string();
    let cport = n.ports.as_ref()?.iter().find_map(|(key, bindings)| {
        let mapped = bindings
            .iter()
            .flatten()
            .any(|b| b.host_port.as_deref() == Some(wanted.as_str()));
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        (mapped && proto == "tcp")
            .then(|| port.parse::<u16>().ok())
            .flatten()
    })?;
    let ip = n
        .networks
        .as_ref()?
        .values()
        .filter_map(|e| e.ip_address.as_deref())
        .find_map(|ip| ip.parse::<std::net::IpAddr>().ok())?;
    Some(std::net::SocketAddr::new(ip, cport))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_core::info::{PortMapping, TaskInfo};
    use agora_core::{Ranges, Resources};
    use std::sync::Arc;

    const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn spec(resources: Resources) -> LaunchSpec {
        LaunchSpec::new("f".into(), TaskInfo::new("web.1".into(), resources))
    }

    /// Issue 10: secret variables join the container's env (over a plain
    /// one of the same name); secret files are bound read-only at their
    /// paths from the agent's tmpfs; the command line never holds either.
    #[test]
    fn secrets_go_to_env_and_read_only_binds() {
        use crate::secrets::{SecretFile, TaskSecrets};
        use agora_core::secrets::SecretValue;
        let mut s = spec(Resources::default());
        s.task.command = Some(agora_core::info::CommandInfo {
            value: "serve".into(),
            env: vec![("DB".into(), "plain".into()), ("A".into(), "1".into())],
            ..Default::default()
        });
        s.secrets = Arc::new(TaskSecrets {
            env: vec![("DB".into(), SecretValue::new(b"s3cret".to_vec()))],
            files: vec![SecretFile {
                target: "/run/secrets/tls".into(),
                host_path: "/dev/shm/agora-secrets/ag/f/web.1/secret-0".into(),
            }],
        });
        let c = ContainerInfo {
            image: "img".into(),
            ..Default::default()
        };
        let body = container_body(&s, &c, "scope", LOOPBACK).unwrap();
        let env = body.env.unwrap();
        assert!(env.contains(&"DB=s3cret".to_string()), "{env:?}");
        assert!(!env.contains(&"DB=plain".to_string()), "{env:?}");
        assert!(env.contains(&"A=1".to_string()));
        assert_eq!(
            body.host_config.unwrap().binds.unwrap(),
            ["/dev/shm/agora-secrets/ag/f/web.1/secret-0:/run/secrets/tls:ro"]
        );
        assert!(body.cmd.unwrap().iter().all(|a| !a.contains("s3cret")));
        // Not UTF-8: refused (it could not be an env variable).
        s.secrets = Arc::new(TaskSecrets {
            env: vec![("DB".into(), SecretValue::new(vec![0xff, 0xfe]))],
            files: vec![],
        });
        let e = container_body(&s, &c, "scope", LOOPBACK).unwrap_err();
        assert!(e.contains("DB") && !e.contains('\u{fffd}'), "{e}");
    }

    #[test]
    fn huge_resources_saturate_the_limits_instead_of_overflowing() {
        // 10^12 cpus is the most the wire accepts: 10^21 nanocpus do not fit an i64.
        let r = Resources {
            cpus_milli: 1_000_000_000_000_000,
            mem_mib: u64::MAX,
            ..Resources::default()
        };
        let body = container_body(&spec(r), &ContainerInfo::default(), "s", LOOPBACK).unwrap();
        let h = body.host_config.unwrap();
        assert_eq!(h.nano_cpus, Some(i64::MAX));
        assert_eq!(h.memory, Some(i64::MAX));
        assert_eq!(h.cpu_shares, Some(1_024_000_000_000_000));
    }

    #[test]
    fn ports_env_and_labels() {
        let r = Resources::new(0.5, 64, 0)
            .unwrap()
            .with_ports(Ranges::range(31000, 31001).unwrap());
        let c = ContainerInfo {
            image: "img".into(),
            network: "bridge".into(),
            port_mappings: vec![PortMapping {
                host_port: 0,
                container_port: 8080,
                protocol: String::new(),
                name: "http".into(),
            }],
        };
        let body = container_body(&spec(r), &c, "scope-1", LOOPBACK).unwrap();
        let env = body.env.unwrap();
        for want in [
            "PORT_HTTP=31000",
            "PORT0=31000",
            "PORT=8080",
            "AGORA_TASK_ID=web.1",
        ] {
            assert!(env.iter().any(|e| e == want), "{want} not in {env:?}");
        }
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_SCOPE], "scope-1");
        assert_eq!(labels[LABEL_TASK], "web.1");
        let h = body.host_config.unwrap();
        assert_eq!(h.nano_cpus, Some(500_000_000));
        assert_eq!(h.memory, Some(64 << 20));
        let bound = &h.port_bindings.unwrap()["8080/tcp"];
        assert_eq!(
            bound.as_ref().unwrap()[0].host_port.as_deref(),
            Some("31000")
        );
    }

    /// Every host port is bound on the agent's internal address, never on
    /// a wildcard, and the task is told that address as `HOST` (replacing
    /// one the framework put in the task's environment).
    #[test]
    fn host_ports_are_bound_on_the_internal_address_given_as_host() {
        let r = Resources::new(0.5, 64, 0)
            .unwrap()
            .with_ports(Ranges::range(31000, 31001).unwrap());
        let mut s = spec(r);
        s.task.command = Some(agora_core::info::CommandInfo {
            env: vec![
                ("HOST".into(), "node-1.example".into()),
                ("A".into(), "1".into()),
            ],
            ..Default::default()
        });
        let c = ContainerInfo {
            image: "img".into(),
            network: "bridge".into(),
            port_mappings: vec![
                PortMapping {
                    host_port: 0,
                    container_port: 8080,
                    protocol: String::new(),
                    name: String::new(),
                },
                PortMapping {
                    host_port: 31001,
                    container_port: 53,
                    protocol: "udp".into(),
                    name: String::new(),
                },
            ],
        };
        let ip: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        let body = container_body(&s, &c, "scope", ip).unwrap();
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        assert_eq!(bindings.len(), 2);
        for (key, port) in [("8080/tcp", "31000"), ("53/udp", "31001")] {
            let b = bindings[key].as_ref().unwrap();
            assert_eq!(b.len(), 1, "{key}");
            assert_eq!(b[0].host_ip.as_deref(), Some("10.1.2.3"), "{key}");
            assert_eq!(b[0].host_port.as_deref(), Some(port), "{key}");
        }
        let env = body.env.unwrap();
        let hosts: Vec<&String> = env.iter().filter(|e| e.starts_with("HOST=")).collect();
        assert_eq!(hosts, ["HOST=10.1.2.3"]);
        assert!(env.iter().any(|e| e == "A=1"));
        let v6: std::net::IpAddr = "fd00::7".parse().unwrap();
        let body = container_body(&s, &c, "scope", v6).unwrap();
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        assert_eq!(
            bindings["8080/tcp"].as_ref().unwrap()[0].host_ip.as_deref(),
            Some("fd00::7")
        );
    }

    #[test]
    fn bindings_on_another_address_are_found() {
        use bollard::models::PortSummary;
        let port = |ip: Option<&str>, public: Option<u16>| PortSummary {
            ip: ip.map(str::to_string),
            private_port: 8080,
            public_port: public,
            typ: None,
        };
        let ports = [
            port(Some("127.0.0.1"), Some(31000)),
            port(Some("0.0.0.0"), Some(31001)),
            port(Some("::"), Some(31001)),
            port(Some("10.0.0.7"), Some(31002)),
            port(None, None), // exposed, not published
        ];
        assert_eq!(
            foreign_bindings(&ports, LOOPBACK),
            ["0.0.0.0:31001", "10.0.0.7:31002", "[::]:31001"]
        );
        assert!(foreign_bindings(&ports[..1], LOOPBACK).is_empty());
    }
}
