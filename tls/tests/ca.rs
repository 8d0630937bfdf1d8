//! Issuance: usages, names, validity, files.

use agora_tls::ca::{self, Ca, CaError, Kind};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn at(offset_days: i64) -> UnixTime {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    UnixTime::since_unix_epoch(Duration::from_secs((now + offset_days * 86_400) as u64))
}

/// Whether `cert` verifies against `ca` for this required usage at `time`.
fn verifies(
    ca: &Ca,
    cert: &CertificateDer<'_>,
    usage: &'static [u8],
    time: UnixTime,
) -> Result<(), String> {
    let anchor = webpki::anchor_from_trusted_cert(ca.cert_der()).unwrap();
    let ee = webpki::EndEntityCert::try_from(cert).unwrap();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        time,
        webpki::KeyUsage::required(usage),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn valid_for(cert: &CertificateDer<'_>, name: &str) -> bool {
    let ee = webpki::EndEntityCert::try_from(cert).unwrap();
    ee.verify_is_valid_for_subject_name(&ServerName::try_from(name.to_string()).unwrap())
        .is_ok()
}

#[test]
fn each_kind_gets_its_usages() {
    let ca = Ca::generate(10).unwrap();
    let now = at(0);
    let server = der(&ca.issue(Kind::Server, "master", &[], 90).unwrap().cert_pem);
    assert!(verifies(&ca, &server, SERVER_AUTH, now).is_ok());
    assert!(
        verifies(&ca, &server, CLIENT_AUTH, now).is_err(),
        "server certs cannot authenticate clients"
    );

    let agent = der(&ca.issue(Kind::Agent, "node-1", &[], 90).unwrap().cert_pem);
    assert!(
        verifies(&ca, &agent, SERVER_AUTH, now).is_ok(),
        "agents serve an API"
    );
    assert!(
        verifies(&ca, &agent, CLIENT_AUTH, now).is_ok(),
        "agents are clients of the master"
    );

    let client = der(&ca.issue(Kind::Client, "alice", &[], 90).unwrap().cert_pem);
    assert!(verifies(&ca, &client, CLIENT_AUTH, now).is_ok());
    assert!(verifies(&ca, &client, SERVER_AUTH, now).is_err());
}

#[test]
fn names_server_defaults_and_extra_sans() {
    let ca = Ca::generate(10).unwrap();
    let server = der(&ca
        .issue(
            Kind::Server,
            "master.example",
            &["10.0.0.5".into(), "m2.example".into()],
            90,
        )
        .unwrap()
        .cert_pem);
    for n in [
        "master.example",
        "localhost",
        "127.0.0.1",
        "10.0.0.5",
        "m2.example",
    ] {
        assert!(valid_for(&server, n), "{n}");
    }
    assert!(!valid_for(&server, "other.example"));
    let agent = der(&ca.issue(Kind::Agent, "node-1", &[], 90).unwrap().cert_pem);
    assert!(valid_for(&agent, "node-1"));
    assert!(
        !valid_for(&agent, "localhost"),
        "only servers get localhost by default"
    );
    assert!(!valid_for(&agent, "node-2"));
    let bad = ca.issue(Kind::Server, "master", &["not a name!".into()], 90);
    assert!(matches!(bad, Err(CaError::Name { .. })), "{bad:?}");
}

#[test]
fn validity_follows_days() {
    let ca = Ca::generate(3650).unwrap();
    let leaf = der(&ca.issue(Kind::Agent, "node-1", &[], 90).unwrap().cert_pem);
    assert!(verifies(&ca, &leaf, CLIENT_AUTH, at(89)).is_ok());
    let late = verifies(&ca, &leaf, CLIENT_AUTH, at(91)).unwrap_err();
    assert!(late.contains("Expired"), "{late}");
    let short = der(&ca.issue(Kind::Agent, "node-1", &[], 2).unwrap().cert_pem);
    assert!(verifies(&ca, &short, CLIENT_AUTH, at(3)).is_err());
    assert!(matches!(
        ca.issue(Kind::Agent, "n", &[], 0),
        Err(CaError::Days(0))
    ));
}

#[test]
fn another_ca_does_not_verify() {
    let ours = Ca::generate(10).unwrap();
    let theirs = Ca::generate(10).unwrap();
    let leaf = der(&theirs
        .issue(Kind::Agent, "node-1", &[], 90)
        .unwrap()
        .cert_pem);
    assert!(verifies(&ours, &leaf, CLIENT_AUTH, at(0)).is_err());
}

#[test]
fn init_writes_a_private_key_and_refuses_to_overwrite() {
    let dir = std::env::temp_dir().join(format!("agora-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let crt = ca::init_dir(&dir, 365).unwrap();
    assert_eq!(crt, dir.join("ca.crt"));
    let mode = std::fs::metadata(dir.join("ca.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let again = ca::init_dir(&dir, 365).unwrap_err();
    assert!(matches!(again, CaError::Exists(_)), "{again}");

    // Issuing from the files: the CA is rebuilt from ca.key and checked against ca.crt.
    let (c, k) = ca::issue_to_dir(&dir, &dir, Kind::Agent, "node-1", &[], 90).unwrap();
    assert_eq!(
        std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let loaded = Ca::load(&dir).unwrap();
    let leaf = der(&std::fs::read_to_string(&c).unwrap());
    assert!(verifies(&loaded, &leaf, CLIENT_AUTH, at(0)).is_ok());
    let twice = ca::issue_to_dir(&dir, &dir, Kind::Agent, "node-1", &[], 90).unwrap_err();
    assert!(matches!(twice, CaError::FileExists { .. }), "{twice}");

    // A key that does not belong to the certificate is caught before writing.
    let other = Ca::generate(10).unwrap();
    std::fs::remove_file(dir.join("ca.key")).unwrap();
    ca::write_new(&dir.join("ca.key"), &other.key_pem(), 0o600).unwrap();
    let wrong = ca::issue_to_dir(&dir, &dir, Kind::Agent, "node-2", &[], 90).unwrap_err();
    assert!(matches!(wrong, CaError::SelfCheck { .. }), "{wrong}");
    assert!(!dir.join("node-2.crt").exists());

    let missing = Ca::load(&dir.join("nope")).err().unwrap();
    assert!(missing.to_string().contains("agora ca init"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn issued_key_is_redacted_in_debug() {
    let ca = Ca::generate(10).unwrap();
    let issued = ca.issue(Kind::Client, "alice", &[], 1).unwrap();
    let dbg = format!("{issued:?}");
    assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
}
