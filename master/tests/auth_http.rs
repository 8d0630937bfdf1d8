//! The master's HTTP API with authentication on, driven in memory: 401 for
//! missing, malformed, unknown, expired and revoked tokens; 403 naming the
//! permission; the token endpoints; ACL reloads changing decisions.

use agora_master::MasterConfig;
use agora_master::actor::{self, shutdown};
use agora_master::auth::acl::AclFile;
use agora_master::auth::tokens::{Token, Tokens};
use agora_master::auth::{Auth, Gate};
use agora_master::election::Standalone;
use agora_master::http::{HttpState, router};
use agora_master::metrics::Metrics;
use agora_master::state::Master;
use agora_master::store::MemoryRegistry;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;

const ACLS: &str = r#"
admins = ["admin"]

[[view_state]]
principals = ["viewer"]

[[manage_tokens]]
principals = ["tokens-admin"]

[[manage_secrets]]
principals = ["secrets-ops"]
paths = ["/prod"]
"#;

struct Env {
    app: axum::Router,
    gate: Gate,
    acl_file: PathBuf,
    _trigger: shutdown::Trigger,
}

impl Env {
    fn new() -> Env {
        let dir =
            std::env::temp_dir().join(format!("agora-authz-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let acl_file = dir.join("acls.toml");
        std::fs::write(&acl_file, ACLS).unwrap();
        let gate = Gate::enabled(Auth {
            tokens: Tokens::memory(),
            acls: Arc::new(AclFile::load(&acl_file).unwrap()),
            owners: agora_master::auth::owners::FrameworkOwners::memory(),
        });
        let (trigger, stop) = shutdown::channel();
        let now = tokio::time::Instant::now().into_std();
        let master = Master::new(MasterConfig::default(), vec![], now);
        let handle = actor::spawn(master, Box::new(MemoryRegistry::default()), stop);
        let app = router(HttpState {
            master: handle,
            metrics: Arc::new(Metrics::new()),
            contender: Arc::new(Standalone {
                address: "127.0.0.1:5050".into(),
            }),
            gate: gate.clone(),
            secrets: agora_master::secrets::Secrets {
                store: Some(Arc::new(
                    agora_master::secrets::SecretStore::open(
                        Arc::new(agora_master::secrets::store::MemorySecrets::default()),
                        agora_master::secrets::crypto::Kek::generate().unwrap(),
                        2,
                        "k",
                    )
                    .unwrap(),
                )),
                policy: Default::default(),
            },
        });
        Env {
            app,
            gate,
            acl_file,
            _trigger: trigger,
        }
    }

    fn token(&self, principal: &str, ttl: Option<std::time::Duration>) -> Token {
        self.gate
            .auth()
            .unwrap()
            .tokens
            .create(principal, ttl)
            .unwrap()
            .0
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Option<String>, String) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Body::from(body.unwrap_or("").to_string()))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let www = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, www, String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn bearer(t: &Token) -> String {
    format!("Bearer {}", t.expose())
}

#[tokio::test]
async fn missing_bad_unknown_tokens_get_401_with_a_bearer_challenge() {
    let env = Env::new();
    let (s, www, body) = env.send("GET", "/state", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(www.as_deref(), Some("Bearer realm=\"agora\""));
    assert!(body.contains("no bearer token"), "{body}");

    let (s, www, body) = env
        .send("GET", "/state", Some("Bearer nonsense"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(www.is_some());
    assert!(body.contains("agora_<id>_<secret>"), "{body}");

    let forged = "Bearer agora_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (s, _, body) = env.send("GET", "/state", Some(forged), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body.contains("unknown token"), "{body}");

    // A real id with a wrong secret is as unknown as a made-up one.
    let t = env.token("viewer", None);
    let mut wrong = bearer(&t);
    wrong.pop();
    wrong.push(if t.expose().ends_with('A') { 'B' } else { 'A' });
    let (s, _, _) = env.send("GET", "/state", Some(&wrong), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Unknown routes are not a way around authentication.
    let (s, _, _) = env.send("GET", "/nope", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn health_and_metrics_stay_open() {
    let env = Env::new();
    let (s, _, _) = env.send("GET", "/health", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = env.send("GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    // A bad token on an open path is ignored, not refused.
    let (s, _, _) = env.send("GET", "/health", Some("Bearer x"), None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn expired_and_revoked_tokens_get_401() {
    let env = Env::new();
    let t = env.token("viewer", Some(std::time::Duration::from_secs(1)));
    let (s, _, _) = env.send("GET", "/state", Some(&bearer(&t)), None).await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (s, www, body) = env.send("GET", "/state", Some(&bearer(&t)), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(www.is_some());
    assert!(body.contains("expired"), "{body}");

    let admin = env.token("admin", None);
    let (viewer, info) = env
        .gate
        .auth()
        .unwrap()
        .tokens
        .create("viewer", None)
        .unwrap();
    let id = info.id;
    let (s, _, _) = env
        .send("GET", "/state", Some(&bearer(&viewer)), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, body) = env
        .send(
            "DELETE",
            &format!("/v1/tokens/{id}"),
            Some(&bearer(&admin)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _, body) = env
        .send("GET", "/state", Some(&bearer(&viewer)), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "revocation is immediate");
    assert!(body.contains("revoked"), "{body}");
}

#[tokio::test]
async fn valid_tokens_without_the_permission_get_403_naming_it() {
    let env = Env::new();
    let nobody = env.token("nobody", None);
    let (s, www, body) = env
        .send("GET", "/state", Some(&bearer(&nobody)), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(www.is_none());
    assert!(
        body.contains("principal nobody may not view the cluster state (permission: view_state)"),
        "{body}"
    );
    let viewer = env.token("viewer", None);
    let (s, _, body) = env
        .send(
            "POST",
            "/v1/tokens",
            Some(&bearer(&viewer)),
            Some(r#"{"principal": "x"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body.contains("(permission: manage_tokens)"), "{body}");
    let (s, _, body) = env
        .send("POST", "/tasks/t1/kill", Some(&bearer(&viewer)), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "no such task: {body}");
}

#[tokio::test]
async fn tokens_are_created_once_listed_without_secrets_and_work() {
    let env = Env::new();
    let mgr = env.token("tokens-admin", None);
    let (s, _, body) = env
        .send(
            "POST",
            "/v1/tokens",
            Some(&bearer(&mgr)),
            Some(r#"{"principal": "viewer", "ttl": "1h"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    assert_eq!(v["principal"], "viewer");
    assert!(v["expires"].as_u64().unwrap() > v["created"].as_u64().unwrap());
    let (s, _, body) = env
        .send("GET", "/state", Some(&format!("Bearer {token}")), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _, list) = env
        .send("GET", "/v1/tokens", Some(&bearer(&mgr)), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let secret = token.rsplit_once('_').unwrap().1;
    assert!(!list.contains(secret), "the list shows no token");
    assert!(list.contains(v["id"].as_str().unwrap()));
    for (bad, why) in [
        (r#"{"principal": "a b"}"#, "invalid principal"),
        (r#"{"principal": "a", "ttl": "3w"}"#, "invalid ttl"),
        (r#"{"principal": "a", "token": "mine"}"#, "unknown field"),
    ] {
        let (s, _, body) = env
            .send("POST", "/v1/tokens", Some(&bearer(&mgr)), Some(bad))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert!(body.contains(why), "{bad}: {body}");
    }
    let (s, _, _) = env
        .send(
            "DELETE",
            "/v1/tokens/000000000000",
            Some(&bearer(&mgr)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, body) = env
        .send("GET", "/v1/auth/whoami", Some(&bearer(&mgr)), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("\"principal\":\"tokens-admin\""), "{body}");
}

/// whoami says whether the principal may view state, per the ACLs in
/// force: the agents ask it before serving `/state` and task logs.
#[tokio::test]
async fn whoami_reports_view_state_per_the_acls() {
    let env = Env::new();
    let whoami = async |principal: &str| {
        let t = env.token(principal, None);
        let (s, _, body) = env
            .send("GET", "/v1/auth/whoami", Some(&bearer(&t)), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["principal"], principal, "{body}");
        assert_eq!(v["auth_enabled"], true, "{body}");
        v["view_state"].clone()
    };
    assert_eq!(whoami("viewer").await, true, "granted by [[view_state]]");
    assert_eq!(whoami("admin").await, true, "admins may do everything");
    assert_eq!(whoami("tokens-admin").await, false, "no view_state rule");
    // A reload changes the answer.
    std::fs::write(
        &env.acl_file,
        "[[view_state]]\nprincipals = [\"tokens-admin\"]\n",
    )
    .unwrap();
    env.gate.auth().unwrap().acls.reload().unwrap();
    assert_eq!(whoami("tokens-admin").await, true);
    assert_eq!(whoami("viewer").await, false);
    std::fs::remove_dir_all(env.acl_file.parent().unwrap()).ok();
}

#[tokio::test]
async fn an_acl_reload_changes_decisions_and_a_bad_file_keeps_the_old_rules() {
    let env = Env::new();
    let ops = env.token("ops", None);
    let (s, _, _) = env.send("GET", "/state", Some(&bearer(&ops)), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    std::fs::write(&env.acl_file, "[[view_state]]\nprincipals = [\"ops\"]\n").unwrap();
    env.gate.auth().unwrap().acls.reload().unwrap();
    let (s, _, _) = env.send("GET", "/state", Some(&bearer(&ops)), None).await;
    assert_eq!(s, StatusCode::OK, "granted after the reload");
    std::fs::write(&env.acl_file, "[[view_state]]\nprincipals = 3\n").unwrap();
    assert!(env.gate.auth().unwrap().acls.reload().is_err());
    let (s, _, _) = env.send("GET", "/state", Some(&bearer(&ops)), None).await;
    assert_eq!(s, StatusCode::OK, "the bad file did not replace the rules");
    std::fs::remove_dir_all(env.acl_file.parent().unwrap()).ok();
}

#[tokio::test]
async fn with_authentication_off_everything_stays_open() {
    let (_t, stop) = shutdown::channel();
    let now = tokio::time::Instant::now().into_std();
    let handle = actor::spawn(
        Master::new(MasterConfig::default(), vec![], now),
        Box::new(MemoryRegistry::default()),
        stop,
    );
    let app = router(HttpState {
        master: handle,
        metrics: Arc::new(Metrics::new()),
        contender: Arc::new(Standalone {
            address: "x".into(),
        }),
        gate: Gate::disabled(),
        secrets: Default::default(),
    });
    let resp = app
        .clone()
        .oneshot(Request::get("/state").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app
        .oneshot(Request::get("/v1/tokens").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn secrets_routes_need_manage_secrets_for_the_path() {
    let env = Env::new();
    let ops = bearer(&env.token("secrets-ops", None));
    let (s, _, body) = env
        .send("PUT", "/v1/secrets/prod/db", Some(&ops), Some("pw"))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let admin = bearer(&env.token("admin", None));
    let (s, _, body) = env
        .send("PUT", "/v1/secrets/dev/db", Some(&admin), Some("pw"))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _, body) = env
        .send("PUT", "/v1/secrets/dev/x", Some(&ops), Some("pw"))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        body.contains(
            "principal secrets-ops may not manage secret /dev/x (permission: manage_secrets)"
        ),
        "{body}"
    );
    let (s, _, _) = env
        .send("GET", "/v1/secrets/dev/db", Some(&ops), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = env
        .send("DELETE", "/v1/secrets/dev/db", Some(&ops), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, list) = env.send("GET", "/v1/secrets", Some(&ops), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        list.contains("/prod/db") && !list.contains("/dev/db"),
        "{list}"
    );
    let (s, _, list) = env.send("GET", "/v1/secrets", Some(&admin), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(list.contains("/dev/db"), "{list}");
    let viewer = bearer(&env.token("viewer", None));
    let (s, _, body) = env.send("GET", "/v1/secrets", Some(&viewer), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body.contains("(permission: manage_secrets)"), "{body}");
    let (s, _, body) = env
        .send(
            "POST",
            "/v1/secrets-key/rotate",
            Some(&ops),
            Some(r#"{"new_key_file": "/nonexistent"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body.contains("(permission: admins)"), "{body}");
}
