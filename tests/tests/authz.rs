//! Authentication and authorization over real gRPC and HTTP: a master with
//! an ACL file, hollow agents, SDK frameworks with their own tokens.
//! Framework A cannot kill, tear down or act for framework B; roles and
//! launches follow the ACLs; calls without a valid token are refused.

use agora_core::TaskState;
use agora_proto::pb;
use agora_sdk::client::BearerInterceptor;
use agora_sdk::{Driver, FrameworkConfig, SdkError};
use agora_tests::{Cluster, Fw, fw_config, task, test_config};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ACLS: &str = r#"
admins = ["admin"]

[[register_frameworks]]
principals = ["alpha", "beta", "watcher"]
roles = ["*"]

[[launch_tasks]]
principals = ["alpha", "beta"]
roles = "any"

[[kill_tasks]]
principals = ["ops"]
framework_principals = ["beta"]

[[view_state]]
principals = ["ops"]

[[read_secrets]]
principals = ["alpha"]
paths = ["/prod"]
"#;

/// A raw HTTP/1.1 request with an optional bearer token: (status, body).
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").context("malformed answer")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    Ok((code, body.to_string()))
}

struct Secured {
    cluster: Cluster,
    admin: String,
    dir: std::path::PathBuf,
}

impl Secured {
    async fn start() -> Result<Secured> {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut agora_master::MasterConfig)) -> Result<Secured> {
        let dir =
            std::env::temp_dir().join(format!("agora-authz-e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let acls = dir.join("acls.toml");
        std::fs::write(&acls, ACLS)?;
        let boot = dir.join("admin.token");
        let mut cfg = test_config();
        cfg.acls = Some(acls);
        cfg.bootstrap_token_file = Some(boot.clone());
        tweak(&mut cfg);
        let cluster = Cluster::start(cfg).await?;
        let mut admin = String::new();
        for _ in 0..100 {
            // Complete once the newline is there.
            if let Ok(t) = std::fs::read_to_string(&boot)
                && t.ends_with('\n')
            {
                admin = t.trim().to_string();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::ensure!(!admin.is_empty(), "no bootstrap token written");
        Ok(Secured {
            cluster,
            admin,
            dir,
        })
    }

    async fn token(&self, principal: &str) -> Result<String> {
        let (code, body) = http(
            &self.cluster.addr.to_string(),
            "POST",
            "/v1/tokens",
            Some(&self.admin),
            Some(&format!(r#"{{"principal": "{principal}", "ttl": "1h"}}"#)),
        )
        .await?;
        anyhow::ensure!(code == 201, "token create answered {code}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v["token"].as_str().context("no token")?.to_string())
    }

    async fn fw_as(&self, name: &str, token: &str) -> Result<Fw> {
        Fw::start(self.cfg_as(name, token)).await
    }

    fn cfg_as(&self, name: &str, token: &str) -> FrameworkConfig {
        let mut cfg = fw_config(&self.cluster, name);
        cfg.token = Some(Arc::new(agora_core::secrets::SecretValue::new(
            token.as_bytes().to_vec(),
        )));
        cfg
    }

    /// A raw scheduler client sending `token` (to name any framework id).
    async fn raw(
        &self,
        token: Option<&str>,
    ) -> Result<
        pb::scheduler_client::SchedulerClient<
            tonic::service::interceptor::InterceptedService<
                tonic::transport::Channel,
                BearerInterceptor,
            >,
        >,
    > {
        let ch = tonic::transport::Endpoint::from_shared(self.cluster.url())?
            .connect()
            .await?;
        let secret = token.map(|t| agora_core::secrets::SecretValue::new(t.as_bytes().to_vec()));
        Ok(pb::scheduler_client::SchedulerClient::with_interceptor(
            ch,
            BearerInterceptor::new(secret.as_ref())?,
        ))
    }
}

impl Drop for Secured {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_a_cannot_kill_tear_down_or_act_for_framework_b() {
    let s = Secured::start().await.unwrap();
    let alpha = s.token("alpha").await.unwrap();
    let beta = s.token("beta").await.unwrap();
    let a = s.fw_as("a", &alpha).await.unwrap();
    let mut b = s.fw_as("b", &beta).await.unwrap();
    // Two agents: DRF offers one to each framework.
    let _h1 = s.cluster.agent("h1", "cpus:4;mem:1024", &[]).await.unwrap();
    let _h2 = s.cluster.agent("h2", "cpus:4;mem:1024", &[]).await.unwrap();

    // B launches a task through the SDK (its token rides every call).
    let offers = b.offers().await.unwrap();
    b.client
        .launch(&offers[0], vec![task("b-task", "cpus:1;mem:64", "serve")])
        .await
        .unwrap();
    b.update("b-task", TaskState::Running).await.unwrap();

    // A names B's framework: every call is refused, naming the permission.
    let mut raw_a = s.raw(Some(&alpha)).await.unwrap();
    let kill = raw_a
        .kill(pb::KillRequest {
            framework_id: b.id.0.clone(),
            task_id: "b-task".into(),
            agent_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(kill.code(), tonic::Code::PermissionDenied, "{kill:?}");
    assert!(
        kill.message()
            .contains("principal alpha may not kill tasks of framework")
            && kill.message().contains("(permission: kill_tasks)"),
        "{}",
        kill.message()
    );
    let down = raw_a
        .teardown(pb::TeardownRequest {
            framework_id: b.id.0.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(down.code(), tonic::Code::PermissionDenied);
    assert!(
        down.message().contains("teardown_frameworks"),
        "{}",
        down.message()
    );
    let revive = raw_a
        .revive(pb::ReviveRequest {
            framework_id: b.id.0.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(revive.code(), tonic::Code::PermissionDenied);
    assert!(
        revive.message().contains("registered by principal beta"),
        "{}",
        revive.message()
    );

    // A cannot take B's framework id over by resubscribing with it.
    let resub = raw_a
        .subscribe(pb::SubscribeRequest {
            framework: Some(pb::FrameworkInfo {
                framework_id: b.id.0.clone(),
                name: "b".into(),
                role: "*".into(),
                failover_timeout_seconds: 60.0,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(resub.code(), tonic::Code::PermissionDenied);

    // Over HTTP: alpha may not kill B's task; ops may (kill_tasks over beta).
    let addr = s.cluster.addr.to_string();
    let (code, body) = http(&addr, "POST", "/tasks/b-task/kill", Some(&alpha), None)
        .await
        .unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("(permission: kill_tasks)"), "{body}");

    // B's task survived all of it, and B's own calls still work.
    let st = b.drain(Duration::from_millis(300)).await;
    assert!(
        !st.iter().any(|e| matches!(e, agora_tests::Ev::Update(u) if u.task_id.as_str() == "b-task" && u.state.is_terminal())),
        "{st:?}"
    );
    b.client.revive().await.unwrap();

    // A's own framework is A's to tear down.
    a.client.teardown().await.unwrap();

    let ops = s.token("ops").await.unwrap();
    let (code, body) = http(&addr, "POST", "/tasks/b-task/kill", Some(&ops), None)
        .await
        .unwrap();
    assert_eq!(code, 202, "{body}");
    b.update("b-task", TaskState::Killed).await.unwrap();

    // The owner resubscribing (failover) with its own token is fine.
    let b_id = b.id.clone();
    let mut again = s.cfg_as("b", &beta);
    again.framework_id = Some(b_id.clone());
    b.disconnect().await;
    let b2 = Fw::start(again).await.unwrap();
    assert_eq!(b2.id, b_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_need_a_valid_token_and_an_allowed_role() {
    let s = Secured::start().await.unwrap();
    let alpha = s.token("alpha").await.unwrap();
    let run = |cfg: FrameworkConfig| async move {
        struct Nop;
        impl agora_sdk::Scheduler for Nop {
            async fn offers(&mut self, _c: &agora_sdk::Client, _o: Vec<agora_sdk::Offer>) {}
        }
        tokio::time::timeout(Duration::from_secs(10), Driver::new(cfg, Nop).run())
            .await
            .expect("the driver stops on a refused subscription")
    };
    // No token.
    let e = run(fw_config(&s.cluster, "anon")).await.unwrap_err();
    assert!(
        matches!(&e, SdkError::Unauthorized(m) if m.contains("no bearer token")),
        "{e}"
    );
    // A token the master never issued.
    let forged = format!("{}x", &alpha[..alpha.len() - 1]);
    let e = run(s.cfg_as("forged", &forged)).await.unwrap_err();
    assert!(
        matches!(&e, SdkError::Unauthorized(m) if m.contains("unknown token")),
        "{e}"
    );
    // A role the ACLs do not grant.
    let mut cfg = s.cfg_as("prod", &alpha);
    cfg.role = "prod".into();
    let e = run(cfg).await.unwrap_err();
    assert!(
        matches!(&e, SdkError::Unauthorized(m) if m.contains("principal alpha may not register frameworks in role \"prod\"")),
        "{e}"
    );
    // A revoked token stops working at once, on a framework mid-session too.
    let mut raw = s.raw(None).await.unwrap();
    let e = raw
        .revive(pb::ReviveRequest {
            framework_id: "F1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launching_needs_launch_tasks_and_revocation_is_immediate() {
    let s = Secured::start().await.unwrap();
    let watcher = s.token("watcher").await.unwrap();
    let mut w = s.fw_as("w", &watcher).await.unwrap();
    let _agent = s.cluster.agent("h1", "cpus:4;mem:1024", &[]).await.unwrap();
    let offers = w.offers().await.unwrap();
    let e = w
        .client
        .launch(&offers[0], vec![task("w1", "cpus:1;mem:64", "serve")])
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(
            "principal watcher may not launch tasks in role \"*\" (permission: launch_tasks)"
        ),
        "{e}"
    );
    // Declining is the framework's own business: allowed.
    w.client
        .decline(&[offers[0].id.clone()], None)
        .await
        .unwrap();

    // Revoke the watcher's token: its next call is UNAUTHENTICATED.
    let (code, list) = http(
        &s.cluster.addr.to_string(),
        "GET",
        "/v1/tokens",
        Some(&s.admin),
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    let v: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    let id = v.iter().find(|t| t["principal"] == "watcher").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _) = http(
        &s.cluster.addr.to_string(),
        "DELETE",
        &format!("/v1/tokens/{id}"),
        Some(&s.admin),
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    let e = w.client.revive().await.unwrap_err();
    assert!(e.to_string().contains("revoked"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_id_stays_its_principals_across_a_master_restart() {
    let mut s = Secured::start().await.unwrap();
    let alpha = s.token("alpha").await.unwrap();
    let beta = s.token("beta").await.unwrap();
    let b = s.fw_as("b", &beta).await.unwrap();
    let b_id = b.id.clone();
    b.disconnect().await;
    s.cluster.restart().await.unwrap();
    // The restarted master knows nothing of B in memory; the registry file
    // still says beta registered it, so alpha may not claim the id.
    let info = |id: &agora_core::FrameworkId| pb::SubscribeRequest {
        framework: Some(pb::FrameworkInfo {
            framework_id: id.0.clone(),
            name: "b".into(),
            role: "*".into(),
            failover_timeout_seconds: 60.0,
            ..Default::default()
        }),
    };
    let mut raw_a = s.raw(Some(&alpha)).await.unwrap();
    let e = raw_a.subscribe(info(&b_id)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("registered by principal beta"),
        "{}",
        e.message()
    );
    // Its own principal resumes it (tokens survived the restart too).
    let mut again = s.cfg_as("b", &beta);
    again.framework_id = Some(b_id.clone());
    let b2 = Fw::start(again).await.unwrap();
    assert_eq!(b2.id, b_id);
}

fn secret_use(mut t: pb::TaskInfo, path: &str) -> pb::TaskInfo {
    t.secrets.push(pb::SecretUse {
        target: Some(pb::secret_use::Target::Env("S".into())),
        path: path.into(),
        version: 0,
    });
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reads_only_secrets_its_frameworks_principal_may_read() {
    let dir =
        std::env::temp_dir().join(format!("agora-authz-key-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("secrets.key");
    agora_master::auth::write_secret_file(&key, format!("{}\n", "5a".repeat(32)).as_bytes())
        .unwrap();
    let k = key.clone();
    let s = Secured::start_with(move |cfg| {
        cfg.secrets = Some(agora_master::secrets::SecretsConfig {
            key_file: k,
            versions: 10,
        });
    })
    .await
    .unwrap();
    let addr = s.cluster.addr.to_string();
    for (path, value) in [
        ("/v1/secrets/prod/db", "canary-p"),
        ("/v1/secrets/dev/x", "canary-d"),
    ] {
        let (code, body) = http(&addr, "PUT", path, Some(&s.admin), Some(value))
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let alpha = s.token("alpha").await.unwrap();
    let mut f = s.fw_as("a", &alpha).await.unwrap();
    let agent = s.cluster.agent("h1", "cpus:4;mem:1024", &[]).await.unwrap();
    let offers = f.offers().await.unwrap();
    f.client
        .launch(
            &offers[0],
            vec![
                secret_use(task("prod", "cpus:0.1;mem:32", "serve"), "/prod/db"),
                secret_use(task("dev", "cpus:0.1;mem:32", "serve"), "/dev/x"),
            ],
        )
        .await
        .unwrap();
    f.update("prod", TaskState::Running).await.unwrap();
    // The agent resolves a task's secrets before launching it: the master
    // refuses /dev/x to alpha's framework, so the task fails with that
    // refusal as its message.
    let failed = f.update("dev", TaskState::Failed).await.unwrap();
    assert!(
        failed
            .message
            .contains("principal alpha may not read secret /dev/x (permission: read_secrets)"),
        "{}",
        failed.message
    );
    let mut link = pb::agent_link_client::AgentLinkClient::connect(s.cluster.url())
        .await
        .unwrap();
    let req = |t: &str| pb::ResolveSecretsRequest {
        agent_id: agent.id.as_str().into(),
        framework_id: f.id.as_str().into(),
        task_id: t.into(),
    };
    let ok = link
        .resolve_secrets(req("prod"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.secrets[0].value, b"canary-p");
    // Asking about versions follows the same rule, and a refusal does not
    // tell whether the path exists (/dev/x does, /dev/none does not).
    let v = f
        .client
        .secret_versions(&["/prod/db".to_string()])
        .await
        .unwrap();
    assert!(v[0].exists, "{v:?}");
    for path in ["/dev/x", "/dev/none"] {
        match f.client.secret_versions(&[path.to_string()]).await {
            Err(agora_sdk::SecretVersionsError::Denied(m)) => assert!(
                m.contains(&format!(
                    "principal alpha may not read secret {path} (permission: read_secrets)"
                )),
                "{m}"
            ),
            other => panic!("{path}: {other:?}"),
        }
    }
    std::fs::remove_dir_all(dir).ok();
}
