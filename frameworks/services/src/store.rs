//! Persistence of the services framework: apps (with deployments and
//! backoff), instances and the framework id, in one redb file. Every change
//! is written before it is acted on, so `kill -9` loses nothing.

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
        Ok(Store { db, path: shown })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = tx.open_table(META).map_err(|e| self.err(e))?;
        let framework_id = meta
            .get("framework_id")
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_string());
        let mut apps = Vec::new();
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
        }
        Ok(Snapshot {
            framework_id,
            apps,
            instances,
        })
    }

    /// Replaces the stored apps and instances with these (one transaction).
    pub fn save(&self, apps: &[&AppState], instances: &[&Instance]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(APPS).map_err(|e| self.err(e))?;
            t.retain(|_, _| false).map_err(|e| self.err(e))?;
            for a in apps {
                let bytes = serde_json::to_vec(a).map_err(|e| self.err(e))?;
                t.insert(a.app.id.as_str(), bytes.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            let mut t = tx.open_table(INSTANCES).map_err(|e| self.err(e))?;
            t.retain(|_, _| false).map_err(|e| self.err(e))?;
            for i in instances {
                let bytes = serde_json::to_vec(i).map_err(|e| self.err(e))?;
                t.insert(i.task_id.as_str(), bytes.as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
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
