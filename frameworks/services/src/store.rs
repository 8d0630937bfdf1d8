//! Persistence of the services framework: apps (with deployments and
//! backoff), instances and the framework id, in one redb file. Every change
//! is written (only the rows that changed, in one transaction) before it is
//! acted on, so `kill -9` loses nothing.

use crate::scheduler::{AppState, Instance};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

#[derive(Debug, thiserror::Error)]
#[error("services store {path}: {message}")]
pub struct StoreError {
    pub path: String,
    pub message: String,
}

pub struct Store {
    db: redb::Database,
    path: String,
    /// What was last written, to write only changes.
    written_apps: std::collections::HashMap<String, Vec<u8>>,
    written_instances: std::collections::HashMap<String, Vec<u8>>,
}

/// Everything stored.
pub struct Snapshot {
    pub framework_id: Option<String>,
    pub apps: Vec<AppState>,
    pub instances: Vec<Instance>,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join("services.redb");
        let shown = path.display().to_string();
        let err = |e: &dyn std::fmt::Display| StoreError {
            path: shown.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        let db = redb::Database::create(&path).map_err(|e| err(&e))?;
        let tx = db.begin_write().map_err(|e| err(&e))?;
        tx.open_table(APPS).map_err(|e| err(&e))?;
        tx.open_table(INSTANCES).map_err(|e| err(&e))?;
        tx.open_table(META).map_err(|e| err(&e))?;
        tx.commit().map_err(|e| err(&e))?;
        Ok(Store {
            db,
            path: shown,
            written_apps: Default::default(),
            written_instances: Default::default(),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    pub fn load(&mut self) -> Result<Snapshot, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = tx.open_table(META).map_err(|e| self.err(e))?;
        let framework_id = meta
            .get("framework_id")
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_string());
        let mut apps = Vec::new();
        let mut app_rows = Vec::new();
        let mut inst_rows = Vec::new();
        for row in tx
            .open_table(APPS)
            .map_err(|e| self.err(e))?
            .iter()
            .map_err(|e| self.err(e))?
        {
            let (k, v) = row.map_err(|e| self.err(e))?;
            apps.push(
                serde_json::from_slice(v.value())
                    .map_err(|e| self.err(format!("app {}: {e}", k.value())))?,
            );
            app_rows.push((k.value().to_string(), v.value().to_vec()));
        }
        let mut instances = Vec::new();
        for row in tx
            .open_table(INSTANCES)
            .map_err(|e| self.err(e))?
            .iter()
            .map_err(|e| self.err(e))?
        {
            let (k, v) = row.map_err(|e| self.err(e))?;
            instances.push(
                serde_json::from_slice(v.value())
                    .map_err(|e| self.err(format!("instance {}: {e}", k.value())))?,
            );
            inst_rows.push((k.value().to_string(), v.value().to_vec()));
        }
        self.written_apps = app_rows.into_iter().collect();
        self.written_instances = inst_rows.into_iter().collect();
        Ok(Snapshot {
            framework_id,
            apps,
            instances,
        })
    }

    /// Writes what changed since the last call (one transaction): each app
    /// and instance is serialised and compared with what was last written,
    /// so a status update costs one row, not a rewrite of everything.
    pub fn save(&mut self, apps: &[&AppState], instances: &[&Instance]) -> Result<(), StoreError> {
        let mut app_rows = std::collections::HashMap::new();
        for a in apps {
            app_rows.insert(
                a.app.id.clone(),
                serde_json::to_vec(a).map_err(|e| self.err(e))?,
            );
        }
        let mut inst_rows = std::collections::HashMap::new();
        for i in instances {
            inst_rows.insert(
                i.task_id.clone(),
                serde_json::to_vec(i).map_err(|e| self.err(e))?,
            );
        }
        let changed = |now: &std::collections::HashMap<String, Vec<u8>>,
                       before: &std::collections::HashMap<String, Vec<u8>>| {
            let upserts: Vec<String> = now
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .collect();
            let deletes: Vec<String> = before
                .keys()
                .filter(|k| !now.contains_key(*k))
                .cloned()
                .collect();
            (upserts, deletes)
        };
        let (app_up, app_del) = changed(&app_rows, &self.written_apps);
        let (inst_up, inst_del) = changed(&inst_rows, &self.written_instances);
        if app_up.is_empty() && app_del.is_empty() && inst_up.is_empty() && inst_del.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(APPS).map_err(|e| self.err(e))?;
            for k in &app_up {
                t.insert(k.as_str(), app_rows[k].as_slice())
                    .map_err(|e| self.err(e))?;
            }
            for k in &app_del {
                t.remove(k.as_str()).map_err(|e| self.err(e))?;
            }
            let mut t = tx.open_table(INSTANCES).map_err(|e| self.err(e))?;
            for k in &inst_up {
                t.insert(k.as_str(), inst_rows[k].as_slice())
                    .map_err(|e| self.err(e))?;
            }
            for k in &inst_del {
                t.remove(k.as_str()).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        self.written_apps = app_rows;
        self.written_instances = inst_rows;
        Ok(())
    }

    pub fn set_framework_id(&self, id: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        tx.open_table(META)
            .map_err(|e| self.err(e))?
            .insert("framework_id", id)
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Services;

    /// Stored times come back bit for bit (serde_json's default float
    /// parser may be off by one unit in the last place).
    #[test]
    fn times_round_trip_exactly() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = 1.7e9 + (x % 1_000_000_000_000) as f64 / 1e4 + 1.0 / ((x % 997) as f64 + 1.0);
            let back: f64 = serde_json::from_slice(&serde_json::to_vec(&t).unwrap()).unwrap();
            assert_eq!(back.to_bits(), t.to_bits(), "{t} came back as {back}");
        }
    }

    #[test]
    fn writes_changes_and_reloads_them() {
        let dir =
            std::env::temp_dir().join(format!("agora-svc-store-{}", uuid::Uuid::new_v4().simple()));
        let mut s = Services::new();
        let app = crate::app::parse_app(
            &serde_json::json!({"id": "/a", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16}),
        )
        .unwrap();
        s.put_app(app, false);
        let offer = agora_sdk::Offer {
            id: "o".into(),
            agent_id: "ag".into(),
            hostname: "h".into(),
            resources: agora_core::Resources::parse("cpus:4;mem:1024").unwrap(),
            attributes: vec![],
        };
        s.offers(vec![offer]);
        assert_eq!(s.instances.len(), 2);
        {
            let mut st = Store::open(&dir).unwrap();
            st.set_framework_id("fw-1").unwrap();
            st.save(
                &s.apps.values().collect::<Vec<_>>(),
                &s.instances.values().collect::<Vec<_>>(),
            )
            .unwrap();
            // One instance goes: only that row changes.
            let gone = s.instances.keys().next().unwrap().clone();
            s.instances.remove(&gone);
            st.save(
                &s.apps.values().collect::<Vec<_>>(),
                &s.instances.values().collect::<Vec<_>>(),
            )
            .unwrap();
        }
        let mut st = Store::open(&dir).unwrap();
        let snap = st.load().unwrap();
        assert_eq!(snap.framework_id.as_deref(), Some("fw-1"));
        assert_eq!(snap.apps.len(), 1);
        assert_eq!(snap.instances.len(), 1);
        assert_eq!(&snap.instances[0], s.instances.values().next().unwrap());
        std::fs::remove_dir_all(dir).ok();
    }
}
