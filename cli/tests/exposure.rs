//! Exposure, enforced and tested for real (issue 9). A network namespace
//! with a veth pair to the host stands for "outside": the host end
//! (`10.253.<n>.1`) is the cluster's public address, where the edge router
//! listens. A master, a Docker agent (`--internal-address 127.0.0.1`),
//! `agora services` and `agora router` (edge on the public address,
//! internal router and L4 on 127.0.0.1) run a public app (port label
//! `expose=public`, `vhost=shop.example.test`) and an internal one.
//!
//! From outside: the public app answers through the edge; the internal app
//! is 404 there, and neither app's host port (nor the internal router, nor
//! a servicePort) accepts a connection on the public address. From inside:
//! both apps answer through the internal router and on their host ports at
//! the internal address.
//!
//! Needs root (or CAP_NET_ADMIN), `ip` (iproute2) and the Docker engine, as
//! CI has; without them it fails saying what is missing.

mod common;

use agora_tests::{Cluster, test_config};
use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(45);

/// `ip ARGS`; panics saying what failed (and what to install when `ip`
/// itself is missing).
fn ip(args: &[&str]) {
    let out = match Command::new("ip").args(args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "the exposure test needs `ip` (iproute2) to create its network namespace: install it (apt-get install iproute2)"
        ),
        Err(e) => panic!("cannot run `ip`: {e}"),
    };
    assert!(
        out.status.success(),
        "`ip {}` failed: {} (the exposure test needs root or CAP_NET_ADMIN)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The "outside": a network namespace joined to the host by a veth pair.
/// Dropping it (also on panic) deletes both; deleting the host end of the
/// pair deletes the pair.
struct Outside {
    ns: String,
    veth: String,
    /// The host's end: the public address.
    public: Ipv4Addr,
}

impl Outside {
    fn create() -> Outside {
        let pid = std::process::id();
        let used = Command::new("ip")
            .args(["-4", "-o", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let n = (0..256u32)
            .map(|i| (pid + i) % 256)
            .find(|n| !used.contains(&format!(" 10.253.{n}.")))
            .expect("every 10.253.<n>.0/30 is taken on this host");
        let ns = format!("agora-out-{pid}");
        // At most 15 bytes: "agx" + up to 7 digits of pid + "h"/"n".
        let (veth, peer) = (format!("agx{pid}h"), format!("agx{pid}n"));
        // Leftovers of an earlier run with the same pid (killed -9).
        let _ = Command::new("ip").args(["link", "del", &veth]).output();
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        // The guard exists from here: a failure below still cleans up.
        let o = Outside {
            ns: ns.clone(),
            veth: veth.clone(),
            public: Ipv4Addr::new(10, 253, n as u8, 1),
        };
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&["addr", "add", &format!("10.253.{n}.1/30"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.253.{n}.2/30"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        o
    }

    /// `request` made from inside the namespace (on a thread that joins it).
    fn request(&self, addr: SocketAddr, host: &str) -> Reach {
        let path = format!("/run/netns/{}", self.ns);
        let host = host.to_string();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns into {path}: {e} (needs root)"));
            request(addr, &host)
        })
        .join()
        .expect("the outside client panicked")
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// What a client got.
#[derive(Debug, Clone, PartialEq)]
enum Reach {
    /// The connection was refused or timed out: nothing reachable there.
    NoConnection(String),
    /// Connected; the HTTP status and body, if an answer came.
    Connected(Option<(u16, String)>),
}

impl Reach {
    fn status(&self) -> Option<u16> {
        match self {
            Reach::Connected(Some((s, _))) => Some(*s),
            _ => None,
        }
    }
}

/// One HTTP/1.1 GET / with `Host: host` (blocking; from the calling
/// thread's network namespace).
fn request(addr: SocketAddr, host: &str) -> Reach {
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) => return Reach::NoConnection(e.to_string()),
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return Reach::Connected(None);
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok());
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Reach::Connected(status.map(|s| (s, body)))
}

/// `request` from the host (inside).
async fn inside(addr: SocketAddr, host: &str) -> Reach {
    let host = host.to_string();
    tokio::task::spawn_blocking(move || request(addr, &host))
        .await
        .unwrap()
}

/// `agora router ARGS`; returns it and the edge and internal addresses it
/// printed.
fn router(args: &[&str]) -> (RouterProc, SocketAddr, SocketAddr) {
    let (proc, addrs) = start_router(args, &["edge", "internal"]);
    let addr = |k: &str| addrs[k].parse().expect("an address");
    let (edge, internal) = (addr("edge"), addr("internal"));
    (proc, edge, internal)
}

/// The running task of `app` and its host port and service port.
async fn running(s: &ServicesProc, app: &str) -> Option<(String, u16, u16)> {
    let (_, a) = s.req("GET", &format!("/v2/apps{app}"), None).await;
    let sp = a["app"]["container"]["portMappings"][0]["servicePort"].as_u64()? as u16;
    a["app"]["tasks"]
        .as_array()?
        .iter()
        .find(|t| t["state"] == "TASK_RUNNING")
        .and_then(|t| {
            Some((
                t["id"].as_str()?.to_string(),
                t["ports"][0].as_u64()? as u16,
                sp,
            ))
        })
}

fn app(id: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "id": id, "instances": 1, "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER", "docker": {"image": "agora-workload:latest"},
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http",
                "labels": labels}]},
        "networks": [{"mode": "container/bridge"}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_apps_answer_from_outside_only_through_the_edge_internal_apps_only_inside() {
    require_docker();
    let outside = Outside::create();
    let public = outside.public;

    let c = Cluster::start(test_config()).await.unwrap();
    let (lo, hi) = port_block();
    let agent = AgentProc::start(
        &c.addr.to_string(),
        &format!("cpus:2;mem:1024;ports:[{lo}-{hi}]"),
        &["--internal-address", "127.0.0.1"],
    )
    .unwrap();
    let s = ServicesProc::start(&c.addr.to_string());
    eventually(LONG, async || get(&s.addr, "/ping").await)
        .await
        .unwrap();
    let (_router, edge, internal) = router(&[
        "--services",
        &format!("http://{}", s.addr),
        "--dns-listen",
        "off",
        "--edge-listen",
        &format!("{public}:0"),
        "--internal-listen",
        "127.0.0.1:0",
        "--internal-address",
        "127.0.0.1",
    ]);
    assert_eq!(edge.ip(), public);

    let shop = app(
        "/exposure/shop",
        json!({"expose": "public", "vhost": "shop.example.test"}),
    );
    let db = app("/exposure/db", json!({}));
    for def in [shop, db] {
        let (code, body) = s.req("POST", "/v2/apps", Some(def)).await;
        assert_eq!(code, 201, "{body}");
    }
    let (shop_task, shop_port, _) = eventually(LONG, async || running(&s, "/exposure/shop").await)
        .await
        .expect("the public app did not run");
    let (db_task, db_port, db_service_port) =
        eventually(LONG, async || running(&s, "/exposure/db").await)
            .await
            .expect("the internal app did not run");

    // Every host port the engine bound is on the internal address.
    let ids = agent.containers(false);
    assert_eq!(ids.len(), 2, "{ids:?}");
    for id in &ids {
        let ips = inspect(
            id,
            "{{range $p, $b := .HostConfig.PortBindings}}{{range $b}}{{.HostIp}} {{end}}{{end}}",
        );
        assert_eq!(ips.trim(), "127.0.0.1", "container {id} binds {ips:?}");
    }

    // Outside, through the edge: the public app by its vhost. This also
    // shows the namespace reaches the public address at all.
    let deadline = Instant::now() + LONG;
    let answer = loop {
        let r = outside.request(edge, "shop.example.test");
        if r.status() == Some(200) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the public app never answered through the edge from outside: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let Reach::Connected(Some((_, body))) = answer else {
        unreachable!()
    };
    assert!(body.contains(&shop_task), "{body}");
    // The internal app is not at the edge, by its name or any vhost.
    for host in ["db.exposure.agora", "shop.example.test.evil", "localhost"] {
        assert_eq!(
            outside.request(edge, host).status(),
            Some(404),
            "Host {host} through the edge"
        );
    }
    // Nothing else on the public address: neither app's host port, the
    // internal router's port, nor the internal app's service port.
    for (what, port) in [
        ("the internal app's host port", db_port),
        ("the public app's host port", shop_port),
        ("the internal router's port", internal.port()),
        ("the internal app's service port", db_service_port),
    ] {
        let r = outside.request(SocketAddr::new(public.into(), port), "x");
        assert!(
            matches!(r, Reach::NoConnection(_)),
            "{what} ({public}:{port}) is reachable from outside: {r:?}"
        );
    }

    // Inside: the internal router serves both apps by name, and both host
    // ports answer on the internal address (retried: the router's view may
    // not list the internal app yet, the workload may still be starting).
    let lo = std::net::IpAddr::from(Ipv4Addr::LOCALHOST);
    for (addr, host, task) in [
        (internal, "db.exposure.agora", &db_task),
        (internal, "shop.exposure.agora", &shop_task),
        (SocketAddr::new(lo, db_port), "x", &db_task),
        (SocketAddr::new(lo, shop_port), "x", &shop_task),
    ] {
        let deadline = Instant::now() + LONG;
        loop {
            let r = inside(addr, host).await;
            match &r {
                Reach::Connected(Some((200, body))) if body.contains(task.as_str()) => break,
                _ => assert!(
                    Instant::now() < deadline,
                    "{addr} Host {host} from inside: {r:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The agent refuses a wildcard internal address, named or implied by a
/// wildcard `--listen`, and an address the host does not have.
#[test]
fn the_agent_refuses_a_wildcard_or_foreign_internal_address() {
    for (args, want) in [
        (
            &["--internal-address", "0.0.0.0"][..],
            "--internal-address 0.0.0.0 is a wildcard",
        ),
        (
            &["--internal-address", "::"],
            "--internal-address :: is a wildcard",
        ),
        (&["--listen", "0.0.0.0:0"], "--internal-address"),
        (
            // TEST-NET-1: documentation only, never on a host.
            &["--internal-address", "192.0.2.1"],
            "not an address of this host",
        ),
    ] {
        let work = std::env::temp_dir().join(format!(
            "agora-exposure-agent-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let out = Command::new(BIN)
            .args(["agent", "--runtime", "process", "--master", "127.0.0.1:1"])
            .env("AGORA_INSECURE", "1")
            .arg("--work-dir")
            .arg(&work)
            .args(
                (!args.contains(&"--listen"))
                    .then_some(["--listen", "127.0.0.1:0"])
                    .into_iter()
                    .flatten(),
            )
            .args(args)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&work);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
