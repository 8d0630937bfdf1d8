//! Docker runtime faults, injected through its fail points against the
//! local engine (images from `images/build.sh`; nothing is pulled).

use super::*;
use crate::runtime::{FailAction, FailPoints};
use agora_core::Resources;
use agora_core::info::{CommandInfo, TaskInfo};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;

const IMAGE: &str = "agora-busybox:latest";

fn scope() -> String {
    format!("agora-test-{}", uuid::Uuid::new_v4().simple())
}

fn spec(task: &str, cmd: &str) -> LaunchSpec {
    LaunchSpec {
        framework_id: "f".into(),
        task: TaskInfo {
            command: Some(CommandInfo {
                value: cmd.into(),
                shell: true,
                ..Default::default()
            }),
            ..TaskInfo::new(task.into(), Resources::default())
        },
        secrets: Default::default(),
    }
}

/// Fails `point` (with an injected error) its first `n` times.
fn failing(point: &'static str, n: usize) -> (FailPoints, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let fp = FailPoints::new(move |p| {
        if p == point && s.fetch_add(1, Ordering::SeqCst) < n {
            FailAction::Error
        } else {
            FailAction::Pass
        }
    });
    (fp, seen)
}

async fn runtime(
    scope: &str,
    fail: FailPoints,
) -> (DockerRuntime, mpsc::UnboundedReceiver<RuntimeEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let rt = DockerRuntime::connect(tx, scope.into(), Some(IMAGE.into()))
        .await
        .expect("these tests need the Docker engine")
        .with_fail_points(fail);
    (rt, rx)
}

/// The next event within `d`, if any.
async fn next(rx: &mut mpsc::UnboundedReceiver<RuntimeEvent>, d: Duration) -> Option<RuntimeEvent> {
    tokio::time::timeout(d, rx.recv()).await.ok().flatten()
}

async fn until(rx: &mut mpsc::UnboundedReceiver<RuntimeEvent>, state: TaskState) -> RuntimeEvent {
    loop {
        let ev = next(rx, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("no {state} within 30 s"));
        if ev.state == state || ev.state.is_terminal() {
            assert_eq!(ev.state, state, "{ev:?}");
            return ev;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_all_right_after_a_launch_leaves_no_container() {
    // `agora dev` or a bench stopped while a launch is in flight: the
    // container is created after remove_all started; it must not survive.
    let scope = scope();
    let (rt, _rx) = runtime(&scope, FailPoints::default()).await;
    rt.launch(spec("t", "sleep 1000")).await;
    rt.remove_all().await;
    // Whatever the launch still does happens within this.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = rt.list_scoped().await.unwrap();
    rt.remove_all().await;
    assert!(left.is_empty(), "left running: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_wait_stream_is_not_an_exit() {
    let scope = scope();
    let (fail, waits) = failing("docker.wait", 3);
    let (rt, mut rx) = runtime(&scope, fail).await;
    rt.launch(spec("t", "sleep 1000")).await;
    until(&mut rx, TaskState::Running).await;
    // Three broken streams in a row (an engine restart): the task runs on.
    let early = next(&mut rx, Duration::from_secs(3)).await;
    let broken = waits.load(Ordering::SeqCst);
    rt.kill(&"f".into(), &"t".into(), Duration::from_secs(1))
        .await;
    until(&mut rx, TaskState::Killed).await;
    rt.remove_all().await;
    assert!(early.is_none(), "reported while still running: {early:?}");
    assert!(broken > 3, "the wait was not tried again ({broken} waits)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_listing_that_fails_at_recovery_is_retried_then_refused() {
    let scope = scope();
    let (rt, mut rx) = runtime(&scope, FailPoints::default()).await;
    let task = spec("t", "sleep 1000");
    rt.launch(task.clone()).await;
    until(&mut rx, TaskState::Running).await;

    // The restarted agent's first two listings fail: it retries and finds
    // the running task (RUNNING again, nothing gone).
    let (fail, _) = failing("docker.list", 2);
    let (rt2, mut rx2) = runtime(&scope, fail).await;
    let rt2 = rt2.with_list_retry(4, Duration::from_millis(20));
    let recovered = rt2.recover(vec![task.clone()]).await;
    let again = next(&mut rx2, Duration::from_secs(5)).await;

    // An engine that never answers: recovery fails, it reports nothing gone.
    let (fail, _) = failing("docker.list", usize::MAX);
    let (rt3, _rx3) = runtime(&scope, fail).await;
    let rt3 = rt3.with_list_retry(2, Duration::from_millis(10));
    let refused = rt3.recover(vec![task]).await;

    let running = rt.list_scoped().await.unwrap().len();
    rt.remove_all().await;
    assert_eq!(recovered.unwrap(), Vec::new(), "a live task reported gone");
    assert_eq!(again.map(|e| e.state), Some(TaskState::Running));
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(running, 1, "recovery removed or lost the container");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_check_of_a_bridge_container_passes_only_once_it_listens() {
    use agora_core::info::{ContainerInfo, HealthCheck, HealthProtocol, PortMapping};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut task = spec("web", "sleep 4; exec httpd -f -p 8080");
    task.task.resources = Resources::default()
        .with_ports(agora_core::Ranges::range(u32::from(port), u32::from(port)).unwrap());
    task.task.container = Some(ContainerInfo {
        image: IMAGE.into(),
        network: "bridge".into(),
        port_mappings: vec![PortMapping {
            host_port: port,
            container_port: 8080,
            protocol: "tcp".into(),
            name: String::new(),
        }],
    });
    let check = HealthCheck {
        protocol: HealthProtocol::Tcp,
        path: String::new(),
        port,
        command: String::new(),
        grace_period: Duration::ZERO,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        max_consecutive_failures: 1,
        ok_statuses: Vec::new(),
    };
    let (rt, mut rx) = runtime(&scope(), FailPoints::default()).await;
    rt.launch(task).await;
    until(&mut rx, TaskState::Running).await;
    let (fw, id) = ("f".into(), "web".into());
    // Nothing listens in the container yet; the engine's proxy on the host
    // port would accept the connection all the same.
    let proxy_accepts = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok();
    let before = crate::health::probe(&check, &rt, &fw, &id).await;
    let mut after = Err(String::new());
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = crate::health::probe(&check, &rt, &fw, &id).await;
        if after.is_ok() {
            break;
        }
    }
    rt.remove_all().await;
    eprintln!("the userland proxy accepts while nothing listens: {proxy_accepts}");
    assert!(before.is_err(), "healthy before the task listens");
    assert!(after.is_ok(), "never healthy once it listens: {after:?}");
}

/// The cleanup timer of a task's first run removes that run's container
/// only, not the container of a relaunch of the same task id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relaunch_within_the_gc_delay_keeps_its_container() {
    let scope = scope();
    let (rt, mut rx) = runtime(&scope, FailPoints::default()).await;
    let rt = rt.with_gc_delay(Duration::from_secs(2));
    let key: Key = ("f".into(), "t".into());
    rt.launch(spec("t", "true")).await;
    until(&mut rx, TaskState::Finished).await;
    let first = rt.container(&key).unwrap().id;
    rt.cleanup(&key.0, &key.1).await;
    rt.launch(spec("t", "sleep 1000")).await;
    until(&mut rx, TaskState::Running).await;
    let second = rt.container(&key).unwrap().id;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let docker = &rt.inner.docker;
    let first_gone = docker.inspect_container(&first, None).await.is_err();
    let second_running = docker
        .inspect_container(&second, None)
        .await
        .ok()
        .and_then(|c| c.state?.running)
        .unwrap_or(false);
    let tracked = rt.container(&key).map(|c| c.id);
    rt.remove_all().await;
    assert!(first_gone, "the first run's container was not removed");
    assert!(second_running, "the relaunch's container was removed");
    assert_eq!(tracked, Some(second), "the relaunch is no longer tracked");
}

/// The engine's stats as it answers them on a cgroup v1 host (trimmed).
const STATS_V1: &str = r#"{
  "cpu_stats": {"cpu_usage": {"total_usage": 36473180}},
  "memory_stats": {"usage": 1806336, "limit": 25276510208,
    "stats": {"cache": 1388544, "rss": 98304, "inactive_file": 1000,
              "total_inactive_file": 1388544}}
}"#;

/// The same on a cgroup v2 host: no `total_` keys.
const STATS_V2: &str = r#"{
  "cpu_stats": {"cpu_usage": {"total_usage": 2000000000}},
  "memory_stats": {"usage": 104857600,
    "stats": {"anon": 52428800, "file": 52428800, "inactive_file": 41943040}}
}"#;

#[test]
fn the_working_set_from_engine_stats_is_usage_less_inactive_file() {
    let key: Key = ("f".into(), "t".into());
    let v1: bollard::models::ContainerStatsResponse = serde_json::from_str(STATS_V1).unwrap();
    let u = usage_from_stats(&key, &v1, 5.0).unwrap();
    assert_eq!(u.mem_rss_bytes, 1806336);
    assert_eq!(u.mem_working_set_bytes, 1806336 - 1388544);
    assert!((u.cpu_seconds - 0.036_473_18).abs() < 1e-12);
    assert_eq!(
        (u.framework_id.as_str(), u.task_id.as_str(), u.timestamp),
        ("f", "t", 5.0)
    );
    let v2: bollard::models::ContainerStatsResponse = serde_json::from_str(STATS_V2).unwrap();
    let u = usage_from_stats(&key, &v2, 5.0).unwrap();
    assert_eq!(u.mem_working_set_bytes, 60 << 20);
    assert_eq!(u.cpu_seconds, 2.0);
    // No CPU figure: the container is gone, no sample.
    let gone: bollard::models::ContainerStatsResponse =
        serde_json::from_str(r#"{"memory_stats": {}}"#).unwrap();
    assert!(usage_from_stats(&key, &gone, 5.0).is_none());
}

/// Times `usage()` over 8 running containers, from their cgroup files and
/// from the engine's stats API (the numbers in docs/autoscaling.md). Both
/// must give every container a sample, and agree on the memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_of_eight_containers_from_cgroup_files_and_from_the_engine() {
    let scope = scope();
    let (rt, mut rx) = runtime(&scope, FailPoints::default()).await;
    const N: usize = 8;
    for i in 0..N {
        rt.launch(spec(&format!("t{i}"), "sleep 1000")).await;
    }
    for _ in 0..N {
        until(&mut rx, TaskState::Running).await;
    }
    let live: Vec<(Key, String)> = rt
        .inner
        .containers
        .lock()
        .unwrap()
        .iter()
        .map(|(k, c)| (k.clone(), c.id.clone()))
        .collect();
    let mut timings = Vec::new();
    let mut last = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let files = rt.usage().await;
        let t_files = t.elapsed();
        // What usage() did before: a one-shot stats call per container,
        // all at once.
        let t = std::time::Instant::now();
        let engine: Vec<pb::TaskUsage> =
            futures::future::join_all(live.iter().map(|(k, id)| rt.engine_usage(k.clone(), id)))
                .await
                .into_iter()
                .flatten()
                .collect();
        timings.push((t_files, t.elapsed()));
        last = (files, engine);
    }
    let (files, engine) = last;
    let readable = rt
        .inner
        .cgroups
        .lock()
        .unwrap()
        .values()
        .filter(|d| d.is_some())
        .count();
    rt.remove_all().await;
    eprintln!(
        "usage() of {N} containers (cgroup files readable for {readable}): {:?}",
        timings
            .iter()
            .map(|(f, a)| format!("files {f:.1?}, engine {a:.1?}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(files.len(), N, "{files:?}");
    assert_eq!(engine.len(), N, "{engine:?}");
    for u in &files {
        assert!(u.mem_rss_bytes > 0, "{u:?}");
        assert!(u.mem_working_set_bytes <= u.mem_rss_bytes, "{u:?}");
        let e = engine.iter().find(|e| e.task_id == u.task_id).unwrap();
        // Both read the same cgroup: the same page counts, give or take
        // what the shell allocated in between.
        let diff = u.mem_working_set_bytes.abs_diff(e.mem_working_set_bytes);
        assert!(diff < 4 << 20, "files {u:?} engine {e:?}");
    }
}
