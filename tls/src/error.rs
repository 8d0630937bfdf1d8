use std::path::PathBuf;

/// What went wrong building a TLS config, and where.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (expected -----BEGIN PRIVATE KEY-----)")]
    NoKey { path: PathBuf },
    #[error("the client CA {path} cannot be used: {message}")]
    ClientCa { path: PathBuf, message: String },
    #[error("the CRL {path} cannot be used: {message} (the previous CRL, if any, stays in force)")]
    Crl { path: PathBuf, message: String },
    #[error("certificate {cert} and key {key} do not make a usable pair: {message}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error(
        "{address} is an https address but no CA certificate was given to verify it \
         (pass --tls-ca / --ca-cert FILE, usually the cluster's ca.crt from `agora ca init`)"
    )]
    NoCaForHttps { address: String },
}
