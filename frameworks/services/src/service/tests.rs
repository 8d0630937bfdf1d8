use super::*;
use agora_core::OfferId;
use agora_core::{Resources, TaskState};
use agora_proto::pb;
use agora_sdk::SdkError;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// (task id, uuid) of an acknowledged update.
type Ack = (String, Vec<u8>);

/// Records what the actor asks of the master.
#[derive(Clone, Default)]
struct Recorder {
    acks: Arc<Mutex<Vec<Ack>>>,
    launched: Arc<Mutex<Vec<String>>>,
    killed: Arc<Mutex<Vec<String>>>,
    /// What the master says of secret paths.
    secrets: Arc<Mutex<Vec<agora_sdk::SecretVersion>>>,
}

impl Recorder {
    fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }
}

impl MasterLink for Recorder {
    async fn accept(
        &self,
        _offer: &OfferId,
        tasks: Vec<pb::TaskInfo>,
        _refuse: Duration,
    ) -> Result<(), SdkError> {
        let mut l = self.launched.lock().unwrap();
        l.extend(tasks.into_iter().map(|t| t.task_id));
        Ok(())
    }
    async fn decline(&self, _o: &[OfferId], _r: Duration) -> Result<(), SdkError> {
        Ok(())
    }
    async fn kill(&self, t: &TaskId, _a: &AgentId) -> Result<(), SdkError> {
        self.killed.lock().unwrap().push(t.0.clone());
        Ok(())
    }
    async fn suppress(&self) -> Result<(), SdkError> {
        Ok(())
    }
    async fn revive(&self) -> Result<(), SdkError> {
        Ok(())
    }
    async fn reconcile(&self, _t: Vec<(TaskId, Option<AgentId>)>) -> Result<(), SdkError> {
        Ok(())
    }
    async fn secret_versions(
        &self,
        paths: Vec<String>,
    ) -> Result<Vec<agora_sdk::SecretVersion>, agora_sdk::SecretVersionsError> {
        let known = self.secrets.lock().unwrap().clone();
        Ok(paths
            .into_iter()
            .map(|p| {
                known
                    .iter()
                    .find(|v| v.path == p)
                    .cloned()
                    .unwrap_or(agora_sdk::SecretVersion {
                        path: p,
                        exists: false,
                        latest: 0,
                        rollout: 0,
                    })
            })
            .collect())
    }
    async fn acknowledge(&self, statuses: Vec<TaskStatus>) {
        let mut a = self.acks.lock().unwrap();
        a.extend(
            statuses
                .into_iter()
                .filter(|s| !s.uuid.is_empty())
                .map(|s| (s.task_id.0, s.uuid)),
        );
    }
}

/// A store whose writes fail while `fail` is set (framework ids while
/// `id_fail` is); keeps what it stored.
#[derive(Default)]
struct FlakyStore {
    fail: Arc<AtomicBool>,
    stored: Arc<Mutex<BTreeMap<String, Instance>>>,
    apps: Arc<Mutex<BTreeMap<String, AppState>>>,
    id_fail: Arc<AtomicBool>,
    ids: Arc<Mutex<Vec<String>>>,
    policies: Arc<Mutex<BTreeMap<String, crate::autoscale::StoredPolicy>>>,
}

impl StateStore for FlakyStore {
    fn save(
        &mut self,
        apps: &BTreeMap<String, AppState>,
        instances: &BTreeMap<String, Instance>,
        changes: &crate::scheduler::Changes,
    ) -> Result<(), crate::store::StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(crate::store::StoreError {
                path: "flaky".into(),
                message: "disk full".into(),
            });
        }
        let mut stored_apps = self.apps.lock().unwrap();
        for k in &changes.apps {
            match apps.get(k) {
                Some(a) => stored_apps.insert(k.clone(), a.clone()),
                None => stored_apps.remove(k),
            };
        }
        let mut stored = self.stored.lock().unwrap();
        for k in &changes.instances {
            match instances.get(k) {
                Some(i) => stored.insert(k.clone(), i.clone()),
                None => stored.remove(k),
            };
        }
        Ok(())
    }
    fn set_framework_id(&mut self, id: &str) -> Result<(), crate::store::StoreError> {
        if self.id_fail.load(Ordering::SeqCst) {
            return Err(crate::store::StoreError {
                path: "flaky".into(),
                message: "disk full".into(),
            });
        }
        self.ids.lock().unwrap().push(id.to_string());
        Ok(())
    }
    fn put_policy(
        &mut self,
        app_id: &str,
        row: Option<&crate::autoscale::StoredPolicy>,
    ) -> Result<(), crate::store::StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(crate::store::StoreError {
                path: "flaky".into(),
                message: "disk full".into(),
            });
        }
        let mut p = self.policies.lock().unwrap();
        match row {
            Some(r) => p.insert(app_id.to_string(), r.clone()),
            None => p.remove(app_id),
        };
        Ok(())
    }
}

fn running(task: &str, uuid: u8) -> TaskStatus {
    TaskStatus {
        task_id: TaskId::new(task),
        agent_id: AgentId::new("ag"),
        state: TaskState::Running,
        message: String::new(),
        reason: String::new(),
        exit_code: None,
        healthy: None,
        ready: None,
        uuid: vec![uuid],
    }
}

fn offer(id: &str) -> Offer {
    Offer {
        id: OfferId::new(id),
        agent_id: AgentId::new("ag"),
        hostname: "h".into(),
        address: None,
        resources: Resources::parse("cpus:4;mem:1024").unwrap(),
        attributes: vec![],
        role: "*".into(),
    }
}

async fn scale(tx: &mpsc::Sender<Msg<Recorder>>, n: u32) -> Result<(), ApiError> {
    let (reply, rx) = oneshot::channel();
    let req = Request::Scale {
        id: "/a".into(),
        instances: n,
        force: false,
        reply,
    };
    tx.send(Msg::Api(req)).await.ok().unwrap();
    rx.await.unwrap()
}

/// Issue 7, bug 9: an update whose effect could not be stored is not
/// acknowledged (so the agent sends it again); once stored, it is.
#[tokio::test]
async fn an_update_is_acknowledged_only_once_its_effect_is_stored() {
    let mut s = Services::new();
    let app = crate::app::parse_app(
        &serde_json::json!({"id": "/a", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16}),
    )
    .unwrap();
    s.put_app(app, false);
    s.offers(vec![offer("o1")]);
    let task = s.instances().keys().next().unwrap().clone();

    let fail = Arc::new(AtomicBool::new(true));
    let stored = Arc::new(Mutex::new(BTreeMap::new()));
    let store = FlakyStore {
        fail: fail.clone(),
        stored: stored.clone(),
        ..FlakyStore::default()
    };
    let (events, _) = tokio::sync::broadcast::channel(16);
    let actor = Actor::new(
        s,
        store,
        Some("fw".into()),
        events,
        Hub::new(0, Duration::ZERO),
    );
    let (tx, rx) = mpsc::channel(16);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let join = tokio::spawn(actor.run(rx, stop_rx));
    let link = Recorder::default();
    tx.send(Msg::Subscribed(link.clone(), FrameworkId::new("fw")))
        .await
        .ok()
        .unwrap();

    // The store fails: the update is applied but not acknowledged, and
    // the API request that follows it says the write failed.
    tx.send(Msg::Update(running(&task, 7))).await.ok().unwrap();
    assert!(matches!(scale(&tx, 1).await, Err(ApiError::Store(_))));
    assert!(
        link.acks().is_empty(),
        "acknowledged unstored updates: {:?}",
        link.acks()
    );
    assert!(stored.lock().unwrap().is_empty());
    // Nothing launches from state that is not stored.
    tx.send(Msg::Offers(vec![offer("o2")])).await.ok().unwrap();
    assert!(scale(&tx, 2).await.is_err());
    assert!(link.launched.lock().unwrap().is_empty());

    // The store is back and the agent sends the update again: stored,
    // then acknowledged.
    fail.store(false, Ordering::SeqCst);
    tx.send(Msg::Update(running(&task, 7))).await.ok().unwrap();
    assert!(scale(&tx, 1).await.is_ok());
    assert_eq!(link.acks(), vec![(task.clone(), vec![7])]);
    assert_eq!(stored.lock().unwrap()[&task].state, TaskState::Running);
    join.abort();
}

async fn ask<T>(
    tx: &mpsc::Sender<Msg<Recorder>>,
    make: impl FnOnce(oneshot::Sender<T>) -> Request,
) -> T {
    let (reply, rx) = oneshot::channel();
    tx.send(Msg::Api(make(reply))).await.ok().unwrap();
    rx.await.unwrap()
}

/// Issue 8, item 9: an API change whose write fails changes nothing, in
/// memory either, and nothing of it is sent: a "failed" delete kills no
/// instance, a failed task kill kills none, a failed deployment or scale
/// leaves the app as it was. Once the store is back, the same change is
/// stored, then acted on.
#[tokio::test]
async fn an_api_change_that_cannot_be_stored_changes_nothing() {
    let mut s = Services::new();
    let app = crate::app::parse_app(
        &serde_json::json!({"id": "/a", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 16}),
    )
    .unwrap();
    s.put_app(app, false);
    s.offers(vec![offer("o1")]);
    let tasks: Vec<String> = s.instances().keys().cloned().collect();
    for t in &tasks {
        s.update(&running(t, 1));
    }
    let fail = Arc::new(AtomicBool::new(false));
    let apps = Arc::new(Mutex::new(BTreeMap::new()));
    let stored = Arc::new(Mutex::new(BTreeMap::new()));
    let store = FlakyStore {
        fail: fail.clone(),
        stored: stored.clone(),
        apps: apps.clone(),
        ..FlakyStore::default()
    };
    let (events, _) = tokio::sync::broadcast::channel(16);
    let actor = Actor::new(
        s,
        store,
        Some("fw".into()),
        events,
        Hub::new(0, Duration::ZERO),
    );
    let (tx, rx) = mpsc::channel(16);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let join = tokio::spawn(actor.run(rx, stop_rx));
    let link = Recorder::default();
    tx.send(Msg::Subscribed(link.clone(), FrameworkId::new("fw")))
        .await
        .ok()
        .unwrap();
    assert!(scale(&tx, 2).await.is_ok());
    let before = ask(&tx, |reply| Request::View { reply }).await;
    let stored_before = apps.lock().unwrap().clone();
    assert_eq!(stored_before.len(), 1);

    fail.store(true, Ordering::SeqCst);
    let r = ask(&tx, |reply| Request::DeleteApp {
        id: "/a".into(),
        reply,
    })
    .await;
    assert!(matches!(r, Err(ApiError::Store(_))), "{r:?}");
    let r = ask(&tx, |reply| Request::KillTasks {
        app_id: "/a".into(),
        task: Some(tasks[0].clone()),
        host: None,
        scale: true,
        reply,
    })
    .await;
    assert!(matches!(r, Err(ApiError::Store(_))), "{r:?}");
    assert!(matches!(scale(&tx, 0).await, Err(ApiError::Store(_))));
    let mut changed = before.apps[0].app.clone();
    changed.env.insert("V".into(), "2".into());
    let r = ask(&tx, |reply| Request::PutApp {
        app: Box::new(changed),
        create: false,
        force_restart: false,
        force: false,
        reply,
    })
    .await;
    assert!(matches!(r, Err(ApiError::Store(_))), "{r:?}");
    assert!(
        link.killed.lock().unwrap().is_empty(),
        "killed for changes that were not stored: {:?}",
        link.killed.lock().unwrap()
    );
    // In memory too, everything is as it was.
    let after = ask(&tx, |reply| Request::View { reply }).await;
    assert_eq!(after.apps, before.apps);
    assert_eq!(after.instances, before.instances);

    // The store is back: what is stored is what was there (a restart
    // finds the app), and the delete, asked again, is stored and done.
    fail.store(false, Ordering::SeqCst);
    assert!(scale(&tx, 2).await.is_ok());
    assert_eq!(*apps.lock().unwrap(), stored_before);
    assert!(stored.lock().unwrap().values().all(|i| !i.killing));
    let r = ask(&tx, |reply| Request::DeleteApp {
        id: "/a".into(),
        reply,
    })
    .await;
    assert!(r.is_ok(), "{r:?}");
    assert!(apps.lock().unwrap().is_empty());
    let mut killed = link.killed.lock().unwrap().clone();
    killed.sort();
    assert_eq!(killed, tasks);
    join.abort();
}

/// A framework id that could not be stored is stored at a later commit,
/// and nothing is launched until it is: after a restart the framework
/// would subscribe as a new one and its tasks would be orphaned.
/// `/v1/info` says whether the framework is connected.
#[tokio::test]
async fn nothing_launches_until_the_framework_id_is_stored() {
    let mut s = Services::new();
    let app = crate::app::parse_app(
        &serde_json::json!({"id": "/a", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16}),
    )
    .unwrap();
    s.put_app(app, false);
    let store = FlakyStore::default();
    let (id_fail, ids) = (store.id_fail.clone(), store.ids.clone());
    id_fail.store(true, Ordering::SeqCst);
    let (events, _) = tokio::sync::broadcast::channel(16);
    let actor = Actor::new(s, store, None, events, Hub::new(0, Duration::ZERO));
    let (tx, rx) = mpsc::channel(16);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let join = tokio::spawn(actor.run(rx, stop_rx));
    let link = Recorder::default();
    let info = |tx| async move { ask(tx, |reply| Request::View { reply }).await };
    assert!(!info(&tx).await.connected);
    tx.send(Msg::Subscribed(link.clone(), FrameworkId::new("fw-new")))
        .await
        .ok()
        .unwrap();
    tx.send(Msg::Offers(vec![offer("o1")])).await.ok().unwrap();
    let v = info(&tx).await;
    assert!(v.connected);
    assert!(
        link.launched.lock().unwrap().is_empty(),
        "launched under a framework id that is not stored"
    );
    assert!(ids.lock().unwrap().is_empty());

    // The store is back: the id is stored at the next commit, then offers
    // are used.
    id_fail.store(false, Ordering::SeqCst);
    tx.send(Msg::Offers(vec![offer("o2")])).await.ok().unwrap();
    let _ = info(&tx).await;
    assert_eq!(*ids.lock().unwrap(), vec!["fw-new".to_string()]);
    assert_eq!(link.launched.lock().unwrap().len(), 1);

    tx.send(Msg::Disconnected).await.ok().unwrap();
    assert!(!info(&tx).await.connected, "disconnected");
    join.abort();
}

/// Review: a restart reads and changes the app in one actor step. Before,
/// the API read the app, then put it back as a new version: a DELETE in
/// between was undone (the put created the app again) and a scale in
/// between was reverted. A restart of an app that is gone is a 404.
#[tokio::test]
async fn a_restart_keeps_a_scale_made_just_before_and_does_not_recreate_a_deleted_app() {
    let mut s = Services::new();
    let app = crate::app::parse_app(
        &serde_json::json!({"id": "/a", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 16}),
    )
    .unwrap();
    s.put_app(app, false);
    let (events, _) = tokio::sync::broadcast::channel(16);
    let actor = Actor::new(
        s,
        FlakyStore::default(),
        Some("fw".into()),
        events,
        Hub::new(0, Duration::ZERO),
    );
    let (tx, rx) = mpsc::channel(16);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let join = tokio::spawn(actor.run(rx, stop_rx));
    let before = ask(&tx, |reply| Request::View { reply }).await;
    assert!(scale(&tx, 3).await.is_ok());
    let d = ask(&tx, |reply| Request::Restart {
        secret_versions: None,
        id: "/a".into(),
        reply,
    })
    .await
    .expect("restarted");
    assert!(d.is_some(), "a restart is a deployment");
    let v = ask(&tx, |reply| Request::View { reply }).await;
    assert_eq!(v.apps[0].app.instances, 3, "the scale stays");
    assert_ne!(v.apps[0].app.version, before.apps[0].app.version);
    let r = ask(&tx, |reply| Request::DeleteApp {
        id: "/a".into(),
        reply,
    })
    .await;
    assert!(r.is_ok(), "{r:?}");
    let r = ask(&tx, |reply| Request::Restart {
        secret_versions: None,
        id: "/a".into(),
        reply,
    })
    .await;
    assert!(matches!(r, Err(ApiError::NoApp(_))), "{r:?}");
    let v = ask(&tx, |reply| Request::View { reply }).await;
    assert!(v.apps.is_empty(), "not created again");
    join.abort();
}

#[test]
fn the_driver_leaves_acknowledgements_to_the_actor() {
    let cfg = ServicesConfig {
        master: "http://127.0.0.1:5050".into(),
        data_dir: PathBuf::from("/nonexistent"),
        name: "services".into(),
        role: "*".into(),
        failover_timeout: Duration::from_secs(60),
        service_ports: (10_000, 20_000),
        master_tls: None,
        master_token: None,
        api_tokens: false,
        drain_principals: Vec::new(),
    };
    let f = framework_config(&cfg, Some("fw-1".into()));
    assert!(!f.auto_acknowledge);
    assert_eq!(f.framework_id, Some(FrameworkId::new("fw-1")));
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 2 s");
}

/// Issue 9: a serving instance the framework removes is published as
/// draining, and killed once the connected drain participant acknowledges
/// that version as drained (well before drainSeconds); a participant whose
/// stream dropped still holds the next drain until it acknowledges it.
#[tokio::test]
async fn a_kill_waits_for_the_drain_participants_acknowledgement() {
    use agora_core::endpoints::EndpointState;
    let mut s = Services::new();
    let app = crate::app::parse_app(&serde_json::json!({"id": "/a", "cmd": "x", "instances": 3,
        "cpus": 0.1, "mem": 16, "portDefinitions": [{"port": 0}], "labels": {"drainSeconds": "60"}}))
    .unwrap();
    s.put_app(app, false);
    let mut o = offer("o1");
    o.resources = Resources::parse("cpus:4;mem:1024;ports:[31000-31010]").unwrap();
    s.offers(vec![o]);
    let tasks: Vec<String> = s.instances().keys().cloned().collect();
    for t in &tasks {
        s.update(&running(t, 1));
    }
    let hub = Hub::new(0, Duration::ZERO);
    let joined = hub.join("r1");
    let (events, _) = tokio::sync::broadcast::channel(16);
    let actor = Actor::new(
        s,
        FlakyStore::default(),
        Some("fw".into()),
        events,
        hub.clone(),
    );
    let (tx, rx) = mpsc::channel(16);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let join = tokio::spawn(actor.run(rx, stop_rx));
    let link = Recorder::default();
    tx.send(Msg::Subscribed(link.clone(), FrameworkId::new("fw")))
        .await
        .ok()
        .unwrap();
    assert!(scale(&tx, 2).await.is_ok());
    let snap = hub.snapshot();
    let draining: Vec<String> = snap.sets[0]
        .endpoints
        .iter()
        .filter(|e| e.state == EndpointState::Draining)
        .map(|e| e.task_id.clone())
        .collect();
    assert_eq!(draining.len(), 1, "{snap:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        link.killed.lock().unwrap().is_empty(),
        "killed before the participant drained"
    );
    // Applied but not drained yet: still waits.
    hub.ack("r1", Some(snap.version), Some(snap.version - 1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(link.killed.lock().unwrap().is_empty());
    hub.ack("r1", None, Some(snap.version));
    eventually("the kill after the drained ack", || {
        *link.killed.lock().unwrap() == draining
    })
    .await;

    // Its stream drops: it still routes by its last view, so it still
    // holds the next drain; its ack (after the drop) releases it.
    drop(joined);
    assert!(scale(&tx, 1).await.is_ok());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        link.killed.lock().unwrap().len(),
        1,
        "killed while the disconnected router may still send it requests"
    );
    let v = hub.snapshot().version;
    assert!(hub.ack("r1", Some(v), Some(v)));
    eventually("the kill after the departed router's ack", || {
        link.killed.lock().unwrap().len() == 2
    })
    .await;
    join.abort();
}

/// Issue 10: the framework polls the versions of the secrets apps use; a
/// grown rollout version gives the app a new version pinned to it (a
/// deployment, stored), a version staged with --no-rollout does not.
#[tokio::test]
async fn a_new_rollout_version_of_a_secret_rolls_the_app_that_uses_it() {
    let mut s = Services::new();
    let mut app = crate::app::parse_app(&serde_json::json!({"id": "/a", "cmd": "x",
        "instances": 1, "cpus": 0.1, "mem": 16,
        "secrets": {"pw": {"source": "/prod/pw"}}, "env": {"PW": {"secret": "pw"}}}))
    .unwrap();
    app.secret_versions.insert("/prod/pw".into(), 1);
    s.put_app(app, false);
    let apps = Arc::new(Mutex::new(BTreeMap::new()));
    let store = FlakyStore {
        apps: apps.clone(),
        ..FlakyStore::default()
    };
    let (events, _) = tokio::sync::broadcast::channel(64);
    let actor = Actor::new(
        s,
        store,
        Some("fw".into()),
        events,
        Hub::new(0, Duration::ZERO),
    );
    let (tx, rx) = mpsc::channel(16);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let join = tokio::spawn(actor.run(rx, stop_rx));
    let link = Recorder::default();
    let set = |latest: u64, rollout: u64| {
        *link.secrets.lock().unwrap() = vec![agora_sdk::SecretVersion {
            path: "/prod/pw".into(),
            exists: true,
            latest,
            rollout,
        }];
    };
    set(2, 1); // staged with --no-rollout
    tx.send(Msg::Subscribed(link.clone(), FrameworkId::new("fw")))
        .await
        .ok()
        .unwrap();
    let version = ask(&tx, |reply| Request::View { reply }).await.apps[0]
        .app
        .version
        .clone();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let v = ask(&tx, |reply| Request::View { reply }).await;
    assert_eq!(
        v.apps[0].app.version, version,
        "--no-rollout rolled the app"
    );
    assert_eq!(v.apps[0].app.secret_versions["/prod/pw"], 1);

    set(3, 3);
    let mut rolled = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let v = ask(&tx, |reply| Request::View { reply }).await;
        if v.apps[0].app.secret_versions["/prod/pw"] == 3 {
            rolled = Some(v);
            break;
        }
    }
    let v = rolled.expect("the app did not roll to the new secret version");
    assert_ne!(v.apps[0].app.version, version, "a new app version");
    assert!(v.apps[0].deployment.is_some(), "rolled by a deployment");
    // Stored: a restart of the framework does not roll it again.
    assert_eq!(
        apps.lock().unwrap()["/a"].app.secret_versions["/prod/pw"],
        3
    );
    // Deleted out from under the app: nothing is killed or rolled.
    *link.secrets.lock().unwrap() = vec![];
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = ask(&tx, |reply| Request::View { reply }).await;
    assert_eq!(after.apps[0].app.version, v.apps[0].app.version);
    assert!(link.killed.lock().unwrap().is_empty());
    join.abort();
}

mod autoscale;
