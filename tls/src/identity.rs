//! What the master checks on an agent's connection.

use crate::{ConnInfo, ServerTls};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// id-kp-serverAuth (1.3.6.1.5.5.7.3.1), DER contents.
const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// id-kp-clientAuth (1.3.6.1.5.5.7.3.2), DER contents.
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// Why an agent's connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(
        "no client certificate: an agent must present a certificate issued by the cluster CA \
         (`agora ca issue --agent HOSTNAME`, then `agora agent --tls-cert/--tls-key`)"
    )]
    NoCertificate,
    #[error(
        "the client certificate is not an agent certificate of the cluster CA ({0}); \
         agent certificates come from `agora ca issue --agent HOSTNAME`"
    )]
    NotAgent(String),
    #[error(
        "the agent registers as {hostname:?} but its certificate is not issued for that name ({reason}); \
         issue one with `agora ca issue --agent {hostname}` or start the agent with --hostname matching its certificate"
    )]
    NameMismatch { hostname: String, reason: String },
}

/// Checks that the first certificate in the PEM file `cert` names `host`
/// (DNS or IP subject alternative name): an agent can warn at startup when
/// the master would refuse it.
pub fn cert_names(cert: &std::path::Path, host: &str) -> Result<(), PeerError> {
    let leaf = crate::load_certs(cert)
        .map_err(|e| PeerError::NotAgent(e.to_string()))?
        .swap_remove(0);
    AgentIdentity { leaf }.check_hostname(host)
}

/// An agent whose certificate verified against the cluster CA with both
/// usages an agent certificate carries (clientAuth and serverAuth).
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    leaf: CertificateDer<'static>,
}

impl AgentIdentity {
    /// Checks the connection's client certificate. The handshake already
    /// verified it against the client CA (chain, validity, clientAuth); this
    /// also requires both usages explicitly, which a client (operator) or
    /// server certificate of the same CA does not have.
    pub fn verify(tls: &ServerTls, conn: Option<&ConnInfo>) -> Result<AgentIdentity, PeerError> {
        let chain = conn
            .and_then(|c| c.peer_certs.clone())
            .ok_or(PeerError::NoCertificate)?;
        let (leaf, intermediates) = chain.split_first().ok_or(PeerError::NoCertificate)?;
        let anchors = tls
            .client_anchors()
            .map_err(|e| PeerError::NotAgent(e.to_string()))?;
        if anchors.is_empty() {
            return Err(PeerError::NotAgent(
                "the master has no client CA configured (--tls-client-ca)".into(),
            ));
        }
        let ee = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| PeerError::NotAgent(format!("unparsable certificate: {e}")))?;
        let now = UnixTime::now();
        for (usage, what) in [
            (EKU_CLIENT_AUTH, "clientAuth"),
            (EKU_SERVER_AUTH, "serverAuth"),
        ] {
            ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                intermediates,
                now,
                webpki::KeyUsage::required(usage),
                None,
                None,
            )
            .map_err(|e| PeerError::NotAgent(format!("{what}: {e}")))?;
        }
        Ok(AgentIdentity { leaf: leaf.clone() })
    }

    /// Checks that the certificate names `hostname` (a DNS or IP subject
    /// alternative name).
    pub fn check_hostname(&self, hostname: &str) -> Result<(), PeerError> {
        let mismatch = |reason: String| PeerError::NameMismatch {
            hostname: hostname.to_string(),
            reason,
        };
        let name = ServerName::try_from(hostname.to_string())
            .map_err(|e| mismatch(format!("not a DNS name or IP address: {e}")))?;
        let ee = webpki::EndEntityCert::try_from(&self.leaf)
            .map_err(|e| mismatch(format!("unparsable certificate: {e}")))?;
        ee.verify_is_valid_for_subject_name(&name)
            .map_err(|e| mismatch(e.to_string()))
    }
}
