//! `agora dev` end to end: it starts, the CLI sees its agent, an SDK
//! framework's task runs in a container, usage reaches the master, and
//! Ctrl-C leaves no container behind.

mod common;

use agora_core::TaskState;
use agora_tests::{Ev, Fw};
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Removes whatever a failed run leaves behind (the dev process, its containers).
struct Cleanup {
    pid: u32,
    scope: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &self.scope])
            .output();
        let ids: Vec<String> = out
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&ids)
                .stdout(Stdio::null())
                .status();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_dev_runs_a_framework_task_in_a_container_and_cleans_up() {
    require_docker();
    let (mp, ap) = (free_port(), free_port());
    let master = format!("127.0.0.1:{mp}");
    let (edge, dns) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let data = std::env::temp_dir().join(format!("agora-dev-{}", uuid::Uuid::new_v4().simple()));
    let dev = Command::new(BIN)
        .args([
            "dev",
            "--listen",
            &master,
            "--agent-listen",
            &format!("127.0.0.1:{ap}"),
            "--runtime",
            "docker",
        ])
        .args(["--resources", "cpus:2;mem:1024;ports:[31000-31010]"])
        .args(["--services-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--edge-listen", &edge, "--dns-listen", &dns])
        .args(["--internal-listen", "off", "--internal-address", "off"])
        .arg("--data-dir")
        .arg(&data)
        .env("AGORA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let scope = format!(
        "label=agora.scope={}",
        data.join("agent")
            .canonicalize()
            .unwrap_or(data.join("agent"))
            .display()
    );
    let _cleanup = Cleanup {
        pid: dev.id(),
        scope: scope.clone(),
    };

    eventually(Duration::from_secs(30), async || {
        get(&master, "/health").await
    })
    .await
    .unwrap();
    let out = eventually(Duration::from_secs(15), async || {
        let o = Command::new(BIN)
            .args(["agent", "list", "--master", &master])
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        (o.status.success() && s.contains("active")).then_some(s)
    })
    .await
    .unwrap();
    assert!(out.contains("HOSTNAME"), "{out}");

    let mut cfg = agora_sdk::FrameworkConfig::new(format!("http://{master}"), "dev-e2e");
    cfg.reconnect_min = Duration::from_millis(50);
    let mut f = Fw::start(cfg).await.unwrap();
    let o = f.offers().await.unwrap();
    let t = agora_tests::task(
        "hello",
        "cpus:0.2;mem:32",
        "echo hello from agora; sleep 600",
    );
    f.client.launch(&o[0], vec![t]).await.unwrap();
    f.update("hello", TaskState::Running).await.unwrap();

    let ids = || -> Vec<String> {
        let o = Command::new("docker")
            .args(["ps", "-aq", "--filter", &scope])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(ids().len(), 1, "one container for the task");
    // Logs through the CLI, and usage reported to the master.
    let logs = eventually(Duration::from_secs(15), async || {
        let o = Command::new(BIN)
            .args(["task", "logs", "hello", "--master", &master])
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        s.contains("hello from agora").then_some(s)
    })
    .await
    .unwrap();
    assert!(logs.contains("hello from agora"));
    // --follow keeps streaming while the task runs.
    let mut follow = Command::new(BIN)
        .args(["task", "logs", "hello", "--follow", "--master", &master])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        follow.try_wait().unwrap().is_none(),
        "--follow must keep going while the task runs"
    );
    follow.kill().unwrap();
    let out = follow.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from agora"));
    let usage = eventually(Duration::from_secs(20), async || {
        let body = get(&master, "/state").await?;
        let st: serde_json::Value = serde_json::from_str(&body).ok()?;
        let u = st["frameworks"]
            .as_array()?
            .iter()
            .flat_map(|f| f["tasks"].as_array().cloned().unwrap_or_default())
            .find(|t| t["id"] == "hello")?["usage"]
            .clone();
        (!u.is_null()).then_some(u)
    })
    .await
    .unwrap();
    assert!(usage["mem_rss_bytes"].as_u64().unwrap() > 0, "{usage}");
    let metrics = get(&format!("127.0.0.1:{ap}"), "/metrics").await.unwrap();
    assert!(
        metrics.contains("agora_agent_task_memory_rss_bytes{"),
        "{metrics}"
    );

    // Ctrl-C: dev stops and removes its containers.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dev.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || dev.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    // It printed the routers it ran, where it was told to.
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!("edge       http://{edge}")) && printed.contains(&dns),
        "{printed}"
    );
    assert!(!printed.contains("internal   http://"), "{printed}");
    assert!(ids().is_empty(), "containers left behind: {:?}", ids());
    let _ = f
        .drain(Duration::from_millis(10))
        .await
        .iter()
        .any(|e| matches!(e, Ev::Disconnected));
    let _ = std::fs::remove_dir_all(&data);
}
