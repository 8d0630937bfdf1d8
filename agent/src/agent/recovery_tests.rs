//! The agent killed at each point between its launch checkpoint and the
//! task's RUNNING update, then restarted on the same work dir: the task
//! ends up RUNNING or FAILED exactly once, with nothing left behind.
//! Crashes are fail points of the runtime (the launch stops there, as the
//! agent would if it died); the docker cases use the local engine.

use super::tests::{queued, run_tasks, temp_dir};
use super::*;
use crate::docker::DockerRuntime;
use crate::runtime::{FailAction, FailPoints};
use std::sync::atomic::{AtomicBool, Ordering};

fn sleeper(id: &str) -> pb::TaskInfo {
    pb::TaskInfo {
        task_id: id.into(),
        command: Some(pb::CommandInfo {
            value: "sleep 1000".into(),
            shell: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn agent(
    dir: &std::path::Path,
    runtime: Arc<dyn ContainerRuntime>,
    sink: crate::runtime::EventSink,
) -> Agent {
    let cfg = AgentConfig {
        work_dir: Some(dir.to_path_buf()),
        ..AgentConfig::default()
    };
    Agent::new(
        cfg,
        runtime,
        sink,
        mpsc::unbounded_channel().0,
        watch::channel(None).0,
        watch::channel(Vec::new()).0,
    )
}

/// Feeds the runtime's events to the agent for `d`.
async fn feed(a: &mut Agent, rx: &mut mpsc::UnboundedReceiver<RuntimeEvent>, d: Duration) {
    let end = tokio::time::Instant::now() + d;
    while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
        a.record(ev);
        a.persist();
    }
}

async fn docker(
    scope: &str,
    fail: FailPoints,
) -> (
    DockerRuntime,
    mpsc::UnboundedReceiver<RuntimeEvent>,
    crate::runtime::EventSink,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let rt = DockerRuntime::connect(
        tx.clone(),
        scope.into(),
        Some("agora-busybox:latest".into()),
    )
    .await
    .expect("these tests need the Docker engine")
    .with_fail_points(fail);
    (rt, rx, tx)
}

/// Launches a task on a docker agent that dies at `point` (or, with
/// `None`, right after RUNNING was recorded), restarts it, and returns the
/// task's updates (none acknowledged: its whole history) and how many of
/// its containers are left.
async fn docker_crash_at(point: Option<&'static str>) -> (Vec<TaskState>, String, usize) {
    let dir = temp_dir();
    let scope = dir.display().to_string();
    let hit = Arc::new(AtomicBool::new(point.is_none()));
    let h = hit.clone();
    let fail = FailPoints::new(move |p| {
        if Some(p) == point {
            h.store(true, Ordering::SeqCst);
            FailAction::Crash
        } else {
            FailAction::Pass
        }
    });
    let (rt, mut rx, tx) = docker(&scope, fail).await;
    let mut a1 = agent(&dir, Arc::new(rt), tx);
    let (out, _out_rx) = mpsc::channel(64);
    a1.on_master(run_tasks("f", vec![sleeper("t")]), &out).await;
    for _ in 0..400 {
        if hit.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        hit.load(Ordering::SeqCst),
        "fail point {point:?} never reached"
    );
    feed(
        &mut a1,
        &mut rx,
        Duration::from_secs(if point.is_none() { 10 } else { 1 }),
    )
    .await;
    drop(a1); // kill -9

    let (rt2, mut rx2, tx2) = docker(&scope, FailPoints::default()).await;
    let mut a2 = agent(&dir, Arc::new(rt2.clone()), tx2);
    a2.recover().await.unwrap();
    feed(&mut a2, &mut rx2, Duration::from_secs(3)).await;
    let updates = queued(&a2, "t");
    let left = rt2.list_scoped().await.unwrap().len();
    // The live one (if any) is killed and removed: nothing leaks.
    a2.kill(&"f".into(), &"t".into()).await;
    feed(&mut a2, &mut rx2, Duration::from_secs(2)).await;
    rt2.remove_all().await;
    let _ = std::fs::remove_dir_all(&dir);
    let reasons = updates
        .iter()
        .map(|u| u.1.clone())
        .collect::<Vec<_>>()
        .join(",");
    (updates.into_iter().map(|u| u.0).collect(), reasons, left)
}

/// Exactly one RUNNING or one FAILED (never FINISHED), after STARTING.
fn outcome(states: &[TaskState]) -> TaskState {
    let ends: Vec<TaskState> = states
        .iter()
        .copied()
        .filter(|s| *s != TaskState::Starting)
        .collect();
    assert_eq!(ends.len(), 1, "{states:?}");
    assert!(
        matches!(ends[0], TaskState::Running | TaskState::Failed),
        "{states:?}"
    );
    ends[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_agent_killed_before_the_container_is_created() {
    let (states, reasons, left) = docker_crash_at(Some("docker.before_create")).await;
    assert_eq!(outcome(&states), TaskState::Failed);
    assert!(
        reasons.contains(crate::runtime::REASON_CONTAINER_GONE),
        "{reasons}"
    );
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_agent_killed_between_create_and_start() {
    let (states, _, left) = docker_crash_at(Some("docker.after_create")).await;
    assert_eq!(
        outcome(&states),
        TaskState::Failed,
        "never FINISHED with exit 0"
    );
    assert_eq!(left, 0, "the never-started container is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_agent_killed_between_start_and_running() {
    let (states, _, left) = docker_crash_at(Some("docker.after_start")).await;
    assert_eq!(outcome(&states), TaskState::Running, "stuck in {states:?}");
    assert_eq!(left, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_agent_killed_after_running_reports_it_once() {
    let (states, _, left) = docker_crash_at(None).await;
    assert_eq!(outcome(&states), TaskState::Running);
    assert_eq!(left, 1);
}

/// Process runtime: killed after the pid file, before RUNNING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_agent_killed_between_start_and_running() {
    let dir = temp_dir();
    let fail = FailPoints::new(|p| {
        if p == "process.after_pid" {
            FailAction::Crash
        } else {
            FailAction::Pass
        }
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = crate::process::ProcessRuntime::new(tx.clone(), &dir).with_fail_points(fail);
    let mut a1 = agent(&dir, Arc::new(rt), tx);
    let (out, _out_rx) = mpsc::channel(64);
    a1.on_master(run_tasks("f", vec![sleeper("t")]), &out).await;
    feed(&mut a1, &mut rx, Duration::from_millis(500)).await;
    drop(a1);

    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let rt2 = crate::process::ProcessRuntime::new(tx2.clone(), &dir);
    let mut a2 = agent(&dir, Arc::new(rt2), tx2);
    a2.recover().await.unwrap();
    feed(&mut a2, &mut rx2, Duration::from_secs(1)).await;
    let states: Vec<TaskState> = queued(&a2, "t").into_iter().map(|u| u.0).collect();
    a2.kill(&"f".into(), &"t".into()).await;
    feed(&mut a2, &mut rx2, Duration::from_secs(1)).await;
    let after_kill: Vec<TaskState> = queued(&a2, "t").into_iter().map(|u| u.0).collect();
    crate::process::remove_work_dir(&dir);
    assert_eq!(outcome(&states), TaskState::Running, "stuck in {states:?}");
    assert_eq!(
        after_kill.last(),
        Some(&TaskState::Killed),
        "{after_kill:?}"
    );
}
