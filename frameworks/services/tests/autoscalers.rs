//! Issue 11 on the REST API, in process on loopback (no master): policies
//! (`/v1/autoscalers`) are refused with 422 naming each field, a manual
//! scale of an autoscaled app is 409 unless forced (which suspends the
//! policy, visibly), policies survive a restart and go with their app,
//! load reports are checked, and `/metrics` carries the autoscalers.

use serde_json::{Value, json};

mod common;
use common::{Api, send};

async fn call(a: &Api, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let b = body.map(|b| b.to_string());
    let (code, _, text) = send(&a.addr, method, path, b.as_deref()).await;
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn paths(v: &Value) -> Vec<String> {
    v["details"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d["path"].as_str().unwrap_or("").to_string())
        .collect()
}

fn policy() -> Value {
    json!({"min": 1, "max": 20, "targets": [{"metric": "cpu", "value": 60}, {"metric": "rps", "value": 200}]})
}

async fn deploy(a: &Api, instances: u32) {
    let (code, v) = call(
        a,
        "POST",
        "/v2/apps",
        Some(json!({"id": "/demo/web", "cmd": "sleep 1000", "instances": instances, "cpus": 0.1, "mem": 16})),
    )
    .await;
    assert_eq!(code, 201, "{v}");
}

#[tokio::test]
async fn bad_policies_are_refused_naming_each_field() {
    let a = common::api((10_000, 20_000)).await;
    // No such app: appId (with the policy's own problems, all at once).
    let (code, v) = call(&a, "PUT", "/v1/autoscalers/demo/web", Some(policy())).await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(paths(&v), ["appId"], "{v}");
    let (code, v) = call(
        &a,
        "PUT",
        "/v1/autoscalers/demo/web",
        Some(json!({"min": 5, "max": 2, "targets": [{"metric": "cpu", "value": 60}]})),
    )
    .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(paths(&v), ["appId", "/min"], "{v}");
    deploy(&a, 1).await;
    for (body, field) in [
        (
            json!({"min": 1, "max": 2, "targets": [{"metric": "cpu", "value": 60}], "maxx": 3}),
            "/maxx",
        ),
        (
            json!({"min": 1, "max": 2, "targets": [{"metric": "gpu", "value": 60}]}),
            "/targets/0/metric",
        ),
        (
            json!({"min": 1, "max": 2, "targets": [{"metric": "cpu", "value": 0}]}),
            "/targets/0/value",
        ),
        (
            json!({"min": 1, "max": 2, "targets": [{"metric": "cpu", "value": -5}]}),
            "/targets/0/value",
        ),
        (
            json!({"min": 3, "max": 2, "targets": [{"metric": "cpu", "value": 60}]}),
            "/min",
        ),
        (
            json!({"min": 1, "max": 10001, "targets": [{"metric": "cpu", "value": 60}]}),
            "/max",
        ),
        (json!({"min": 1, "max": 2, "targets": []}), "/targets"),
        (
            json!({"min": 1, "max": "two", "targets": [{"metric": "cpu", "value": 60}]}),
            "/max",
        ),
        (
            json!({"min": 1, "max": 2, "targets": [{"metric": "cpu", "value": 60}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 99999}}}),
            "/behavior/scaleDown/stabilizationWindowSeconds",
        ),
    ] {
        let (code, v) = call(&a, "PUT", "/v1/autoscalers/demo/web", Some(body.clone())).await;
        assert_eq!(code, 422, "{body}: {v}");
        assert!(
            paths(&v).iter().any(|p| p == field),
            "{body}: {field} not in {v}"
        );
    }
    let (code, _, _) = send(&a.addr, "PUT", "/v1/autoscalers/demo/web", Some("{nope")).await;
    assert_eq!(code, 400);
    let (code, v) = call(&a, "GET", "/v1/autoscalers/demo/web", None).await;
    assert_eq!(code, 404, "nothing was stored: {v}");
}

#[tokio::test]
async fn a_manual_scale_of_an_autoscaled_app_is_refused_unless_forced() {
    let a = common::api((10_000, 20_000)).await;
    deploy(&a, 2).await;
    let (code, v) = call(&a, "PUT", "/v1/autoscalers/demo/web", Some(policy())).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["appId"], "/demo/web");
    assert_eq!(
        v["policy"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 300,
        "defaults filled in: {v}"
    );
    assert_eq!(v["status"]["suspended"], false);
    // A scale, and a full definition changing instances: 409, saying what to do.
    let (code, v) = call(
        &a,
        "PUT",
        "/v2/apps/demo/web",
        Some(json!({"instances": 5})),
    )
    .await;
    assert_eq!(code, 409, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("autoscaled") && msg.contains("agora app autoscale") && msg.contains("force"),
        "{msg}"
    );
    let full =
        json!({"id": "/demo/web", "cmd": "sleep 1000", "instances": 5, "cpus": 0.1, "mem": 16});
    let (code, v) = call(&a, "PUT", "/v2/apps/demo/web", Some(full.clone())).await;
    assert_eq!(code, 409, "{v}");
    // The same count is no scale: a new definition still deploys.
    let same =
        json!({"id": "/demo/web", "cmd": "sleep 1001", "instances": 2, "cpus": 0.1, "mem": 16});
    let (code, v) = call(&a, "PUT", "/v2/apps/demo/web", Some(same)).await;
    assert_eq!(code, 200, "{v}");
    let (code, _) = call(
        &a,
        "PUT",
        "/v2/apps/demo/web?force=maybe",
        Some(json!({"instances": 5})),
    )
    .await;
    assert_eq!(code, 400);
    // Forced: applied, and the policy is suspended, visibly.
    let (code, v) = call(
        &a,
        "PUT",
        "/v2/apps/demo/web?force=true",
        Some(json!({"instances": 5})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let (_, app) = call(&a, "GET", "/v2/apps/demo/web", None).await;
    assert_eq!(app["app"]["instances"], 5);
    let (code, v) = call(&a, "GET", "/v1/autoscalers/demo/web", None).await;
    assert_eq!(code, 200);
    assert_eq!(v["status"]["suspended"], true, "{v}");
    assert!(
        v["status"]["suspendedReason"]
            .as_str()
            .unwrap()
            .contains("forced"),
        "{v}"
    );
    assert_eq!(v["status"]["instances"], 5);
    // Suspended: manual scales are the operator's again.
    let (code, v) = call(
        &a,
        "PUT",
        "/v2/apps/demo/web",
        Some(json!({"instances": 4})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    // PUT again: it acts, and scales are refused again.
    let (code, v) = call(&a, "PUT", "/v1/autoscalers/demo/web", Some(policy())).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"]["suspended"], false);
    let (code, _) = call(
        &a,
        "PUT",
        "/v2/apps/demo/web",
        Some(json!({"instances": 3})),
    )
    .await;
    assert_eq!(code, 409);
    let (code, v) = call(&a, "GET", "/v1/autoscalers", None).await;
    assert_eq!(code, 200);
    assert_eq!(v["autoscalers"].as_array().unwrap().len(), 1, "{v}");
    // Off: scaled by hand again.
    let (code, _, _) = send(&a.addr, "DELETE", "/v1/autoscalers/demo/web", None).await;
    assert_eq!(code, 204);
    let (code, _, _) = send(&a.addr, "DELETE", "/v1/autoscalers/demo/web", None).await;
    assert_eq!(code, 404);
    let (code, v) = call(
        &a,
        "PUT",
        "/v2/apps/demo/web",
        Some(json!({"instances": 3})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
}

#[tokio::test]
async fn policies_survive_a_restart_and_go_with_their_app() {
    let dir = std::env::temp_dir().join(format!("agora-svc-as-{}", uuid::Uuid::new_v4().simple()));
    let a = common::api_in(dir.clone()).await;
    deploy(&a, 2).await;
    let (code, _) = call(&a, "PUT", "/v1/autoscalers/demo/web", Some(policy())).await;
    assert_eq!(code, 200);
    let (code, _) = call(
        &a,
        "PUT",
        "/v2/apps/demo/web?force=true",
        Some(json!({"instances": 3})),
    )
    .await;
    assert_eq!(code, 200);
    let (_, before) = call(&a, "GET", "/v1/autoscalers/demo/web", None).await;
    a.stop();
    drop(a);
    let a = common::api_in(dir.clone()).await;
    let (code, after) = call(&a, "GET", "/v1/autoscalers/demo/web", None).await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["policy"], before["policy"]);
    assert_eq!(
        after["status"]["suspended"], true,
        "suspension is stored too: {after}"
    );
    assert_eq!(
        after["status"]["suspendedReason"],
        before["status"]["suspendedReason"]
    );
    // Deleting the app deletes its policy, for good.
    let (code, _) = call(&a, "DELETE", "/v2/apps/demo/web", None).await;
    assert_eq!(code, 200);
    let (code, _) = call(&a, "GET", "/v1/autoscalers/demo/web", None).await;
    assert_eq!(code, 404);
    a.stop();
    drop(a);
    let a = common::api_in(dir.clone()).await;
    deploy(&a, 1).await;
    let (code, v) = call(&a, "GET", "/v1/autoscalers/demo/web", None).await;
    assert_eq!(code, 404, "a new app of the same id has no policy: {v}");
    a.stop();
    drop(a);
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn load_reports_are_checked_and_metrics_show_the_autoscalers() {
    let a = common::api((10_000, 20_000)).await;
    deploy(&a, 2).await;
    let (code, _) = call(&a, "PUT", "/v1/autoscalers/demo/web", Some(policy())).await;
    assert_eq!(code, 200);
    let report = json!({"router": "edge-1", "window_ms": 10000, "sets": [
        {"key": {"app_id": "/demo/web", "port_index": 0}, "requests": 100, "rps": 10.0,
         "in_flight": 1, "latency_p50_ms": 3.0, "latency_p95_ms": 9.0, "held": 0}]});
    let (code, v) = call(&a, "POST", "/v1/endpoints/load", Some(report)).await;
    assert_eq!(code, 204, "{v}");
    let (code, v) = call(
        &a,
        "POST",
        "/v1/endpoints/load",
        Some(json!({"router": "r", "sets": []})),
    )
    .await;
    assert_eq!(code, 422, "{v}");
    let (code, v) = call(
        &a,
        "POST",
        "/v1/endpoints/load",
        Some(json!({"router": "", "window_ms": 1, "sets": []})),
    )
    .await;
    assert_eq!(code, 422, "{v}");
    let (code, _, _) = send(&a.addr, "POST", "/v1/endpoints/load", Some("{")).await;
    assert_eq!(code, 400);
    let (code, head, text) = send(&a.addr, "GET", "/metrics", None).await;
    assert_eq!(code, 200);
    assert!(head.contains("content-type: text/plain"), "{head}");
    for line in [
        "agora_services_autoscaler_target{app=\"/demo/web\",metric=\"cpu\"} 60",
        "agora_services_autoscaler_target{app=\"/demo/web\",metric=\"rps\"} 200",
        "agora_services_autoscaler_current_instances{app=\"/demo/web\"} 2",
        "agora_services_autoscaler_decisions_total{app=\"/demo/web\",direction=\"up\"} 0",
        "# TYPE agora_services_autoscaler_decisions_total counter",
        "agora_services_autoscaler_suspended{app=\"/demo/web\"} 0",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    // rps per ready instance: none is ready (no master), so no value.
    assert!(
        !text.contains("agora_services_autoscaler_metric_value{app=\"/demo/web\",metric=\"rps\"}"),
        "{text}"
    );
}
