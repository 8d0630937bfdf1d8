//! The agent's task handling, driven directly (no master): what it accepts
//! from the master and from its checkpoint.

use super::*;
use crate::HollowRuntime;

struct Harness {
    agent: Agent,
    out: mpsc::Sender<pb::AgentMessage>,
    _out_rx: mpsc::Receiver<pb::AgentMessage>,
    runtime: HollowRuntime,
    events: mpsc::UnboundedReceiver<RuntimeEvent>,
}

fn harness(work_dir: Option<std::path::PathBuf>) -> Harness {
    let (tx, events) = mpsc::unbounded_channel();
    let runtime = HollowRuntime::new(tx.clone(), Duration::ZERO);
    let (control, _) = mpsc::unbounded_channel();
    let (id_tx, _) = watch::channel(None);
    let (tasks_tx, _) = watch::channel(Vec::new());
    let cfg = AgentConfig {
        work_dir,
        ..AgentConfig::default()
    };
    let agent = Agent::new(cfg, Arc::new(runtime.clone()), tx, control, id_tx, tasks_tx);
    let (out, _out_rx) = mpsc::channel(1024);
    Harness {
        agent,
        out,
        _out_rx,
        runtime,
        events,
    }
}

impl Harness {
    /// Feeds the runtime's events so far to the agent.
    fn drain(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            self.agent.record(ev);
        }
    }

    fn task_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.agent.tasks.keys().map(|(_, t)| t.0.clone()).collect();
        v.sort();
        v
    }
}

fn task(id: &str) -> pb::TaskInfo {
    pb::TaskInfo {
        task_id: id.into(),
        command: Some(pb::CommandInfo {
            value: "serve".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn run_tasks(fw: &str, tasks: Vec<pb::TaskInfo>) -> pb::MasterMessage {
    pb::MasterMessage {
        message: Some(pb::master_message::Message::RunTasks(pb::RunTasks {
            framework: Some(pb::FrameworkInfo {
                framework_id: fw.into(),
                name: "test".into(),
                ..Default::default()
            }),
            tasks,
        })),
    }
}

pub(super) fn temp_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("agora-agent-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn launches_with_invalid_ids_are_refused() {
    let mut h = harness(None);
    let tasks = vec![task(".."), task("."), task(""), task("a b"), task("ok")];
    h.agent.on_master(run_tasks("f", tasks), &h.out).await;
    assert_eq!(h.task_ids(), ["ok"]);
    assert_eq!(
        h.runtime.live_tasks(),
        1,
        "only the valid task was launched"
    );
    // A framework id that would name a directory outside the sandboxes.
    h.agent
        .on_master(run_tasks("..", vec![task("x")]), &h.out)
        .await;
    assert_eq!(h.task_ids(), ["ok"]);
    assert_eq!(h.runtime.live_tasks(), 1);
    h.drain();
}

#[tokio::test]
async fn checkpointed_tasks_with_invalid_ids_are_not_recovered() {
    use prost::Message;
    let dir = temp_dir();
    let entry = |fw: &str, id: &str| pb::CheckpointTask {
        framework_id: fw.into(),
        task: Some(task(id)),
        state: pb::TaskState::TaskRunning as i32,
        pending: vec![],
        handle: String::new(),
    };
    let cp = pb::AgentCheckpoint {
        agent_id: "a1".into(),
        frameworks: vec![],
        tasks: vec![
            entry("f", "ok"),
            entry("f", ".."),
            entry("..", "t"),
            entry("f", "a/../b c"),
        ],
    };
    std::fs::write(dir.join("checkpoint.pb"), cp.encode_to_vec()).unwrap();
    let mut h = harness(Some(dir.clone()));
    h.agent.recover().await.unwrap();
    assert_eq!(h.task_ids(), ["ok"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A runtime that records what it is asked and re-attaches to every task it
/// is asked to recover.
#[derive(Default)]
struct Recording(std::sync::Mutex<Vec<String>>);

impl ContainerRuntime for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn launch(&self, spec: LaunchSpec) -> crate::runtime::BoxFuture<'_, ()> {
        self.0
            .lock()
            .unwrap()
            .push(format!("launch {}", spec.task.id));
        Box::pin(async {})
    }
    fn kill(
        &self,
        _: &FrameworkId,
        t: &TaskId,
        grace: Duration,
    ) -> crate::runtime::BoxFuture<'_, ()> {
        self.0.lock().unwrap().push(format!("kill {t} {grace:?}"));
        Box::pin(async {})
    }
    fn recover(
        &self,
        tasks: Vec<LaunchSpec>,
    ) -> crate::runtime::BoxFuture<'_, crate::runtime::RecoverResult> {
        for t in &tasks {
            self.0
                .lock()
                .unwrap()
                .push(format!("recover {}", t.task.id));
        }
        Box::pin(async { Ok(Vec::new()) })
    }
}

fn recording_agent(work_dir: Option<std::path::PathBuf>) -> (Agent, Arc<Recording>) {
    let rt = Arc::new(Recording::default());
    let (tx, _) = mpsc::unbounded_channel();
    let (control, _) = mpsc::unbounded_channel();
    let cfg = AgentConfig {
        work_dir,
        ..AgentConfig::default()
    };
    let agent = Agent::new(
        cfg,
        rt.clone(),
        tx,
        control,
        watch::channel(None).0,
        watch::channel(Vec::new()).0,
    );
    (agent, rt)
}

pub(super) fn queued(agent: &Agent, task: &str) -> Vec<(TaskState, String, String)> {
    agent.tasks[&(FrameworkId::new("f"), TaskId::new(task))]
        .queue
        .iter()
        .filter_map(|p| p.update.status.as_ref())
        .map(|s| (s.task_state().unwrap(), s.reason.clone(), s.message.clone()))
        .collect()
}

fn check(interval: f64) -> pb::HealthCheck {
    pb::HealthCheck {
        protocol: pb::health_check::Protocol::Tcp as i32,
        port: 8080,
        interval_seconds: interval,
        timeout_seconds: 1.0,
        max_consecutive_failures: 3,
        ..Default::default()
    }
}

#[tokio::test]
async fn tasks_with_bad_numbers_end_task_error_naming_the_field_and_never_run() {
    let (mut agent, rt) = recording_agent(None);
    let (out, _rx) = mpsc::channel(16);
    let with = |id: &str, f: &dyn Fn(&mut pb::TaskInfo)| {
        let mut t = task(id);
        f(&mut t);
        t
    };
    let tasks = vec![
        with("nan-interval", &|t| t.health_checks = vec![check(f64::NAN)]),
        with("inf-timeout", &|t| {
            let mut c = check(1.0);
            c.timeout_seconds = f64::INFINITY;
            t.readiness_checks = vec![c];
        }),
        with("negative-grace", &|t| {
            let mut c = check(1.0);
            c.grace_period_seconds = -1.0;
            t.health_checks = vec![check(1.0), c];
        }),
        with("nan-kill-grace", &|t| t.kill_grace_seconds = f64::NAN),
        with("big-port", &|t| {
            let mut c = check(1.0);
            c.port = 70_000;
            t.health_checks = vec![c];
        }),
        with("good", &|t| t.health_checks = vec![check(10.0)]),
    ];
    agent.on_master(run_tasks("f", tasks), &out).await;
    for (id, field) in [
        ("nan-interval", "task.health_checks[0].interval_seconds"),
        ("inf-timeout", "task.readiness_checks[0].timeout_seconds"),
        (
            "negative-grace",
            "task.health_checks[1].grace_period_seconds",
        ),
        ("nan-kill-grace", "task.kill_grace_seconds"),
        ("big-port", "task.health_checks[0].port"),
    ] {
        let q = queued(&agent, id);
        assert_eq!(q.len(), 1, "{id}: {q:?}");
        let (state, reason, message) = &q[0];
        assert_eq!(*state, TaskState::Error, "{id}");
        assert_eq!(reason, crate::runtime::REASON_TASK_INVALID);
        assert!(message.contains(field), "{id}: {message}");
    }
    assert_eq!(*rt.0.lock().unwrap(), ["launch good"]);
}

#[tokio::test]
async fn a_recovered_task_whose_checks_are_invalid_is_stopped_and_reported_failed() {
    use prost::Message;
    let dir = temp_dir();
    let mut bad = task("bad");
    bad.health_checks = vec![check(f64::NAN)];
    let entry = |t: pb::TaskInfo| pb::CheckpointTask {
        framework_id: "f".into(),
        task: Some(t),
        state: pb::TaskState::TaskRunning as i32,
        pending: vec![],
        handle: String::new(),
    };
    let cp = pb::AgentCheckpoint {
        agent_id: "a1".into(),
        frameworks: vec![],
        tasks: vec![entry(bad), entry(task("good"))],
    };
    std::fs::write(dir.join("checkpoint.pb"), cp.encode_to_vec()).unwrap();
    let (mut agent, rt) = recording_agent(Some(dir.clone()));
    agent.recover().await.unwrap();
    let q = queued(&agent, "bad");
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].0, TaskState::Failed);
    assert!(
        q[0].2.contains("task.health_checks[0].interval_seconds"),
        "{q:?}"
    );
    assert!(queued(&agent, "good").is_empty());
    let mut calls = rt.0.lock().unwrap().clone();
    calls.sort();
    assert_eq!(calls, ["kill bad 5s", "recover bad", "recover good"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn heartbeat_intervals_from_the_master_never_panic() {
    for (secs, want) in [
        (5.0, Duration::from_secs(5)),
        (0.5, Duration::from_millis(500)),
        (0.0, Duration::from_secs(2)),
        (-1.0, Duration::from_secs(2)),
        (f64::NAN, Duration::from_secs(2)),
        (f64::INFINITY, Duration::from_secs(2)),
        (1e300, Duration::from_secs(2)),
    ] {
        assert_eq!(heartbeat_interval(secs), want, "{secs}");
    }
}

/// Records every span opened: its name and fields, as `name k=v k=v`.
#[derive(Clone, Default)]
struct Spans(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={v:?}", f.name()));
            }
        }
        let mut v = Fields(attrs.metadata().name().to_string());
        attrs.record(&mut v);
        self.0.lock().unwrap().push(v.0);
    }
}

#[tokio::test]
async fn task_handling_runs_in_spans_naming_framework_and_task() {
    use prost::Message;
    use tracing_subscriber::layer::SubscriberExt;
    let spans = Spans::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));

    let mut h = harness(None);
    h.agent
        .on_master(run_tasks("f", vec![task("t1")]), &h.out)
        .await;
    h.drain();
    h.agent.kill(&"f".into(), &"t1".into()).await;
    h.drain();

    let dir = temp_dir();
    let cp = pb::AgentCheckpoint {
        agent_id: "a1".into(),
        frameworks: vec![],
        tasks: vec![pb::CheckpointTask {
            framework_id: "f".into(),
            task: Some(task("r1")),
            state: pb::TaskState::TaskRunning as i32,
            pending: vec![],
            handle: String::new(),
        }],
    };
    std::fs::write(dir.join("checkpoint.pb"), cp.encode_to_vec()).unwrap();
    let mut h = harness(Some(dir.clone()));
    h.agent.recover().await.unwrap();

    let got = spans.0.lock().unwrap().clone();
    for want in [
        "launch framework_id=f task_id=t1",
        "status_update framework_id=f task_id=t1 state=TASK_STARTING",
        "status_update framework_id=f task_id=t1 state=TASK_RUNNING",
        "kill framework_id=f task_id=t1",
        "status_update framework_id=f task_id=t1 state=TASK_KILLED",
        "recover runtime=\"hollow\"",
        // The hollow runtime keeps nothing across restarts: recovery reports it.
        "status_update framework_id=f task_id=r1 state=TASK_FAILED",
    ] {
        assert!(
            got.iter().any(|s| s == want),
            "no span {want:?} in {got:#?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_kill_that_arrived_while_launching_survives_a_restart() {
    let dir = temp_dir();
    let (mut agent, rt) = recording_agent(Some(dir.clone()));
    let (out, _rx) = mpsc::channel(16);
    agent.on_master(run_tasks("f", vec![task("t")]), &out).await;
    // Still STAGING (the runtime said nothing yet): remembered, not done.
    agent.kill(&"f".into(), &"t".into()).await;
    agent.persist();
    drop(agent); // kill -9
    let (mut agent, rt2) = recording_agent(Some(dir.clone()));
    agent.recover().await.unwrap();
    let calls = rt2.0.lock().unwrap().clone();
    assert_eq!(rt.0.lock().unwrap().clone(), ["launch t", "kill t 5s"]);
    assert_eq!(calls, ["recover t", "kill t 5s"], "the kill was forgotten");
    assert!(agent.tasks[&("f".into(), "t".into())].kill_requested);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A kill order for a task that ended while the agent was down is dropped
/// from kills.json at recovery: a later run of the same task id survives
/// the next restart.
#[tokio::test]
async fn a_kill_order_for_a_task_that_ended_while_down_does_not_kill_its_relaunch() {
    let dir = temp_dir();
    let key = (FrameworkId::new("f"), TaskId::new("t"));
    // Run 1: t runs, a kill is ordered, the agent dies before t ends.
    let (mut a1, _rt1) = recording_agent(Some(dir.clone()));
    let (out, _rx) = mpsc::channel(16);
    a1.on_master(run_tasks("f", vec![task("t")]), &out).await;
    a1.record(RuntimeEvent::new(&key.0, &key.1, TaskState::Running));
    a1.kill(&key.0, &key.1).await;
    a1.persist();
    drop(a1);
    let kills = || std::fs::read_to_string(dir.join("kills.json")).unwrap();
    assert!(kills().contains("\"t\""), "{}", kills());
    // Run 2: t ended while the agent was down (hollow: nothing survives).
    let mut h = harness(Some(dir.clone()));
    h.agent.recover().await.unwrap();
    assert!(h.agent.tasks[&key].state.is_terminal());
    // Every update of t acknowledged: t is released.
    while let Some(uuid) = h
        .agent
        .tasks
        .get(&key)
        .and_then(|t| t.queue.front())
        .and_then(|p| p.update.status.as_ref())
        .map(|s| s.uuid.clone())
    {
        let m = pb::MasterMessage {
            message: Some(pb::master_message::Message::Acks(pb::UpdateAcks {
                acks: vec![pb::UpdateAck {
                    framework_id: "f".into(),
                    task_id: "t".into(),
                    uuid,
                }],
            })),
        };
        let out = h.out.clone();
        h.agent.on_master(m, &out).await;
        h.agent.persist();
    }
    assert!(!h.agent.tasks.contains_key(&key));
    eprintln!("kills.json after t was released: {}", kills());
    // The framework launches t again (allowed once acknowledged); it runs.
    let out = h.out.clone();
    h.agent
        .on_master(run_tasks("f", vec![task("t")]), &out)
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.drain();
    h.agent.persist();
    assert_eq!(h.agent.tasks[&key].state, TaskState::Running);
    drop(h);
    // Run 3: a plain restart; the new t is re-attached...
    let (mut a3, rt3) = recording_agent(Some(dir.clone()));
    a3.recover().await.unwrap();
    let calls = rt3.0.lock().unwrap().clone();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !calls.iter().any(|c| c.starts_with("kill t")),
        "the relaunched t was killed by a stale kill order: {calls:?}"
    );
}

/// A task with a kill order that ended while the agent was down is
/// reported KILLED (the kill is what was asked), not FAILED.
#[tokio::test]
async fn a_kill_that_finishes_while_the_agent_is_down_is_reported_killed() {
    let dir = temp_dir();
    let key = (FrameworkId::new("f"), TaskId::new("t"));
    let (mut a1, _rt1) = recording_agent(Some(dir.clone()));
    let (out, _rx) = mpsc::channel(16);
    a1.on_master(run_tasks("f", vec![task("t")]), &out).await;
    a1.record(RuntimeEvent::new(&key.0, &key.1, TaskState::Running));
    a1.kill(&key.0, &key.1).await;
    a1.persist();
    drop(a1);
    // The hollow runtime keeps nothing: t is gone at recovery.
    let mut h = harness(Some(dir.clone()));
    h.agent.recover().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let last = queued(&h.agent, "t").pop().unwrap();
    assert_eq!(last.0, TaskState::Killed, "{last:?}");
}

/// An update is in the checkpoint before it is sent: a crash right after
/// sending cannot make the agent derive it again under a new uuid.
#[tokio::test]
async fn an_update_is_checkpointed_before_it_is_sent() {
    use prost::Message;
    let dir = temp_dir();
    let (mut agent, _rt) = recording_agent(Some(dir.clone()));
    let (out, mut rx) = mpsc::channel(16);
    agent.on_master(run_tasks("f", vec![task("t")]), &out).await;
    agent.persist();
    let (f, t) = (FrameworkId::new("f"), TaskId::new("t"));
    agent.record(RuntimeEvent::new(&f, &t, TaskState::Running));
    agent.flush_due(&out, Instant::now()).await;
    let mut sent = Vec::new();
    while let Ok(m) = rx.try_recv() {
        if let Some(pb::agent_message::Message::Updates(u)) = m.message {
            sent.extend(u.updates.into_iter().filter_map(|u| u.status));
        }
    }
    let cp =
        pb::AgentCheckpoint::decode(std::fs::read(dir.join("checkpoint.pb")).unwrap().as_slice())
            .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let checkpointed: Vec<Vec<u8>> = cp
        .tasks
        .iter()
        .flat_map(|t| {
            t.pending
                .iter()
                .filter_map(|p| Some(p.status.as_ref()?.uuid.clone()))
        })
        .collect();
    assert!(!sent.is_empty());
    for s in sent {
        assert!(
            checkpointed.contains(&s.uuid),
            "{:?} sent before it was checkpointed",
            s.task_state()
        );
    }
}

/// The checkpoint and the kill orders (the tasks' environment, secrets
/// included) are readable by the agent's user only, files of an older
/// agent included.
#[tokio::test]
async fn the_checkpoint_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    for name in ["checkpoint.pb", "kills.json", "checkpoint.tmp", "kills.tmp"] {
        std::fs::write(dir.join(name), b"").unwrap();
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (mut agent, _rt) = recording_agent(Some(dir.clone()));
    let (out, _rx) = mpsc::channel(16);
    agent.on_master(run_tasks("f", vec![task("t")]), &out).await;
    let (f, t) = (FrameworkId::new("f"), TaskId::new("t"));
    agent.record(RuntimeEvent::new(&f, &t, TaskState::Running));
    agent.kill(&f, &t).await;
    agent.persist();
    let mode = |n: &str| {
        std::fs::metadata(dir.join(n))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    };
    let modes = (mode("checkpoint.pb"), mode("kills.json"));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(modes, (0o600, 0o600));
}
