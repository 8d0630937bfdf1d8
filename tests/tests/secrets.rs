//! The master's secret store over real gRPC and HTTP on loopback: who may
//! resolve a task's secrets, what frameworks learn about versions, and
//! `used_by` / the 409 on delete for secrets live tasks reference.

use agora_core::TaskState;
use agora_master::secrets::SecretsConfig;
use agora_proto::pb;
use agora_tests::{Cluster, Fw, fw_config, http_get, task, test_config};
use std::time::Duration;
use tonic::Code;

fn key_file() -> std::path::PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir().join(format!("agora-seckey-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("secrets.key");
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&f)
        .unwrap();
    file.write_all(format!("{}\n", "5a".repeat(32)).as_bytes())
        .unwrap();
    f
}

async fn send(c: &Cluster, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    // A raw HTTP/1.1 request: the harness's helper sends only GETs.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The master may answer (413) and close before reading all of an
    // oversized body: keep whatever answer arrived.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(out.len() >= 12, "no HTTP answer to {method} {path}");
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (code, body.to_string())
}

fn with_secret(
    mut t: pb::TaskInfo,
    env: &str,
    path: &str,
    version: u64,
    app: &str,
) -> pb::TaskInfo {
    t.secrets.push(pb::SecretUse {
        target: Some(pb::secret_use::Target::Env(env.into())),
        path: path.into(),
        version,
    });
    t.labels.insert("agora.app_id".into(), app.into());
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_is_only_for_the_task_on_its_agent_and_delete_refuses_while_used() {
    let mut cfg = test_config();
    cfg.secrets = Some(SecretsConfig {
        key_file: key_file(),
        versions: 2,
    });
    let c = Cluster::start(cfg).await.unwrap();
    let (code, body) = send(&c, "PUT", "/v1/secrets/prod/db", b"canary-v1").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = send(&c, "PUT", "/v1/secrets/prod/db?rollout=false", b"canary-v2").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = send(&c, "PUT", "/v1/secrets/too/big", &vec![b'x'; 64 * 1024 + 1]).await;
    assert_eq!(code, 413, "{body}");
    let (code, body) = send(&c, "PUT", "/v1/secrets/just/fits", &vec![b'x'; 64 * 1024]).await;
    assert_eq!(code, 200, "{body}");

    let mut f = Fw::start(fw_config(&c, "sec")).await.unwrap();
    let other = Fw::start(fw_config(&c, "other")).await.unwrap();
    let a1 = c.agent("a1", "cpus:4;mem:1024", &[]).await.unwrap();
    let offers = f.offers().await.unwrap();
    let o = offers.iter().find(|o| o.agent_id == a1.id).unwrap();
    f.client
        .launch(
            o,
            vec![
                with_secret(
                    task("web-1", "cpus:0.1;mem:32", "serve"),
                    "DB",
                    "/prod/db",
                    0,
                    "/web",
                ),
                with_secret(
                    task("web-2", "cpus:0.1;mem:32", "serve"),
                    "DB",
                    "prod/db",
                    1,
                    "/web",
                ),
                with_secret(
                    task("gone", "cpus:0.1;mem:32", "serve"),
                    "X",
                    "/prod/none",
                    0,
                    "/x",
                ),
                with_secret(
                    task("old", "cpus:0.1;mem:32", "serve"),
                    "X",
                    "/prod/db",
                    7,
                    "/x",
                ),
                with_secret(
                    task("x-1", "cpus:0.1;mem:32", "serve"),
                    "X",
                    "/prod/db",
                    1,
                    "/x",
                ),
            ],
        )
        .await
        .unwrap();
    for t in ["web-1", "web-2", "x-1"] {
        f.update(t, TaskState::Running).await.unwrap();
    }
    // The agent resolves a task's secrets before it launches it: a task
    // whose secret (or version) the master does not have fails there,
    // with the master's answer (path and reason, never a value).
    let gone = f.update("gone", TaskState::Failed).await.unwrap();
    assert_eq!(
        gone.message,
        "secret /prod/none does not exist (the task references its latest version); create it with `agora secret put /prod/none`"
    );
    let old = f.update("old", TaskState::Failed).await.unwrap();
    assert!(
        old.message.contains("no version 7") && old.message.contains("1, 2"),
        "{}",
        old.message
    );

    let mut link = pb::agent_link_client::AgentLinkClient::connect(c.url())
        .await
        .unwrap();
    let req = |agent: &str, fw: &str, task: &str| pb::ResolveSecretsRequest {
        agent_id: agent.into(),
        framework_id: fw.into(),
        task_id: task.into(),
    };
    let ok = link
        .resolve_secrets(req(a1.id.as_str(), f.id.as_str(), "web-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.secrets.len(), 1);
    assert_eq!(ok.secrets[0].path, "/prod/db");
    assert_eq!(
        (ok.secrets[0].requested_version, ok.secrets[0].version),
        (0, 2)
    );
    assert_eq!(ok.secrets[0].value, b"canary-v2");
    let pinned = link
        .resolve_secrets(req(a1.id.as_str(), f.id.as_str(), "web-2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pinned.secrets[0].value, b"canary-v1");

    for (agent, fw, t, why) in [
        (
            "a-elsewhere",
            f.id.as_str(),
            "web-1",
            "does not run on agent",
        ),
        (
            a1.id.as_str(),
            other.id.as_str(),
            "web-1",
            "not a live task of framework",
        ),
        (a1.id.as_str(), "no-such-fw", "web-1", "not known"),
        (
            a1.id.as_str(),
            f.id.as_str(),
            "no-such-task",
            "not a live task",
        ),
    ] {
        let e = link.resolve_secrets(req(agent, fw, t)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{agent} {fw} {t}: {e:?}");
        assert!(e.message().contains(why), "{}", e.message());
        assert!(!e.message().contains("canary"));
    }
    // Failed at launch: no longer live, so nothing more to resolve.
    let e = link
        .resolve_secrets(req(a1.id.as_str(), f.id.as_str(), "gone"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    let mut sched = pb::scheduler_client::SchedulerClient::connect(c.url())
        .await
        .unwrap();
    let v = sched
        .secret_versions(pb::SecretVersionsRequest {
            framework_id: f.id.as_str().into(),
            paths: vec!["/prod/db".into(), "/prod/none".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.secrets.len(), 2);
    assert_eq!(
        (
            v.secrets[0].exists,
            v.secrets[0].latest,
            v.secrets[0].rollout
        ),
        (true, 2, 1)
    );
    assert!(!v.secrets[1].exists);
    let e = sched
        .secret_versions(pb::SecretVersionsRequest {
            framework_id: "unknown".into(),
            paths: vec!["/prod/db".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = sched
        .secret_versions(pb::SecretVersionsRequest {
            framework_id: f.id.as_str().into(),
            paths: vec!["/a/../b".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // used_by: grouped by framework and app, with task counts.
    let (code, body) = http_get(&c.addr.to_string(), "/v1/secrets/prod/db")
        .await
        .unwrap();
    assert_eq!(code, 200);
    let m: serde_json::Value = serde_json::from_str(&body).unwrap();
    let used = m["used_by"].as_array().unwrap();
    assert_eq!(used.len(), 2, "{body}");
    assert_eq!(used[0]["app"], "/web");
    assert_eq!(used[0]["tasks"], 2);
    assert_eq!(used[0]["framework_name"], "sec");
    assert_eq!(used[1]["app"], "/x");
    let (_, state) = http_get(&c.addr.to_string(), "/state").await.unwrap();
    assert!(!state.contains("canary"));
    assert!(!body.contains("canary"));

    let (code, body) = send(&c, "DELETE", "/v1/secrets/prod/db", b"").await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("/web of framework sec") && body.contains("2 tasks"),
        "{body}"
    );
    let (code, body) = send(&c, "DELETE", "/v1/secrets/prod/db?force=true", b"").await;
    assert_eq!(code, 200, "{body}");
    let e = link
        .resolve_secrets(req(a1.id.as_str(), f.id.as_str(), "web-1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    drop(a1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_without_a_key_file_says_how_to_get_a_store() {
    let c = Cluster::start(test_config()).await.unwrap();
    let f = Fw::start(fw_config(&c, "nostore")).await.unwrap();
    let mut sched = pb::scheduler_client::SchedulerClient::connect(c.url())
        .await
        .unwrap();
    let e = sched
        .secret_versions(pb::SecretVersionsRequest {
            framework_id: f.id.as_str().into(),
            paths: vec!["/a".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("--secrets-key-file"),
        "{}",
        e.message()
    );
    let (code, body) = http_get(&c.addr.to_string(), "/v1/secrets").await.unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("--secrets-key-file"), "{body}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// A policy that refuses paths under `/restricted`.
struct DenyRestricted;

impl agora_master::secrets::SecretPolicy for DenyRestricted {
    fn may_read(
        &self,
        framework: &agora_core::FrameworkId,
        _principal: Option<&str>,
        path: &agora_core::secrets::SecretPath,
    ) -> Result<(), String> {
        if path.is_under("/restricted") {
            Err(format!("framework {framework} may not read /restricted"))
        } else {
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_policy_decides_what_a_framework_may_read() {
    let mut cfg = test_config();
    cfg.secrets = Some(SecretsConfig {
        key_file: key_file(),
        versions: 10,
    });
    cfg.secret_policy =
        agora_master::secrets::SharedSecretPolicy(std::sync::Arc::new(DenyRestricted));
    let c = Cluster::start(cfg).await.unwrap();
    assert_eq!(
        send(&c, "PUT", "/v1/secrets/restricted/x", b"canary-r")
            .await
            .0,
        200
    );
    assert_eq!(
        send(&c, "PUT", "/v1/secrets/open/y", b"canary-o").await.0,
        200
    );
    let mut f = Fw::start(fw_config(&c, "pol")).await.unwrap();
    let a = c.agent("a1", "cpus:4;mem:1024", &[]).await.unwrap();
    let offers = f.offers().await.unwrap();
    let o = offers.iter().find(|o| o.agent_id == a.id).unwrap();
    let both = with_secret(
        with_secret(
            task("both", "cpus:0.1;mem:32", "serve"),
            "O",
            "/open/y",
            0,
            "/a",
        ),
        "R",
        "/restricted/x",
        0,
        "/a",
    );
    let open = with_secret(
        task("open", "cpus:0.1;mem:32", "serve"),
        "O",
        "/open/y",
        0,
        "/b",
    );
    f.client.launch(o, vec![both, open]).await.unwrap();
    // The agent asks for the task's secrets at launch: refused, the task
    // fails with the master's answer naming the path and the permission.
    let both = f.update("both", TaskState::Failed).await.unwrap();
    assert_eq!(
        both.message,
        format!(
            "secret /restricted/x: permission denied: framework {} may not read /restricted",
            f.id
        )
    );
    assert!(!both.message.contains("canary"));
    f.update("open", TaskState::Running).await.unwrap();
    let mut link = pb::agent_link_client::AgentLinkClient::connect(c.url())
        .await
        .unwrap();
    let req = |t: &str| pb::ResolveSecretsRequest {
        agent_id: a.id.as_str().into(),
        framework_id: f.id.as_str().into(),
        task_id: t.into(),
    };
    let ok = link
        .resolve_secrets(req("open"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.secrets[0].value, b"canary-o");
}

/// After a master restart, tasks are learnt from their re-registering
/// agents: their descriptions (secret references included) are only the
/// agent's word, so the master resolves no secrets for them (an agent could
/// otherwise report a made-up task to read any secret of its framework).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_adopted_after_a_master_restart_gets_no_secrets() {
    let mut cfg = test_config();
    cfg.secrets = Some(SecretsConfig {
        key_file: key_file(),
        versions: 10,
    });
    let mut c = Cluster::start(cfg).await.unwrap();
    let (code, body) = send(&c, "PUT", "/v1/secrets/prod/db", b"canary").await;
    assert_eq!(code, 200, "{body}");
    let mut f = Fw::start(fw_config(&c, "sec")).await.unwrap();
    let a1 = c.agent("a1", "cpus:4;mem:1024", &[]).await.unwrap();
    let offers = f.offers().await.unwrap();
    f.client
        .launch(
            &offers[0],
            vec![with_secret(
                task("web-1", "cpus:0.1;mem:32", "serve"),
                "DB",
                "/prod/db",
                1,
                "/web",
            )],
        )
        .await
        .unwrap();
    f.update("web-1", TaskState::Running).await.unwrap();
    let req = pb::ResolveSecretsRequest {
        agent_id: a1.id.as_str().into(),
        framework_id: f.id.as_str().into(),
        task_id: "web-1".into(),
    };
    let mut link = pb::agent_link_client::AgentLinkClient::connect(c.url())
        .await
        .unwrap();
    let ok = link
        .resolve_secrets(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.secrets[0].value, b"canary");

    c.restart().await.unwrap();
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if let Ok(mut link) = pb::agent_link_client::AgentLinkClient::connect(c.url()).await {
            match link.resolve_secrets(req.clone()).await {
                Ok(_) => panic!("an adopted task's secrets were resolved"),
                Err(e) if e.message().contains("not launched through this master") => {
                    assert_eq!(e.code(), Code::PermissionDenied);
                    return;
                }
                Err(e) => last = e.message().to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the adopted task was never refused as such; last answer: {last}");
}
