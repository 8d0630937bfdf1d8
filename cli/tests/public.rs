//! Public agents end to end, with real processes: a master, one private
//! and one public agent (`agora agent --public`, hollow runtime: nothing
//! runs, placement is what is tested) and the services framework in role
//! `public`. An app with `acceptedResourceRoles: ["public"]` lands on the
//! public agent only, a default app on the private one only.

mod common;

use agora_tests::{Cluster, test_config};
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(40);

fn agora(args: &[&str], master: &str) -> (i32, String) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .env("AGORA_MASTER", master)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The hosts of an app's running tasks, once it runs `n` of them.
async fn hosts_when_running(s: &ServicesProc, id: &str, n: usize) -> BTreeSet<String> {
    let found = eventually(LONG, async || {
        let (_, v) = s.req("GET", &format!("/v1/apps{id}"), None).await;
        let running: Vec<&Value> = v["app"]["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .collect();
        (running.len() == n).then(|| {
            running
                .iter()
                .map(|t| t["host"].as_str().unwrap_or("").to_string())
                .collect()
        })
    })
    .await;
    match found {
        Ok(h) => h,
        Err(_) => panic!(
            "{id} never ran {n} instances: {}",
            s.req("GET", &format!("/v1/apps{id}"), None).await.1
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_apps_land_on_public_agents_and_default_apps_on_private_ones() {
    let c = Cluster::start(test_config()).await.unwrap();
    let master = c.addr.to_string();
    let _private = AgentProc::start_with(
        &master,
        "cpus:4;mem:2048;ports:[31000-31009]",
        "hollow",
        &["--hostname", "private-agent"],
    )
    .unwrap();
    let _public = AgentProc::start_with(
        &master,
        "cpus:4;mem:2048;ports:[31000-31009]",
        "hollow",
        &["--hostname", "public-agent", "--public"],
    )
    .unwrap();

    // Both registered; the public one reserved for `public`, with the
    // attribute, in `agora agent list` (JSON and table).
    let agents = eventually(LONG, async || {
        let (code, out) = agora(&["agent", "list", "-o", "json"], &master);
        let v: Value = serde_json::from_str(&out).ok()?;
        (code == 0 && v.as_array()?.len() == 2).then_some(v)
    })
    .await
    .expect("two agents register");
    for a in agents.as_array().unwrap() {
        match a["hostname"].as_str().unwrap() {
            "public-agent" => {
                assert_eq!(a["role"], json!("public"), "{a}");
                assert_eq!(a["attributes"]["public"], json!("true"), "{a}");
            }
            "private-agent" => {
                assert_eq!(a["role"], json!("*"), "{a}");
                assert!(a["attributes"].get("public").is_none(), "{a}");
            }
            other => panic!("unexpected agent {other}"),
        }
    }
    let (code, table) = agora(&["agent", "list"], &master);
    assert_eq!(code, 0, "{table}");
    assert!(table.lines().next().unwrap().contains("ROLE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("public-agent") && l.contains(" public ")),
        "{table}"
    );

    let s = ServicesProc::start_with(&master, &["--role", "public"]);
    eventually(LONG, async || get(&s.addr, "/ping").await)
        .await
        .unwrap();
    let app = |id: &str, roles: Option<Value>| {
        let mut v = json!({"id": id, "cmd": "sleep 600", "instances": 3, "cpus": 0.1, "mem": 16});
        if let Some(r) = roles {
            v["acceptedResourceRoles"] = r;
        }
        v
    };
    for def in [app("/edge", Some(json!(["public"]))), app("/backend", None)] {
        let (code, body) = s.req("POST", "/v2/apps", Some(def)).await;
        assert_eq!(code, 201, "{body}");
    }
    let edge = hosts_when_running(&s, "/edge", 3).await;
    assert_eq!(edge, BTreeSet::from(["public-agent".to_string()]));
    let backend = hosts_when_running(&s, "/backend", 3).await;
    assert_eq!(backend, BTreeSet::from(["private-agent".to_string()]));

    // Accepting both: with the private agent nearly full (3.7 of 4 cpus
    // free, 1 cpu per instance), instances go to both kinds of agent.
    let mut both = app("/both", Some(json!(["*", "public"])));
    both["cpus"] = json!(1);
    both["instances"] = json!(5);
    let (code, body) = s.req("POST", "/v2/apps", Some(both)).await;
    assert_eq!(code, 201, "{body}");
    let hosts = hosts_when_running(&s, "/both", 5).await;
    assert_eq!(
        hosts,
        BTreeSet::from(["private-agent".to_string(), "public-agent".to_string()])
    );
    let (_, v) = s.req("GET", "/v2/apps/both", None).await;
    assert_eq!(v["app"]["acceptedResourceRoles"], json!(["*", "public"]));
}
