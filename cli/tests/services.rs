//! The services framework end to end: `agora services` as a process, real
//! Docker agents, the REST API and the CLI.

mod common;

use agora_tests::{Cluster, test_config};
use common::*;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(40);

impl ServicesProc {
    /// Agora's view of the app (`/v2` has Marathon's fields only).
    async fn app(&self, id: &str) -> Value {
        self.req("GET", &format!("/v1/apps{id}"), None).await.1["app"].clone()
    }

    async fn wait_app(&self, id: &str, f: impl Fn(&Value) -> bool) -> Value {
        let found = eventually(LONG, async || {
            let a = self.app(id).await;
            f(&a).then_some(a)
        })
        .await;
        match found {
            Ok(a) => a,
            Err(_) => panic!(
                "app {id} never reached the expected state; it is: {}",
                self.app(id).await
            ),
        }
    }
}

/// A master, one Docker agent (4 cpus, a free port block) and the services
/// framework as a process, answering.
async fn stack() -> (Cluster, AgentProc, ServicesProc) {
    require_docker();
    let c = Cluster::start(test_config()).await.unwrap();
    let (lo, hi) = port_block();
    let agent = AgentProc::start(
        &c.addr.to_string(),
        &format!("cpus:4;mem:2048;ports:[{lo}-{hi}]"),
        &[],
    )
    .unwrap();
    let s = ServicesProc::start(&c.addr.to_string());
    eventually(LONG, async || get(&s.addr, "/ping").await)
        .await
        .unwrap();
    (c, agent, s)
}

fn workload(id: &str, instances: u32) -> Value {
    json!({
        "id": id, "instances": instances, "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER", "docker": {"image": "agora-workload:latest"},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}]},
        "networks": [{"mode": "container/bridge"}]
    })
}

fn running(a: &Value) -> u64 {
    a["tasksRunning"].as_u64().unwrap_or(0)
}

/// Running tasks by launch time (`stagedAt` is ISO 8601, as in Marathon).
fn task_ids(a: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = a["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .map(|t| {
            (
                t["stagedAt"].as_str().unwrap_or("").to_string(),
                t["id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_scale_replace_and_kill_youngest() {
    let (_c, agent, s) = stack().await;

    let (code, body) = s.req("POST", "/v2/apps", Some(workload("/web", 3))).await;
    assert_eq!(code, 201, "{body}");
    let a = s.wait_app("/web", |a| running(a) == 3).await;
    let first = a.clone();
    // The workload answers on each mapped host port with its task id.
    for t in a["tasks"].as_array().unwrap() {
        let port = t["ports"][0].as_u64().unwrap();
        let body = eventually(LONG, async || get(&format!("127.0.0.1:{port}"), "/").await)
            .await
            .unwrap();
        assert!(body.contains(t["id"].as_str().unwrap()), "{body}");
    }

    // Scale to 6 through the CLI, waiting: when it returns, six run.
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args(["--services", &s.addr])
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, stdout, stderr) = cli(&["app", "scale", "/web", "6", "--wait", "--timeout", "60s"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("/web: 6/6 running"), "{stdout}");
    let a = s.app("/web").await;
    assert_eq!(running(&a), 6, "--wait returned early: {a}");
    assert_eq!(a["deployments"], json!([]));
    // No health checks: the table says `-`, never `null`.
    let (_, table, _) = cli(&["app", "show", "/web"]);
    assert!(!table.contains("null"), "{table}");
    assert!(table.contains("no health checks"), "{table}");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("TASK_RUNNING"))
        .collect();
    assert_eq!(rows.len(), 6, "{table}");
    assert!(
        rows.iter().all(|r| r.contains("TASK_RUNNING  -  ")),
        "{table}"
    );
    let by_age = task_ids(&a);
    let originals: Vec<String> = task_ids(&first).into_iter().map(|(_, id)| id).collect();
    assert_eq!(originals.len(), 3);
    // Down to 2: when --wait returns, only two are live.
    let (code, _, stderr) = cli(&["app", "scale", "/web", "2", "--wait"]);
    assert_eq!(code, Some(0), "{stderr}");
    let a = s.app("/web").await;
    assert_eq!(running(&a) + a["tasksStaged"].as_u64().unwrap(), 2, "{a}");
    let a = s
        .wait_app("/web", |a| {
            running(a) == 2 && a["tasks"].as_array().unwrap().len() == 2
        })
        .await;
    let left: Vec<String> = task_ids(&a).into_iter().map(|(_, id)| id).collect();
    assert_eq!(by_age.len(), 6);
    // The three launched by the scale-up are younger than the first three.
    assert!(
        left.iter().all(|id| originals.contains(id)),
        "scaling down kills the youngest first: kept {left:?}, first three {originals:?}"
    );

    // A container killed behind Agora's back is replaced.
    let victim = agent.containers(false)[0].clone();
    assert!(
        Command::new("docker")
            .args(["rm", "-f", &victim])
            .status()
            .unwrap()
            .success()
    );
    let replaced = |a: &Value| task_ids(a).iter().any(|(_, id)| !left.contains(id));
    let a = s.wait_app("/web", |a| running(a) == 2 && replaced(a)).await;
    assert_eq!(running(&a), 2);
    assert_eq!(agent.containers(false).len(), 2);

    // A wait that cannot end in time (20 host ports, 30 instances) gives up
    // with exit code 5 and says what is missing; the scale goes on.
    let (code, _, stderr) = cli(&["app", "scale", "/web", "30", "--wait", "--timeout", "3s"]);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        stderr.contains("/web: gave up waiting after 3 s"),
        "{stderr}"
    );
    assert_eq!(s.app("/web").await["instances"], 30);

    // Destroy, waiting: when it returns, no container runs.
    let (code, stdout, stderr) = cli(&["app", "destroy", "/web", "--wait", "--timeout", "60s"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("/web: gone"), "{stdout}");
    assert_eq!(agent.containers(false), Vec::<String>::new());
    let (code, _, _) = cli(&["app", "show", "/web"]);
    assert_eq!(code, Some(4), "not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_definitions_are_refused_and_impossible_apps_wait_with_reasons() {
    require_docker();
    let c = Cluster::start(test_config()).await.unwrap();
    let a1 = AgentProc::start_with(
        &c.addr.to_string(),
        "cpus:2;mem:1024",
        "docker",
        &["--attributes", "host=one"],
    )
    .unwrap();
    let a2 = AgentProc::start_with(
        &c.addr.to_string(),
        "cpus:2;mem:1024",
        "docker",
        &["--attributes", "host=two"],
    )
    .unwrap();
    let s = ServicesProc::start(&c.addr.to_string());
    eventually(LONG, async || get(&s.addr, "/ping").await)
        .await
        .unwrap();

    let (code, body) = send("POST", &s.addr, "/v2/apps", Some("{not json")).await;
    assert_eq!(code, 400, "{body}");
    for (def, path, needle) in [
        (json!({"cmd": "x"}), "/id", "required"),
        (
            json!({"id": "/neg", "cmd": "x", "instances": -1}),
            "/instances",
            "between",
        ),
        (
            json!({"id": "/hc", "cmd": "x", "healthChecks": [{"protocol": "SMOKE_SIGNAL"}]}),
            "/healthChecks/0/protocol",
            "SMOKE_SIGNAL",
        ),
        (
            json!({"id": "/op", "cmd": "x", "constraints": [["host", "SOMEWHERE"]]}),
            "/constraints/0",
            "SOMEWHERE",
        ),
    ] {
        let (code, body) = s.req("POST", "/v2/apps", Some(def)).await;
        assert_eq!(code, 422, "{body}");
        let d = body["details"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["path"] == path)
            .unwrap_or_else(|| panic!("{path} in {body}"));
        assert!(d["errors"].to_string().contains(needle), "{body}");
    }
    let (_, apps) = s.req("GET", "/v2/apps", None).await;
    assert_eq!(
        apps["apps"].as_array().unwrap().len(),
        0,
        "nothing accepted"
    );
    assert!(
        a1.containers(true).is_empty() && a2.containers(true).is_empty(),
        "nothing launched"
    );

    // Too big for any agent: accepted, waiting, saying why.
    let mut big = workload("/big", 1);
    big["cpus"] = json!(64);
    let (code, _) = s.req("POST", "/v2/apps", Some(big)).await;
    assert_eq!(code, 201);
    let a = s.wait_app("/big", |a| a["waiting"].is_string()).await;
    assert!(
        a["waiting"]
            .as_str()
            .unwrap()
            .contains("no offer has enough resources"),
        "{a}"
    );

    // host:UNIQUE over two agents with 3 instances: 2 run, 1 waits with the reason.
    let mut uniq = workload("/uniq", 3);
    uniq["constraints"] = json!([["host", "UNIQUE"]]);
    uniq["container"]["portMappings"] = json!([]);
    uniq["networks"] = json!([{"mode": "host"}]);
    uniq["container"]["docker"]["image"] = json!("agora-busybox:latest");
    uniq["cmd"] = json!("sleep 600");
    let (code, body) = s.req("POST", "/v2/apps", Some(uniq)).await;
    assert_eq!(code, 201, "{body}");
    let a = s
        .wait_app("/uniq", |a| running(a) == 2 && a["waiting"].is_string())
        .await;
    let w = a["waiting"].as_str().unwrap();
    assert!(w.contains("constraint host:UNIQUE: 2 of 3 placed"), "{w}");
    let out = Command::new(BIN)
        .args(["app", "list", "--services", &s.addr])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("UNIQUE"),
        "the CLI shows the reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_app_backs_off_and_a_restarted_framework_keeps_its_instances() {
    require_docker();
    let c = Cluster::start(test_config()).await.unwrap();
    let agent = AgentProc::start(&c.addr.to_string(), "cpus:4;mem:2048", &[]).unwrap();
    let mut s = ServicesProc::start(&c.addr.to_string());
    eventually(LONG, async || get(&s.addr, "/ping").await)
        .await
        .unwrap();

    let crash = json!({"id": "/crash", "cmd": "exit 1", "cpus": 0.1, "mem": 16,
        "backoffSeconds": 0.2, "backoffFactor": 2, "maxLaunchDelaySeconds": 1.6});
    s.req("POST", "/v2/apps", Some(crash)).await;
    // Delays observed (polling may skip one): each the previous times the
    // factor (a power of it if skipped), ending at the cap.
    let expected = [0.2, 0.4, 0.8, 1.6];
    let mut delays: Vec<f64> = vec![];
    eventually(LONG, async || {
        let d = s.app("/crash").await["launchDelaySeconds"]
            .as_f64()
            .unwrap_or(0.0);
        if d > 0.0 && delays.last() != Some(&d) {
            delays.push(d);
        }
        (delays.last() == Some(&1.6)).then_some(())
    })
    .await
    .unwrap();
    assert!(delays.len() >= 2, "{delays:?}");
    assert!(
        delays.iter().all(|d| expected.contains(d)),
        "only backoffSeconds x factor^n, capped: {delays:?}"
    );
    assert!(
        delays.windows(2).all(|w| w[1] > w[0]),
        "growing: {delays:?}"
    );
    // It stays at the cap while the app keeps crashing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        s.app("/crash").await["launchDelaySeconds"].as_f64(),
        Some(1.6)
    );
    s.req("DELETE", "/v2/apps/crash", None).await;

    // kill -9 the framework: its instances are kept and not duplicated.
    s.req(
        "POST",
        "/v2/apps",
        Some(json!({"id": "/keep", "cmd": "sleep 600", "instances": 3, "cpus": 0.1, "mem": 16})),
    )
    .await;
    let before = task_ids(&s.wait_app("/keep", |a| running(a) == 3).await);
    s.kill9();
    s.spawn();
    eventually(LONG, async || get(&s.addr, "/ping").await)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = s.wait_app("/keep", |a| running(a) == 3).await;
    assert_eq!(
        task_ids(&a).into_iter().map(|t| t.1).collect::<Vec<_>>(),
        before.into_iter().map(|t| t.1).collect::<Vec<_>>()
    );
    let (_, info) = s.req("GET", "/v1/info", None).await;
    assert_eq!(info["connected"], true);
    eventually(LONG, async || {
        (agent.containers(false).len() == 3).then_some(())
    })
    .await
    .unwrap();
}

fn healthy_workload(id: &str, instances: u32) -> Value {
    let mut w = workload(id, instances);
    w["healthChecks"] = json!([{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0,
        "gracePeriodSeconds": 10, "intervalSeconds": 0.5, "timeoutSeconds": 1, "maxConsecutiveFailures": 2}]);
    w
}

fn healthy(a: &Value) -> u64 {
    a["tasksHealthy"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_run_on_the_agent_and_unhealthy_instances_are_replaced() {
    let (_c, _agent, s) = stack().await;
    // Two checks: TCP (keeps passing) first, HTTP /health second. All must
    // pass, so the HTTP check alone failing makes the instance unhealthy.
    let mut def = healthy_workload("/hc", 3);
    let http = def["healthChecks"][0].clone();
    def["healthChecks"] = json!([{"protocol": "MESOS_TCP", "portIndex": 0,
        "gracePeriodSeconds": 10, "intervalSeconds": 0.5, "timeoutSeconds": 1}, http]);
    let (code, body) = s.req("POST", "/v2/apps", Some(def)).await;
    assert_eq!(code, 201, "{body}");
    let a = s.wait_app("/hc", |a| healthy(a) == 3).await;

    // Follow the event stream while one instance is switched to unhealthy:
    // after 2 failed checks it is killed and replaced.
    let events = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sock = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
        sock.write_all(b"GET /v2/events HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::spawn(async move {
            let mut seen = String::new();
            let mut buf = [0u8; 4096];
            while !(seen.contains("health_status_changed_event")
                && seen.contains("\"alive\":false"))
            {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = &a["tasks"][0];
    let (victim, port) = (
        t["id"].as_str().unwrap().to_string(),
        t["ports"][0].as_u64().unwrap(),
    );
    get(&format!("127.0.0.1:{port}"), "/health?set=unhealthy").await;
    let a = s
        .wait_app("/hc", |a| {
            healthy(a) == 3
                && !a["tasks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["id"] == victim.as_str())
        })
        .await;
    assert_eq!(running(&a), 3);
    let seen = tokio::time::timeout(LONG, events)
        .await
        .expect("event stream")
        .unwrap();
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(
        seen.contains("event: status_update_event")
            || seen.contains("event: health_status_changed_event"),
        "{seen}"
    );
    assert!(
        seen.contains("\"alive\":false") && seen.contains(&victim),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_keeps_capacity_and_survives_a_framework_kill9() {
    let (_c, _agent, mut s) = stack().await;
    let mut def = healthy_workload("/roll", 4);
    def["upgradeStrategy"] = json!({"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0});
    s.req("POST", "/v2/apps", Some(def.clone())).await;
    let v1 = s.wait_app("/roll", |a| healthy(a) == 4).await["version"]
        .as_str()
        .unwrap()
        .to_string();

    // Change an env var: a rolling deployment.
    def["env"] = json!({"RELEASE": "2"});
    let (code, body) = s.req("PUT", "/v2/apps/roll", Some(def)).await;
    assert_eq!(code, 200, "{body}");
    let (_, deps) = s.req("GET", "/v2/deployments", None).await;
    assert_eq!(deps.as_array().unwrap().len(), 1, "{deps}");
    let mut killed_framework = false;
    let mut restarted_at: Option<std::time::Instant> = None;
    let mut seen_ids = std::collections::HashSet::new();
    let done = eventually(Duration::from_secs(90), async || {
        let a = s.app("/roll").await;
        if a.is_null() {
            return None; // restarting
        }
        let tasks = a["tasks"].as_array().cloned().unwrap_or_default();
        let live = tasks.iter().filter(|t| t["state"] != "TASK_KILLED").count();
        assert!(
            live <= 4,
            "never more than instances (maximumOverCapacity 0): {live}"
        );
        // Right after the kill -9 the restarted framework's view lags: a
        // health change it had not stored (so not acknowledged) comes again
        // with the agent's next retry of the update (2 s, then 4 s). The
        // instances keep serving meanwhile; the view must catch up.
        let view_settled =
            restarted_at.is_none_or(|t: std::time::Instant| t.elapsed() > Duration::from_secs(8));
        assert!(
            !view_settled || healthy(&a) >= 2,
            "at least half healthy throughout: {}",
            healthy(&a)
        );
        for t in &tasks {
            seen_ids.insert(t["id"].as_str().unwrap_or("").to_string());
        }
        let new = tasks.iter().filter(|t| t["version"] != v1.as_str()).count();
        if new >= 1 && !killed_framework {
            // kill -9 the framework in the middle of the deployment.
            killed_framework = true;
            s.kill9();
            s.spawn();
            restarted_at = Some(std::time::Instant::now());
            return None;
        }
        let finished = a["deployments"].as_array().is_some_and(|d| d.is_empty())
            && new == 4
            && healthy(&a) == 4;
        finished.then_some(a)
    })
    .await
    .unwrap();
    assert!(killed_framework);
    let tasks = done["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 4, "exact count: {tasks:?}");
    assert!(
        tasks.iter().all(|t| t["version"] != v1.as_str()),
        "all on the new version"
    );
    let ids: std::collections::HashSet<&str> =
        tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "no duplicate task ids");
    assert!(
        seen_ids.len() >= 8,
        "4 old and 4 new instances were seen: {}",
        seen_ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_gates_a_deployment_and_rollback_restores_the_previous_version() {
    let (_c, _agent, s) = stack().await;
    let mut def = workload("/ready", 2);
    def["readinessChecks"] = json!([{"name": "ready", "protocol": "HTTP", "path": "/", "portName": "http", "intervalSeconds": 0.2}]);
    def["upgradeStrategy"] = json!({"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0});
    s.req("POST", "/v2/apps", Some(def.clone())).await;
    let v1 = s.wait_app("/ready", |a| running(a) == 2).await;
    let v1_tasks = task_ids(&v1);

    // Version 2's readiness check never passes (404): the deployment stalls
    // with one old instance kept (minimumHealthCapacity 0.5).
    let mut v2 = def.clone();
    v2["env"] = json!({"RELEASE": "2"});
    v2["readinessChecks"][0]["path"] = json!("/not-ready");
    let (code, body) = s.req("PUT", "/v2/apps/ready", Some(v2)).await;
    assert_eq!(code, 200, "{body}");
    let dep = body["deploymentId"].as_str().unwrap().to_string();
    let old_and_new = |a: &Value| {
        let ids = task_ids(a);
        let old = ids
            .iter()
            .filter(|(_, id)| v1_tasks.iter().any(|(_, o)| o == id))
            .count();
        (old, ids.len() - old)
    };
    // One old instance goes, a new one runs but never gets ready...
    s.wait_app("/ready", |a| old_and_new(a) == (1, 1)).await;
    // ...and the deployment stays there: the last old instance keeps serving.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, deps) = s.req("GET", "/v2/deployments", None).await;
    assert_eq!(deps[0]["id"], dep.as_str(), "still deploying: {deps}");
    let a = s.app("/ready").await;
    assert_eq!(
        old_and_new(&a),
        (1, 1),
        "one old instance keeps serving: {a}"
    );
    let serving: Vec<String> = task_ids(&a)
        .into_iter()
        .map(|(_, id)| id)
        .filter(|id| v1_tasks.iter().any(|(_, o)| o == id))
        .collect();

    // Roll back, waiting: when the CLI returns, the previous definition
    // runs and no deployment is left.
    let out = Command::new(BIN)
        .args(["deployment", "rollback", &dep, "--wait", "--timeout", "60s"])
        .args(["--services", &s.addr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("/ready: 2/2 running"));
    let now = s.app("/ready").await;
    assert_eq!(now["deployments"], json!([]), "{now}");
    assert_eq!(running(&now), 2, "{now}");
    let a = s
        .wait_app("/ready", |a| {
            running(a) == 2
                && a["deployments"].as_array().is_some_and(|d| d.is_empty())
                && a["tasks"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    assert!(a["env"].get("RELEASE").is_none(), "rolled back: {a}");
    assert_eq!(a["readinessChecks"][0]["path"], "/");
    // Issue 8, item 5: back to version 1 itself, so the instance that kept
    // serving it is current again and stays.
    assert_eq!(a["version"], v1["version"], "{a}");
    assert!(
        task_ids(&a).iter().any(|(_, id)| *id == serving[0]),
        "{} (still running version 1) was replaced: {a}",
        serving[0]
    );
}

/// Issue 7, bug 1: after a master restart the services framework comes back
/// before the agent. The master must not answer its reconciliation with
/// TASK_LOST/UNKNOWN for the agent's instances (the framework would replace
/// them, and its next reconciliation would kill the originals): the count
/// never exceeds the target and no original is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restart_with_the_framework_back_before_the_agent_keeps_every_instance() {
    require_docker();
    // The agent stays away for a few seconds: longer than the test config's
    // 1.5 s agent timeout, well within the re-registration timeout a
    // restarted master gives the agents of its registry.
    let mut c = Cluster::start(test_config()).await.unwrap();
    let mut agent = AgentProc::start(&c.addr.to_string(), "cpus:4;mem:2048", &[]).unwrap();
    let s = ServicesProc::start(&c.addr.to_string());
    eventually(LONG, async || get(&s.addr, "/ping").await)
        .await
        .unwrap();
    s.req(
        "POST",
        "/v2/apps",
        Some(json!({"id": "/keep", "cmd": "sleep 600", "instances": 3, "cpus": 0.1, "mem": 16})),
    )
    .await;
    let ids = |a: &Value| {
        let mut v: Vec<String> = a["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["id"].as_str().map(String::from))
            .collect();
        v.sort();
        v
    };
    let before = ids(&s.wait_app("/keep", |a| running(a) == 3).await);
    assert_eq!(before.len(), 3);

    // The agent goes away (its containers keep running), the master restarts.
    agent.kill9();
    c.restart().await.unwrap();
    // The framework resubscribes and reconciles while the agent is still away.
    eventually(LONG, async || {
        let (_, info) = s.req("GET", "/v1/info", None).await;
        (info["connected"] == true).then_some(())
    })
    .await
    .unwrap();
    for _ in 0..15 {
        let a = s.app("/keep").await;
        assert_eq!(
            ids(&a),
            before,
            "instances replaced while the agent was away: {a}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The agent comes back with its tasks: the same three, and only them.
    agent.spawn().unwrap();
    let a = s.wait_app("/keep", |a| running(a) == 3).await;
    assert_eq!(ids(&a), before);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let a = s.app("/keep").await;
    assert_eq!(ids(&a), before, "an original was killed or replaced: {a}");
    assert_eq!(running(&a), 3);
    assert_eq!(agent.containers(false).len(), 3);
}
