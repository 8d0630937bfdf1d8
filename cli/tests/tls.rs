//! TLS end to end: a master process with mutual TLS for agents, agent
//! processes with certificates of the cluster CA (or not), the CLI and a
//! framework over https.

mod common;

use agora_proto::pb;
use agora_tests::Fw;
use agora_tls::ca::{Ca, Kind};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn agora(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(out: std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process whose stderr goes to a file, killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}
impl Proc {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env("AGORA_LOG", "info")
            .env_remove("AGORA_INSECURE")
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        Proc { child, log }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent(dir: &Path, master: &str, hostname: &str, cert: &str) -> Proc {
    let work = dir.join(format!("work-{hostname}"));
    Proc::spawn(
        Command::new(BIN)
            .args(["agent", "--runtime", "hollow", "--master", master])
            .args(["--hostname", hostname, "--listen", "127.0.0.1:0"])
            .args(["--resources", "cpus:2;mem:1024;ports:[31000-31010]"])
            .arg("--work-dir")
            .arg(&work)
            .arg("--tls-ca")
            .arg(dir.join("ca.crt"))
            .arg("--tls-cert")
            .arg(dir.join(format!("{cert}.crt")))
            .arg("--tls-key")
            .arg(dir.join(format!("{cert}.key"))),
        dir.join(format!("agent-{hostname}.log")),
    )
}

fn agent_list(dir: &Path, master: &str) -> Option<String> {
    let o = Command::new(BIN)
        .args(["agent", "list", "--master", master, "-o", "json"])
        .env("AGORA_CA_CERT", dir.join("ca.crt"))
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).to_string())
}

fn register(hostname: &str, agent_id: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        message: Some(pb::agent_message::Message::Register(pb::Register {
            agent: Some(pb::AgentInfo {
                agent_id: agent_id.into(),
                hostname: hostname.into(),
                ..Default::default()
            }),
            ..Default::default()
        })),
    }
}

/// Calls ResolveSecrets for `agent_id` with this client identity.
async fn resolve(
    dir: &Path,
    master: &str,
    identity: Option<(&str, &Path)>,
    agent_id: &str,
) -> tonic::Status {
    let files =
        identity.map(|(name, d)| (d.join(format!("{name}.crt")), d.join(format!("{name}.key"))));
    let tls = agora_tls::client_config(
        &dir.join("ca.crt"),
        files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )
    .unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(master.to_string()).unwrap();
    let channel = agora_tls::channel(endpoint, Some(Arc::new(tls)))
        .await
        .unwrap();
    let mut client = pb::agent_link_client::AgentLinkClient::new(channel);
    let r = client
        .resolve_secrets(pb::ResolveSecretsRequest {
            agent_id: agent_id.into(),
            framework_id: "f".into(),
            task_id: "t".into(),
        })
        .await;
    match r {
        Ok(_) => tonic::Status::ok(""),
        Err(s) => s,
    }
}

/// Attaches as an agent with this client identity (cert, key) and returns
/// how the master answered.
async fn attach(
    dir: &Path,
    master: &str,
    identity: Option<(&str, &Path)>,
    hostname: &str,
    agent_id: &str,
) -> Result<(), tonic::Status> {
    let files =
        identity.map(|(name, d)| (d.join(format!("{name}.crt")), d.join(format!("{name}.key"))));
    let tls = agora_tls::client_config(
        &dir.join("ca.crt"),
        files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )
    .unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(master.to_string()).unwrap();
    let channel = agora_tls::channel(endpoint, Some(Arc::new(tls)))
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
    let mut client = pb::agent_link_client::AgentLinkClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(register(hostname, agent_id)).await.unwrap();
    let resp = client
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?;
    // Accepted: the master answers the registration on the stream.
    let mut inbound = resp.into_inner();
    match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
        Ok(Ok(Some(_))) => Ok(()),
        Ok(Ok(None)) => Err(tonic::Status::cancelled("stream ended")),
        Ok(Err(s)) => Err(s),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer")),
    }
}

#[tokio::test]
async fn agents_need_a_certificate_of_the_cluster_ca_for_their_name() {
    let dir = std::env::temp_dir().join(format!("agora-tls-e2e-{}", uuid::Uuid::new_v4().simple()));
    let d = dir.to_str().unwrap().to_string();
    let other = dir.join("other");
    let o = other.to_str().unwrap().to_string();
    ok(agora(&["ca", "init", "--dir", &d]));
    ok(agora(&[
        "ca",
        "issue",
        "--server",
        "master.test",
        "--dir",
        &d,
    ]));
    ok(agora(&[
        "ca",
        "issue",
        "--agent",
        "node-1",
        "--san",
        "127.0.0.1",
        "--dir",
        &d,
    ]));
    ok(agora(&["ca", "issue", "--agent", "node-2", "--dir", &d]));
    ok(agora(&["ca", "issue", "--client", "alice", "--dir", &d]));
    ok(agora(&["ca", "init", "--dir", &o]));
    ok(agora(&["ca", "issue", "--agent", "node-1", "--dir", &o]));
    let again = agora(&["ca", "init", "--dir", &d]);
    assert!(
        !again.status.success(),
        "a second init must refuse to overwrite"
    );
    // An expired agent certificate of the right CA.
    let ca = Ca::load(&dir).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let expired = ca
        .issue_between(
            Kind::Agent,
            "node-1",
            &[],
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        )
        .unwrap();
    std::fs::write(dir.join("expired.crt"), &expired.cert_pem).unwrap();
    std::fs::write(dir.join("expired.key"), &expired.key_pem).unwrap();

    // Without TLS material or --insecure, the master refuses to start.
    let plain = Command::new(BIN)
        .args(["master", "--in-memory", "--listen", "127.0.0.1:0"])
        .env_remove("AGORA_INSECURE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success());
    assert!(
        err.contains("--insecure") && err.contains("agora ca init"),
        "{err}"
    );

    // AGORA_INSECURE=1 starts it in plain text, with a loud warning.
    let insecure_log = dir.join("insecure.log");
    let insecure = Proc {
        child: Command::new(BIN)
            .args(["master", "--in-memory", "--listen", "127.0.0.1:0"])
            .env("AGORA_INSECURE", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&insecure_log).unwrap())
            .spawn()
            .unwrap(),
        log: insecure_log,
    };
    eventually(LONG, async || {
        let l = insecure.log();
        (l.contains("WITHOUT TLS") && l.contains("listening")).then_some(())
    })
    .await
    .unwrap_or_else(|_| panic!("insecure master:\n{}", insecure.log()));
    drop(insecure);

    // TLS material alone is not enough: without an ACL file (or --insecure)
    // every API would be open, so the master refuses to start.
    let no_acls = Command::new(BIN)
        .args(["master", "--in-memory", "--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(dir.join("master.test.crt"))
        .arg("--tls-key")
        .arg(dir.join("master.test.key"))
        .arg("--tls-client-ca")
        .arg(dir.join("ca.crt"))
        .env_remove("AGORA_INSECURE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut no_acls = Proc {
        child: no_acls,
        log: dir.join("no-acls.log"),
    };
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = no_acls.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a master with TLS but no --acls (and no --insecure) must refuse to start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(no_acls.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("--acls") && err.contains("--insecure"),
        "{err}"
    );

    let port = free_port();
    let master = format!("https://127.0.0.1:{port}");
    // --insecure here only allows running without an ACL file: this test
    // is about TLS (the authz tests cover tokens and ACLs).
    let m = Proc::spawn(
        Command::new(BIN)
            .args([
                "master",
                "--in-memory",
                "--insecure",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--tls-cert")
            .arg(dir.join("master.test.crt"))
            .arg("--tls-key")
            .arg(dir.join("master.test.key"))
            .arg("--tls-client-ca")
            .arg(dir.join("ca.crt")),
        dir.join("master.log"),
    );

    // The agent with its own certificate attaches (the CLI reads the master
    // over https with --ca-cert's environment variable).
    let _good = agent(&dir, &master, "node-1", "node-1");
    let list = eventually(LONG, async || {
        agent_list(&dir, &master).filter(|s| s.contains("\"node-1\""))
    })
    .await
    .unwrap_or_else(|_| panic!("node-1 never attached; master log:\n{}", m.log()));
    assert!(list.contains("node-1"), "{list}");
    // The agent's own API is served over TLS with its certificate.
    let endpoint = serde_json::from_str::<serde_json::Value>(&list).unwrap()[0]["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    let api = endpoint
        .strip_prefix("https://")
        .expect("the agent advertises https")
        .to_string();
    let health = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tls = agora_tls::client_config(&dir.join("ca.crt"), None).unwrap();
        let tcp = tokio::net::TcpStream::connect(&api).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap_or_default();
        out
    };
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("ok"),
        "{health}"
    );

    // An agent process whose certificate names another host is refused.
    let impostor = agent(&dir, &master, "node-3", "node-2");

    // Plain http to the TLS port gets nowhere; https without the CA neither.
    let no_ca = Command::new(BIN)
        .args(["agent", "list", "--master", &master])
        .env_remove("AGORA_CA_CERT")
        .output()
        .unwrap();
    assert!(!no_ca.status.success());
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("--ca-cert"));

    // Refusals, as an agent sees them.
    let code = |r: Result<(), tonic::Status>| r.map_err(|s| s.code());
    // No client certificate: UNAUTHENTICATED.
    assert_eq!(
        code(attach(&dir, &master, None, "node-1", "").await),
        Err(tonic::Code::Unauthenticated)
    );
    // An operator (client) certificate of the same CA is no agent certificate.
    assert_eq!(
        code(attach(&dir, &master, Some(("alice", &dir)), "alice", "").await),
        Err(tonic::Code::Unauthenticated)
    );
    // Right CA, wrong name: PERMISSION_DENIED.
    assert_eq!(
        code(attach(&dir, &master, Some(("node-2", &dir)), "node-1", "").await),
        Err(tonic::Code::PermissionDenied)
    );
    // Another CA, or expired: the handshake is refused, nothing attaches.
    assert!(
        attach(&dir, &master, Some(("node-1", &other)), "node-1", "")
            .await
            .is_err()
    );
    assert!(
        attach(&dir, &master, Some(("expired", &dir)), "node-1", "")
            .await
            .is_err()
    );
    // The check itself lets the right certificate in (the test client works).
    assert_eq!(
        code(attach(&dir, &master, Some(("node-2", &dir)), "node-2", "").await),
        Ok(())
    );

    // ResolveSecrets: only the agent itself gets past the certificate check
    // (the task named does not exist, which the store refuses next).
    let agents: serde_json::Value =
        serde_json::from_str(&agent_list(&dir, &master).unwrap()).unwrap();
    let node1 = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["hostname"] == "node-1")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // node-2's certificate cannot re-register node-1's id under its own
    // name (it would take over node-1's tasks and their secrets).
    assert_eq!(
        code(attach(&dir, &master, Some(("node-2", &dir)), "node-2", &node1).await),
        Err(tonic::Code::PermissionDenied)
    );
    let none = resolve(&dir, &master, None, &node1).await;
    assert_eq!(none.code(), tonic::Code::Unauthenticated, "{none:?}");
    let other = resolve(&dir, &master, Some(("node-2", &dir)), &node1).await;
    assert_eq!(other.code(), tonic::Code::PermissionDenied, "{other:?}");
    assert!(
        other.message().contains("not issued for that name"),
        "{other:?}"
    );
    let own = resolve(&dir, &master, Some(("node-1", &dir)), &node1).await;
    assert!(
        !own.message().contains("certificate") && own.code() != tonic::Code::Unauthenticated,
        "the agent's own certificate passes the check: {own:?}"
    );

    let log = m.log();
    for reason in [
        "no client certificate",
        "not an agent certificate",
        "not issued for that name",
    ] {
        assert!(log.contains(reason), "master log lacks {reason:?}:\n{log}");
    }
    assert!(log.contains("TLS handshake refused"), "{log}");
    eventually(LONG, async || {
        impostor
            .log()
            .contains("the master refused this agent")
            .then_some(())
    })
    .await
    .unwrap_or_else(|_| panic!("impostor log:\n{}", impostor.log()));
    let list = agent_list(&dir, &master).unwrap();
    assert!(!list.contains("node-3"), "{list}");

    // A framework over TLS without a client certificate subscribes and is
    // offered node-1's resources.
    let mut cfg = agora_sdk::FrameworkConfig::new(master.clone(), "tls-e2e");
    cfg.reconnect_min = Duration::from_millis(50);
    cfg.tls = Some(Arc::new(
        agora_tls::client_config(&dir.join("ca.crt"), None).unwrap(),
    ));
    let mut f = Fw::start(cfg).await.unwrap();
    let offers = f.offers().await.unwrap();
    assert!(!offers.is_empty());

    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `agora ca revoke` / `agora ca crl`: the serial is recorded once, the CRL
/// parses, lists it and is signed by the CA.
#[test]
fn ca_revoke_records_the_serial_once_and_writes_a_crl() {
    let dir = std::env::temp_dir().join(format!("agora-crl-cli-{}", uuid::Uuid::new_v4().simple()));
    let d = dir.to_str().unwrap().to_string();
    ok(agora(&["ca", "init", "--dir", &d]));
    ok(agora(&["ca", "issue", "--agent", "node-1", "--dir", &d]));
    let empty = ok(agora(&["ca", "crl", "--dir", &d]));
    assert!(empty.contains("no certificates revoked"), "{empty}");
    let cert = dir.join("node-1.crt");
    let out = ok(agora(&[
        "ca",
        "revoke",
        cert.to_str().unwrap(),
        "--ca-dir",
        &d,
    ]));
    assert!(
        out.contains("revoked: serial") && out.contains("node-1"),
        "{out}"
    );
    let again = ok(agora(&[
        "ca",
        "revoke",
        cert.to_str().unwrap(),
        "--dir",
        &d,
    ]));
    assert!(again.contains("already revoked"), "{again}");
    let lost = ok(agora(&["ca", "revoke", "--serial", "0A:0B", "--dir", &d]));
    assert!(lost.contains("serial 0a0b"), "{lost}");
    let bad = agora(&["ca", "revoke", "--serial", "zz", "--dir", &d]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("hex"));

    let json: serde_json::Value =
        serde_json::from_str(&ok(agora(&["ca", "crl", "--dir", &d, "-o", "json"]))).unwrap();
    let der = agora_tls::load_certs(&cert).unwrap().swap_remove(0);
    let (serial, _) = agora_tls::crl::cert_serial(&der).unwrap();
    let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
    let revoked = json["revoked"].as_array().unwrap();
    assert_eq!(revoked.len(), 2, "{json}");
    assert_eq!(revoked[0]["serial"], hex.as_str());
    assert_eq!(revoked[0]["name"], "node-1");
    assert_eq!(revoked[0]["kind"], "agent");
    assert_eq!(json["expired"], false);
    let text = ok(agora(&["ca", "crl", "--dir", &d]));
    assert!(
        text.contains(&hex) && text.contains("next update"),
        "{text}"
    );

    // The CRL is the CA's and lists both serials.
    let ca_cert = agora_tls::load_certs(&dir.join("ca.crt")).unwrap();
    let pem = std::fs::read(dir.join("crl.pem")).unwrap();
    let crl_der: rustls_pki_types::CertificateRevocationListDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let parsed = agora_tls::crl::parse_crl(crl_der, &ca_cert).unwrap();
    assert!(parsed.lists(&serial));
    assert!(parsed.lists(&[0x0a, 0x0b]));
    assert!(!parsed.lists(&[0x0a]));
    let renewed = ok(agora(&[
        "ca",
        "crl",
        "--renew",
        "--crl-days",
        "7",
        "--dir",
        &d,
    ]));
    assert!(renewed.contains("CRL re-issued"), "{renewed}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A master with --tls-crl: once node-1's certificate is revoked (and the
/// master picks up the new CRL), node-1's open AgentLink connection is
/// closed and it cannot attach again; node-2 still can.
#[tokio::test]
async fn a_revoked_agent_is_cut_off_and_cannot_attach_again() {
    let dir = std::env::temp_dir().join(format!("agora-crl-e2e-{}", uuid::Uuid::new_v4().simple()));
    let d = dir.to_str().unwrap().to_string();
    ok(agora(&["ca", "init", "--dir", &d]));
    ok(agora(&[
        "ca",
        "issue",
        "--server",
        "master.test",
        "--dir",
        &d,
    ]));
    for n in ["node-1", "node-2"] {
        ok(agora(&["ca", "issue", "--agent", n, "--dir", &d]));
    }
    ok(agora(&["ca", "crl", "--renew", "--dir", &d]));
    let port = free_port();
    let master = format!("https://127.0.0.1:{port}");
    let m = Proc::spawn(
        Command::new(BIN)
            .args(["master", "--in-memory", "--insecure"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(dir.join("master.test.crt"))
            .arg("--tls-key")
            .arg(dir.join("master.test.key"))
            .arg("--tls-client-ca")
            .arg(dir.join("ca.crt"))
            .arg("--tls-crl")
            .arg(dir.join("crl.pem")),
        dir.join("master.log"),
    );
    let node1 = agent(&dir, &master, "node-1", "node-1");
    eventually(LONG, async || {
        agent_list(&dir, &master).filter(|s| s.contains("\"node-1\""))
    })
    .await
    .unwrap_or_else(|_| panic!("node-1 never attached; master log:\n{}", m.log()));

    let out = ok(agora(&[
        "ca",
        "revoke",
        dir.join("node-1.crt").to_str().unwrap(),
        "--dir",
        &d,
    ]));
    assert!(out.contains("revoked: serial"), "{out}");
    // The master re-reads the CRL (within 5 s) and closes node-1's link.
    eventually(LONG, async || {
        m.log()
            .contains("its client certificate is revoked")
            .then_some(())
    })
    .await
    .unwrap_or_else(|_| panic!("node-1 not cut off; master log:\n{}", m.log()));
    // node-1 reconnects and is refused at the handshake.
    eventually(LONG, async || {
        node1
            .log()
            .contains("cannot attach to the master over TLS")
            .then_some(())
    })
    .await
    .unwrap_or_else(|_| panic!("node-1 log:\n{}\nmaster:\n{}", node1.log(), m.log()));
    assert!(
        attach(&dir, &master, Some(("node-1", &dir)), "node-1", "")
            .await
            .is_err()
    );
    assert!(m.log().contains("revoked"), "{}", m.log());
    attach(&dir, &master, Some(("node-2", &dir)), "node-2", "")
        .await
        .unwrap();
    drop(node1);
    drop(m);
    let _ = std::fs::remove_dir_all(&dir);
}
