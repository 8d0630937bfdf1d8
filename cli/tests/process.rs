//! The process runtime (`agora agent --runtime process`): the same lifecycle
//! as the Docker runtime, without containers.

mod common;

use agora_core::TaskState;
use agora_proto::pb;
use agora_tests::{Cluster, Ev, Fw, fw_config, task, test_config};
use common::*;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

async fn setup() -> (Cluster, AgentProc, Fw) {
    let c = Cluster::start(test_config()).await.unwrap();
    let a = AgentProc::start_with(
        &c.addr.to_string(),
        "cpus:2;mem:2048;ports:[30000-30009]",
        "process",
        &[],
    )
    .unwrap();
    let f = Fw::start(fw_config(&c, "process-test")).await.unwrap();
    (c, a, f)
}

fn with_env(mut t: pb::TaskInfo, k: &str, v: &str) -> pb::TaskInfo {
    if let Some(c) = t.command.as_mut() {
        c.env.push(pb::EnvVar {
            name: k.into(),
            value: v.into(),
        });
    }
    t
}

fn agora(args: &[&str], master: &str) -> (i32, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .env("AGORA_MASTER", master)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_run_with_env_logs_and_exit_codes() {
    let (c, _agent, mut f) = setup().await;
    let o = f.offers().await.unwrap();
    f.client
        .launch(
            &o[0],
            vec![
                with_env(
                    task(
                        "echo",
                        "cpus:0.1;mem:64",
                        "echo greeting=$GREETING port=$PORT0; sleep 600",
                    ),
                    "GREETING",
                    "hi",
                ),
                task("ok", "cpus:0.1;mem:32", "exit 0"),
                task("three", "cpus:0.1;mem:32", "exit 3"),
            ],
        )
        .await
        .unwrap();
    let running = wait_state(&mut f, "echo", TaskState::Running).await;
    assert!(
        running.message.contains("limits"),
        "the RUNNING update says whether limits hold: {}",
        running.message
    );
    assert_eq!(
        wait_state(&mut f, "ok", TaskState::Finished)
            .await
            .exit_code,
        Some(0)
    );
    let three = wait_state(&mut f, "three", TaskState::Failed).await;
    assert_eq!(three.exit_code, Some(3));

    // Logs through the CLI (master → agent HTTP API).
    let master = c.addr.to_string();
    let logs = eventually(LONG, async || {
        let (code, out) = agora(&["task", "logs", "echo"], &master);
        (code == 0 && out.contains("greeting=hi")).then_some(out)
    })
    .await
    .unwrap();
    assert!(logs.contains("greeting=hi port="), "{logs}");
    let (code, out) = agora(&["task", "logs", "no-such-task"], &master);
    assert_eq!(code, 4, "not found exits 4: {out}");
    let (code, out) = agora(&["task", "list", "-o", "json"], &master);
    assert_eq!(code, 0, "{out}");
    let tasks: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), 1, "{out}");
    let (code, out) = agora(&["agent", "list"], &master);
    assert_eq!(code, 0);
    assert!(
        out.contains("docker-test") && out.contains("active"),
        "{out}"
    );
    let (code, out) = agora(&["task", "list"], "127.0.0.1:1");
    assert_eq!(code, 1);
    assert!(out.contains("cannot reach master at 127.0.0.1:1"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_is_sigterm_then_sigkill_after_the_grace_period() {
    let (_c, _agent, mut f) = setup().await;
    let o = f.offers().await.unwrap();
    let mut stubborn = task(
        "stubborn",
        "cpus:0.1;mem:32",
        "trap '' TERM; echo ready; while true; do sleep 0.1; done",
    );
    stubborn.kill_grace_seconds = 2.0;
    f.client
        .launch(
            &o[0],
            vec![
                task("polite", "cpus:0.1;mem:32", "echo ready; sleep 600"),
                stubborn,
            ],
        )
        .await
        .unwrap();
    wait_state(&mut f, "polite", TaskState::Running).await;
    wait_state(&mut f, "stubborn", TaskState::Running).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let t0 = Instant::now();
    f.client.kill(&"polite".into(), None).await.unwrap();
    wait_state(&mut f, "polite", TaskState::Killed).await;
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "SIGTERM ends it: {:?}",
        t0.elapsed()
    );

    let t0 = Instant::now();
    f.client.kill(&"stubborn".into(), None).await.unwrap();
    let s = wait_state(&mut f, "stubborn", TaskState::Killed).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "SIGKILL only after the grace period: {:?}",
        t0.elapsed()
    );
    assert_eq!(s.exit_code, Some(137));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_stopped_where_limits_are_enforced() {
    let (_c, _agent, mut f) = setup().await;
    let o = f.offers().await.unwrap();
    f.client
        .launch(
            &o[0],
            vec![task(
                "hog",
                "cpus:0.5;mem:32",
                "head -c 400000000 /dev/zero | tail > /dev/null; sleep 600",
            )],
        )
        .await
        .unwrap();
    let running = wait_state(&mut f, "hog", TaskState::Running).await;
    if running.message.contains("NOT enforced") {
        eprintln!(
            "cgroups unavailable on this host; the RUNNING update said so: {}",
            running.message
        );
        return;
    }
    let s = f
        .wait(LONG, |e| match e {
            Ev::Update(s) if s.task_id.as_str() == "hog" && s.state.is_terminal() => {
                Some(s.clone())
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(s.state, TaskState::Failed, "{s:?}");
    assert_eq!(s.reason, "REASON_CONTAINER_LIMITATION_MEMORY", "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill9ed_agent_finds_its_processes_again() {
    let (c, mut agent, mut f) = setup().await;
    let o = f.offers().await.unwrap();
    let tasks = (0..3)
        .map(|i| task(&format!("p{i}"), "cpus:0.1;mem:32", "sleep 600"))
        .collect();
    f.client.launch(&o[0], tasks).await.unwrap();
    for i in 0..3 {
        wait_state(&mut f, &format!("p{i}"), TaskState::Running).await;
    }
    let pid_of = |i: usize| -> i32 {
        let fw = f.id.0.clone();
        let p = agent
            .work_dir
            .join("sandboxes")
            .join(fw.replace(
                |c: char| !c.is_ascii_alphanumeric() && !"_.-".contains(c),
                "_",
            ))
            .join(format!("p{i}"))
            .join("pid");
        std::fs::read_to_string(&p)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let pids: Vec<i32> = (0..3).map(pid_of).collect();
    agent.kill9();
    // One process dies while the agent is down.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    agent.spawn().unwrap();
    let s = wait_state(&mut f, "p0", TaskState::Failed).await;
    assert!(s.message.contains("unknown"), "{}", s.message);
    for p in &pids[1..] {
        assert!(
            std::path::Path::new(&format!("/proc/{p}")).exists(),
            "process {p} must survive the agent"
        );
    }
    let st = eventually(LONG, async || {
        let st = c.state().await.ok()?;
        let n = st
            .frameworks
            .iter()
            .flat_map(|f| f.tasks.iter())
            .filter(|t| t.state == TaskState::Running)
            .count();
        (n == 2).then_some(st)
    })
    .await
    .unwrap();
    assert_eq!(st.agents[0].task_count, 2);
    for p in &pids[1..] {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(*p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
