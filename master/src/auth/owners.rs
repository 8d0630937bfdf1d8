//! Which principal registered each framework, kept across master restarts.
//!
//! The master's state machine binds a framework to its principal in memory
//! (`Master::framework_principal`); after a restart it knows frameworks only
//! from agents' reports, without principals. This record, in the registry
//! file (table `framework_principals`), lets the SUBSCRIBE edge refuse a
//! framework id to any principal but the one that first registered it, even
//! right after a restart. Entries are written once and never change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

#[derive(Debug, thiserror::Error)]
#[error("framework owner store: {0}")]
pub struct OwnerStoreError(pub String);

/// Where the bindings persist.
pub trait OwnerStore: Send + Sync + 'static {
    fn load(&self) -> Result<Vec<(String, String)>, OwnerStoreError>;
    fn put(&self, framework: &str, principal: &str) -> Result<(), OwnerStoreError>;
}

#[derive(Default)]
pub struct MemoryOwnerStore(Mutex<Vec<(String, String)>>);

impl OwnerStore for MemoryOwnerStore {
    fn load(&self) -> Result<Vec<(String, String)>, OwnerStoreError> {
        Ok(self.0.lock().map(|v| v.clone()).unwrap_or_default())
    }
    fn put(&self, framework: &str, principal: &str) -> Result<(), OwnerStoreError> {
        if let Ok(mut v) = self.0.lock() {
            v.push((framework.to_string(), principal.to_string()));
        }
        Ok(())
    }
}

const OWNERS: redb::TableDefinition<&str, &str> =
    redb::TableDefinition::new("framework_principals");

pub struct RedbOwnerStore {
    db: Arc<redb::Database>,
}

impl RedbOwnerStore {
    pub fn open(db: Arc<redb::Database>) -> Result<Self, OwnerStoreError> {
        let e = |x: &dyn std::fmt::Display| OwnerStoreError(x.to_string());
        let tx = db.begin_write().map_err(|x| e(&x))?;
        tx.open_table(OWNERS).map_err(|x| e(&x))?;
        tx.commit().map_err(|x| e(&x))?;
        Ok(RedbOwnerStore { db })
    }
}

impl OwnerStore for RedbOwnerStore {
    fn load(&self) -> Result<Vec<(String, String)>, OwnerStoreError> {
        use redb::{ReadableDatabase, ReadableTable};
        let e = |x: &dyn std::fmt::Display| OwnerStoreError(x.to_string());
        let tx = self.db.begin_read().map_err(|x| e(&x))?;
        let t = tx.open_table(OWNERS).map_err(|x| e(&x))?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(|x| e(&x))? {
            let (k, v) = entry.map_err(|x| e(&x))?;
            out.push((k.value().to_string(), v.value().to_string()));
        }
        Ok(out)
    }
    fn put(&self, framework: &str, principal: &str) -> Result<(), OwnerStoreError> {
        let e = |x: &dyn std::fmt::Display| OwnerStoreError(x.to_string());
        let tx = self.db.begin_write().map_err(|x| e(&x))?;
        {
            let mut t = tx.open_table(OWNERS).map_err(|x| e(&x))?;
            t.insert(framework, principal).map_err(|x| e(&x))?;
        }
        tx.commit().map_err(|x| e(&x))?;
        Ok(())
    }
}

/// The bindings, in memory, written through to the store.
pub struct FrameworkOwners {
    store: Box<dyn OwnerStore>,
    map: RwLock<HashMap<String, String>>,
}

impl std::fmt::Debug for FrameworkOwners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.map.read().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("FrameworkOwners")
            .field("count", &n)
            .finish()
    }
}

impl FrameworkOwners {
    pub fn open(store: Box<dyn OwnerStore>) -> Result<Self, OwnerStoreError> {
        let map = store.load()?.into_iter().collect();
        Ok(FrameworkOwners {
            store,
            map: RwLock::new(map),
        })
    }

    pub fn memory() -> Self {
        FrameworkOwners {
            store: Box::new(MemoryOwnerStore::default()),
            map: RwLock::new(HashMap::new()),
        }
    }

    /// The principal that first registered `framework`, if recorded.
    pub fn owner(&self, framework: &str) -> Option<String> {
        self.map.read().ok()?.get(framework).cloned()
    }

    /// Records the first principal of `framework`; later calls keep it.
    pub fn record(&self, framework: &str, principal: &str) -> Result<(), OwnerStoreError> {
        if self.owner(framework).is_some() {
            return Ok(());
        }
        let mut m = self
            .map
            .write()
            .map_err(|_| OwnerStoreError("poisoned".into()))?;
        if m.contains_key(framework) {
            return Ok(());
        }
        self.store.put(framework, principal)?;
        m.insert(framework.to_string(), principal.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_owner_is_kept_and_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("agora-own-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("registry.redb");
        {
            let db = Arc::new(redb::Database::create(&path).unwrap());
            let o = FrameworkOwners::open(Box::new(RedbOwnerStore::open(db).unwrap())).unwrap();
            o.record("F1", "alpha").unwrap();
            o.record("F1", "beta").unwrap();
            assert_eq!(o.owner("F1").as_deref(), Some("alpha"));
        }
        let db = Arc::new(redb::Database::create(&path).unwrap());
        let o = FrameworkOwners::open(Box::new(RedbOwnerStore::open(db).unwrap())).unwrap();
        assert_eq!(o.owner("F1").as_deref(), Some("alpha"));
        assert_eq!(o.owner("F2"), None);
        std::fs::remove_dir_all(dir).ok();
    }
}
