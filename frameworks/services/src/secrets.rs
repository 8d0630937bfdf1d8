//! Secrets the apps use: which versions their tasks get, and when a new
//! version rolls them.
//!
//! An app version pins each secret path it uses to one version
//! (`App::secret_versions`, stored with the app, never in the /v2 JSON):
//! the latest when the version is created, so every instance of it sees
//! the same value. The framework polls the master's `SecretVersions` for
//! the paths apps use; when a path's **rollout** version (the newest put
//! without `--no-rollout`) grows past an app's pin, the app gets a new
//! version pinned to it: a normal, health-gated deployment. A version put
//! with `--no-rollout` moves only `latest`: it is picked up by the app's
//! next deployment for another reason. A deleted secret never kills
//! running instances (its path just stops rolling anything).

use crate::app::App;
use agora_sdk::SecretVersion;
use std::collections::BTreeMap;

/// How often the framework asks the master about the secrets apps use.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The apps a poll answer rolls, each with its new pins (all of its paths).
pub fn rollouts<'a>(
    apps: impl IntoIterator<Item = &'a App>,
    versions: &[SecretVersion],
) -> Vec<(String, BTreeMap<String, u64>)> {
    let by_path: BTreeMap<&str, &SecretVersion> =
        versions.iter().map(|v| (v.path.as_str(), v)).collect();
    let mut out = Vec::new();
    for app in apps {
        let mut pins = app.secret_versions.clone();
        let mut changed = false;
        for path in app.secret_paths() {
            let Some(v) = by_path.get(path.as_str()) else {
                continue;
            };
            let pin = pins.get(&path).copied().unwrap_or(0);
            if v.exists && v.rollout > pin {
                pins.insert(path, v.rollout);
                changed = true;
            }
        }
        if changed {
            out.push((app.id.clone(), pins));
        }
    }
    out
}

/// Every secret path the apps use (sorted, no duplicates).
pub fn paths_in_use<'a>(apps: impl IntoIterator<Item = &'a App>) -> Vec<String> {
    let mut v: Vec<String> = apps.into_iter().flat_map(|a| a.secret_paths()).collect();
    v.sort();
    v.dedup();
    v
}

/// Checks an app's secret paths against the master's answer: every path
/// must exist. Returns the pins for a new version (each path's latest), or
/// the problems as `(JSON pointer, message)`.
pub fn pins_for(
    app: &App,
    versions: &[SecretVersion],
) -> Result<BTreeMap<String, u64>, Vec<(String, String)>> {
    let by_path: BTreeMap<&str, &SecretVersion> =
        versions.iter().map(|v| (v.path.as_str(), v)).collect();
    let mut pins = BTreeMap::new();
    let mut errs = Vec::new();
    for (name, path) in &app.secrets {
        let used = app.env_secrets.values().any(|n| n == name)
            || app.secret_volumes.iter().any(|v| &v.secret == name);
        match by_path.get(path.as_str()) {
            Some(v) if v.exists && v.latest > 0 => {
                if used {
                    pins.insert(path.clone(), v.latest);
                }
            }
            _ => errs.push((
                format!("/secrets/{name}/source"),
                format!(
                    "secret {path} does not exist in the master's store: put it first (`agora secret put {path}`, value on stdin)"
                ),
            )),
        }
    }
    if errs.is_empty() { Ok(pins) } else { Err(errs) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, pins: &[(&str, u64)]) -> App {
        let v = serde_json::json!({
            "id": id, "cmd": "sleep 1000",
            "secrets": {"db": {"source": "/prod/db"}, "key": {"source": "prod/key"}},
            "env": {"DB": {"secret": "db"}, "PLAIN": "x"},
            "container": {"type": "MESOS", "volumes": [{"containerPath": "k", "secret": "key"}]}
        });
        let mut a = crate::app::parse_app(&v).unwrap();
        a.secret_versions = pins.iter().map(|(p, v)| (p.to_string(), *v)).collect();
        a
    }

    fn ver(path: &str, exists: bool, latest: u64, rollout: u64) -> SecretVersion {
        SecretVersion {
            path: path.into(),
            exists,
            latest,
            rollout,
        }
    }

    #[test]
    fn a_grown_rollout_version_rolls_the_apps_that_use_it() {
        let a = app("/a", &[("/prod/db", 1), ("/prod/key", 3)]);
        let b = app("/b", &[("/prod/db", 2), ("/prod/key", 3)]);
        let vs = [ver("/prod/db", true, 2, 2), ver("/prod/key", true, 3, 3)];
        let r = rollouts([&a, &b], &vs);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].0, "/a");
        assert_eq!(r[0].1["/prod/db"], 2);
        assert_eq!(r[0].1["/prod/key"], 3);
    }

    #[test]
    fn no_rollout_versions_deleted_secrets_and_older_rollouts_roll_nothing() {
        let a = app("/a", &[("/prod/db", 2), ("/prod/key", 3)]);
        // --no-rollout: latest grew, rollout did not.
        assert!(rollouts([&a], &[ver("/prod/db", true, 5, 2)]).is_empty());
        // Deleted out from under the app: its instances stay.
        assert!(rollouts([&a], &[ver("/prod/db", false, 0, 0)]).is_empty());
        // The app was deployed after a staged version (pin above rollout).
        assert!(rollouts([&a], &[ver("/prod/key", true, 3, 1)]).is_empty());
        // Paths the app does not use roll nothing.
        assert!(rollouts([&a], &[ver("/other", true, 9, 9)]).is_empty());
    }

    #[test]
    fn pins_are_the_latest_versions_and_unknown_paths_are_named() {
        let a = app("/a", &[]);
        let pins = pins_for(
            &a,
            &[ver("/prod/db", true, 4, 3), ver("/prod/key", true, 1, 1)],
        )
        .unwrap();
        assert_eq!(pins["/prod/db"], 4);
        assert_eq!(pins["/prod/key"], 1);
        let errs = pins_for(
            &a,
            &[ver("/prod/db", true, 4, 3), ver("/prod/key", false, 0, 0)],
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, "/secrets/key/source");
        assert!(errs[0].1.contains("/prod/key"), "{}", errs[0].1);
        // Not in the answer at all: unknown too.
        assert!(pins_for(&a, &[ver("/prod/db", true, 4, 3)]).is_err());
        assert_eq!(paths_in_use([&a]), ["/prod/db", "/prod/key"]);
    }
}
