//! The REST API in process on loopback (no master: the framework keeps
//! trying to subscribe while the API answers): the served OpenAPI document
//! declares what the handlers do, 405s carry `Allow`, `/v2` JSON carries
//! Marathon's field names only, and bad numbers are refused, not panicked on.

use serde_json::{Value, json};
use std::time::Duration;

mod common;
use common::{Api, send};

async fn api() -> Api {
    common::api((10_000, 20_000)).await
}

async fn call(a: &Api, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let b = body.map(|b| b.to_string());
    let (code, _, text) = send(&a.addr, method, path, b.as_deref()).await;
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn wait_up(a: &Api) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&a.addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the API did not come up");
}

/// Issue 7, point 12: every path parameter is declared, and every status
/// code a handler returns is documented (checked against real answers).
#[tokio::test]
async fn the_openapi_document_declares_parameters_and_the_codes_returned() {
    let a = api().await;
    wait_up(&a).await;
    let (code, doc) = call(&a, "GET", "/openapi.json", None).await;
    assert_eq!(code, 200);
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        let params: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for (method, op) in item.as_object().unwrap() {
            for p in &params {
                let declared = op["parameters"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|x| x["name"] == *p && x["in"] == "path" && x["required"] == true)
                });
                assert!(declared, "{method} {path} does not declare {p}");
            }
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
        }
    }
    // Real answers, each documented for its path and method.
    let documented = |path: &str, method: &str, code: u16| {
        doc["paths"][path][method]["responses"]
            .get(code.to_string())
            .is_some()
    };
    let def = json!({"id": "/doc/web", "cmd": "serve", "cpus": 0.1, "mem": 16});
    let cases: Vec<(&str, &str, &str, Option<Value>)> = vec![
        ("post", "/v2/apps", "/v2/apps", Some(def.clone())),
        ("post", "/v2/apps", "/v2/apps", Some(def.clone())),
        (
            "post",
            "/v2/apps",
            "/v2/apps",
            Some(json!({"id": "/x", "cmd": "x", "cpus": 1e300})),
        ),
        ("get", "/v2/apps/{appId}", "/v2/apps/doc/web", None),
        ("get", "/v2/apps/{appId}", "/v2/apps/nope", None),
        (
            "get",
            "/v2/apps/{appId}/tasks",
            "/v2/apps/doc/web/tasks",
            None,
        ),
        ("get", "/v2/apps/{appId}/tasks", "/v2/apps/nope/tasks", None),
        (
            "put",
            "/v2/apps/{appId}",
            "/v2/apps/doc/web",
            Some(json!({"instances": 2})),
        ),
        (
            "put",
            "/v2/apps/{appId}",
            "/v2/apps/nope",
            Some(json!({"instances": 2})),
        ),
        (
            "put",
            "/v2/apps/{appId}",
            "/v2/apps/doc/web",
            Some(json!({"instances": -2})),
        ),
        (
            "put",
            "/v2/apps/{appId}",
            "/v2/apps/doc/web",
            Some(json!({"cmd": "serve", "cpus": 0.2, "mem": 16})),
        ),
        (
            "post",
            "/v2/apps/{appId}/restart",
            "/v2/apps/doc/web/restart",
            None,
        ),
        (
            "post",
            "/v2/apps/{appId}/restart",
            "/v2/apps/nope/restart",
            None,
        ),
        (
            "delete",
            "/v2/apps/{appId}/tasks",
            "/v2/apps/doc/web/tasks",
            None,
        ),
        (
            "delete",
            "/v2/apps/{appId}/tasks",
            "/v2/apps/doc/web/tasks?scale=true&host=h",
            None,
        ),
        (
            "delete",
            "/v2/apps/{appId}/tasks",
            "/v2/apps/doc/web/tasks?wipe=true",
            None,
        ),
        (
            "delete",
            "/v2/apps/{appId}/tasks",
            "/v2/apps/doc/web/tasks?scale=maybe",
            None,
        ),
        (
            "delete",
            "/v2/apps/{appId}/tasks",
            "/v2/apps/nope/tasks",
            None,
        ),
        (
            "delete",
            "/v2/apps/{appId}/tasks/{taskId}",
            "/v2/apps/doc/web/tasks/doc_web.nope",
            None,
        ),
        (
            "delete",
            "/v2/apps/{appId}/tasks/{taskId}",
            "/v2/apps/doc/web/tasks/doc_web.nope?host=h",
            None,
        ),
        (
            "delete",
            "/v2/deployments/{deploymentId}",
            "/v2/deployments/nope",
            None,
        ),
        (
            "delete",
            "/v2/deployments/{deploymentId}",
            "/v2/deployments/nope?force=maybe",
            None,
        ),
        ("get", "/v1/apps/{appId}", "/v1/apps/doc/web", None),
        ("get", "/v1/apps/{appId}", "/v1/apps/nope", None),
        ("delete", "/v2/apps/{appId}", "/v2/apps/doc/web", None),
        ("delete", "/v2/apps/{appId}", "/v2/apps/doc/web", None),
        ("get", "/v2/info", "/v2/info", None),
        ("get", "/v1/info", "/v1/info", None),
        ("get", "/v2/deployments", "/v2/deployments", None),
        ("get", "/v2/tasks", "/v2/tasks", None),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (method, templ, path, body) in cases {
        let (code, v) = call(&a, &method.to_uppercase(), path, body).await;
        assert!(
            documented(templ, method, code),
            "{method} {path} answered {code} ({v}), undocumented for {templ}"
        );
        seen.insert(code);
    }
    // The cases cover every kind of answer.
    for c in [200, 201, 400, 404, 409, 422] {
        assert!(seen.contains(&c), "no case answered {c}: {seen:?}");
    }
    let (code, _, _) = send(&a.addr, "POST", "/v2/apps", Some("{not json")).await;
    assert!(documented("/v2/apps", "post", code) && code == 400);
}

/// Issue 7, point 12: a 405 says what the path serves.
#[tokio::test]
async fn a_405_carries_allow() {
    let a = api().await;
    wait_up(&a).await;
    for (method, path, allow) in [
        ("POST", "/v2/apps/shop/web", "get, head, put, delete"),
        ("PATCH", "/v2/apps/shop/web", "get, head, put, delete"),
        ("GET", "/v2/apps/shop/web/restart", "post"),
        ("POST", "/v2/apps/shop/web/tasks", "get, head, delete"),
        ("PUT", "/v2/apps/shop/web/tasks", "get, head, delete"),
        ("GET", "/v2/apps/shop/web/tasks/shop_web.1", "delete"),
        ("POST", "/v2/apps/shop/web/tasks/shop_web.1", "delete"),
        ("POST", "/v1/apps/shop/web", "get, head"),
    ] {
        let (code, head, _) = send(&a.addr, method, path, None).await;
        assert_eq!(code, 405, "{method} {path}");
        assert!(
            head.contains(&format!("allow: {allow}")),
            "{method} {path}: {head}"
        );
    }
    for (method, path) in [
        ("DELETE", "/v2/apps"),
        ("PUT", "/v2/tasks"),
        ("POST", "/v2/info"),
    ] {
        let (code, head, _) = send(&a.addr, method, path, None).await;
        assert_eq!(code, 405, "{method} {path}");
        assert!(head.contains("allow: "), "{method} {path}: {head}");
    }
}

/// Marathon's field names, recursively, for what `/v2` answers about apps.
const MARATHON_APP_FIELDS: &[&str] = &[
    "id",
    "cmd",
    "args",
    "container",
    "instances",
    "cpus",
    "mem",
    "disk",
    "env",
    "secrets",
    "labels",
    "healthChecks",
    "readinessChecks",
    "constraints",
    "upgradeStrategy",
    "backoffSeconds",
    "backoffFactor",
    "maxLaunchDelaySeconds",
    "taskKillGracePeriodSeconds",
    "killSelection",
    "networks",
    "portDefinitions",
    "requirePorts",
    "acceptedResourceRoles",
    "version",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "tasks",
    "lastTaskFailure",
];

/// Issue 7, point 11: `/v2` JSON carries Marathon's field names and no
/// invented ones; Agora's own fields are under `/v1`.
#[tokio::test]
async fn v2_answers_carry_marathon_names_only() {
    let a = api().await;
    wait_up(&a).await;
    let def = json!({"id": "/m/web", "cmd": "serve", "cpus": 0.1, "mem": 16, "instances": 2,
        "taskKillGracePeriodSeconds": 5});
    let (code, created) = call(&a, "POST", "/v2/apps", Some(def)).await;
    assert_eq!(code, 201, "{created}");
    let (_, one) = call(&a, "GET", "/v2/apps/m/web", None).await;
    let (_, list) = call(&a, "GET", "/v2/apps", None).await;
    for app in [&created, &one["app"], &list["apps"][0]] {
        for k in app.as_object().unwrap().keys() {
            assert!(
                MARATHON_APP_FIELDS.contains(&k.as_str()),
                "/v2 invented {k:?}: {app}"
            );
        }
    }
    let (_, info) = call(&a, "GET", "/v2/info", None).await;
    for k in info.as_object().unwrap().keys() {
        assert!(
            ["name", "version", "frameworkId", "marathon_config"].contains(&k.as_str()),
            "/v2/info invented {k:?}"
        );
    }
    // Agora's view has the same and its own.
    let (code, ours) = call(&a, "GET", "/v1/apps/m/web", None).await;
    assert_eq!(code, 200, "{ours}");
    assert!(ours["app"]["waiting"].is_null() || ours["app"]["waiting"].is_string());
    assert_eq!(ours["app"]["launchDelaySeconds"], json!(0.0));
    assert_eq!(ours["app"]["instances"], json!(2));
    let (_, info) = call(&a, "GET", "/v1/info", None).await;
    assert_eq!(info["connected"], json!(false));
}

/// Issue 7, point 7: numbers that would overflow a duration are refused
/// with the field named; numbers JSON cannot hold are a 400; the API keeps
/// answering.
#[tokio::test]
async fn huge_numbers_are_refused_and_nothing_panics() {
    let a = api().await;
    wait_up(&a).await;
    let (code, v) = call(&a, "POST", "/v2/apps", Some(json!({"id": "/h", "cmd": "x",
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "true"}, "intervalSeconds": 1e300, "gracePeriodSeconds": -1}]}))).await;
    assert_eq!(code, 422, "{v}");
    let paths: Vec<&str> = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/healthChecks/0/intervalSeconds")
            && paths.contains(&"/healthChecks/0/gracePeriodSeconds"),
        "{v}"
    );
    let (code, _, body) = send(
        &a.addr,
        "POST",
        "/v2/apps",
        Some(r#"{"id": "/h", "cmd": "x", "backoffSeconds": 1e309}"#),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let (code, _, _) = send(
        &a.addr,
        "PUT",
        "/v2/apps/h",
        Some(r#"{"instances": 1e300}"#),
    )
    .await;
    assert_eq!(code, 422);
    let (code, _) = call(&a, "GET", "/ping", None).await;
    assert_eq!(code, 200);
}

/// Issue 8, item 2: sub-resource paths act on the sub-resource, never on
/// the app: `DELETE /v2/apps/shop/tasks` kills the tasks of `/shop` (which
/// stays), and app ids may not use a reserved word as a segment, so no app
/// can hide behind one.
#[tokio::test]
async fn sub_resources_are_not_the_app_and_their_names_are_reserved() {
    let a = api().await;
    wait_up(&a).await;
    let def = json!({"id": "/shop", "cmd": "serve", "cpus": 0.1, "mem": 16, "instances": 2});
    let (code, v) = call(&a, "POST", "/v2/apps", Some(def)).await;
    assert_eq!(code, 201, "{v}");
    let (code, v) = call(&a, "DELETE", "/v2/apps/shop/tasks", None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v, json!({"tasks": []}));
    let (code, v) = call(&a, "DELETE", "/v2/apps/shop/tasks?scale=true", None).await;
    assert_eq!(code, 200, "{v}");
    assert!(
        v["deploymentId"].is_null() && v["version"].is_string(),
        "{v}"
    );
    let (code, v) = call(&a, "GET", "/v2/apps/shop", None).await;
    assert_eq!(code, 200, "the app survived the task kill: {v}");
    assert_eq!(v["app"]["instances"], json!(2), "no live task: no scale");
    let (code, v) = call(&a, "DELETE", "/v2/apps/shop/tasks/shop.nope", None).await;
    assert_eq!(code, 404, "{v}");
    assert!(v["message"].as_str().unwrap().contains("shop.nope"), "{v}");
    let (code, v) = call(&a, "DELETE", "/v2/apps/shop/tasks?wipe=true", None).await;
    assert_eq!(code, 422, "{v}");
    let (code, v) = call(&a, "DELETE", "/v2/apps/shop/tasks?kill=all", None).await;
    assert_eq!(code, 400, "{v}");
    let (code, v) = call(&a, "DELETE", "/v2/apps/shop/restart", None).await;
    assert_eq!(code, 405, "{v}");
    let (code, v) = call(&a, "GET", "/v2/apps/shop/versions", None).await;
    assert_eq!(code, 404, "{v}");
    let (code, _) = call(&a, "GET", "/v2/apps/shop", None).await;
    assert_eq!(code, 200);

    for id in ["/shop/tasks", "/tasks", "/shop/restart/web", "/a/versions"] {
        for (method, path) in [
            ("POST", "/v2/apps".to_string()),
            ("PUT", format!("/v2/apps{id}")),
        ] {
            let def = json!({"id": id, "cmd": "serve", "cpus": 0.1, "mem": 16});
            let (code, v) = call(&a, method, &path, Some(def)).await;
            if method == "PUT" {
                // The path names a sub-resource, not an app to put.
                assert!(
                    code == 405 || code == 404 || code == 422,
                    "{method} {path}: {code} {v}"
                );
                continue;
            }
            assert_eq!(code, 422, "{id}: {v}");
            let d = &v["details"][0];
            assert_eq!(d["path"], json!("/id"), "{v}");
            assert!(d["errors"][0].as_str().unwrap().contains(id), "{v}");
        }
    }
    let (_, list) = call(&a, "GET", "/v2/apps", None).await;
    assert_eq!(list["apps"].as_array().unwrap().len(), 1, "{list}");
}

/// `acceptedResourceRoles`: a role the framework is never offered is a 422
/// saying how to change the framework's role; with `--role public` the
/// same app is accepted and reads back with the field, as Marathon's.
#[tokio::test]
async fn accepted_resource_roles_follow_the_framework_role() {
    let def = json!({"id": "/edge", "cmd": "serve", "cpus": 0.1, "mem": 16,
        "acceptedResourceRoles": ["public"]});
    let a = api().await;
    wait_up(&a).await;
    let (code, body) = call(&a, "POST", "/v2/apps", Some(def.clone())).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"][0]["path"], json!("/acceptedResourceRoles"));
    let msg = body["details"][0]["errors"][0].as_str().unwrap();
    assert!(msg.contains("--role public"), "{msg}");
    let (code, body) = call(&a, "GET", "/v2/apps/edge", None).await;
    assert_eq!(code, 404, "nothing stored: {body}");
    // An empty list is refused whatever the role (Marathon does too).
    let (code, body) = call(
        &a,
        "POST",
        "/v2/apps",
        Some(json!({"id": "/e", "cmd": "x", "acceptedResourceRoles": []})),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    let (_, info) = call(&a, "GET", "/v2/info", None).await;
    assert_eq!(info["marathon_config"]["mesos_role"], json!("*"));
    a.stop();

    let a = common::api_with_role((10_000, 20_000), "public").await;
    wait_up(&a).await;
    let (code, created) = call(&a, "POST", "/v2/apps", Some(def)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["acceptedResourceRoles"], json!(["public"]));
    let (_, one) = call(&a, "GET", "/v2/apps/edge", None).await;
    assert_eq!(one["app"]["acceptedResourceRoles"], json!(["public"]));
    let (code, body) = call(
        &a,
        "POST",
        "/v2/apps",
        Some(json!({"id": "/plain", "cmd": "x", "cpus": 0.1, "mem": 16})),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["acceptedResourceRoles"], json!(["*"]));
    let (_, info) = call(&a, "GET", "/v2/info", None).await;
    assert_eq!(info["marathon_config"]["mesos_role"], json!("public"));
}
