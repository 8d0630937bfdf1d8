//! Persistence of the services framework: apps (with deployments and
//! backoff), instances, the framework id and autoscaling policies, in one
//! redb file. Every change
//! is written before it is acted on, so `kill -9` loses nothing. What to
//! write comes from the scheduler's change tracking ([`Changes`]): a save
//! costs the rows that changed, not the size of the state, and the actor
//! saves a whole burst of changes in one transaction (group commit).

use crate::autoscale::StoredPolicy;
use crate::scheduler::{AppState, Changes, Instance};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::path::Path;

const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Autoscaling policies, by app id (JSON of [`StoredPolicy`]).
const AUTOSCALERS: TableDefinition<&str, &[u8]> = TableDefinition::new("autoscalers");

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

/// Where the framework keeps its state: redb ([`Store`]) in production,
/// fakes in tests (e.g. one whose writes fail).
pub trait StateStore: Send + 'static {
    /// Writes what changed since the last successful call; on error nothing
    /// is known to be stored, and the next call writes it again.
    fn save(
        &mut self,
        apps: &BTreeMap<String, AppState>,
        instances: &BTreeMap<String, Instance>,
        changes: &Changes,
    ) -> Result<(), StoreError>;
    fn set_framework_id(&mut self, id: &str) -> Result<(), StoreError>;
    /// Writes (or with `None`, deletes) an app's autoscaling policy, in a
    /// transaction of its own; on error nothing is known to be stored.
    fn put_policy(&mut self, app_id: &str, row: Option<&StoredPolicy>) -> Result<(), StoreError>;
}

impl StateStore for Store {
    fn save(
        &mut self,
        apps: &BTreeMap<String, AppState>,
        instances: &BTreeMap<String, Instance>,
        changes: &Changes,
    ) -> Result<(), StoreError> {
        Store::save(self, apps, instances, changes)
    }
    fn set_framework_id(&mut self, id: &str) -> Result<(), StoreError> {
        Store::set_framework_id(self, id)
    }
    fn put_policy(&mut self, app_id: &str, row: Option<&StoredPolicy>) -> Result<(), StoreError> {
        Store::put_policy(self, app_id, row)
    }
}

/// Everything stored.
pub struct Snapshot {
    pub framework_id: Option<String>,
    pub apps: Vec<AppState>,
    pub instances: Vec<Instance>,
    /// Apps whose rows were written by an earlier version and upgraded as
    /// they were read (see `crate::upgrade`): to be written back.
    pub upgraded: Vec<String>,
    /// Autoscaling policies by app id (rows of apps that no longer exist
    /// are left out: see [`Store::load`]).
    pub policies: Vec<(String, StoredPolicy)>,
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
        tx.open_table(AUTOSCALERS).map_err(|e| err(&e))?;
        tx.commit().map_err(|e| err(&e))?;
        Ok(Store { db, path: shown })
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
        let mut upgraded = Vec::new();
        for row in tx
            .open_table(APPS)
            .map_err(|e| self.err(e))?
            .iter()
            .map_err(|e| self.err(e))?
        {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let bad = |e: serde_json::Error| self.err(format!("app {}: {e}", k.value()));
            let mut raw: serde_json::Value = serde_json::from_slice(v.value()).map_err(bad)?;
            if crate::upgrade::app_state(k.value(), &mut raw) {
                upgraded.push(k.value().to_string());
                apps.push(serde_json::from_value(raw).map_err(bad)?);
            } else {
                // From the bytes: floats come back bit for bit.
                apps.push(serde_json::from_slice(v.value()).map_err(bad)?);
            }
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
        // A policy whose app is gone (deleted, and the framework stopped
        // before the policy's row was): left out, and deleted below.
        let mut policies = Vec::new();
        let mut orphans = Vec::new();
        for row in tx
            .open_table(AUTOSCALERS)
            .map_err(|e| self.err(e))?
            .iter()
            .map_err(|e| self.err(e))?
        {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let id = k.value().to_string();
            if !apps.iter().any(|a| a.app.id == id) {
                orphans.push(id);
                continue;
            }
            let p: StoredPolicy = serde_json::from_slice(v.value())
                .map_err(|e| self.err(format!("autoscaling policy of {id}: {e}")))?;
            policies.push((id, p));
        }
        drop(tx);
        for id in orphans {
            tracing::info!(app_id = %id, "dropping the autoscaling policy of an app that no longer exists");
            self.put_policy(&id, None)?;
        }
        Ok(Snapshot {
            framework_id,
            apps,
            instances,
            upgraded,
            policies,
        })
    }

    /// Writes (or with `None`, deletes) an app's autoscaling policy (one
    /// transaction, fsync included).
    pub fn put_policy(&self, app_id: &str, row: Option<&StoredPolicy>) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(AUTOSCALERS).map_err(|e| self.err(e))?;
            match row {
                Some(p) => {
                    let bytes = serde_json::to_vec(p).map_err(|e| self.err(e))?;
                    t.insert(app_id, bytes.as_slice())
                        .map_err(|e| self.err(e))?;
                }
                None => {
                    t.remove(app_id).map_err(|e| self.err(e))?;
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Writes the rows named in `changes` (one transaction, fsync
    /// included): each key present in `apps`/`instances` is written, each
    /// absent one deleted. Rows are keyed as the maps are: app id, task id.
    pub fn save(
        &mut self,
        apps: &BTreeMap<String, AppState>,
        instances: &BTreeMap<String, Instance>,
        changes: &Changes,
    ) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(APPS).map_err(|e| self.err(e))?;
            for k in &changes.apps {
                match apps.get(k) {
                    Some(a) => {
                        let row = serde_json::to_vec(a).map_err(|e| self.err(e))?;
                        t.insert(k.as_str(), row.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        t.remove(k.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
            let mut t = tx.open_table(INSTANCES).map_err(|e| self.err(e))?;
            for k in &changes.instances {
                match instances.get(k) {
                    Some(i) => {
                        let row = serde_json::to_vec(i).map_err(|e| self.err(e))?;
                        t.insert(k.as_str(), row.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        t.remove(k.as_str()).map_err(|e| self.err(e))?;
                    }
                }
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

    fn offer(id: &str, cpus: u32) -> agora_sdk::Offer {
        agora_sdk::Offer {
            id: id.into(),
            agent_id: format!("ag-{id}").as_str().into(),
            hostname: format!("h-{id}"),
            address: None,
            resources: agora_core::Resources::parse(&format!("cpus:{cpus};mem:4096")).unwrap(),
            attributes: vec![],
            role: "*".into(),
        }
    }

    fn temp_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("agora-svc-store-{}", uuid::Uuid::new_v4().simple()))
    }

    #[test]
    fn writes_changes_and_reloads_them() {
        let dir = temp_dir();
        let mut s = Services::new();
        let app = crate::app::parse_app(
            &serde_json::json!({"id": "/a", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16}),
        )
        .unwrap();
        s.put_app(app, false);
        s.offers(vec![offer("o", 4)]);
        assert_eq!(s.instances().len(), 2);
        let gone = s.instances().keys().next().unwrap().clone();
        {
            let mut st = Store::open(&dir).unwrap();
            st.set_framework_id("fw-1").unwrap();
            let c = s.take_changes();
            assert_eq!((c.apps.len(), c.instances.len()), (1, 2));
            st.save(s.apps(), s.instances(), &c).unwrap();
            // One instance ends: only its row changes (it is deleted).
            s.update(&agora_sdk::TaskStatus {
                task_id: gone.as_str().into(),
                agent_id: "ag-o".into(),
                state: agora_core::TaskState::Finished,
                message: String::new(),
                reason: String::new(),
                exit_code: None,
                healthy: None,
                ready: None,
                uuid: vec![],
            });
            let c = s.take_changes();
            assert_eq!(c.instances.iter().collect::<Vec<_>>(), vec![&gone]);
            st.save(s.apps(), s.instances(), &c).unwrap();
        }
        let mut st = Store::open(&dir).unwrap();
        let snap = st.load().unwrap();
        assert_eq!(snap.framework_id.as_deref(), Some("fw-1"));
        assert_eq!(snap.apps.len(), 1);
        assert_eq!(snap.instances.len(), 1);
        assert_eq!(&snap.instances[0], s.instances().values().next().unwrap());
        std::fs::remove_dir_all(dir).ok();
    }

    /// Issue 11: autoscaling policies (with their suspension) come back
    /// as written; a policy whose app is gone is left out and deleted.
    #[test]
    fn policies_round_trip_and_orphans_are_dropped() {
        let dir = temp_dir();
        let policy: agora_core::autoscale::Policy = serde_json::from_value(serde_json::json!({
            "min": 0, "max": 7, "idleAfterSeconds": 120,
            "targets": [{"metric": "latencyP95", "value": 150}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}))
        .unwrap();
        let row = StoredPolicy {
            policy,
            suspended: Some("a manual scale was forced".into()),
        };
        let mut s = Services::new();
        s.put_app(
            crate::app::parse_app(&serde_json::json!({"id": "/a", "cmd": "x"})).unwrap(),
            false,
        );
        {
            let mut st = Store::open(&dir).unwrap();
            let c = s.take_changes();
            st.save(s.apps(), s.instances(), &c).unwrap();
            st.put_policy("/a", Some(&row)).unwrap();
            st.put_policy("/gone", Some(&row)).unwrap();
        }
        let mut st = Store::open(&dir).unwrap();
        let snap = st.load().unwrap();
        assert_eq!(snap.policies, vec![("/a".to_string(), row.clone())]);
        // The orphan's row was deleted, not just skipped.
        let tx = st.db.begin_read().unwrap();
        assert!(
            tx.open_table(AUTOSCALERS)
                .unwrap()
                .get("/gone")
                .unwrap()
                .is_none()
        );
        drop(tx);
        st.put_policy("/a", None).unwrap();
        assert!(st.load().unwrap().policies.is_empty());
        std::fs::remove_dir_all(dir).ok();
    }

    /// A row written before `portDefinitions[].port` meant the service port
    /// is upgraded as it is read (all ports fixed: kept with requirePorts),
    /// named in the snapshot, and once written back reads as it is.
    #[test]
    fn old_port_rows_are_upgraded_on_load_and_written_back() {
        let dir = temp_dir();
        let app = crate::app::parse_app(&serde_json::json!({"id": "/a", "cmd": "x"})).unwrap();
        let mut row = serde_json::to_value(AppState {
            app,
            delay: 0.0,
            next_launch_at: 0.0,
            waiting: None,
            deployment: None,
            last_task_failure: None,
        })
        .unwrap();
        row["app"]["portDefinitions"] = serde_json::json!([
            {"port": 8080, "servicePort": 10_000, "protocol": "tcp"}]);
        row["app"].as_object_mut().unwrap().remove("requirePorts");
        {
            let st = Store::open(&dir).unwrap();
            let tx = st.db.begin_write().unwrap();
            let bytes = serde_json::to_vec(&row).unwrap();
            tx.open_table(APPS)
                .unwrap()
                .insert("/a", bytes.as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let mut st = Store::open(&dir).unwrap();
        let snap = st.load().unwrap();
        assert_eq!(snap.upgraded, ["/a"]);
        let a = &snap.apps[0].app;
        assert!(a.require_ports);
        assert_eq!(a.port_definitions[0].port, 8080);
        assert_eq!(a.host_port_requests(), [Some(8080)]);
        let mut s = Services::restore(snap.apps, snap.instances);
        s.mark_app_changed("/a");
        let c = s.take_changes();
        assert!(c.apps.contains("/a"));
        st.save(s.apps(), s.instances(), &c).unwrap();
        let again = st.load().unwrap();
        assert!(again.upgraded.is_empty());
        assert_eq!(again.apps[0].app, s.apps()["/a"].app);
        std::fs::remove_dir_all(dir).ok();
    }

    /// Whatever the framework does, what is stored after each save is what
    /// it holds in memory (change tracking misses nothing), and a restored
    /// framework has the same indexes.
    #[test]
    fn stored_state_always_equals_memory() {
        use agora_core::TaskState::*;
        use proptest::prelude::*;
        let states = [
            Running,
            Finished,
            Failed,
            Killed,
            Unreachable,
            Unknown,
            Error,
            Lost,
        ];
        let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
            cases: 24,
            ..Default::default()
        });
        let ops = proptest::collection::vec((0u8..8, 0usize..64, 0usize..8, any::<bool>()), 1..60);
        runner
            .run(&ops, |ops| {
                let dir = temp_dir();
                let mut st = Store::open(&dir).unwrap();
                let mut s = Services::new();
                for (step, (op, pick, state, flag)) in ops.into_iter().enumerate() {
                    let app_id = format!("/app{}", pick % 3);
                    match op {
                        0 | 1 => {
                            let mut def = serde_json::json!({"id": app_id, "cmd": "x",
                                "instances": pick % 5, "cpus": 0.1, "mem": 16,
                                "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5}});
                            if flag {
                                def["env"] = serde_json::json!({"V": step.to_string()});
                            }
                            s.put_app(crate::app::parse_app(&def).unwrap(), false);
                        }
                        2 => {
                            s.offers(vec![offer(&format!("o{step}"), 1 + (pick % 4) as u32)]);
                        }
                        3 => {
                            s.delete_app(&app_id);
                        }
                        4 => {
                            s.tick();
                        }
                        _ => {
                            let ids: Vec<String> = s.instances().keys().cloned().collect();
                            if let Some(t) = ids.get(pick % ids.len().max(1)) {
                                let mut u = agora_sdk::TaskStatus {
                                    task_id: t.as_str().into(),
                                    agent_id: "ag".into(),
                                    state: states[state],
                                    message: String::new(),
                                    reason: String::new(),
                                    exit_code: None,
                                    healthy: None,
                                    ready: None,
                                    uuid: vec![],
                                };
                                if op == 6 {
                                    u.state = Running;
                                    u.healthy = Some(flag);
                                }
                                s.update(&u);
                            }
                        }
                    }
                    s.check_indexes().map_err(TestCaseError::fail)?;
                    if step % 3 == 0 {
                        let c = s.take_changes();
                        st.save(s.apps(), s.instances(), &c).unwrap();
                        let snap = st.load().unwrap();
                        let apps: BTreeMap<String, AppState> =
                            snap.apps.into_iter().map(|a| (a.app.id.clone(), a)).collect();
                        let insts: BTreeMap<String, Instance> = snap
                            .instances
                            .into_iter()
                            .map(|i| (i.task_id.clone(), i))
                            .collect();
                        prop_assert_eq!(&apps, s.apps());
                        let strip = |m: &BTreeMap<String, Instance>| -> BTreeMap<String, Instance> {
                            m.iter()
                                .map(|(k, i)| (k.clone(), Instance { kill_sent_at: None, drain_version: None, ..i.clone() }))
                                .collect()
                        };
                        prop_assert_eq!(strip(&insts), strip(s.instances()));
                        let back = Services::restore(
                            apps.into_values().collect(),
                            insts.into_values().collect(),
                        );
                        back.check_indexes().map_err(TestCaseError::fail)?;
                    }
                }
                std::fs::remove_dir_all(&dir).ok();
                Ok(())
            })
            .unwrap();
    }
}
