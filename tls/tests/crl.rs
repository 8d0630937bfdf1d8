//! Revocation: `revoke_in_dir` and the CRL it writes, servers that check
//! client certificates against it, reloads, and connections cut off.

use agora_tls::ca::{self, Kind, RevokeTarget};
use agora_tls::{ServerTls, ServerTlsFiles};
use futures::StreamExt;
use rustls_pki_types::ServerName;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("agora-crl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA in `d/ca` with a server certificate, agents node-1 and node-2.
fn setup(d: &Dir) -> PathBuf {
    let dir = d.0.join("ca");
    ca::init_dir(&dir, 10).unwrap();
    for (kind, name) in [
        (Kind::Server, "master"),
        (Kind::Agent, "node-1"),
        (Kind::Agent, "node-2"),
    ] {
        ca::issue_to_dir(&dir, &dir, kind, name, &[], 1).unwrap();
    }
    dir
}

fn files(dir: &Path, crl: Option<PathBuf>) -> ServerTlsFiles {
    ServerTlsFiles {
        cert: dir.join("master.crt"),
        key: dir.join("master.key"),
        client_ca: Some(dir.join("ca.crt")),
        crl,
    }
}

/// Serves `tls`, echoing every byte on every connection.
async fn echo(tls: ServerTls) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut inc = agora_tls::incoming(l, Some(tls));
    tokio::spawn(async move {
        while let Some(Ok(mut c)) = inc.next().await {
            tokio::spawn(async move {
                let mut b = [0u8; 64];
                while let Ok(n @ 1..) = c.read(&mut b).await {
                    if c.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

type Client = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects as agent `name` and checks one echo round trip (which fails
/// when the server refused the certificate).
async fn connect(addr: std::net::SocketAddr, dir: &Path, name: &str) -> std::io::Result<Client> {
    let cfg = agora_tls::client_config(
        &dir.join("ca.crt"),
        Some((
            &dir.join(format!("{name}.crt")),
            &dir.join(format!("{name}.key")),
        )),
    )
    .unwrap();
    let c = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await?;
    let mut s = c
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    round_trip(&mut s).await?;
    Ok(s)
}

async fn round_trip(s: &mut Client) -> std::io::Result<()> {
    s.write_all(b"ping").await?;
    let mut b = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(std::io::Error::other("no echo")),
    }
}

#[tokio::test]
async fn a_revoked_client_certificate_is_refused_and_others_are_accepted() {
    let d = Dir::new("refuse");
    let dir = setup(&d);
    // Without a CRL node-1 is welcome.
    let plain = echo(ServerTls::load(files(&dir, None)).unwrap()).await;
    connect(plain, &dir, "node-1").await.unwrap();

    let out = ca::revoke_in_dir(&dir, &RevokeTarget::Cert(dir.join("node-1.crt")), 30).unwrap();
    assert!(!out.already);
    let tls = ServerTls::load(files(&dir, Some(out.crl))).unwrap();
    assert_eq!(tls.crl_times().len(), 1);
    let addr = echo(tls).await;
    let e = connect(addr, &dir, "node-1").await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("revoked"), "{e}");
    connect(addr, &dir, "node-2").await.unwrap();
}

#[tokio::test]
async fn a_reloaded_crl_refuses_the_certificate_and_cuts_off_its_connections() {
    let d = Dir::new("reload");
    let dir = setup(&d);
    let crl = ca::renew_crl(&dir, 30).unwrap();
    let tls = ServerTls::load(files(&dir, Some(crl))).unwrap();
    let addr = echo(tls.clone()).await;
    let mut one = connect(addr, &dir, "node-1").await.unwrap();
    let mut two = connect(addr, &dir, "node-2").await.unwrap();

    ca::revoke_in_dir(&dir, &RevokeTarget::Cert(dir.join("node-1.crt")), 30).unwrap();
    assert!(tls.reload_if_changed(), "the new CRL is picked up");
    assert!(connect(addr, &dir, "node-1").await.is_err());
    // node-1's open connection is closed; node-2's is not.
    assert!(round_trip(&mut one).await.is_err());
    round_trip(&mut two).await.unwrap();
    connect(addr, &dir, "node-2").await.unwrap();
}

#[tokio::test]
async fn a_broken_or_foreign_crl_keeps_the_previous_config() {
    let d = Dir::new("broken");
    let dir = setup(&d);
    let out = ca::revoke_in_dir(&dir, &RevokeTarget::Cert(dir.join("node-1.crt")), 30).unwrap();
    let good = std::fs::read(&out.crl).unwrap();
    let tls = ServerTls::load(files(&dir, Some(out.crl.clone()))).unwrap();
    let addr = echo(tls.clone()).await;

    // Not PEM; a CRL with a damaged signature; a CRL of another CA.
    let mut tampered = rustls_pki_types::pem::PemObject::from_pem_slice(&good)
        .map(|c: rustls_pki_types::CertificateRevocationListDer<'_>| c.as_ref().to_vec())
        .unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let other = Dir::new("broken-other");
    let other_dir = other.0.join("ca");
    ca::init_dir(&other_dir, 10).unwrap();
    let foreign = std::fs::read(ca::renew_crl(&other_dir, 30).unwrap()).unwrap();
    for (what, bytes, msg) in [
        (
            "garbage",
            b"-----BEGIN X509 CRL-----\nnot base64\n".to_vec(),
            "",
        ),
        (
            "tampered",
            agora_tls::pem_encode("X509 CRL", &tampered).into_bytes(),
            "signature does not verify",
        ),
        ("foreign", foreign, "not issued by the client CA"),
    ] {
        std::fs::write(&out.crl, &bytes).unwrap();
        assert!(!tls.reload_if_changed(), "{what}: not reloaded");
        let e = tls.reload().unwrap_err().to_string();
        assert!(e.contains("CRL") && e.contains(msg), "{what}: {e}");
        // The old CRL is in force: node-1 refused, node-2 accepted.
        assert!(connect(addr, &dir, "node-1").await.is_err(), "{what}");
        connect(addr, &dir, "node-2").await.unwrap();
    }
    // The same files fail to load at startup.
    let e = ServerTls::load(files(&dir, Some(out.crl.clone())))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not issued by the client CA"), "{e}");
    // A CRL needs a client CA.
    std::fs::write(&out.crl, &good).unwrap();
    let mut f = files(&dir, Some(out.crl.clone()));
    f.client_ca = None;
    let e = ServerTls::load(f).unwrap_err().to_string();
    assert!(e.contains("needs a client CA"), "{e}");
}

#[test]
fn revoking_records_the_serial_once_and_writes_a_crl_of_the_ca() {
    let d = Dir::new("revoke");
    let dir = setup(&d);
    let cert = dir.join("node-1.crt");
    let first = ca::revoke_in_dir(&dir, &RevokeTarget::Cert(cert.clone()), 30).unwrap();
    assert_eq!(
        (first.entry.kind.as_str(), first.entry.name.as_str()),
        ("agent", "node-1")
    );
    let der = agora_tls::load_certs(&cert).unwrap().swap_remove(0);
    let (serial, _) = agora_tls::crl::cert_serial(&der).unwrap();
    let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(first.entry.serial, hex);

    // Again, and by serial in another notation: nothing added.
    let again = ca::revoke_in_dir(&dir, &RevokeTarget::Cert(cert.clone()), 30).unwrap();
    assert!(again.already);
    let colons = serial
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let by_serial = ca::revoke_in_dir(&dir, &RevokeTarget::Serial(colons), 30).unwrap();
    assert!(by_serial.already);
    let list = ca::read_revoked(&dir).unwrap();
    assert_eq!(list, vec![first.entry.clone()]);

    // A serial of a lost certificate.
    let lost = ca::revoke_in_dir(&dir, &RevokeTarget::Serial("0x0A0b".into()), 30).unwrap();
    assert_eq!(
        (lost.entry.serial.as_str(), lost.entry.kind.as_str()),
        ("0a0b", "-")
    );
    assert_eq!(ca::read_revoked(&dir).unwrap().len(), 2);
    assert!(ca::revoke_in_dir(&dir, &RevokeTarget::Serial("xyz".into()), 30).is_err());

    // The CRL is signed by the CA, lists both, and lasts 30 days.
    let ca_cert = agora_tls::load_certs(&dir.join("ca.crt")).unwrap();
    let pem = std::fs::read(dir.join(ca::CRL)).unwrap();
    let crl_der: rustls_pki_types::CertificateRevocationListDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let crl = agora_tls::crl::parse_crl(crl_der.clone(), &ca_cert).unwrap();
    let (this, next) = (crl.this_update, crl.next_update.unwrap());
    assert!((next - this - 30 * 86_400 - 300).abs() < 5, "{this} {next}");
    let parsed = webpki::OwnedCertRevocationList::from_der(crl_der.as_ref()).unwrap();
    let parsed = webpki::CertRevocationList::from(parsed);
    for s in [serial, vec![0x0a, 0x0b]] {
        assert!(parsed.find_serial(&s).unwrap().is_some(), "{s:?} listed");
    }

    // A certificate of another CA cannot be revoked here.
    let other = Dir::new("revoke-other");
    let odir = other.0.join("ca");
    ca::init_dir(&odir, 10).unwrap();
    ca::issue_to_dir(&odir, &odir, Kind::Agent, "node-9", &[], 1).unwrap();
    let e = ca::revoke_in_dir(&dir, &RevokeTarget::Cert(odir.join("node-9.crt")), 30)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another CA"), "{e}");
    assert_eq!(ca::read_revoked(&dir).unwrap().len(), 2);
}
