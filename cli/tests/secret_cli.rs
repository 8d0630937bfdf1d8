//! `agora secret` against a real `agora master` process: a value put from
//! stdin is listed (metadata only), shown, deleted; the master refuses a
//! world-readable key file and the wrong key on restart. The value never
//! shows up in the CLI's output or the master's log.

use std::io::Write;
mod common;

use common::{BIN, Daemon, free_port};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CANARY: &str = "canary-3f9d2c-value";

fn start_master(addr: &str, data: &std::path::Path, key: &std::path::Path) -> Daemon {
    let child = Command::new(BIN)
        .args(["master", "--listen", addr, "--secrets-key-file"])
        // Plain text on loopback (TLS is tested in tests/tls.rs).
        .env("AGORA_INSECURE", "1")
        .arg(key)
        .arg("--data-dir")
        .arg(data)
        .env("AGORA_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the master did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Daemon(child)
}

fn agora(master: &str, args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("AGORA_MASTER", master)
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
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn put_from_stdin_list_show_rm_and_key_checks() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!(
        "agora-secret-cli-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("secrets.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let data = dir.join("master");
    let addr = format!("127.0.0.1:{}", free_port());

    // A key file others may read is refused.
    let out = Command::new(BIN)
        .args(["master", "--listen", &addr, "--secrets-key-file"])
        .env("AGORA_INSECURE", "1")
        .arg(&key)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("readable by others (mode 0644); run chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let m = start_master(&addr, &data, &key);
    let (code, out, err) = agora(
        &addr,
        &["secret", "put", "/prod/db/password"],
        Some(CANARY.as_bytes()),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("stored /prod/db/password version 1 (19 bytes)"),
        "{out}"
    );
    assert!(out.contains("no live task uses it"), "{out}");
    let (code, out, err) = agora(
        &addr,
        &["secret", "put", "prod/db/password", "--no-rollout"],
        Some(b"canary-3f9d2c-value-2"),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("version 2") && out.contains("staged"), "{out}");

    let (code, out, _) = agora(&addr, &["secret", "list"], None);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("PATH") && lines[0].contains("USED BY"),
        "{out}"
    );
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cols[..3], ["/prod/db/password", "2", "21"], "{out}");
    let (code, out, _) = agora(&addr, &["secret", "list", "-o", "json"], None);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["versions"].as_array().unwrap().len(), 2);
    assert_eq!(v[0]["rollout"], 1);
    let (code, out, _) = agora(&addr, &["secret", "show", "/prod/db/password"], None);
    assert_eq!(code, 0);
    assert!(
        out.contains("staged") && out.contains("rollout   version 1"),
        "{out}"
    );
    let mut seen = out.clone();

    let (code, _, err) = agora(&addr, &["secret", "show", "/nope"], None);
    assert_eq!(code, 4, "not found exits 4: {err}");
    let big = dir.join("big");
    std::fs::write(&big, vec![b'z'; 64 * 1024]).unwrap();
    let (code, out, err) = agora(
        &addr,
        &[
            "secret",
            "put",
            "/big",
            "--from-file",
            big.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(65536 bytes)"), "{out}");
    std::fs::write(&big, vec![b'z'; 64 * 1024 + 1]).unwrap();
    let (code, _, err) = agora(
        &addr,
        &[
            "secret",
            "put",
            "/big",
            "--from-file",
            big.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("larger than 64 KiB"), "{err}");
    let (code, _, err) = agora(&addr, &["secret", "put", "/empty"], Some(b""));
    assert_eq!(code, 1);
    assert!(err.contains("empty"), "{err}");
    let (code, out, err) = agora(&addr, &["secret", "rm", "/prod/db/password"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted /prod/db/password"), "{out}");
    let (code, _, _) = agora(&addr, &["secret", "rm", "/prod/db/password"], None);
    assert_eq!(code, 4);
    agora(&addr, &["secret", "put", "/kept"], Some(CANARY.as_bytes()));
    let log = m.stop();
    seen.push_str(&log);
    assert!(
        !seen.contains("canary"),
        "a value leaked into output or logs:\n{seen}"
    );
    assert!(log.contains("secret stored"), "{log}");

    // The store survives a restart with its key, and refuses another key.
    let other = dir.join("other.key");
    std::fs::write(&other, [1u8; 32]).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(BIN)
        .args(["master", "--listen", &addr, "--secrets-key-file"])
        .env("AGORA_INSECURE", "1")
        .arg(&other)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the secret store was sealed with key id"),
        "{err}"
    );
    let m = start_master(&addr, &data, &key);
    let (code, out, _) = agora(&addr, &["secret", "list"], None);
    assert_eq!(code, 0);
    assert!(out.contains("/kept"), "{out}");
    drop(m);
    std::fs::remove_dir_all(dir).ok();
}
