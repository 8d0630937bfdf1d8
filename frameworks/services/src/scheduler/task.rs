//! Task building: the task (command, container, ports, env, checks) for one
//! instance of an app on one offer.

use super::{LABEL_APP, LABEL_VERSION};
use crate::app::{App, HealthProtocol, NetworkMode};
use agora_core::Resources;
use agora_proto::pb;
use agora_sdk::Offer;
use std::collections::HashMap;

/// The task for one instance of `app` on `offer`, using `need` (resources
/// with the host ports chosen, in the app's port order).
pub(super) fn build(app: &App, offer: &Offer, need: &Resources, ports: &[u32]) -> pb::TaskInfo {
    let task_id = format!(
        "{}.{}",
        app.id.trim_start_matches('/').replace('/', "_"),
        uuid::Uuid::new_v4().simple()
    );
    let mut env: Vec<pb::EnvVar> = app
        .env
        .iter()
        .map(|(k, v)| pb::EnvVar {
            name: k.clone(),
            value: v.clone(),
        })
        .collect();
    env.push(pb::EnvVar {
        name: "AGORA_APP_ID".into(),
        value: app.id.clone(),
    });
    env.push(pb::EnvVar {
        name: "HOST".into(),
        value: offer.reach_host(),
    });
    let names: Vec<&str> = match app.network {
        NetworkMode::Bridge => app.port_mappings.iter().map(|p| p.name.as_str()).collect(),
        NetworkMode::Host => app
            .port_definitions
            .iter()
            .map(|p| p.name.as_str())
            .collect(),
    };
    for (i, p) in ports.iter().enumerate() {
        env.push(pb::EnvVar {
            name: format!("PORT{i}"),
            value: p.to_string(),
        });
        if let Some(n) = names.get(i).filter(|n| !n.is_empty()) {
            env.push(pb::EnvVar {
                name: format!("PORT_{}", n.to_ascii_uppercase().replace('-', "_")),
                value: p.to_string(),
            });
        }
    }
    let mut labels: HashMap<String, String> = app.labels.clone().into_iter().collect();
    labels.insert(LABEL_APP.into(), app.id.clone());
    labels.insert(LABEL_VERSION.into(), app.version.clone());
    let command = match (&app.cmd, app.args.is_empty()) {
        (Some(c), _) => Some(pb::CommandInfo {
            value: c.clone(),
            args: vec![],
            env,
            shell: true,
        }),
        (None, false) => Some(pb::CommandInfo {
            value: String::new(),
            args: app.args.clone(),
            env,
            shell: false,
        }),
        (None, true) => Some(pb::CommandInfo {
            value: String::new(),
            args: vec![],
            env,
            shell: false,
        }),
    };
    let container = app.image.as_ref().map(|image| pb::ContainerInfo {
        image: image.clone(),
        network: match app.network {
            NetworkMode::Bridge => "bridge".into(),
            NetworkMode::Host => "host".into(),
        },
        port_mappings: app
            .port_mappings
            .iter()
            .zip(ports.iter())
            .map(|(m, hp)| pb::PortMapping {
                host_port: *hp,
                container_port: m.container_port,
                protocol: m.protocol.clone(),
                name: m.name.clone(),
            })
            .collect(),
    });
    pb::TaskInfo {
        task_id,
        name: app.id.clone(),
        agent_id: offer.agent_id.0.clone(),
        resources: Some(pb::Resources::from(need)),
        command,
        container,
        labels,
        kill_grace_seconds: app.task_kill_grace_period_seconds,
        health_checks: app
            .health_checks
            .iter()
            .map(|h| pb::HealthCheck {
                protocol: match h.protocol {
                    HealthProtocol::MesosHttp => pb::health_check::Protocol::Http,
                    HealthProtocol::MesosTcp => pb::health_check::Protocol::Tcp,
                    HealthProtocol::Command => pb::health_check::Protocol::Command,
                } as i32,
                path: h.path.clone(),
                port: ports.get(h.port_index as usize).copied().unwrap_or(0),
                command: h.command.clone(),
                grace_period_seconds: h.grace_period_seconds,
                interval_seconds: h.interval_seconds,
                timeout_seconds: h.timeout_seconds,
                max_consecutive_failures: h.max_consecutive_failures,
                ok_statuses: vec![],
            })
            .collect(),
        readiness_checks: app
            .readiness_checks
            .iter()
            .map(|r| pb::HealthCheck {
                protocol: pb::health_check::Protocol::Http as i32,
                path: r.path.clone(),
                port: names
                    .iter()
                    .position(|n| *n == r.port_name)
                    .and_then(|i| ports.get(i).copied())
                    .unwrap_or(0),
                command: String::new(),
                grace_period_seconds: 0.0,
                interval_seconds: r.interval_seconds,
                timeout_seconds: r.timeout_seconds,
                max_consecutive_failures: 1,
                ok_statuses: r
                    .http_status_codes_for_ready
                    .iter()
                    .map(|c| u32::from(*c))
                    .collect(),
            })
            .collect(),
        secrets: secret_uses(app),
    }
}

/// The app's secret references as the task carries them: each at the
/// version pinned for this app version (never 0 once pinned, so every
/// instance of a version sees the same value), never a value.
pub(super) fn secret_uses(app: &App) -> Vec<pb::SecretUse> {
    let reference = |name: &str| {
        let path = app.secrets.get(name).cloned().unwrap_or_default();
        let version = app.secret_versions.get(&path).copied().unwrap_or(0);
        (path, version)
    };
    let env = app.env_secrets.iter().map(|(var, name)| {
        let (path, version) = reference(name);
        pb::SecretUse {
            target: Some(pb::secret_use::Target::Env(var.clone())),
            path,
            version,
        }
    });
    let files = app.secret_volumes.iter().map(|v| {
        let (path, version) = reference(&v.secret);
        pb::SecretUse {
            target: Some(pb::secret_use::Target::File(v.container_path.clone())),
            path,
            version,
        }
    });
    env.chain(files).collect()
}
