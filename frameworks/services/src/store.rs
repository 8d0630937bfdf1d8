//! Persistence of the services framework: apps (with deployments and
//! backoff), instances and the framework id, in one redb file. Every change
//! is written (only the rows that changed, in one transaction) before it is
//! acted on, so `kill -9` loses nothing.

use crate::scheduler::{AppState, Instance};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
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
    written_apps: BTreeMap<String, AppState>,
    written_instances: BTreeMap<String, Instance>,
}

/// What changed from `before` to `now` (both sorted by key): the entries to
/// write and the keys to delete.
fn diff<'a, T: PartialEq>(
    now: &'a BTreeMap<String, T>,
    before: &BTreeMap<String, T>,
) -> (Vec<(&'a String, &'a T)>, Vec<String>) {
    use std::cmp::Ordering;
    let (mut up, mut del) = (Vec::new(), Vec::new());
    let (mut a, mut b) = (now.iter().peekable(), before.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => up.extend(a.by_ref()),
            (None, Some(_)) => del.extend(b.by_ref().map(|(k, _)| k.clone())),
            (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
                Ordering::Less => up.extend(a.next()),
                Ordering::Greater => del.extend(b.next().map(|(k, _)| k.clone())),
                Ordering::Equal => {
                    if let (Some((k, v)), Some((_, old))) = (a.next(), b.next())
                        && v != old
                    {
                        up.push((k, v));
                    }
                }
            },
        }
    }
    (up, del)
}

/// Where the framework keeps its state: redb ([`Store`]) in production,
/// fakes in tests (e.g. one whose writes fail).
pub trait StateStore: Send + 'static {
    /// Writes what changed since the last successful call; on error nothing
    /// is known to be stored, and the next call writes it again.
    fn save(
        &mut self,
        apps: &BTreeMap<String, AppState>,
        instances: &BTreeMap<String, Instance>,
    ) -> Result<(), StoreError>;
    fn set_framework_id(&mut self, id: &str) -> Result<(), StoreError>;
}

impl StateStore for Store {
    fn save(
        &mut self,
        apps: &BTreeMap<String, AppState>,
        instances: &BTreeMap<String, Instance>,
    ) -> Result<(), StoreError> {
        Store::save(self, apps, instances)
    }
    fn set_framework_id(&mut self, id: &str) -> Result<(), StoreError> {
        Store::set_framework_id(self, id)
    }
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
        let mut apps: Vec<AppState> = Vec::new();
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
        }
        let mut instances: Vec<Instance> = Vec::new();
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
        }
        // Keyed as the caller's maps are: the app id and the task id.
        self.written_apps = apps.iter().map(|a| (a.app.id.clone(), a.clone())).collect();
        self.written_instances = instances
            .iter()
            .map(|i| (i.task_id.clone(), i.clone()))
            .collect();
        Ok(Snapshot {
            framework_id,
            apps,
            instances,
        })
    }

    /// Writes what changed since the last call (one transaction). Each app
    /// and instance is compared with the copy last written (a merge of two
    /// sorted maps, no serialisation), so a status update costs one row and
    /// a comparison per instance, not a rewrite of everything.
    pub fn save(
        &mut self,
        apps: &BTreeMap<String, AppState>,
        instances: &BTreeMap<String, Instance>,
    ) -> Result<(), StoreError> {
        let (app_up, app_del) = diff(apps, &self.written_apps);
        let (inst_up, inst_del) = diff(instances, &self.written_instances);
        if app_up.is_empty() && app_del.is_empty() && inst_up.is_empty() && inst_del.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(APPS).map_err(|e| self.err(e))?;
            for (k, a) in &app_up {
                let row = serde_json::to_vec(a).map_err(|e| self.err(e))?;
                t.insert(k.as_str(), row.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            for k in &app_del {
                t.remove(k.as_str()).map_err(|e| self.err(e))?;
            }
            let mut t = tx.open_table(INSTANCES).map_err(|e| self.err(e))?;
            for (k, i) in &inst_up {
                let row = serde_json::to_vec(i).map_err(|e| self.err(e))?;
                t.insert(k.as_str(), row.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            for k in &inst_del {
                t.remove(k.as_str()).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        for (k, a) in app_up {
            self.written_apps.insert(k.clone(), a.clone());
        }
        for k in app_del {
            self.written_apps.remove(&k);
        }
        for (k, i) in inst_up {
            self.written_instances.insert(k.clone(), i.clone());
        }
        for k in inst_del {
            self.written_instances.remove(&k);
        }
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

    #[test]
    fn diff_finds_what_to_write_and_what_to_delete() {
        let map = |v: &[(&str, u32)]| -> BTreeMap<String, u32> {
            v.iter().map(|(k, x)| (k.to_string(), *x)).collect()
        };
        let before = map(&[("a", 1), ("b", 2), ("d", 4), ("f", 6)]);
        let now = map(&[("b", 2), ("c", 3), ("d", 5), ("g", 7)]);
        let (up, del) = diff(&now, &before);
        let up: Vec<(&str, u32)> = up.into_iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(up, vec![("c", 3), ("d", 5), ("g", 7)]);
        assert_eq!(del, vec!["a".to_string(), "f".to_string()]);
        let (up, del) = diff(&now, &now);
        assert!(up.is_empty() && del.is_empty());
        let empty = BTreeMap::new();
        let (up, del) = diff(&empty, &before);
        assert!(up.is_empty() && del.len() == 4);
    }

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
            st.save(&s.apps, &s.instances).unwrap();
            // One instance goes: only that row changes.
            let gone = s.instances.keys().next().unwrap().clone();
            s.instances.remove(&gone);
            st.save(&s.apps, &s.instances).unwrap();
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
