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
