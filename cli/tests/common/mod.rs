//! Helpers for end-to-end tests that run the real `agora` binary and the
//! real Docker engine. Every container a test starts carries the label
//! `agora.scope=<the agent's work dir>`; [`AgentProc`] removes them on drop.

#![allow(dead_code)]

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_agora");

const IMAGES: [&str; 2] = ["agora-workload:latest", "agora-busybox:latest"];

fn images_present() -> bool {
    Command::new("docker")
        .args(["image", "inspect"])
        .args(IMAGES)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Docker engine must answer; the test images are built if they are
/// missing (`images/build.sh --if-missing`: under a file lock, so parallel
/// test processes build them once and the others wait for that build).
fn ensure_images() -> Result<(), String> {
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    if !engine.is_ok_and(|o| o.status.success()) {
        return Err("the Docker engine does not answer (is dockerd running and /var/run/docker.sock readable?): the container tests need it".into());
    }
    if images_present() {
        return Ok(());
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../images/build.sh")
        .canonicalize()
        .map_err(|e| format!("images/build.sh not found next to the cli crate: {e}"))?;
    eprintln!(
        "test images missing: building them with {} --if-missing (once, under a lock)",
        script.display()
    );
    let out = Command::new("bash")
        .arg(&script)
        .arg("--if-missing")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    // What the script did (built, or waited for another build), for the log.
    eprint!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !images_present() {
        return Err(format!(
            "building the test images failed ({}); its output is above",
            out.status
        ));
    }
    Ok(())
}

/// Fails loudly if the engine does not answer; builds the test images if
/// they are missing (once per test process, and once across processes).
pub fn require_docker() {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    if let Err(e) = READY.get_or_init(ensure_images) {
        panic!("{e}");
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A block of 20 host ports that are free right now (checked by binding
/// them), chosen at random so concurrent test processes do not collide.
pub fn port_block() -> (u32, u32) {
    let seed = std::process::id().wrapping_mul(2654435761)
        ^ NEXT.fetch_add(1, Ordering::SeqCst).wrapping_mul(40503);
    for attempt in 0..200u32 {
        // Below the kernel's ephemeral range (32768+), where outgoing connections take ports.
        let slot = (seed.wrapping_add(attempt.wrapping_mul(7919))) % 540;
        let base = 21000 + slot * 20;
        let free =
            (base..base + 20).all(|p| std::net::TcpListener::bind(("0.0.0.0", p as u16)).is_ok());
        if free {
            return (base, base + 19);
        }
    }
    panic!("no free block of 20 ports found");
}

pub struct AgentProc {
    pub child: Option<Child>,
    pub work_dir: PathBuf,
    pub master: String,
    pub resources: String,
    pub extra: Vec<String>,
    pub listen: String,
    pub runtime: String,
}

impl AgentProc {
    pub fn start(master: &str, resources: &str, extra: &[&str]) -> Result<AgentProc> {
        Self::start_with(master, resources, "docker", extra)
    }

    pub fn start_with(
        master: &str,
        resources: &str,
        runtime: &str,
        extra: &[&str],
    ) -> Result<AgentProc> {
        let work_dir =
            std::env::temp_dir().join(format!("agora-agent-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&work_dir)?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let mut a = AgentProc {
            child: None,
            work_dir: work_dir.canonicalize()?,
            master: master.to_string(),
            resources: resources.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            listen: format!("127.0.0.1:{port}"),
            runtime: runtime.to_string(),
        };
        a.spawn()?;
        Ok(a)
    }

    pub fn spawn(&mut self) -> Result<()> {
        let child = Command::new(BIN)
            .args([
                "agent",
                "--runtime",
                &self.runtime,
                "--master",
                &self.master,
                "--resources",
                &self.resources,
            ])
            .args(["--listen", &self.listen, "--status-retry", "300ms"])
            // `extra` may give its own host name (e.g. `127.0.0.1`, which
            // DNS answers need to be resolvable).
            .args(
                (!self.extra.iter().any(|a| a == "--hostname"))
                    .then_some(["--hostname", "docker-test"])
                    .into_iter()
                    .flatten(),
            )
            .arg("--work-dir")
            .arg(&self.work_dir)
            // The test master is plain text (tests/src: agora_master::serve).
            .env("AGORA_INSECURE", "1")
            .args(&self.extra)
            .env("AGORA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting `agora agent`")?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no chance to clean up (containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn scope_filter(&self) -> String {
        format!("label=agora.scope={}", self.work_dir.display())
    }

    /// Container ids of this agent (`docker ps`), running only unless `all`.
    pub fn containers(&self, all: bool) -> Vec<String> {
        let mut cmd = Command::new("docker");
        cmd.arg("ps")
            .arg("-q")
            .arg("--no-trunc")
            .args(["--filter", &self.scope_filter()]);
        if all {
            cmd.arg("-a");
        }
        let out = cmd
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let mut v: Vec<String> = out
            .lines()
            .map(str::to_string)
            .filter(|s| !s.is_empty())
            .collect();
        v.sort();
        v
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
        let ids = self.containers(true);
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&ids)
                .stdout(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

/// `docker inspect -f FORMAT ID`.
pub fn inspect(id: &str, format: &str) -> String {
    Command::new("docker")
        .args(["inspect", "-f", format, id])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Polls `f` every 100 ms until it returns Some, for at most `within`.
pub async fn eventually<T>(within: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(t) = f().await {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("condition not met within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A task running `image` (or the agent's default image when empty).
pub fn container_task(
    id: &str,
    res: &str,
    image: &str,
    cmd: Option<&str>,
) -> agora_proto::pb::TaskInfo {
    let mut t = agora_tests::task(id, res, cmd.unwrap_or(""));
    if cmd.is_none() {
        t.command = None;
    }
    t.container = Some(agora_proto::pb::ContainerInfo {
        image: image.to_string(),
        network: "bridge".into(),
        port_mappings: vec![],
    });
    t
}

/// GET on loopback, returning the body if 2xx.
pub async fn get(addr: &str, path: &str) -> Option<String> {
    match agora_tests::http_get(addr, path).await {
        Ok((code, body)) if (200..300).contains(&code) => Some(body),
        _ => None,
    }
}

/// `docker logs ID` (stdout and stderr).
pub fn logs_of(id: &str) -> String {
    Command::new("docker")
        .args(["logs", id])
        .output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default()
}

/// Waits for `id` to reach `st`; panics if it ends in another state first.
pub async fn wait_state(
    f: &mut agora_tests::Fw,
    id: &str,
    st: agora_core::TaskState,
) -> agora_sdk::TaskStatus {
    use agora_tests::Ev;
    f.wait(Duration::from_secs(30), |e| match e {
        Ev::Update(s) if s.task_id.as_str() == id && s.state == st => Some(s.clone()),
        Ev::Update(s) if s.task_id.as_str() == id && s.state.is_terminal() && s.state != st => {
            panic!(
                "{id} ended {} ({}) while waiting for {st}",
                s.state, s.message
            )
        }
        _ => None,
    })
    .await
    .unwrap_or_else(|e| panic!("{id} never reached {st}: {e}"))
}

/// `agora services` as a process on a free loopback port, with its own
/// data dir (removed on drop).
pub struct ServicesProc {
    child: Option<Child>,
    pub addr: String,
    master: String,
    data: std::path::PathBuf,
    /// More arguments for `agora services` (e.g. `--role public`).
    extra: Vec<String>,
}

impl ServicesProc {
    pub fn start(master: &str) -> ServicesProc {
        Self::start_with(master, &[])
    }

    /// [`ServicesProc::start`] with more arguments.
    pub fn start_with(master: &str, extra: &[&str]) -> ServicesProc {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data =
            std::env::temp_dir().join(format!("agora-services-{}", uuid::Uuid::new_v4().simple()));
        let mut s = ServicesProc {
            child: None,
            addr: format!("127.0.0.1:{port}"),
            master: master.into(),
            data,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        let child = Command::new(BIN)
            .args(["services", "--master", &self.master, "--listen", &self.addr])
            .env("AGORA_INSECURE", "1")
            .arg("--data-dir")
            .arg(&self.data)
            .args(&self.extra)
            .env("AGORA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (status, body as JSON, or as a string when it is not JSON).
    pub async fn req(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let (code, text) = send(method, &self.addr, path, body.as_deref()).await;
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

impl Drop for ServicesProc {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// One HTTP request (hyper-util's client): (status, body).
pub async fn send(method: &str, addr: &str, path: &str, body: Option<&str>) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<hyper::body::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::from(body.unwrap_or("").to_owned()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&bytes).into_owned())
}

/// An `agora router` process, killed when dropped (however the test ends).
pub struct RouterProc(pub Child);

impl Drop for RouterProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `agora router ARGS` and waits (20 s at most) until it says it is
/// running and has printed an address for each label in `expect` (`dns`,
/// `edge`, `internal`, `l4`, `admin`; the admin listener is on a free port
/// unless ARGS give `--admin-address`); returns it and the addresses by label. Its
/// output goes to the test's log, prefixed `router|`.
pub fn start_router(
    args: &[&str],
    expect: &[&str],
) -> (RouterProc, std::collections::HashMap<String, String>) {
    use std::io::{BufRead, BufReader};
    // Tests run in parallel: the admin listener's default port would clash.
    let admin: &[&str] = if args.contains(&"--admin-address") {
        &[]
    } else {
        &["--admin-address", "127.0.0.1:0"]
    };
    let mut child = Command::new(BIN)
        .arg("router")
        .args(args)
        .args(admin)
        .env("AGORA_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting `agora router`");
    let stdout = child.stdout.take().unwrap();
    let proc = RouterProc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            eprintln!("router| {line}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the router did not print its addresses");
        let mut words = line.split_whitespace();
        if let (Some(label), Some(addr)) = (words.next(), words.next()) {
            let addr = addr.trim_start_matches("http://").to_string();
            seen.insert(label.to_string(), addr);
        }
        if line.contains("agora router") && line.contains("running") {
            seen.insert("running".into(), String::new());
        }
        if seen.contains_key("running") && expect.iter().all(|k| seen.contains_key(*k)) {
            // Drain the rest into the log.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (proc, seen);
        }
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A daemon started by a test (its stderr piped): killed on drop;
/// [`Daemon::stop`] stops it with SIGTERM and returns what it logged.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let mut out = String::new();
        if let Some(e) = self.0.stderr.as_mut() {
            let _ = std::io::Read::read_to_string(e, &mut out);
        }
        out
    }
}
