//! Issue 10, end to end: secrets used by an app, as the user does it.
//!
//! Real processes (`agora master` with a secret store, `agora agent` with
//! the Docker runtime, `agora services`), each logging at trace level to a
//! file. A random canary is put with `agora secret put`; a Docker app uses
//! it as an env variable and as a file; the workload's `/hash` shows the
//! container sees it (the SHA-256, never the value). A new value rolls the
//! app; one put with `--no-rollout` does not. Then the **leak scanner**:
//! every surface (API answers of the master, agent and services, the
//! services' event stream, the daemons' logs at trace level, CLI outputs,
//! every file under their data and work dirs, the daemons' command lines)
//! holds no canary, in plain, base64 or hex form.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(90);

/// Removes the test's dirs and the agent's containers (it leaves them
/// running when it stops), however the test ends.
struct Cleanup {
    dir: PathBuf,
    shm: PathBuf,
    scope: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "docker ps -aq --filter label=agora.scope={} | xargs -r docker rm -f",
                    self.scope.display()
                ),
            ])
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.shm);
    }
}

/// A daemon whose stderr goes to a file, killed on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon(dir: &Path, name: &str, args: &[&str]) -> Daemon {
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(BIN)
        .args(args)
        // Plain text on loopback (TLS is tested in tests/tls.rs).
        .env("AGORA_INSECURE", "1")
        .env("AGORA_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            std::fs::File::create(dir.join(format!("{name}.out"))).unwrap(),
        ))
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    Daemon { child, log }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// Runs the CLI; (exit code, stdout + stderr).
fn agora(master: &str, args: &[&str], stdin: Option<&str>) -> (i32, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("AGORA_MASTER", master)
        .env("AGORA_LOG", "trace")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn base64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if pad {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// The base64 characters that only the value decides when it starts
/// `offset` (0, 1 or 2) bytes into a 3-byte group of a larger encoded blob
/// (e.g. `DB=<value>` in an encoded environment).
fn base64_at(value: &[u8], offset: usize, alphabet: &[u8; 64]) -> String {
    let mut bytes = vec![0u8; offset];
    bytes.extend_from_slice(value);
    let enc = base64(&bytes, alphabet, false);
    let (first, end) = (8 * offset, 8 * (offset + value.len()));
    enc.chars()
        .enumerate()
        .filter(|(i, _)| 6 * i >= first && 6 * i + 6 <= end)
        .map(|(_, c)| c)
        .collect()
}

/// Every form a value could leak in: plain; base64 (standard and URL-safe,
/// padded or not, at each of the three offsets a value can have inside a
/// larger encoded blob); hex; and the byte lists that `Debug` of a
/// `Vec<u8>` (a prost `bytes` field) and JSON of one print.
fn forms(v: &str) -> Vec<String> {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let hex: String = v.bytes().map(|b| format!("{b:02x}")).collect();
    let list = |sep: &str| {
        v.bytes()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(sep)
    };
    let mut v = vec![
        v.to_string(),
        hex.clone(),
        hex.to_uppercase(),
        list(", "),
        list(","),
    ];
    for offset in 0..3 {
        for alphabet in [STD, URL] {
            v.push(base64_at(v[0].as_bytes(), offset, alphabet));
        }
    }
    v.sort();
    v.dedup();
    v
}

/// The scanner finds a value embedded at any offset of a base64 blob, and
/// as the byte list `Debug` of a `Vec<u8>` or JSON prints (review: it
/// looked for base64 at offset 0 only, and not for byte lists).
#[test]
fn the_scanner_finds_every_form_of_an_embedded_value() {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let found = |name: &str, hay: Vec<u8>| {
        let l = leaks(std::slice::from_ref(&canary), &[(name.to_string(), hay)]);
        assert!(!l.is_empty(), "the scanner misses the value in {name}");
    };
    for prefix in ["", "D=", "DB=", "DBX="] {
        let blob = format!("{{\"Env\":[\"{prefix}{canary}\"]}}");
        found(
            &format!("base64 after {prefix:?}"),
            base64(blob.as_bytes(), STD, true).into_bytes(),
        );
    }
    let bytes = canary.as_bytes().to_vec();
    found(
        "Debug of a prost message",
        format!("ResolvedSecret {{ value: {bytes:?} }}").into_bytes(),
    );
    found(
        "JSON bytes",
        serde_json::to_vec(&json!({ "value": bytes })).unwrap(),
    );
    // And nothing else.
    let other = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let l = leaks(
        std::slice::from_ref(&canary),
        &[(
            "other".into(),
            base64(other.as_bytes(), STD, true).into_bytes(),
        )],
    );
    assert!(l.is_empty(), "{l:?}");
}

/// Where each form of each canary occurs in `surfaces` (name, bytes).
fn leaks(canaries: &[String], surfaces: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut found = Vec::new();
    for c in canaries {
        for f in forms(c) {
            for (name, bytes) in surfaces {
                if bytes.windows(f.len()).any(|w| w == f.as_bytes()) {
                    found.push(format!("{f:?} (a form of a canary) in {name}"));
                }
            }
        }
    }
    found
}

fn files_under(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            files_under(&p, out);
        } else if t.is_file()
            && let Ok(b) = std::fs::read(&p)
        {
            out.push((format!("file {}", p.display()), b));
        }
    }
}

/// Reads an HTTP stream (the services' `/v2/events`) for `secs`.
fn read_stream(addr: String, path: &str, secs: u64) -> std::thread::JoinHandle<Vec<u8>> {
    let path = path.to_string();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        out
    })
}

/// The app's running instances: (task id, host port).
async fn running(s: &str, app: &str) -> Vec<(String, u32)> {
    let (_, body) = send("GET", s, &format!("/v2/apps{app}/tasks"), None).await;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .filter(|t| t["state"] == "TASK_RUNNING")
                .filter_map(|t| {
                    Some((
                        t["id"].as_str()?.to_string(),
                        t["ports"].get(0)?.as_u64()? as u32,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the workload of every running instance answers at `path`, once
/// the app has exactly one instance and it answers.
async fn hash_of_instance(s: &str, app: &str, path: &str) -> Option<(String, String)> {
    let r = running(s, app).await;
    let [(task, port)] = r.as_slice() else {
        return None;
    };
    let h = get(&format!("127.0.0.1:{port}"), path).await?;
    Some((task.clone(), h.trim().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_container_roll_the_app_and_leak_nowhere() {
    require_docker();
    let dir = std::env::temp_dir().join(format!(
        "agora-e2e-secrets-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let shm = PathBuf::from(format!(
        "/dev/shm/agora-e2e-secrets-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let (master_data, agent_work, services_data) =
        (dir.join("master"), dir.join("agent"), dir.join("services"));
    // The key file: 32 random bytes (hex), mode 0600.
    let _cleanup = Cleanup {
        dir: dir.clone(),
        shm: shm.clone(),
        scope: agent_work.clone(),
    };
    let (lo, hi) = port_block();
    let resources = format!("cpus:2;mem:2048;ports:[{lo}-{hi}]");
    let key = dir.join("secrets.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let rnd: String = (0..2)
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        std::fs::write(&key, format!("{rnd}\n")).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let m_addr = free_addr();
    let master = daemon(
        &dir,
        "master",
        &[
            "master",
            "--listen",
            &m_addr,
            "--data-dir",
            master_data.to_str().unwrap(),
            "--secrets-key-file",
            key.to_str().unwrap(),
        ],
    );
    eventually(LONG, async || get(&m_addr, "/health").await)
        .await
        .expect("master up");
    let a_addr = free_addr();
    let agent = daemon(
        &dir,
        "agent",
        &[
            "agent",
            "--runtime",
            "docker",
            "--master",
            &m_addr,
            "--listen",
            &a_addr,
            "--resources",
            &resources,
            "--hostname",
            "secrets-test",
            "--work-dir",
            agent_work.to_str().unwrap(),
            "--secrets-dir",
            shm.to_str().unwrap(),
        ],
    );
    let s_addr = free_addr();
    let services = daemon(
        &dir,
        "services",
        &[
            "services",
            "--master",
            &m_addr,
            "--listen",
            &s_addr,
            "--data-dir",
            services_data.to_str().unwrap(),
        ],
    );
    eventually(LONG, async || get(&s_addr, "/ping").await)
        .await
        .expect("services up");
    let mut cli_out = Vec::new();

    // A random canary, put from stdin.
    let canary1 = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let (code, out) = agora(
        &m_addr,
        &["secret", "put", "/e2e/db/password"],
        Some(&canary1),
    );
    assert_eq!(code, 0, "{out}");
    cli_out.push(("agora secret put".to_string(), out.into_bytes()));

    // An unknown path: 422 naming it, at create time.
    let mut app = json!({
        "id": "/sec/web", "instances": 1, "cpus": 0.1, "mem": 64,
        "container": {"type": "DOCKER", "docker": {"image": "agora-workload:latest"},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}],
            "volumes": [{"containerPath": "/run/secrets/db", "secret": "db"}]},
        "networks": [{"mode": "container/bridge"}],
        "env": {"DB_PASSWORD": {"secret": "db"}, "MODE": "e2e"},
        "secrets": {"db": {"source": "/e2e/db/nope"}},
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0,
            "gracePeriodSeconds": 30, "intervalSeconds": 1, "timeoutSeconds": 2}],
    });
    let (code, body) = send("POST", &s_addr, "/v2/apps", Some(&app.to_string())).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("/secrets/db/source") && body.contains("/e2e/db/nope"),
        "{body}"
    );

    // The app as the user writes it.
    app["secrets"]["db"]["source"] = json!("e2e/db/password");
    let (code, body) = send("POST", &s_addr, "/v2/apps", Some(&app.to_string())).await;
    assert_eq!(code, 201, "{body}");
    let events = read_stream(s_addr.clone(), "/v2/events", 40);

    let want1 = sha256_hex(&canary1);
    let (task1, env1) = eventually(LONG, async || {
        hash_of_instance(&s_addr, "/sec/web", "/hash?env=DB_PASSWORD").await
    })
    .await
    .expect("the app's instance answers /hash");
    assert_eq!(env1, want1, "the container's env holds the secret");
    let (_, file1) = eventually(LONG, async || {
        hash_of_instance(&s_addr, "/sec/web", "/hash?file=%2Frun%2Fsecrets%2Fdb").await
    })
    .await
    .unwrap();
    assert_eq!(file1, want1, "the container's file holds the secret");

    // A new value rolls the app (a deployment): the new instance sees it.
    let canary2 = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let (code, out) = agora(
        &m_addr,
        &["secret", "put", "/e2e/db/password"],
        Some(&canary2),
    );
    assert_eq!(code, 0, "{out}");
    cli_out.push(("agora secret put (2)".to_string(), out.into_bytes()));
    let want2 = sha256_hex(&canary2);
    let (task2, _) = eventually(LONG, async || {
        let (t, h) =
            hash_of_instance(&s_addr, "/sec/web", "/hash?file=%2Frun%2Fsecrets%2Fdb").await?;
        (h == want2).then_some((t, h))
    })
    .await
    .expect("the app rolled to the new secret version");
    assert_ne!(task2, task1, "a new instance replaced the old one");
    let (_, env2) = eventually(LONG, async || {
        hash_of_instance(&s_addr, "/sec/web", "/hash?env=DB_PASSWORD").await
    })
    .await
    .unwrap();
    assert_eq!(env2, want2);

    // The pin is Agora's own: shown under /v1, never in the Marathon JSON.
    let (_, v1) = send("GET", &s_addr, "/v1/apps/sec/web", None).await;
    let v1: Value = serde_json::from_str(&v1).unwrap();
    assert_eq!(
        v1["app"]["secretVersions"]["/e2e/db/password"],
        json!(2),
        "{v1}"
    );
    let (_, v2) = send("GET", &s_addr, "/v2/apps/sec/web", None).await;
    let v2: Value = serde_json::from_str(&v2).unwrap();
    assert!(v2["app"].get("secretVersions").is_none(), "{v2}");
    assert_eq!(
        v2["app"]["env"]["DB_PASSWORD"],
        json!({"secret": "db"}),
        "{v2}"
    );
    assert_eq!(
        v2["app"]["secrets"]["db"],
        json!({"source": "/e2e/db/password"}),
        "{v2}"
    );

    // Staged with --no-rollout: nothing rolls.
    let canary3 = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let (code, out) = agora(
        &m_addr,
        &["secret", "put", "/e2e/db/password", "--no-rollout"],
        Some(&canary3),
    );
    assert_eq!(code, 0, "{out}");
    cli_out.push((
        "agora secret put --no-rollout".to_string(),
        out.into_bytes(),
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (task3, h3) = hash_of_instance(&s_addr, "/sec/web", "/hash?env=DB_PASSWORD")
        .await
        .expect("still serving");
    assert_eq!(
        (task3.as_str(), h3.as_str()),
        (task2.as_str(), want2.as_str())
    );
    let (_, v1) = send("GET", &s_addr, "/v1/apps/sec/web", None).await;
    let v1: Value = serde_json::from_str(&v1).unwrap();
    assert_eq!(
        v1["app"]["secretVersions"]["/e2e/db/password"],
        json!(2),
        "{v1}"
    );

    // CLI outputs of the read commands.
    for args in [
        &["secret", "list"][..],
        &["secret", "show", "/e2e/db/password"][..],
    ] {
        let (_, out) = agora(&m_addr, args, None);
        cli_out.push((format!("agora {}", args.join(" ")), out.into_bytes()));
    }

    // Positive control: the one place the value is meant to be, the
    // agent's tmpfs file of the running instance, is found by the scanner.
    let mut tmpfs = Vec::new();
    files_under(&shm, &mut tmpfs);
    assert!(
        !leaks(std::slice::from_ref(&canary2), &tmpfs).is_empty(),
        "the scanner does not find the value in the instance's tmpfs file"
    );

    // Deleted out from under the app: the running instance stays; its
    // replacement cannot start, and the app's lastTaskFailure says why.
    let (code, out) = agora(&m_addr, &["secret", "rm", "/e2e/db/password"], None);
    assert_ne!(code, 0, "refused while an app uses it: {out}");
    assert!(out.contains("/sec/web"), "names the app: {out}");
    cli_out.push(("agora secret rm".to_string(), out.into_bytes()));
    let (code, out) = agora(
        &m_addr,
        &["secret", "rm", "/e2e/db/password", "--force"],
        None,
    );
    assert_eq!(code, 0, "{out}");
    cli_out.push(("agora secret rm --force".to_string(), out.into_bytes()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (task4, h4) = hash_of_instance(&s_addr, "/sec/web", "/hash?env=DB_PASSWORD")
        .await
        .expect("the running instance stays");
    assert_eq!(
        (task4.as_str(), h4.as_str()),
        (task2.as_str(), want2.as_str())
    );
    let (code, body) = send(
        "DELETE",
        &s_addr,
        &format!("/v2/apps/sec/web/tasks/{task2}"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let failure = eventually(LONG, async || {
        let (_, body) = send("GET", &s_addr, "/v2/apps/sec/web", None).await;
        let v: Value = serde_json::from_str(&body).ok()?;
        let f = v["app"]["lastTaskFailure"].clone();
        f.is_object().then_some(f)
    })
    .await
    .expect("the replacement's failure is shown");
    let msg = failure["message"].as_str().unwrap_or_default();
    assert!(msg.contains("/e2e/db/password"), "{failure}");
    assert_eq!(failure["state"], "TASK_FAILED", "{failure}");
    // The killed instance's secret files go when it ends (after its drain).
    eventually(LONG, async || {
        let mut tmpfs = Vec::new();
        files_under(&shm, &mut tmpfs);
        leaks(std::slice::from_ref(&canary2), &tmpfs)
            .is_empty()
            .then_some(())
    })
    .await
    .expect("an ended task's secret file is left on the tmpfs");

    // ---- the leak scanner ----
    let mut surfaces: Vec<(String, Vec<u8>)> = cli_out;
    for path in [
        "/state",
        "/metrics",
        "/v1/secrets",
        "/v1/secrets/e2e/db/password",
    ] {
        let (_, body) = send("GET", &m_addr, path, None).await;
        surfaces.push((format!("master {path}"), body.into_bytes()));
    }
    for path in ["/state", "/metrics"] {
        let (_, body) = send("GET", &a_addr, path, None).await;
        surfaces.push((format!("agent {path}"), body.into_bytes()));
    }
    for path in [
        "/v2/apps",
        "/v2/apps/sec/web",
        "/v2/tasks",
        "/v2/deployments",
        "/v1/apps",
        "/v1/apps/sec/web",
        "/v1/deployments",
        "/metrics",
    ] {
        let (_, body) = send("GET", &s_addr, path, None).await;
        surfaces.push((format!("services {path}"), body.into_bytes()));
    }
    // The app's own logs through the agent's API.
    let (_, body) = send("GET", &a_addr, &format!("/tasks/{task2}/logs"), None).await;
    surfaces.push(("agent task logs".into(), body.into_bytes()));
    // The event stream covered the deployment and the rollout.
    let events = events.join().unwrap();
    assert!(
        String::from_utf8_lossy(&events).contains("status_update_event"),
        "the event stream was read"
    );
    surfaces.push(("services /v2/events".into(), events));
    // Command lines of the daemons.
    for (name, d) in [
        ("master", &master),
        ("agent", &agent),
        ("services", &services),
    ] {
        let b = std::fs::read(format!("/proc/{}/cmdline", d.child.id())).unwrap_or_default();
        surfaces.push((format!("{name} cmdline"), b));
    }
    // Every file under their data and work dirs (the key file too).
    files_under(&dir, &mut surfaces);
    // The daemons' logs at trace level (stopped first: all flushed).
    let logs: Vec<PathBuf> = [&master, &agent, &services]
        .iter()
        .map(|d| d.log.clone())
        .collect();
    drop(services);
    drop(agent);
    drop(master);
    for l in &logs {
        let b = std::fs::read(l).unwrap();
        assert!(b.len() > 10_000, "{} logged at trace level", l.display());
        surfaces.push((format!("log {}", l.display()), b));
    }
    let canaries = [canary1, canary2, canary3];
    let found = leaks(&canaries, &surfaces);
    assert!(
        found.is_empty(),
        "secret values leaked:\n{}",
        found.join("\n")
    );
    // The scanner itself finds what it looks for.
    let probe = "canary-probe".to_string();
    let fake = vec![(
        "probe".to_string(),
        format!("x{}y", forms(&probe)[1]).into_bytes(),
    )];
    assert_eq!(leaks(&[probe], &fake).len(), 1);
}

/// Issue 10: an app with secrets on a master without a secret store is a
/// 422 saying how to start one (nothing is accepted or launched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_store_an_app_with_secrets_is_refused_saying_how_to_get_one() {
    let c = agora_tests::Cluster::start(agora_tests::test_config())
        .await
        .unwrap();
    let s = ServicesProc::start(&c.addr.to_string());
    eventually(LONG, async || get(&s.addr, "/ping").await)
        .await
        .expect("services up");
    let app = json!({"id": "/nostore", "cmd": "sleep 100", "cpus": 0.1, "mem": 16,
        "secrets": {"db": {"source": "/prod/db"}}, "env": {"DB": {"secret": "db"}}});
    // 503 until the framework is connected to the master.
    let (code, body) = eventually(LONG, async || {
        let (code, body) = s.req("POST", "/v2/apps", Some(app.clone())).await;
        (code != 503 && code != 0).then_some((code, body))
    })
    .await
    .unwrap();
    assert_eq!(code, 422, "{body}");
    let d = &body["details"][0];
    assert_eq!(d["path"], "/secrets", "{body}");
    let msg = d["errors"][0].as_str().unwrap();
    assert!(
        msg.contains("no secret store") && msg.contains("--secrets-key-file"),
        "{msg}"
    );
    let (_, apps) = s.req("GET", "/v2/apps", None).await;
    assert_eq!(apps["apps"], json!([]), "nothing accepted");
}
