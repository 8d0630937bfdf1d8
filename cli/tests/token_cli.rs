//! `agora token` and the client context file against a real `agora master`
//! started with `--acls` and `--bootstrap-token-file`: the bootstrap token
//! (mode 0600) creates tokens, the context file supplies master and token,
//! permissions and revocation are enforced, and no token reaches the log.

mod common;

use common::{BIN, Daemon, free_port};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Waits until the master has written its bootstrap token (the port is
/// bound before the master opens its token store).
fn wait_token_file(f: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(t) = std::fs::read_to_string(f)
            && t.ends_with('\n')
        {
            return t.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no bootstrap token in {}",
            f.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `agora` with a clean credential environment plus `env`.
fn agora(home: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("AGORA_MASTER")
        .env_remove("AGORA_TOKEN")
        .env_remove("AGORA_TOKEN_FILE")
        .env("AGORA_HOME", home)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tokens_from_bootstrap_to_revocation_with_the_context_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir =
        std::env::temp_dir().join(format!("agora-token-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let acls = dir.join("acls.toml");
    std::fs::write(
        &acls,
        "admins = [\"admin\"]\n[[view_state]]\nprincipals = [\"ops\"]\n",
    )
    .unwrap();
    let boot = dir.join("admin.token");
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(BIN)
        .args(["master", "--in-memory", "--listen", &addr, "--acls"])
        .env("AGORA_INSECURE", "1")
        .arg(&acls)
        .arg("--bootstrap-token-file")
        .arg(&boot)
        .env("AGORA_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let master = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "the master did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let admin_token = wait_token_file(&boot);
    let mode = std::fs::metadata(&boot).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the bootstrap token file is private");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let boot_s = boot.to_str().unwrap();
    let m = [("AGORA_MASTER", addr.as_str())];

    // No token: refused, saying how to give one.
    let (code, _, err) = agora(&home, &m, &["token", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no bearer token") && err.contains("--token-file"),
        "{err}"
    );

    // The bootstrap token creates a token for ops, printed once on stdout.
    let admin_env = [
        ("AGORA_MASTER", addr.as_str()),
        ("AGORA_TOKEN_FILE", boot_s),
    ];
    let (code, out, err) = agora(
        &home,
        &admin_env,
        &["token", "create", "--principal", "ops", "--ttl", "1h"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("for principal ops") && err.contains("shown once"),
        "{err}"
    );
    let ops_token = out.trim().to_string();
    assert!(ops_token.starts_with("agora_"), "{out}");
    let ops_file = dir.join("ops.token");
    std::fs::write(&ops_file, format!("{ops_token}\n")).unwrap();
    std::fs::set_permissions(&ops_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The context file gives master and token: no flags, no environment.
    std::fs::write(
        home.join("context.json"),
        format!(
            "{{\"master\": \"{addr}\", \"token_file\": \"{}\"}}",
            ops_file.display()
        ),
    )
    .unwrap();
    let (code, out, err) = agora(&home, &[], &["token", "whoami"]);
    assert_eq!((code, out.trim()), (0, "ops"), "{err}");
    let (code, out, err) = agora(&home, &[], &["framework", "list"]);
    assert_eq!(code, 0, "view_state lets ops read /state: {out}{err}");
    let (code, _, err) = agora(&home, &[], &["token", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("(permission: manage_tokens)"), "{err}");

    // The admin lists tokens (no token shown) and revokes ops's.
    let (code, out, err) = agora(&home, &admin_env, &["token", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ops") && out.contains("admin") && out.contains("active"),
        "{out}"
    );
    assert!(!out.contains(&ops_token[20..]) && !out.contains(&admin_token[20..]));
    let id = ops_token["agora_".len().."agora_".len() + 12].to_string();
    let (code, out, err) = agora(&home, &admin_env, &["token", "revoke", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id));
    let (code, _, err) = agora(&home, &[], &["token", "whoami"]);
    assert_eq!(code, 1);
    assert!(err.contains("revoked"), "{err}");
    let (code, _, _) = agora(&home, &admin_env, &["token", "revoke", "000000000000"]);
    assert_eq!(code, 4, "not found");

    // A flag beats the context file.
    let (code, out, _) = agora(&home, &[], &["token", "whoami", "--token-file", boot_s]);
    assert_eq!((code, out.trim()), (0, "admin (admin)"));

    let log = master.stop();
    assert!(log.contains("bootstrap token"), "{log}");
    for t in [&admin_token, &ops_token] {
        let secret = t.rsplit_once('_').unwrap().1;
        assert!(!log.contains(secret), "a token reached the master's log");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_services_api_and_framework_use_tokens_too() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("agora-svc-tok-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let acls = dir.join("acls.toml");
    std::fs::write(
        &acls,
        "admins = [\"admin\"]\n[[register_frameworks]]\nprincipals = [\"services\"]\nroles = \"any\"\n",
    )
    .unwrap();
    let boot = dir.join("admin.token");
    let addr = format!("127.0.0.1:{}", free_port());
    let spawn = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_remove("AGORA_TOKEN")
            .env_remove("AGORA_TOKEN_FILE")
            .env("AGORA_HOME", &dir)
            // Plain text on loopback (TLS is tested in tests/tls.rs).
            .env("AGORA_INSECURE", "1")
            .env("AGORA_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_for = |a: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(a).is_err() {
            assert!(Instant::now() < deadline, "{a} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let master = Daemon(spawn(&[
        "master",
        "--in-memory",
        "--listen",
        &addr,
        "--acls",
        acls.to_str().unwrap(),
        "--bootstrap-token-file",
        boot.to_str().unwrap(),
    ]));
    wait_for(&addr);
    wait_token_file(&boot);
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let boot_s = boot.to_str().unwrap();
    let admin_env = [
        ("AGORA_MASTER", addr.as_str()),
        ("AGORA_TOKEN_FILE", boot_s),
    ];
    let (code, out, err) = agora(
        &home,
        &admin_env,
        &["token", "create", "--principal", "services", "--ttl", "1h"],
    );
    assert_eq!(code, 0, "{err}");
    let svc_token = dir.join("services.token");
    std::fs::write(&svc_token, out.trim()).unwrap();
    std::fs::set_permissions(&svc_token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let svc_addr = format!("127.0.0.1:{}", free_port());
    let services = Daemon(spawn(&[
        "services",
        "--master",
        &addr,
        "--listen",
        &svc_addr,
        "--data-dir",
        dir.join("svc").to_str().unwrap(),
        "--master-token-file",
        svc_token.to_str().unwrap(),
        "--require-tokens",
    ]));
    wait_for(&svc_addr);
    let s = [("AGORA_SERVICES", svc_addr.as_str())];
    let (code, _, err) = agora(&home, &s, &["app", "list"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("401") && err.contains("no bearer token"),
        "{err}"
    );
    let s_admin = [
        ("AGORA_SERVICES", svc_addr.as_str()),
        ("AGORA_TOKEN_FILE", boot_s),
    ];
    let (code, out, err) = agora(&home, &s_admin, &["app", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    // The framework subscribed with its own token.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, err) = agora(&home, &admin_env, &["framework", "list"]);
        assert_eq!(code, 0, "{err}");
        if out.contains("agora-services") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the services framework did not subscribe: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let svc_log = services.stop();
    assert!(!svc_log.contains("refused the subscription"), "{svc_log}");
    drop(master);
    std::fs::remove_dir_all(dir).ok();
}
