//! Persistence of the secret store behind the registry seam.
//!
//! [`SecretRegistry`] stores, per secret path, one [`SecretRecord`]
//! (metadata and the sealed versions: ciphertexts, wrapped data keys,
//! nonces — never a value or an unwrapped key) and one [`KeyCheck`] naming
//! the KEK that sealed the store. Implementations apply a batch of
//! [`SecretOp`]s atomically and durably before returning.
//!
//! - [`RedbRegistry`](crate::store::RedbRegistry): a `secrets` table in the
//!   same `registry.redb` file as the agents (key: the path, or
//!   [`KEY_CHECK_KEY`]; value: the record as JSON).
//! - [`MemorySecrets`]: in memory, for tests and a master without a data dir
//!   (nothing survives a restart).
//! - A ZooKeeper registry (HA, later) stores the same records, one znode per
//!   path plus the key check, written in one multi-op.

use super::crypto::{KeyCheck, Sealed};
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The key under which the key check is stored (not a valid secret path).
pub const KEY_CHECK_KEY: &str = "#key-check";

/// One kept version of a secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u64,
    /// Seconds since the Unix epoch.
    pub created: f64,
    /// The value's length in bytes.
    pub size: u64,
    /// Whether it was put with rollout requested (apps using the secret roll).
    pub rollout: bool,
    pub sealed: Sealed,
}

/// A secret path's record. A deleted secret keeps a record without
/// versions (a tombstone), so that version numbers are never reused: a task
/// pinned to version 3 never gets another value called version 3.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub path: String,
    /// The highest version ever given out for this path.
    pub last_version: u64,
    /// Kept versions, oldest first; empty when deleted.
    pub versions: Vec<VersionRecord>,
}

/// One change to the stored secrets.
#[derive(Clone, Debug)]
pub enum SecretOp {
    Put(SecretRecord),
    SetKeyCheck(KeyCheck),
}

/// Everything stored.
#[derive(Clone, Debug, Default)]
pub struct StoredSecrets {
    pub key_check: Option<KeyCheck>,
    pub records: Vec<SecretRecord>,
}

/// Persistent storage of sealed secrets. `apply` is atomic and durable.
pub trait SecretRegistry: Send + Sync + 'static {
    fn load_secrets(&self) -> Result<StoredSecrets, StoreError>;
    fn apply_secrets(&self, ops: &[SecretOp]) -> Result<(), StoreError>;
}

/// In-memory secret storage (tests; a master without a data dir).
#[derive(Default, Clone)]
pub struct MemorySecrets {
    inner: Arc<Mutex<MemoryInner>>,
}

type MemoryInner = (Option<KeyCheck>, BTreeMap<String, SecretRecord>);

impl SecretRegistry for MemorySecrets {
    fn load_secrets(&self) -> Result<StoredSecrets, StoreError> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(StoredSecrets {
            key_check: g.0.clone(),
            records: g.1.values().cloned().collect(),
        })
    }
    fn apply_secrets(&self, ops: &[SecretOp]) -> Result<(), StoreError> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for op in ops {
            match op {
                SecretOp::Put(r) => {
                    g.1.insert(r.path.clone(), r.clone());
                }
                SecretOp::SetKeyCheck(k) => g.0 = Some(k.clone()),
            }
        }
        Ok(())
    }
}

const SECRETS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("secrets");

/// The secrets table of `registry.redb`.
pub struct RedbSecrets {
    db: Arc<redb::Database>,
    path: String,
}

impl RedbSecrets {
    pub fn new(db: Arc<redb::Database>, path: String) -> RedbSecrets {
        RedbSecrets { db, path }
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            message: format!("secrets table: {e}"),
        }
    }
}

impl SecretRegistry for RedbSecrets {
    fn load_secrets(&self) -> Result<StoredSecrets, StoreError> {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db.begin_read().map_err(|e| self.io(e))?;
        let table = match tx.open_table(SECRETS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(StoredSecrets::default()),
            Err(e) => return Err(self.io(e)),
        };
        let mut out = StoredSecrets::default();
        for entry in table.iter().map_err(|e| self.io(e))? {
            let (k, v) = entry.map_err(|e| self.io(e))?;
            let corrupt = |e: serde_json::Error| StoreError::Io {
                path: self.path.clone(),
                message: format!("secrets table: the record {} is corrupt: {e}", k.value()),
            };
            if k.value() == KEY_CHECK_KEY {
                out.key_check = Some(serde_json::from_slice(v.value()).map_err(corrupt)?);
            } else {
                out.records
                    .push(serde_json::from_slice(v.value()).map_err(corrupt)?);
            }
        }
        Ok(out)
    }

    fn apply_secrets(&self, ops: &[SecretOp]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut table = tx.open_table(SECRETS).map_err(|e| self.io(e))?;
            for op in ops {
                let (key, bytes) = match op {
                    SecretOp::Put(r) => (
                        r.path.as_str(),
                        serde_json::to_vec(r).map_err(|e| self.io(e))?,
                    ),
                    SecretOp::SetKeyCheck(k) => (
                        KEY_CHECK_KEY,
                        serde_json::to_vec(k).map_err(|e| self.io(e))?,
                    ),
                };
                table
                    .insert(key, bytes.as_slice())
                    .map_err(|e| self.io(e))?;
            }
        }
        // redb commits are durable (fsync) by default.
        tx.commit().map_err(|e| self.io(e))?;
        Ok(())
    }
}
