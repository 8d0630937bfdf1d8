use super::*;
use crate::runtime::FailPoints;
use agora_core::Resources;
use agora_core::info::{CommandInfo, TaskInfo};
use tokio::sync::mpsc;

fn work_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("agora-proc-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
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

/// Waits for `task`'s terminal event.
async fn ended(rx: &mut mpsc::UnboundedReceiver<RuntimeEvent>, task: &str) -> RuntimeEvent {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("no event within 20 s")
            .expect("sink closed");
        if ev.task_id.as_str() == task && ev.state.is_terminal() {
            return ev;
        }
    }
}

async fn all_logs(rt: &ProcessRuntime, task: &str) -> String {
    use futures::StreamExt;
    let chunks: Vec<_> = rt.logs(&"f".into(), &task.into(), false).collect().await;
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap()).collect();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn tasks_whose_ids_once_sanitized_alike_keep_their_own_sandboxes() {
    let dir = work_dir();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = ProcessRuntime::new(tx, &dir);
    rt.launch(spec("a/b", "echo from a/b")).await;
    assert_eq!(ended(&mut rx, "a/b").await.state, TaskState::Finished);
    rt.launch(spec("a_b", "echo from a_b")).await;
    assert_eq!(ended(&mut rx, "a_b").await.state, TaskState::Finished);
    assert_eq!(all_logs(&rt, "a/b").await, "from a/b\n");
    assert_eq!(all_logs(&rt, "a_b").await, "from a_b\n");
    remove_work_dir(&dir);
}

#[tokio::test(start_paused = true)]
async fn sandbox_gc_removes_only_the_sandbox_it_means() {
    let dir = work_dir();
    let (tx, _rx) = mpsc::unbounded_channel();
    let rt = ProcessRuntime::new(tx, &dir).with_gc_delay(Duration::from_secs(1));
    // Sandboxes of other tasks (and of another framework) with their logs.
    let keep = [("f", "keep"), ("f", "a_b"), ("g", "other")];
    for (f, t) in keep {
        let d = rt.sandbox(&(f.into(), t.into()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("stdout"), "precious").unwrap();
    }
    for id in [".", "..", "a/b", ""] {
        rt.cleanup(&"f".into(), &id.into()).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (f, t) in keep {
        let d = rt.sandbox(&(f.into(), t.into()));
        assert!(
            d.join("stdout").exists(),
            "the GC of another task removed {}",
            d.display()
        );
    }
    remove_work_dir(&dir);
}

#[tokio::test(start_paused = true)]
async fn sandbox_gc_spares_a_later_run_of_the_same_task_id() {
    let dir = work_dir();
    let (tx, _rx) = mpsc::unbounded_channel();
    let rt = ProcessRuntime::new(tx, &dir).with_gc_delay(Duration::from_secs(10));
    let key: Key = ("f".into(), "t".into());
    let d = rt.sandbox(&key);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("pid"), "100 1").unwrap();
    rt.cleanup(&key.0, &key.1).await;
    // The id is launched again before the first run's sandbox is collected.
    std::fs::write(d.join("pid"), "200 2").unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(
        d.join("pid").exists(),
        "the second run's sandbox was removed"
    );
    // Its own collection removes it.
    rt.cleanup(&key.0, &key.1).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(!d.exists());
    remove_work_dir(&dir);
}

/// Bytes this process has read through read(2) and friends so far.
fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_a_log_reads_only_what_was_appended() {
    use futures::StreamExt;
    use std::io::Write;
    let dir = work_dir();
    let (tx, _rx) = mpsc::unbounded_channel();
    let rt = ProcessRuntime::new(tx, &dir);
    rt.launch(spec("big", "sleep 30")).await;
    let key: Key = ("f".into(), "big".into());
    // 16 MiB of output already there.
    const SIZE: usize = 16 << 20;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(rt.sandbox(&key).join("stdout"))
        .unwrap();
    f.write_all(&vec![b'x'; SIZE]).unwrap();
    let (got_tx, mut got) = mpsc::unbounded_channel();
    let mut logs = rt.logs(&key.0, &key.1, true);
    let reader = tokio::spawn(async move {
        while let Some(chunk) = logs.next().await {
            let _ = got_tx.send(chunk.unwrap());
        }
    });
    let mut seen = Vec::new();
    while seen.len() < SIZE {
        seen.extend(got.recv().await.unwrap());
    }
    // Several polls with nothing new: they cost (almost) nothing.
    let before = bytes_read();
    tokio::time::sleep(logs::POLL * 5).await;
    let polled = bytes_read() - before;
    eprintln!("5 idle polls of a 16 MiB log read {polled} bytes");
    assert!(
        polled < 1 << 20,
        "5 idle polls of a 16 MiB log read {polled} bytes"
    );
    // New output still arrives, once.
    f.write_all(b"tail\n").unwrap();
    let next = got.recv().await.unwrap();
    assert_eq!(next, b"tail\n");
    rt.kill(&key.0, &key.1, Duration::ZERO).await;
    tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("following stops once the task ends")
        .unwrap();
    remove_work_dir(&dir);
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

/// The pid a task wrote to `file` in its sandbox (waits for it).
async fn pid_in(rt: &ProcessRuntime, task: &str, file: &str) -> i32 {
    let path = rt.sandbox(&("f".into(), task.into())).join(file);
    for _ in 0..200 {
        if let Some(p) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
        {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} never written", path.display());
}

/// Waits up to 5 s for `pid` to be gone; kills it anyway (no leak from a
/// failing test) and says whether it went by itself.
async fn gone_by_itself(pid: i32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    false
}

fn recorded_cgroups(rt: &ProcessRuntime, task: &str) -> Vec<PathBuf> {
    std::fs::read_to_string(rt.sandbox(&("f".into(), task.into())).join("cgroup"))
        .unwrap_or_default()
        .lines()
        .map(PathBuf::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_ignoring_sigterm_dies_with_its_task_after_the_grace_period() {
    let dir = work_dir();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = ProcessRuntime::new(tx, &dir);
    // `prep; server`: the shell (group leader) dies of SIGTERM, the server
    // ignores it and would hold its port forever.
    rt.launch(spec(
        "stubborn",
        r#"true; sh -c 'trap "" TERM; echo $$ > server.pid; while :; do sleep 0.1; done'; echo never"#,
    ))
    .await;
    let server = pid_in(&rt, "stubborn", "server.pid").await;
    let cgroups = recorded_cgroups(&rt, "stubborn");
    rt.kill(&"f".into(), &"stubborn".into(), Duration::from_millis(300))
        .await;
    assert_eq!(ended(&mut rx, "stubborn").await.state, TaskState::Killed);
    assert!(
        gone_by_itself(server).await,
        "the server that ignored SIGTERM outlived its task"
    );
    for d in cgroups {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
    remove_work_dir(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_finished_task_leaves_running_is_killed_and_its_cgroup_removed() {
    let dir = work_dir();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = ProcessRuntime::new(tx, &dir);
    rt.launch(spec(
        "daemonizes",
        "sleep 1000 > /dev/null 2>&1 & echo $! > bg.pid; sleep 0.2",
    ))
    .await;
    let bg = pid_in(&rt, "daemonizes", "bg.pid").await;
    let cgroups = recorded_cgroups(&rt, "daemonizes");
    assert_eq!(
        ended(&mut rx, "daemonizes").await.state,
        TaskState::Finished
    );
    assert!(
        gone_by_itself(bg).await,
        "a process of the finished task still runs"
    );
    for d in cgroups {
        assert!(!d.exists(), "cgroup {} left behind", d.display());
    }
    remove_work_dir(&dir);
}

/// A runtime whose launches "kill the agent" at fail point `point`.
fn crashing_at(point: &'static str, tx: crate::runtime::EventSink, dir: &Path) -> ProcessRuntime {
    ProcessRuntime::new(tx, dir).with_fail_points(FailPoints::new(move |p| {
        if p == point {
            FailAction::Crash
        } else {
            FailAction::Pass
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_dying_before_the_pid_file_is_written_leaves_nothing_running() {
    let dir = work_dir();
    let (tx, _rx) = mpsc::unbounded_channel();
    let rt = crashing_at("process.after_spawn", tx, &dir);
    let task = spec("early", "touch ran; sleep 1000");
    rt.launch(task.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sandbox = rt.sandbox(&("f".into(), "early".into()));
    let ran = sandbox.join("ran").exists();
    // The restarted agent: the task never ran, so it is gone, and nothing
    // of it is left (process or cgroup).
    let (tx2, _rx2) = mpsc::unbounded_channel();
    let rt2 = ProcessRuntime::new(tx2, &dir);
    let gone = rt2.recover(vec![task]).await.unwrap();
    let left = processes_under(&rt2.inner.root);
    for (pid, _) in &left {
        let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    assert!(!ran, "the task ran although its pid was never recorded");
    assert_eq!(gone, [("f".into(), "early".into())]);
    assert!(left.is_empty(), "processes left: {left:?}");
    let cgroups = rt2.inner.cgroups.children();
    assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
    remove_work_dir(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_live_task_reports_running_once_and_orphans_are_swept() {
    let dir = work_dir();
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The agent dies after the pid file, before RUNNING was reported.
    let rt = crashing_at("process.after_pid", tx, &dir);
    let task = spec("live", "sleep 1000");
    rt.launch(task.clone()).await;
    // A task of the same agent that no checkpoint claims any more, with a
    // child that left its process group.
    let plain = ProcessRuntime::new(mpsc::unbounded_channel().0, &dir);
    plain
        .launch(spec(
            "orphan",
            "setsid sleep 1000 & echo $! > child.pid; sleep 1000",
        ))
        .await;
    let orphan_child = pid_in(&plain, "orphan", "child.pid").await;
    let orphan_cgroups = recorded_cgroups(&plain, "orphan");
    let live_pid = pid_in(&rt, "live", "pid").await;
    while let Ok(ev) = rx.try_recv() {
        assert_ne!(
            ev.state,
            TaskState::Running,
            "the crashed launch reported RUNNING"
        );
    }

    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let rt2 = ProcessRuntime::new(tx2, &dir);
    let gone = rt2.recover(vec![task]).await.unwrap();
    assert!(gone.is_empty(), "{gone:?}");
    let orphan_swept = gone_by_itself(orphan_child).await;
    let mut events = Vec::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(ev) = rx2.try_recv() {
        events.push((ev.task_id.0.clone(), ev.state));
    }
    assert!(alive(live_pid), "the recovered task was killed");
    rt2.kill(&"f".into(), &"live".into(), Duration::from_millis(100))
        .await;
    assert_eq!(ended(&mut rx2, "live").await.state, TaskState::Killed);
    assert_eq!(events, [("live".to_string(), TaskState::Running)]);
    assert!(
        orphan_swept,
        "an orphan process of the agent survived recovery"
    );
    for d in orphan_cgroups {
        assert!(!d.exists(), "orphan cgroup {} left behind", d.display());
    }
    remove_work_dir(&dir);
}

#[test]
fn a_cgroup_whose_limit_cannot_be_written_is_removed() {
    let dir = work_dir();
    let cg = cgroup::detect(&dir);
    if let Cgroups::None(why) = &cg {
        eprintln!("SKIPPED: no cgroups on this host ({why})");
        return;
    }
    // A CPU quota no kernel takes: the write fails after the directory exists.
    let r = Resources {
        cpus_milli: 1_000_000_000_000_000,
        mem_mib: 64,
        ..Resources::default()
    };
    let err = cgroup::prepare(&cg, "toobig", &r).unwrap_err();
    let left: Vec<PathBuf> = cg.children();
    for root in cg.roots() {
        let _ = std::fs::remove_dir(&root);
    }
    assert!(left.is_empty(), "{err}; cgroups left behind: {left:?}");
    remove_work_dir(&dir);
}

/// A recorded pid that, after the agent's downtime, names an unrelated
/// process group (start time differs) is neither killed at recovery nor by
/// a kill of the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_pid_of_an_ended_task_is_not_signalled() {
    use std::os::unix::process::CommandExt;
    let dir = work_dir();
    let mut unrelated = std::process::Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = unrelated.id() as i32;
    let started = start_time(pid).unwrap();
    let task = spec("ended", "sleep 1000");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = ProcessRuntime::new(tx, &dir);
    let sandbox = rt.sandbox(&("f".into(), "ended".into()));
    std::fs::create_dir_all(&sandbox).unwrap();
    std::fs::write(sandbox.join("pid"), format!("{pid} {}", started + 1)).unwrap();
    let gone = rt.recover(vec![task]).await.unwrap();
    assert!(gone.is_empty(), "{gone:?}");
    assert_eq!(ended(&mut rx, "ended").await.state, TaskState::Failed);
    let survived_recovery = alive(pid);
    rt.kill(&"f".into(), &"ended".into(), Duration::from_millis(50))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let survived_kill = alive(pid);
    let _ = unrelated.kill();
    let _ = unrelated.wait();
    remove_work_dir(&dir);
    assert!(
        survived_recovery,
        "recovery killed an unrelated process group"
    );
    assert!(survived_kill, "a kill signalled an unrelated process group");
}

/// A process task is told the agent's internal address as `HOST` (the
/// agent's value wins over one in the task's environment) and its checks
/// connect there.
#[tokio::test]
async fn a_task_gets_the_internal_address_as_host_and_checks_go_there() {
    let dir = work_dir();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ip: std::net::IpAddr = "127.0.0.9".parse().unwrap();
    let rt = ProcessRuntime::new(tx, &dir).with_host_ip(ip);
    let mut s = spec("h", "echo \"host=$HOST\"");
    if let Some(c) = s.task.command.as_mut() {
        c.env = vec![("HOST".into(), "node-1.example".into())];
    }
    rt.launch(s).await;
    assert_eq!(ended(&mut rx, "h").await.state, TaskState::Finished);
    assert_eq!(all_logs(&rt, "h").await, "host=127.0.0.9\n");
    assert_eq!(
        rt.check_addr(&"f".into(), &"h".into(), 31000).await,
        std::net::SocketAddr::new(ip, 31000)
    );
    remove_work_dir(&dir);
}

/// An agent restarted with another internal address: the tasks it
/// recovers still bind the `HOST` they were launched with, so their checks
/// go there (not to the new address, where they would fail and get the
/// task killed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_of_a_recovered_task_go_to_the_address_it_was_launched_with() {
    let dir = work_dir();
    let old: std::net::IpAddr = "127.0.0.9".parse().unwrap();
    let new: std::net::IpAddr = "127.0.0.10".parse().unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let rt = ProcessRuntime::new(tx, &dir).with_host_ip(old);
    let task = spec("kept", "sleep 1000");
    rt.launch(task.clone()).await;
    let _ = pid_in(&rt, "kept", "pid").await;

    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let rt2 = ProcessRuntime::new(tx2, &dir).with_host_ip(new);
    let gone = rt2.recover(vec![task]).await.unwrap();
    assert!(gone.is_empty(), "{gone:?}");
    let at = rt2.check_addr(&"f".into(), &"kept".into(), 31000).await;
    rt2.kill(&"f".into(), &"kept".into(), Duration::from_millis(100))
        .await;
    assert_eq!(ended(&mut rx2, "kept").await.state, TaskState::Killed);
    assert_eq!(at, std::net::SocketAddr::new(old, 31000));
    remove_work_dir(&dir);
}

/// Issue 10: a process task sees its secret variable in its environment
/// and its secret file at the sandbox path (a symlink to the agent's
/// tmpfs file); neither is in its arguments or in the sandbox's files.
#[tokio::test]
async fn secrets_reach_a_process_as_env_and_a_linked_file() {
    use crate::secrets::{SecretFile, TaskSecrets};
    use agora_core::secrets::SecretValue;
    let dir = work_dir();
    let shm = work_dir();
    let secret_file = shm.join("secret-0");
    std::fs::write(&secret_file, "file-value-91c").unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = ProcessRuntime::new(tx, &dir);
    let mut s = spec(
        "sec",
        r#"[ "$DB_PASSWORD" = "env-value-7a2" ] && [ "$(cat secrets/tls)" = "file-value-91c" ] && [ -L secrets/tls ]"#,
    );
    s.secrets = Arc::new(TaskSecrets {
        env: vec![(
            "DB_PASSWORD".into(),
            SecretValue::new(b"env-value-7a2".to_vec()),
        )],
        files: vec![SecretFile {
            target: "secrets/tls".into(),
            host_path: secret_file.clone(),
        }],
    });
    rt.launch(s).await;
    let ev = ended(&mut rx, "sec").await;
    assert_eq!(ev.state, TaskState::Finished, "{ev:?}");
    // Nothing under the sandbox holds a value (the link names a path).
    let sandbox = rt.sandbox(&("f".into(), "sec".into()));
    for e in std::fs::read_dir(&sandbox).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            let b = std::fs::read(e.path()).unwrap();
            let text = String::from_utf8_lossy(&b);
            assert!(
                !text.contains("env-value-7a2") && !text.contains("file-value-91c"),
                "{:?}",
                e.path()
            );
        }
    }
    remove_work_dir(&dir);
    let _ = std::fs::remove_dir_all(&shm);
}

/// Review: a secret file at one of the sandbox's own files (`stdout`,
/// `pid`, ...) is refused; it used to be linked, then written through by
/// the agent (an agent running as root truncated the secret into the
/// task's stdout) or removed before the task started.
#[tokio::test]
async fn a_secret_file_at_a_sandbox_file_is_refused_and_left_intact() {
    use crate::secrets::{SecretFile, TaskSecrets};
    for target in ["stdout", "/pid", "cgroup"] {
        let dir = work_dir();
        let shm = work_dir();
        let secret_file = shm.join("secret-0");
        std::fs::write(&secret_file, "file-value-3c7").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let rt = ProcessRuntime::new(tx, &dir);
        let mut s = spec("clash", "echo task-output");
        s.secrets = Arc::new(TaskSecrets {
            env: vec![],
            files: vec![SecretFile {
                target: target.into(),
                host_path: secret_file.clone(),
            }],
        });
        rt.launch(s).await;
        let ev = ended(&mut rx, "clash").await;
        assert_ne!(ev.state, TaskState::Finished, "{target}: {ev:?}");
        assert!(
            ev.message.contains("sandbox's own files"),
            "{target}: {}",
            ev.message
        );
        assert_eq!(
            std::fs::read_to_string(&secret_file).unwrap(),
            "file-value-3c7",
            "{target}"
        );
        remove_work_dir(&dir);
        let _ = std::fs::remove_dir_all(&shm);
    }
}

/// A running task's sample has a working set: from its cgroup (memory in
/// use less inactive file cache) where it has one, else its RSS.
#[tokio::test]
async fn a_running_tasks_usage_has_its_working_set() {
    let dir = work_dir();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = ProcessRuntime::new(tx, &dir);
    let mut s = spec("w", "exec sleep 100");
    s.task.resources = Resources::new(0.5, 64, 0).unwrap();
    rt.launch(s).await;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("no event within 20 s")
            .expect("sink closed");
        if ev.state == TaskState::Running {
            break;
        }
        assert!(!ev.state.is_terminal(), "{ev:?}");
    }
    let u = rt.usage().await;
    let cgroup = rt
        .get(&("f".into(), "w".into()))
        .and_then(|p| p.cgroup)
        .unwrap_or_default();
    let held = cgroup.iter().any(|d| !cgroup::procs(d).is_empty());
    rt.kill(&"f".into(), &"w".into(), Duration::ZERO).await;
    ended(&mut rx, "w").await;
    remove_work_dir(&dir);
    assert_eq!(u.len(), 1, "{u:?}");
    assert!(u[0].mem_working_set_bytes > 0, "{u:?}");
    eprintln!(
        "cgroup {cgroup:?} (holds the task: {held}): working set {} (rss {})",
        u[0].mem_working_set_bytes, u[0].mem_rss_bytes
    );
    if !held {
        // No cgroup, or one the host would not let the task join.
        assert_eq!(u[0].mem_working_set_bytes, u[0].mem_rss_bytes);
    }
}
