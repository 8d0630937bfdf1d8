//! The cluster CA (`agora ca`): an ECDSA P-256 root that issues server,
//! agent and client certificates.
//!
//! The CA's subject is derived from its key (`Agora cluster CA <key id>`),
//! so the CA can be rebuilt from `ca.key` alone to sign; every issued
//! certificate is verified against `ca.crt` before it is written, which
//! catches a `ca.key` that does not belong to `ca.crt`.

use crate::pem::pem_encode;
use crate::{TlsError, load_certs, load_key};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The CA certificate's file name in a CA directory.
pub const CA_CERT: &str = "ca.crt";
/// The CA key's file name in a CA directory (mode 0600).
pub const CA_KEY: &str = "ca.key";
/// Validity of a new CA.
pub const CA_DAYS: i64 = 3650;
/// Default validity of a leaf certificate.
pub const LEAF_DAYS: i64 = 90;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(
        "a CA already exists in {0} (ca.crt or ca.key is there); refusing to overwrite it. \
         Use it, or pass --dir for a new one"
    )]
    Exists(PathBuf),
    #[error(
        "no CA in {dir}: {source}. Create one with `agora ca init --dir {dir}`, or point --dir at it"
    )]
    Missing { dir: PathBuf, source: TlsError },
    #[error("{path} already exists; refusing to overwrite it (remove it first to re-issue)")]
    FileExists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid name {name:?}: {message}")]
    Name { name: String, message: String },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error(
        "the issued certificate does not verify against {ca}: {message} (does ca.key belong to ca.crt?)"
    )]
    SelfCheck { ca: PathBuf, message: String },
    #[error("--days must be at least 1 (got {0})")]
    Days(i64),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serial number {serial:?} {message} (give it in hex, e.g. 3a:4b:5c or 3a4b5c)")]
    Serial { serial: String, message: String },
    #[error(
        "{path} line {line} is not SERIAL<TAB>REVOKED_AT<TAB>KIND<TAB>NAME; fix or remove the line \
         (the file is written by `agora ca revoke`)"
    )]
    RevokedFile { path: PathBuf, line: usize },
    #[error(
        "{cert} cannot be revoked by the CA {ca}: {message}. Revoke it in the directory of the CA \
         that issued it, or by serial (--serial)"
    )]
    NotIssued {
        cert: PathBuf,
        ca: PathBuf,
        message: String,
    },
}

/// What a certificate is for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A server (master, services API): serverAuth.
    Server,
    /// An agent: clientAuth (to the master) and serverAuth (its own API).
    Agent,
    /// An operator or framework client: clientAuth.
    Client,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Server => "server",
            Kind::Agent => "agent",
            Kind::Client => "client",
        }
    }

    fn usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Kind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Kind::Agent => vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
            Kind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        }
    }
}

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM). Never log it.
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A loaded (or new) cluster CA.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    cert: CertificateDer<'static>,
    cert_path: PathBuf,
}

fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut p = CertificateParams::default();
    let id = p.key_identifier(key);
    let hex: String = id.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Agora");
    dn.push(DnType::CommonName, format!("Agora cluster CA {hex}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn san(name: &str) -> Result<SanType, CaError> {
    let bad = |message: String| CaError::Name {
        name: name.to_string(),
        message,
    };
    if let Ok(ip) = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SanType::IpAddress(ip));
    }
    // Names must be usable to verify a peer (DNS syntax).
    ServerName::try_from(name.to_string())
        .map_err(|e| bad(format!("not a DNS name or IP address ({e})")))?;
    Ok(SanType::DnsName(
        name.try_into()
            .map_err(|e: rcgen::Error| bad(e.to_string()))?,
    ))
}

impl Ca {
    /// A new CA valid for `days`.
    pub fn generate(days: i64) -> Result<Ca, CaError> {
        if days < 1 {
            return Err(CaError::Days(days));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params(&key);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(days);
        let cert = params.self_signed(&key)?.der().clone();
        Ok(Ca {
            params,
            key,
            cert,
            cert_path: PathBuf::from(CA_CERT),
        })
    }

    /// The CA in `dir` (`ca.crt`, `ca.key`).
    pub fn load(dir: &Path) -> Result<Ca, CaError> {
        let missing = |source| CaError::Missing {
            dir: dir.to_owned(),
            source,
        };
        let cert_path = dir.join(CA_CERT);
        let cert = load_certs(&cert_path)
            .map_err(missing)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                missing(TlsError::NoCertificate {
                    path: cert_path.clone(),
                })
            })?;
        let key_path = dir.join(CA_KEY);
        let key = match load_key(&key_path).map_err(missing)? {
            PrivateKeyDer::Pkcs8(k) => {
                KeyPair::from_pkcs8_der_and_sign_algo(&k, &PKCS_ECDSA_P256_SHA256).map_err(|e| {
                    missing(TlsError::Pem {
                        path: key_path.clone(),
                        message: format!("not an ECDSA P-256 key: {e}"),
                    })
                })?
            }
            _ => {
                return Err(missing(TlsError::Pem {
                    path: key_path,
                    message: "expected a PKCS#8 key (-----BEGIN PRIVATE KEY-----)".into(),
                }));
            }
        };
        let params = ca_params(&key);
        Ok(Ca {
            params,
            key,
            cert,
            cert_path,
        })
    }

    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert)
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA key (PKCS#8 PEM). Never log it.
    pub fn key_pem(&self) -> String {
        pem_encode("PRIVATE KEY", self.key.serialized_der())
    }

    /// Issues a certificate valid from now for `days`.
    pub fn issue(
        &self,
        kind: Kind,
        name: &str,
        sans: &[String],
        days: i64,
    ) -> Result<Issued, CaError> {
        if days < 1 {
            return Err(CaError::Days(days));
        }
        let now = OffsetDateTime::now_utc();
        // A few minutes back: peers whose clocks are slightly behind accept it.
        self.issue_between(
            kind,
            name,
            sans,
            now - Duration::minutes(5),
            now + Duration::days(days),
        )
    }

    /// Issues a certificate valid between two instants (tests use this for
    /// expired certificates).
    pub fn issue_between(
        &self,
        kind: Kind,
        name: &str,
        sans: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Issued, CaError> {
        if name.is_empty() {
            return Err(CaError::Name {
                name: name.into(),
                message: "is empty".into(),
            });
        }
        let mut names: Vec<String> = Vec::new();
        if kind != Kind::Client {
            names.push(name.to_string());
        }
        if kind == Kind::Server {
            names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
        }
        names.extend(sans.iter().cloned());
        let mut seen = std::collections::BTreeSet::new();
        names.retain(|n| seen.insert(n.clone()));
        let mut p = CertificateParams::default();
        p.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Agora");
        dn.push(DnType::OrganizationalUnitName, kind.as_str());
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = kind.usages();
        p.use_authority_key_identifier_extension = true;
        p.not_before = not_before;
        p.not_after = not_after;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = p.signed_by(&key, &issuer)?;
        self.self_check(cert.der(), kind, not_before)?;
        Ok(Issued {
            cert_pem: pem_encode("CERTIFICATE", cert.der()),
            key_pem: pem_encode("PRIVATE KEY", key.serialized_der()),
        })
    }

    /// The new certificate must chain to `ca.crt` (checked at its start).
    fn self_check(
        &self,
        der: &CertificateDer<'_>,
        kind: Kind,
        not_before: OffsetDateTime,
    ) -> Result<(), CaError> {
        let fail = |message: String| CaError::SelfCheck {
            ca: self.cert_path.clone(),
            message,
        };
        let anchor =
            webpki::anchor_from_trusted_cert(&self.cert).map_err(|e| fail(e.to_string()))?;
        let ee = webpki::EndEntityCert::try_from(der).map_err(|e| fail(e.to_string()))?;
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            (not_before.unix_timestamp() + 60).max(0) as u64,
        ));
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            at,
            match kind {
                Kind::Server => webpki::KeyUsage::server_auth(),
                Kind::Agent | Kind::Client => webpki::KeyUsage::client_auth(),
            },
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| fail(e.to_string()))
    }
}

/// Writes `contents` to a new file with `mode` (the mode is set at creation:
/// the file is never readable by others, not even for an instant).
pub fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                CaError::FileExists {
                    path: path.to_owned(),
                }
            } else {
                CaError::Write {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|source| CaError::Write {
            path: path.to_owned(),
            source,
        })
}

/// `agora ca init`: a new CA in `dir` (created 0700 if missing). Returns
/// the certificate's path.
pub fn init_dir(dir: &Path, days: i64) -> Result<PathBuf, CaError> {
    let (crt, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if crt.exists() || key.exists() {
        return Err(CaError::Exists(dir.to_owned()));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CaError::Write {
            path: dir.to_owned(),
            source,
        })?;
    let ca = Ca::generate(days)?;
    // The key first: a crash in between leaves no usable-looking CA.
    write_new(&key, &ca.key_pem(), 0o600)?;
    write_new(&crt, &ca.cert_pem(), 0o644)?;
    Ok(crt)
}

use std::os::unix::fs::DirBuilderExt as _;

/// `agora ca issue`: `NAME.crt` and `NAME.key` (0600) in `out`, signed by
/// the CA in `dir`. Refuses to overwrite. Returns (cert, key) paths.
pub fn issue_to_dir(
    dir: &Path,
    out: &Path,
    kind: Kind,
    name: &str,
    sans: &[String],
    days: i64,
) -> Result<(PathBuf, PathBuf), CaError> {
    let ca = Ca::load(dir)?;
    let file = name.replace(['/', '\\'], "_");
    let (crt, key) = (
        out.join(format!("{file}.crt")),
        out.join(format!("{file}.key")),
    );
    for p in [&crt, &key] {
        if p.exists() {
            return Err(CaError::FileExists { path: p.clone() });
        }
    }
    let issued = ca.issue(kind, name, sans, days)?;
    write_new(&key, &issued.key_pem, 0o600)?;
    write_new(&crt, &issued.cert_pem, 0o644)?;
    Ok((crt, key))
}

/// The revoked serials' file name in a CA directory (one a line:
/// `SERIAL<TAB>REVOKED_AT<TAB>KIND<TAB>NAME`, Unix seconds; `#` comments).
pub const REVOKED: &str = "revoked.txt";
/// The CRL's file name in a CA directory (PEM, `-----BEGIN X509 CRL-----`).
pub const CRL: &str = "crl.pem";
/// Default lifetime of a CRL (its next update) in days.
pub const CRL_DAYS: i64 = 30;

/// A revoked certificate as recorded in [`REVOKED`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The serial number: lowercase hex of its DER integer contents.
    pub serial: String,
    /// When it was revoked (Unix seconds).
    pub revoked_at: i64,
    /// `agent`, `client` or `server` (the certificate's OU), `-` if unknown.
    pub kind: String,
    /// The certificate's common name, `-` if unknown (revoked by serial).
    pub name: String,
}

/// What to revoke.
#[derive(Debug, Clone)]
pub enum RevokeTarget {
    /// A certificate file (PEM) issued by the CA.
    Cert(PathBuf),
    /// A serial number in hex (`3a:4b…`, `0x3A4B…` or `3a4b…`).
    Serial(String),
}

/// The result of [`revoke_in_dir`].
#[derive(Debug, Clone)]
pub struct RevokeOutcome {
    pub entry: Revoked,
    /// It was revoked before (nothing added; the CRL re-issued).
    pub already: bool,
    pub crl: PathBuf,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A serial number in hex as the minimal DER integer contents.
pub fn parse_serial(s: &str) -> Result<Vec<u8>, CaError> {
    let bad = |message: &str| CaError::Serial {
        serial: s.to_string(),
        message: message.to_string(),
    };
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let mut digits: String = t
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    if digits.is_empty() {
        return Err(bad("is empty"));
    }
    if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad("is not hexadecimal"));
    }
    if digits.len() % 2 == 1 {
        digits.insert(0, '0');
    }
    let bytes: Vec<u8> = (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap_or(0))
        .collect();
    let norm = crate::crl::normalize_serial(&bytes);
    if norm.len() > 21 {
        return Err(bad("is longer than 20 bytes (RFC 5280)"));
    }
    Ok(norm)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 == 1 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The revoked certificates recorded in `dir` (none when the file is
/// missing).
pub fn read_revoked(dir: &Path) -> Result<Vec<Revoked>, CaError> {
    let path = dir.join(REVOKED);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(CaError::Read { path, source }),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let entry = match f.as_slice() {
            [serial, at, kind, name] => unhex(serial)
                .filter(|b| !b.is_empty())
                .and_then(|_| at.parse().ok())
                .map(|revoked_at| Revoked {
                    serial: serial.to_ascii_lowercase(),
                    revoked_at,
                    kind: kind.to_string(),
                    name: name.to_string(),
                }),
            _ => None,
        };
        out.push(entry.ok_or_else(|| CaError::RevokedFile {
            path: path.clone(),
            line: i + 1,
        })?);
    }
    Ok(out)
}

fn clean(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.is_empty() { "-".into() } else { s }
}

/// Replaces `path` with `contents` (a temporary file renamed over it).
fn write_replace(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, contents, mode)?;
    std::fs::rename(&tmp, path).map_err(|source| CaError::Write {
        path: path.to_owned(),
        source,
    })
}

fn write_revoked(dir: &Path, list: &[Revoked]) -> Result<(), CaError> {
    let mut text = String::from(
        "# Certificates revoked by this CA (agora ca revoke): serial, revoked at (Unix seconds), kind, name.\n\
         # crl.pem is made from this file: add with `agora ca revoke`; to un-revoke, delete the line\n\
         # and run `agora ca crl --renew`.\n",
    );
    for r in list {
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            r.serial,
            r.revoked_at,
            clean(&r.kind),
            clean(&r.name)
        ));
    }
    write_replace(&dir.join(REVOKED), &text, 0o644)
}

impl Ca {
    /// A CRL listing `revoked`, valid (next update) for `days`, PEM.
    pub fn crl(&self, revoked: &[Revoked], days: i64) -> Result<String, CaError> {
        use rcgen::{
            CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber,
        };
        if days < 1 {
            return Err(CaError::Days(days));
        }
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .map(|r| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&unhex(&r.serial).ok_or_else(
                        || CaError::Serial {
                            serial: r.serial.clone(),
                            message: "is not hexadecimal".into(),
                        },
                    )?),
                    revocation_time: OffsetDateTime::from_unix_timestamp(r.revoked_at)
                        .unwrap_or(now),
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, CaError>>()?;
        // Increasing with every CRL this CA issues (RFC 5280 5.2.3).
        let number = u64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(1);
        let params = CertificateRevocationListParams {
            // A few minutes back, like certificates: peers slightly behind.
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(days),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.params, &self.key);
        let crl = params.signed_by(&issuer)?;
        // The CRL must verify against ca.crt (catches a ca.key of another CA).
        crate::crl::parse_crl(crl.der().clone(), std::slice::from_ref(&self.cert)).map_err(
            |message| CaError::SelfCheck {
                ca: self.cert_path.clone(),
                message,
            },
        )?;
        Ok(pem_encode("X509 CRL", crl.der()))
    }

    /// The serial, kind and name of a certificate this CA issued.
    fn identify(&self, cert: &Path) -> Result<(Vec<u8>, String, String), CaError> {
        let der = load_certs(cert)?.swap_remove(0);
        let bad = |message: String| CaError::NotIssued {
            cert: cert.to_owned(),
            ca: self.cert_path.clone(),
            message,
        };
        let (serial, issuer) = crate::crl::cert_serial(&der).map_err(bad)?;
        let anchor =
            webpki::anchor_from_trusted_cert(&self.cert).map_err(|e| bad(e.to_string()))?;
        if anchor.subject.as_ref() != issuer.as_slice() {
            return Err(bad("its issuer is another CA".into()));
        }
        let (cn, ou) = crate::crl::cert_subject(&der);
        Ok((
            serial,
            ou.unwrap_or_else(|| "-".into()),
            cn.unwrap_or_else(|| "-".into()),
        ))
    }
}

fn write_crl(ca: &Ca, dir: &Path, list: &[Revoked], days: i64) -> Result<PathBuf, CaError> {
    let pem = ca.crl(list, days)?;
    let path = dir.join(CRL);
    write_replace(&path, &pem, 0o644)?;
    Ok(path)
}

/// `agora ca revoke`: records the certificate's serial in `dir`'s
/// [`REVOKED`] and writes a new [`CRL`] valid for `crl_days`. Revoking a
/// revoked certificate changes nothing but the CRL's dates.
pub fn revoke_in_dir(
    dir: &Path,
    target: &RevokeTarget,
    crl_days: i64,
) -> Result<RevokeOutcome, CaError> {
    let ca = Ca::load(dir)?;
    let (serial, kind, name) = match target {
        RevokeTarget::Cert(p) => ca.identify(p)?,
        RevokeTarget::Serial(s) => (parse_serial(s)?, "-".into(), "-".into()),
    };
    let serial = hex(&serial);
    let mut list = read_revoked(dir)?;
    let (entry, already) = match list.iter().find(|r| r.serial == serial) {
        Some(r) => (r.clone(), true),
        None => {
            let entry = Revoked {
                serial,
                revoked_at: OffsetDateTime::now_utc().unix_timestamp(),
                kind: clean(&kind),
                name: clean(&name),
            };
            list.push(entry.clone());
            (entry, false)
        }
    };
    // The CRL is built (and checked) before the list is written: a failure
    // leaves both as they were.
    let pem = ca.crl(&list, crl_days)?;
    if !already {
        write_revoked(dir, &list)?;
    }
    let crl = dir.join(CRL);
    write_replace(&crl, &pem, 0o644)?;
    Ok(RevokeOutcome {
        entry,
        already,
        crl,
    })
}

/// `agora ca crl --renew`: a new [`CRL`] from the recorded revocations
/// (an empty one when nothing is revoked), valid for `crl_days`.
pub fn renew_crl(dir: &Path, crl_days: i64) -> Result<PathBuf, CaError> {
    let ca = Ca::load(dir)?;
    let list = read_revoked(dir)?;
    write_crl(&ca, dir, &list, crl_days)
}
