//! The registry: which agents were admitted (and which are unreachable), so a
//! restarted master recognises returning agents. Tasks and frameworks are not
//! stored: they are rebuilt from re-registering agents and resubscribing
//! frameworks (Mesos semantics), which keeps the store small.
//!
//! [`Registry`] is the seam: [`RedbRegistry`] (embedded, on disk) and
//! [`MemoryRegistry`] (tests) implement it; a ZooKeeper one comes with HA.

use agora_core::{AgentId, Resources};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One admitted agent as persisted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegisteredAgent {
    pub id: AgentId,
    pub hostname: String,
    pub resources: Resources,
    pub attributes: Vec<(String, String)>,
    /// The role its resources are reserved for (`*`: unreserved; absent in
    /// entries written before reservations existed).
    #[serde(default = "unreserved")]
    pub role: String,
    /// Seconds since the Unix epoch when it was marked unreachable.
    pub unreachable_since: Option<u64>,
}

fn unreserved() -> String {
    agora_core::info::DEFAULT_ROLE.to_string()
}

#[derive(Clone, Debug, PartialEq)]
pub enum RegistryOp {
    Admit(RegisteredAgent),
    MarkUnreachable(AgentId, u64),
    MarkReachable(AgentId),
    Remove(AgentId),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("registry at {path}: {message}")]
    Io { path: String, message: String },
    #[error("registry entry for agent {agent} is corrupt: {message}")]
    Corrupt { agent: String, message: String },
}

/// Persistent registry of agents. Implementations apply a batch of ops
/// atomically.
pub trait Registry: Send + 'static {
    fn load(&self) -> Result<Vec<RegisteredAgent>, StoreError>;
    fn apply(&mut self, ops: &[RegistryOp]) -> Result<(), StoreError>;
    /// The redb database behind this registry, if any, for the master's
    /// other records (tokens) to keep their own tables in the same file.
    fn shared_database(&self) -> Option<std::sync::Arc<redb::Database>> {
        None
    }
    /// Where this registry keeps the secret store's sealed records (the
    /// same backend as the agents); `None` if it keeps none.
    fn secret_registry(&self) -> Option<std::sync::Arc<dyn crate::secrets::store::SecretRegistry>> {
        None
    }
}

fn apply_to_map(map: &mut BTreeMap<String, RegisteredAgent>, op: &RegistryOp) {
    match op {
        RegistryOp::Admit(a) => {
            map.insert(a.id.0.clone(), a.clone());
        }
        RegistryOp::MarkUnreachable(id, t) => {
            if let Some(a) = map.get_mut(id.as_str()) {
                a.unreachable_since = Some(*t);
            }
        }
        RegistryOp::MarkReachable(id) => {
            if let Some(a) = map.get_mut(id.as_str()) {
                a.unreachable_since = None;
            }
        }
        RegistryOp::Remove(id) => {
            map.remove(id.as_str());
        }
    }
}

/// In-memory registry (tests; a master started without a data dir).
#[derive(Default, Clone)]
pub struct MemoryRegistry {
    agents: BTreeMap<String, RegisteredAgent>,
    secrets: crate::secrets::store::MemorySecrets,
}

impl Registry for MemoryRegistry {
    fn load(&self) -> Result<Vec<RegisteredAgent>, StoreError> {
        Ok(self.agents.values().cloned().collect())
    }
    fn apply(&mut self, ops: &[RegistryOp]) -> Result<(), StoreError> {
        for op in ops {
            apply_to_map(&mut self.agents, op);
        }
        Ok(())
    }
    fn secret_registry(&self) -> Option<std::sync::Arc<dyn crate::secrets::store::SecretRegistry>> {
        Some(std::sync::Arc::new(self.secrets.clone()))
    }
}

const AGENTS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("agents");

/// The embedded registry: one redb file `registry.redb` under the data dir.
pub struct RedbRegistry {
    db: std::sync::Arc<redb::Database>,
    path: String,
}

impl RedbRegistry {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("registry.redb");
        let shown = path.display().to_string();
        let io = |e: &dyn std::fmt::Display| StoreError::Io {
            path: shown.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
        let db = redb::Database::create(&path).map_err(|e| io(&e))?;
        let tx = db.begin_write().map_err(|e| io(&e))?;
        tx.open_table(AGENTS).map_err(|e| io(&e))?;
        tx.commit().map_err(|e| io(&e))?;
        Ok(RedbRegistry {
            db: std::sync::Arc::new(db),
            path: shown,
        })
    }

    /// The database, shared with the master's other persistent records
    /// (secrets, tokens), which keep their own tables in the same file so
    /// that one registry implementation carries everything.
    pub fn database(&self) -> std::sync::Arc<redb::Database> {
        self.db.clone()
    }

    /// The file's path, for error messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

impl Registry for RedbRegistry {
    fn shared_database(&self) -> Option<std::sync::Arc<redb::Database>> {
        Some(self.database())
    }

    fn load(&self) -> Result<Vec<RegisteredAgent>, StoreError> {
        use redb::{ReadableDatabase, ReadableTable};
        let tx = self.db.begin_read().map_err(|e| self.io(e))?;
        let table = tx.open_table(AGENTS).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.io(e))? {
            let (k, v) = entry.map_err(|e| self.io(e))?;
            let agent: RegisteredAgent =
                serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                    agent: k.value().to_string(),
                    message: e.to_string(),
                })?;
            out.push(agent);
        }
        Ok(out)
    }

    fn apply(&mut self, ops: &[RegistryOp]) -> Result<(), StoreError> {
        use redb::ReadableTable;
        let tx = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut table = tx.open_table(AGENTS).map_err(|e| self.io(e))?;
            for op in ops {
                let id = match op {
                    RegistryOp::Admit(a) => &a.id,
                    RegistryOp::MarkUnreachable(id, _)
                    | RegistryOp::MarkReachable(id)
                    | RegistryOp::Remove(id) => id,
                };
                let current: Option<RegisteredAgent> = table
                    .get(id.as_str())
                    .map_err(|e| self.io(e))?
                    .and_then(|v| serde_json::from_slice(v.value()).ok());
                let mut map = BTreeMap::new();
                if let Some(c) = current {
                    map.insert(id.0.clone(), c);
                }
                apply_to_map(&mut map, op);
                match map.get(id.as_str()) {
                    Some(a) => {
                        let bytes = serde_json::to_vec(a).map_err(|e| self.io(e))?;
                        table
                            .insert(id.as_str(), bytes.as_slice())
                            .map_err(|e| self.io(e))?;
                    }
                    None => {
                        table.remove(id.as_str()).map_err(|e| self.io(e))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| self.io(e))?;
        Ok(())
    }

    fn secret_registry(&self) -> Option<std::sync::Arc<dyn crate::secrets::store::SecretRegistry>> {
        Some(std::sync::Arc::new(
            crate::secrets::store::RedbSecrets::new(self.db.clone(), self.path.clone()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> RegisteredAgent {
        RegisteredAgent {
            id: AgentId::new(id),
            hostname: "h".into(),
            resources: Resources::parse("cpus:2;mem:100;ports:[1-5]").unwrap(),
            attributes: vec![("zone".into(), "a".into())],
            role: "public".into(),
            unreachable_since: None,
        }
    }

    #[test]
    fn redb_registry_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("agora-reg-{}", uuid::Uuid::new_v4()));
        {
            let mut r = RedbRegistry::open(&dir).unwrap();
            r.apply(&[
                RegistryOp::Admit(agent("a1")),
                RegistryOp::Admit(agent("a2")),
                RegistryOp::MarkUnreachable(AgentId::new("a2"), 42),
                RegistryOp::Admit(agent("a3")),
                RegistryOp::Remove(AgentId::new("a3")),
            ])
            .unwrap();
        }
        let r = RedbRegistry::open(&dir).unwrap();
        let agents = r.load().unwrap();
        assert_eq!(agents.len(), 2);
        assert_eq!(agents[0], agent("a1"));
        assert_eq!(agents[1].unreachable_since, Some(42));
        std::fs::remove_dir_all(dir).ok();
    }
}
