//! The server side: reload on change, mutual TLS and the agent checks.

use agora_tls::ca::{Ca, Kind};
use agora_tls::{AgentIdentity, ConnInfo, PeerError, ServerTls, ServerTlsFiles};
use futures::StreamExt;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("agora-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn client(ca: &Path, identity: Option<(&Path, &Path)>) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(Arc::new(agora_tls::client_config(ca, identity).unwrap()))
}

/// Handshakes with the server and returns the leaf certificate it served.
async fn served(
    addr: std::net::SocketAddr,
    c: &tokio_rustls::TlsConnector,
) -> std::io::Result<CertificateDer<'static>> {
    let tcp = TcpStream::connect(addr).await?;
    let s = c
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    // Read nothing: the handshake is complete once connect returns.
    Ok(s.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned())
}

/// Serves `tls` and hands each accepted connection's info to the test.
async fn serve(
    tls: ServerTls,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<ConnInfo>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut inc = agora_tls::incoming(l, Some(tls));
    tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Some(Ok(c)) = inc.next().await {
            let _ = tx.send(c.info());
            keep.push(c);
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn swapped_files_are_served_and_a_broken_file_keeps_the_old() {
    let d = Dir::new("reload");
    let ca = Ca::generate(10).unwrap();
    let ca_path = d.write("ca.crt", &ca.cert_pem());
    let a = ca.issue(Kind::Server, "master", &[], 1).unwrap();
    let files = ServerTlsFiles {
        cert: d.write("server.crt", &a.cert_pem),
        key: d.write("server.key", &a.key_pem),
        client_ca: None,
        crl: None,
    };
    let tls = ServerTls::load(files.clone()).unwrap();
    let (addr, _infos) = serve(tls.clone()).await;
    let c = client(&ca_path, None);
    assert_eq!(served(addr, &c).await.unwrap(), der(&a.cert_pem));
    assert!(!tls.reload_if_changed(), "nothing changed");

    // New files (as a renewal writes them): the next connection gets them.
    let b = ca.issue(Kind::Server, "master", &[], 2).unwrap();
    std::fs::write(&files.key, &b.key_pem).unwrap();
    std::fs::write(&files.cert, &b.cert_pem).unwrap();
    assert!(tls.reload_if_changed());
    assert_eq!(served(addr, &c).await.unwrap(), der(&b.cert_pem));

    // A broken certificate: the old pair stays in force.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    assert!(!tls.reload_if_changed());
    assert!(tls.reload().is_err());
    assert_eq!(served(addr, &c).await.unwrap(), der(&b.cert_pem));
    // A key that does not match the certificate: refused too.
    let e = ca.issue(Kind::Server, "master", &[], 3).unwrap();
    std::fs::write(&files.cert, &e.cert_pem).unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("do not make a usable pair"), "{err}");
    assert_eq!(served(addr, &c).await.unwrap(), der(&b.cert_pem));
}

/// A renewal that completes while a reload is reading the files (the key
/// written just after the certificate) is picked up on the next check, not
/// taken for the broken state that attempt saw.
#[cfg(unix)]
#[test]
fn a_change_during_a_failed_reload_is_retried() {
    use std::io::Write;
    let d = Dir::new("reload-race");
    let ca = Ca::generate(10).unwrap();
    let a = ca.issue(Kind::Server, "master", &[], 1).unwrap();
    let files = ServerTlsFiles {
        cert: d.write("server.crt", &a.cert_pem),
        key: d.write("server.key", &a.key_pem),
        client_ca: None,
        crl: None,
    };
    let tls = ServerTls::load(files.clone()).unwrap();
    let b = ca.issue(Kind::Server, "master", &[], 2).unwrap();
    std::fs::write(&files.cert, &b.cert_pem).unwrap();
    // The key is a FIFO: the reload blocks reading it until the test writes.
    std::fs::remove_file(&files.key).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&files.key)
            .status()
            .unwrap()
            .success()
    );
    let attempt = {
        let tls = tls.clone();
        std::thread::spawn(move || tls.reload_if_changed())
    };
    // Opens once the reload has opened the key for reading.
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(&files.key)
        .unwrap();
    // The renewal completes while that attempt waits...
    let good = d.write("server.key.new", &b.key_pem);
    std::fs::rename(&good, &files.key).unwrap();
    // ...and the attempt reads a broken key.
    fifo.write_all(b"not a key\n").unwrap();
    drop(fifo);
    assert!(!attempt.join().unwrap(), "that attempt read a broken key");
    assert!(
        tls.reload_if_changed(),
        "the completed renewal is picked up on the next check"
    );
}

#[tokio::test]
async fn the_watcher_picks_up_new_files() {
    let d = Dir::new("watch");
    let ca = Ca::generate(10).unwrap();
    let ca_path = d.write("ca.crt", &ca.cert_pem());
    let a = ca.issue(Kind::Server, "master", &[], 1).unwrap();
    let files = ServerTlsFiles {
        cert: d.write("server.crt", &a.cert_pem),
        key: d.write("server.key", &a.key_pem),
        client_ca: None,
        crl: None,
    };
    let tls = ServerTls::load(files.clone()).unwrap();
    let _watch = tls.watch(Duration::from_millis(100));
    let (addr, _infos) = serve(tls.clone()).await;
    let c = client(&ca_path, None);
    let b = ca.issue(Kind::Server, "master", &[], 2).unwrap();
    std::fs::write(&files.key, &b.key_pem).unwrap();
    std::fs::write(&files.cert, &b.cert_pem).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if served(addr, &c).await.unwrap() == der(&b.cert_pem) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn agents_are_told_apart_by_certificate() {
    let d = Dir::new("mtls");
    let ca = Ca::generate(10).unwrap();
    let ca_path = d.write("ca.crt", &ca.cert_pem());
    let srv = ca.issue(Kind::Server, "master", &[], 1).unwrap();
    let tls = ServerTls::load(ServerTlsFiles {
        cert: d.write("server.crt", &srv.cert_pem),
        key: d.write("server.key", &srv.key_pem),
        client_ca: Some(ca_path.clone()),
        crl: None,
    })
    .unwrap();
    let (addr, mut infos) = serve(tls.clone()).await;
    let with = |name: &str, issued: &agora_tls::ca::Issued| {
        let c = d.write(&format!("{name}.crt"), &issued.cert_pem);
        let k = d.write(&format!("{name}.key"), &issued.key_pem);
        client(&ca_path, Some((&c, &k)))
    };

    // No certificate: connects (frameworks, operators), but is no agent.
    served(addr, &client(&ca_path, None)).await.unwrap();
    let info = infos.recv().await.unwrap();
    assert!(info.tls && info.peer_certs.is_none());
    assert!(matches!(
        AgentIdentity::verify(&tls, Some(&info)),
        Err(PeerError::NoCertificate)
    ));

    // An agent certificate for node-1.
    let agent = ca.issue(Kind::Agent, "node-1", &[], 1).unwrap();
    let c = with("agent", &agent);
    served(addr, &c).await.unwrap();
    let info = infos.recv().await.unwrap();
    let id = AgentIdentity::verify(&tls, Some(&info)).unwrap();
    id.check_hostname("node-1").unwrap();
    let wrong = id.check_hostname("node-2").unwrap_err();
    assert!(matches!(wrong, PeerError::NameMismatch { .. }), "{wrong}");
    assert!(
        wrong.to_string().contains("agora ca issue --agent node-2"),
        "{wrong}"
    );

    // A client (operator) certificate of the same CA is no agent.
    let op = ca.issue(Kind::Client, "alice", &[], 1).unwrap();
    served(addr, &with("alice", &op)).await.unwrap();
    let info = infos.recv().await.unwrap();
    let e = AgentIdentity::verify(&tls, Some(&info)).unwrap_err();
    assert!(matches!(e, PeerError::NotAgent(_)), "{e}");

    // Refused in the handshake: another CA, expired.
    let other = Ca::generate(10).unwrap();
    let foreign = other.issue(Kind::Agent, "node-1", &[], 1).unwrap();
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
    for (name, issued) in [("foreign", &foreign), ("expired", &expired)] {
        let c = with(name, issued);
        let tcp = TcpStream::connect(addr).await.unwrap();
        let r = async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = c
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await?;
            s.write_all(b"x").await?;
            let mut b = [0u8; 1];
            s.read(&mut b).await
        }
        .await;
        assert!(
            r.is_err(),
            "{name}: the server must refuse the handshake, got {r:?}"
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), infos.recv())
            .await
            .is_err(),
        "no refused connection reaches the server"
    );
}
