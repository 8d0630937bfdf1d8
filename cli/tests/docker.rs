//! The real agent (`agora agent --runtime docker`) with the real Docker
//! engine and the locally built images. Each test removes its containers.

mod common;

use agora_core::TaskState;
use agora_proto::pb;
use agora_tests::{Cluster, Fw, fw_config, test_config};
use common::*;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

async fn setup(resources: &str) -> (Cluster, AgentProc, Fw) {
    require_docker();
    let c = Cluster::start(test_config()).await.unwrap();
    let a = AgentProc::start(&c.addr.to_string(), resources, &[]).unwrap();
    let f = Fw::start(fw_config(&c, "docker-test")).await.unwrap();
    (c, a, f)
}

async fn launch(f: &mut Fw, tasks: Vec<pb::TaskInfo>) {
    let o = f.offers().await.unwrap();
    f.client.launch(&o[0], tasks).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_runs_with_env_limits_and_a_mapped_port() {
    let (lo, hi) = port_block();
    let (_c, agent, mut f) = setup(&format!("cpus:2;mem:1024;ports:[{lo}-{hi}]")).await;
    let mut t = container_task(
        "web",
        &format!("cpus:0.5;mem:64;ports:[{lo}-{lo}]"),
        "agora-workload:latest",
        None,
    );
    t.command = Some(pb::CommandInfo {
        env: vec![pb::EnvVar {
            name: "GREETING".into(),
            value: "s3cr3t-value".into(),
        }],
        ..Default::default()
    });
    if let Some(c) = t.container.as_mut() {
        c.port_mappings = vec![pb::PortMapping {
            host_port: 0,
            container_port: 8080,
            protocol: "tcp".into(),
            name: "http".into(),
        }];
    }
    launch(&mut f, vec![t]).await;
    wait_state(&mut f, "web", TaskState::Running).await;

    let ids = agent.containers(false);
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(inspect(&ids[0], "{{.HostConfig.NanoCpus}}"), "500000000");
    assert_eq!(
        inspect(&ids[0], "{{.HostConfig.Memory}}"),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        inspect(&ids[0], "{{index .Config.Labels \"agora.task_id\"}}"),
        "web"
    );

    let addr = format!("127.0.0.1:{lo}");
    let body = eventually(LONG, async || get(&addr, "/").await)
        .await
        .unwrap();
    assert!(body.contains("task=web"), "{body}");
    let env = get(&addr, "/env").await.unwrap();
    assert!(
        env.contains("\"GREETING\"")
            && env.contains("\"PORT0\"")
            && env.contains("\"AGORA_TASK_ID\""),
        "{env}"
    );
    assert!(
        !env.contains("s3cr3t-value"),
        "values must never be listed: {env}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_sends_sigterm_first_and_sigkill_after_the_grace_period() {
    let (_c, agent, mut f) = setup("cpus:2;mem:1024").await;
    let polite = container_task("polite", "cpus:0.1;mem:32", "agora-workload:latest", None);
    let mut stubborn = container_task("stubborn", "cpus:0.1;mem:32", "agora-workload:latest", None);
    stubborn.command = Some(pb::CommandInfo {
        env: vec![pb::EnvVar {
            name: "AGORA_IGNORE_SIGTERM".into(),
            value: "1".into(),
        }],
        ..Default::default()
    });
    stubborn.kill_grace_seconds = 2.0;
    launch(&mut f, vec![polite, stubborn]).await;
    wait_state(&mut f, "polite", TaskState::Running).await;
    wait_state(&mut f, "stubborn", TaskState::Running).await;
    let ids_before = agent.containers(true);
    // Both workloads are up (their SIGTERM handlers are installed first thing).
    for id in &ids_before {
        eventually(LONG, async || {
            logs_of(id).contains("listening").then_some(())
        })
        .await
        .unwrap();
    }

    let t0 = Instant::now();
    f.client.kill(&"polite".into(), None).await.unwrap();
    let s = wait_state(&mut f, "polite", TaskState::Killed).await;
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "a polite task stops at SIGTERM ({:?})",
        t0.elapsed()
    );
    assert_eq!(s.exit_code, Some(0), "the workload exits 0 on SIGTERM");

    let t0 = Instant::now();
    f.client.kill(&"stubborn".into(), None).await.unwrap();
    let s = wait_state(&mut f, "stubborn", TaskState::Killed).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "SIGKILL must wait for the grace period, took {took:?}"
    );
    assert_eq!(s.exit_code, Some(137), "SIGKILL exit status");
    // Its log shows SIGTERM arrived and was ignored.
    // (Exited containers are kept for --gc-delay, so their logs are still there.)
    let logs = ids_before
        .iter()
        .map(|id| logs_of(id))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(logs.contains("SIGTERM received and ignored"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_oom_and_missing_images_end_tasks_with_reasons() {
    let (lo, hi) = port_block();
    let (_c, agent, mut f) = setup(&format!("cpus:2;mem:2048;ports:[{lo}-{hi}]")).await;
    let mut hog = container_task(
        "hog",
        &format!("cpus:0.2;mem:32;ports:[{lo}-{lo}]"),
        "agora-workload:latest",
        None,
    );
    if let Some(c) = hog.container.as_mut() {
        c.port_mappings = vec![pb::PortMapping {
            host_port: 0,
            container_port: 8080,
            protocol: "tcp".into(),
            name: String::new(),
        }];
    }
    launch(
        &mut f,
        vec![
            container_task(
                "ok",
                "cpus:0.1;mem:32",
                "agora-busybox:latest",
                Some("echo done; exit 0"),
            ),
            container_task(
                "three",
                "cpus:0.1;mem:32",
                "agora-busybox:latest",
                Some("exit 3"),
            ),
            container_task("ghost", "cpus:0.1;mem:32", "agora-nope:latest", None),
            hog,
        ],
    )
    .await;
    let ok = wait_state(&mut f, "ok", TaskState::Finished).await;
    assert_eq!(ok.exit_code, Some(0));
    let three = wait_state(&mut f, "three", TaskState::Failed).await;
    assert_eq!(three.exit_code, Some(3));
    assert!(three.message.contains("code 3"), "{}", three.message);
    let ghost = wait_state(&mut f, "ghost", TaskState::Failed).await;
    assert!(
        ghost.message.contains("agora-nope:latest") && ghost.message.contains("not present"),
        "{}",
        ghost.message
    );

    wait_state(&mut f, "hog", TaskState::Running).await;
    let addr = format!("127.0.0.1:{lo}");
    eventually(LONG, async || get(&addr, "/health").await)
        .await
        .unwrap();
    let _ = agora_tests::http_get(&addr, "/mem?mib=200").await;
    let hog = wait_state(&mut f, "hog", TaskState::Failed).await;
    assert_eq!(hog.reason, "REASON_CONTAINER_LIMITATION_MEMORY", "{hog:?}");
    assert!(hog.message.contains("OOM"), "{}", hog.message);
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill9ed_agent_recovers_its_containers_without_duplicates() {
    let (c, mut agent, mut f) = setup("cpus:4;mem:2048").await;
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            container_task(
                &format!("r{i}"),
                "cpus:0.1;mem:32",
                "agora-busybox:latest",
                Some("sleep 600"),
            )
        })
        .collect();
    launch(&mut f, tasks).await;
    for i in 0..6 {
        wait_state(&mut f, &format!("r{i}"), TaskState::Running).await;
    }
    let before = agent.containers(false);
    assert_eq!(before.len(), 6);

    agent.kill9();
    // While it is down, one container disappears behind its back.
    let (victim_id, survivors) = (before[0].clone(), before[1..].to_vec());
    let victim = inspect(&victim_id, "{{index .Config.Labels \"agora.task_id\"}}");
    assert!(
        std::process::Command::new("docker")
            .args(["rm", "-f", &victim_id])
            .status()
            .unwrap()
            .success()
    );
    agent.spawn().unwrap();

    let gone = wait_state(&mut f, &victim, TaskState::Failed).await;
    assert_eq!(gone.reason, "REASON_CONTAINER_GONE", "{gone:?}");
    // The master sees the five survivors running on the re-registered agent.
    let st = eventually(LONG, async || {
        let st = c.state().await.ok()?;
        let running = st
            .frameworks
            .iter()
            .flat_map(|f| f.tasks.iter())
            .filter(|t| t.state == TaskState::Running)
            .count();
        (running == 5
            && st.agents.len() == 1
            && st.agents[0].state == agora_core::lifecycle::AgentState::Active)
            .then_some(st)
    })
    .await
    .unwrap();
    assert_eq!(st.agents[0].task_count, 5);
    assert_eq!(
        agent.containers(false),
        survivors,
        "the same 5 containers keep running; none relaunched"
    );
    assert_eq!(
        agent.containers(true).len(),
        5,
        "no duplicate launches, the removed one not recreated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_master_restart_the_agent_reregisters_with_its_tasks() {
    require_docker();
    let mut c = Cluster::start(test_config()).await.unwrap();
    let agent = AgentProc::start(&c.addr.to_string(), "cpus:2;mem:1024", &[]).unwrap();
    let mut f = Fw::start(fw_config(&c, "docker-restart")).await.unwrap();
    launch(
        &mut f,
        vec![container_task(
            "steady",
            "cpus:0.1;mem:32",
            "agora-busybox:latest",
            Some("sleep 600"),
        )],
    )
    .await;
    wait_state(&mut f, "steady", TaskState::Running).await;
    let ids = agent.containers(false);

    c.restart().await.unwrap();
    let st = eventually(LONG, async || {
        let st = c.state().await.ok()?;
        let t = st
            .frameworks
            .iter()
            .flat_map(|f| f.tasks.iter())
            .find(|t| t.id == "steady")?
            .clone();
        (t.state == TaskState::Running && st.agents.len() == 1).then_some(st)
    })
    .await
    .unwrap();
    assert_eq!(st.agents[0].hostname, "docker-test");
    assert_eq!(
        agent.containers(false),
        ids,
        "the container was not touched"
    );
}
