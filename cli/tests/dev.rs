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
        .args(["--router-admin-address", "127.0.0.1:0"])
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

/// `agora dev --secure`: one command starts the secured setup. The CLI
/// works through the client context it writes (https, the admin token, the
/// CA); a request without a token is refused (401); plain http to the
/// master gets no answer; joining the drains and acking them need a token,
/// and dev's router joined with its own; the services framework's app with a secret runs;
/// Ctrl-C removes the context file (it points at the stopped master).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_dev_secure_starts_tls_tokens_and_acls_in_one_command() {
    let (mp, ap, sp) = (free_port(), free_port(), free_port());
    let master = format!("127.0.0.1:{mp}");
    let services = format!("127.0.0.1:{sp}");
    let home = std::env::temp_dir().join(format!("agora-devsec-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&home).unwrap();
    let dev = Command::new(BIN)
        .args(["dev", "--secure", "--listen", &master])
        .args(["--agent-listen", &format!("127.0.0.1:{ap}")])
        .args(["--services-listen", &services])
        .args(["--runtime", "process", "--resources", "cpus:2;mem:1024"])
        .args(["--edge-listen", "off", "--dns-listen", "off"])
        .args(["--internal-listen", "off", "--internal-address", "off"])
        .args(["--router-admin-address", "127.0.0.1:0"])
        .env("AGORA_HOME", &home)
        .env("AGORA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _cleanup = Cleanup {
        pid: dev.id(),
        scope: "label=agora.scope=none".into(),
    };
    let context = home.join("context.json");
    let cli = |args: &[&str]| {
        let o = Command::new(BIN)
            .args(args)
            .env("AGORA_HOME", &home)
            .env("AGORA_SERVICES", &services)
            .env_remove("AGORA_MASTER")
            .env_remove("AGORA_TOKEN")
            .output()
            .unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    // The CLI finds the master, its CA and the admin token in the context.
    let out = eventually(Duration::from_secs(30), async || {
        let (ok, s) = cli(&["agent", "list"]);
        (ok && s.contains("active")).then_some(s)
    })
    .await
    .unwrap();
    assert!(out.contains("HOSTNAME"), "{out}");
    let ctx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&context).unwrap()).unwrap();
    assert_eq!(ctx["master"], format!("https://{master}"), "{ctx}");

    // Without the context nothing is open: plain http gets no HTTP answer,
    // https without a token is 401.
    assert!(
        get(&master, "/state").await.is_none(),
        "plain http answered"
    );
    let ca = ctx["ca_cert"].as_str().unwrap().to_string();
    let curl = |url: &str, token: Option<&str>| {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            &ca,
        ]);
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let o = c.arg(url).output().unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let https = format!("https://localhost:{mp}/state");
    assert_eq!(curl(&https, None), "401");
    assert_eq!(curl(&https, Some("agora_000000000000_forged")), "401");
    let admin = std::fs::read_to_string(ctx["token_file"].as_str().unwrap()).unwrap();
    assert_eq!(curl(&https, Some(admin.trim())), "200");
    // The services REST API needs a token too.
    assert_eq!(curl(&format!("http://{services}/v2/apps"), None), "401");

    // Drains: joining (watch?router=) and acking need a token of a drain
    // principal (dev: `router`, the principal of its routers' token); any
    // other principal (admin) is refused (403), even for an id no router
    // holds. A plain watch (discovery data) stays open.
    let post_ack = |router: &str, token: Option<&str>| {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"]);
        c.args(["-H", "Content-Type: application/json"]);
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        c.args(["-d", &format!(r#"{{"router": "{router}", "drained": 1}}"#)]);
        let o = c
            .arg(format!("http://{services}/v1/endpoints/acks"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let watch_as = |query: &str, token: Option<&str>| {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2"]);
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let o = c
            .arg(format!("http://{services}/v1/endpoints/watch{query}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let watch = |query: &str| watch_as(query, None);
    let dev_router = format!(
        "{}-{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into()),
        dev.id()
    );
    assert_eq!(post_ack(&dev_router, None), "401");
    assert_eq!(watch("?router=intruder"), "401");
    assert_eq!(watch(""), "200");
    assert_eq!(post_ack(&dev_router, Some(admin.trim())), "403");
    assert_eq!(watch_as("?router=intruder", Some(admin.trim())), "403");
    let router_token = std::fs::read_to_string(home.join("dev").join("router.token")).unwrap();
    assert_eq!(post_ack(&dev_router, Some(router_token.trim())), "204");
    // A stream of the routers' principal is 200 (curl gives up after 2 s:
    // the code is printed all the same).
    assert_eq!(watch_as("?router=probe", Some(router_token.trim())), "200");

    // A secret used by an app: the services framework (its own token,
    // mutual TLS to the master for its agent) runs it with the value.
    let put = Command::new(BIN)
        .args(["secret", "put", "/demo/pw"])
        .env("AGORA_HOME", &home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"hunter2")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(put.status.success(), "{put:?}");
    let app = home.join("app.json");
    std::fs::write(
        &app,
        r#"{"id": "/demo/sec", "cmd": "test \"$PW\" = hunter2 && echo pw ok && sleep 600", "cpus": 0.1, "mem": 32,
            "secrets": {"pw": {"source": "/demo/pw"}}, "env": {"PW": {"secret": "pw"}}}"#,
    )
    .unwrap();
    let (ok, out) = cli(&["app", "deploy", "-f", app.to_str().unwrap(), "--wait"]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["task", "list"]);
    assert!(ok && out.contains("TASK_RUNNING"), "{out}");

    // The agent's API needs a token of a principal with view_state:
    // `agora task logs` sends the context's; without one the agent answers
    // 401; its health and metrics stay open.
    let st = Command::new("curl")
        .args(["-s", "--cacert", &ca, "-H"])
        .arg(format!("Authorization: Bearer {}", admin.trim()))
        .arg(&https)
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let t = &st["frameworks"][0]["tasks"][0];
    let (task, fw) = (
        t["id"].as_str().unwrap_or_else(|| panic!("{st}")),
        t["framework_id"].as_str().unwrap(),
    );
    let agent_api = st["agents"][0]["endpoint"].as_str().unwrap();
    assert_eq!(agent_api, format!("https://127.0.0.1:{ap}"), "{st}");
    let out = eventually(Duration::from_secs(10), async || {
        let (ok, out) = cli(&["task", "logs", task]);
        (ok && out.contains("pw ok")).then_some(out)
    })
    .await;
    assert!(out.is_ok(), "{:?}", cli(&["task", "logs", task]));
    let logs = format!("{agent_api}/tasks/{task}/logs?framework={fw}");
    assert_eq!(curl(&logs, None), "401");
    assert_eq!(curl(&logs, Some("agora_000000000000_forged")), "401");
    assert_eq!(curl(&logs, Some(admin.trim())), "200");
    assert_eq!(curl(&format!("{agent_api}/state"), None), "401");
    assert_eq!(curl(&format!("{agent_api}/health"), None), "200");
    assert_eq!(curl(&format!("{agent_api}/metrics"), None), "200");

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
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!("master     https://{master}")),
        "{printed}"
    );
    assert!(!context.exists(), "the context file outlived dev");
    std::fs::remove_dir_all(&home).ok();
}
