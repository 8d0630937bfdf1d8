//! Certificate revocation lists (CRLs) for servers that verify client
//! certificates: loading a CRL file, checking that each CRL is signed by one
//! of the client CAs (a CRL of another CA, or a forged one, is refused at
//! load instead of failing every handshake later), and telling whether a
//! client certificate is revoked (to cut off connections made before a
//! revocation).

use crate::TlsError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use std::path::Path;
use webpki::{CertRevocationList, OwnedCertRevocationList};

/// One CRL of a CRL file, parsed and checked against a client CA.
#[derive(Debug)]
pub struct LoadedCrl {
    pub(crate) der: CertificateRevocationListDer<'static>,
    parsed: OwnedCertRevocationList,
    /// When the CRL was issued (Unix seconds).
    pub this_update: i64,
    /// When the CRL should be replaced (Unix seconds).
    pub next_update: Option<i64>,
}

impl LoadedCrl {
    /// Whether `serial` (DER integer contents) is in this CRL.
    pub fn lists(&self, serial: &[u8]) -> bool {
        CertRevocationList::from(self.parsed.clone())
            .find_serial(serial)
            .ok()
            .flatten()
            .is_some()
    }

    fn issuer(&self) -> Vec<u8> {
        CertRevocationList::from(self.parsed.clone())
            .issuer()
            .to_vec()
    }
}

/// Every CRL in the PEM file `path` (`-----BEGIN X509 CRL-----`), each of
/// which must be signed by one of `client_ca`.
pub fn load_crls(
    path: &Path,
    client_ca: &[CertificateDer<'static>],
) -> Result<Vec<LoadedCrl>, TlsError> {
    let bad = |message: String| TlsError::Crl {
        path: path.to_owned(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let ders = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if ders.is_empty() {
        return Err(bad(
            "holds no PEM CRL (expected -----BEGIN X509 CRL-----; `agora ca crl --renew` writes one)"
                .into(),
        ));
    }
    ders.into_iter()
        .map(|der| {
            let crl = parse_crl(der, client_ca).map_err(bad)?;
            Ok(crl)
        })
        .collect()
}

/// The (thisUpdate, nextUpdate) of every CRL in the PEM file `path`
/// (Unix seconds), without checking signatures (for listings).
pub fn crl_file_times(path: &Path) -> Result<Vec<(i64, Option<i64>)>, TlsError> {
    let bad = |message: String| TlsError::Crl {
        path: path.to_owned(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let ders = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if ders.is_empty() {
        return Err(bad("holds no PEM CRL".into()));
    }
    ders.iter()
        .map(|d| crl_times(d.as_ref()).ok_or_else(|| bad("not a CRL".into())))
        .collect()
}

/// Parses one CRL and checks its signature against the CA among `cas`
/// that issued it.
pub fn parse_crl(
    der: CertificateRevocationListDer<'static>,
    cas: &[CertificateDer<'static>],
) -> Result<LoadedCrl, String> {
    let parsed =
        OwnedCertRevocationList::from_der(der.as_ref()).map_err(|e| format!("not a CRL: {e}"))?;
    let (this_update, next_update) =
        crl_times(der.as_ref()).ok_or("not a CRL: bad update times")?;
    let crl = LoadedCrl {
        der,
        parsed,
        this_update,
        next_update,
    };
    let issuer = crl.issuer();
    let mut matched = false;
    for ca in cas {
        let anchor = webpki::anchor_from_trusted_cert(ca).map_err(|e| format!("client CA: {e}"))?;
        if anchor.subject.as_ref() != issuer.as_slice() {
            continue;
        }
        matched = true;
        if verify_signature(crl.der.as_ref(), anchor.subject_public_key_info.as_ref()).is_ok() {
            return Ok(crl);
        }
    }
    Err(if matched {
        "its signature does not verify with the client CA that it names as issuer \
         (a CRL from another CA key, or a corrupted file); re-issue it with `agora ca crl --renew`"
            .into()
    } else {
        "it was not issued by the client CA (--tls-client-ca); use the crl.pem of the CA \
         directory whose ca.crt is the client CA"
            .into()
    })
}

/// Whether the client certificate `leaf` is listed in one of `crls` of its
/// issuer.
pub(crate) fn is_revoked(crls: &[LoadedCrl], leaf: &CertificateDer<'_>) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    crls.iter()
        .any(|c| c.issuer().as_slice() == ee.issuer() && c.lists(ee.serial()))
}

/// The serial number of a certificate (DER integer contents, normalized)
/// and its issuer (raw DER name contents).
pub fn cert_serial(cert: &CertificateDer<'_>) -> Result<(Vec<u8>, Vec<u8>), String> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| e.to_string())?;
    Ok((normalize_serial(ee.serial()), ee.issuer().to_vec()))
}

/// A serial as the minimal positive DER integer contents.
pub fn normalize_serial(bytes: &[u8]) -> Vec<u8> {
    let mut b: &[u8] = bytes;
    while b.len() > 1 && b[0] == 0 {
        b = &b[1..];
    }
    let mut v = Vec::with_capacity(b.len() + 1);
    if b.first().is_some_and(|x| x & 0x80 != 0) {
        v.push(0);
    }
    v.extend_from_slice(b);
    if v.is_empty() {
        v.push(0);
    }
    v
}

/// Checks `signed` (a SEQUENCE of tbs, algorithm, BIT STRING signature)
/// against the SubjectPublicKeyInfo contents `spki`.
fn verify_signature(signed: &[u8], spki: &[u8]) -> Result<(), ()> {
    let mut outer = signed;
    let body = der::read(&mut outer, der::SEQUENCE).ok_or(())?;
    let mut body = body.value;
    let tbs = der::read(&mut body, der::SEQUENCE).ok_or(())?.full;
    let alg = der::read(&mut body, der::SEQUENCE).ok_or(())?.value;
    let sig = der::read(&mut body, der::BIT_STRING).ok_or(())?.value;
    let sig = sig.strip_prefix(&[0]).ok_or(())?;
    let mut key = spki;
    let key_alg = der::read(&mut key, der::SEQUENCE).ok_or(())?.value;
    let key_bits = der::read(&mut key, der::BIT_STRING).ok_or(())?.value;
    let key_bits = key_bits.strip_prefix(&[0]).ok_or(())?;
    let alg = webpki::ALL_VERIFICATION_ALGS
        .iter()
        .find(|a| a.public_key_alg_id().as_ref() == key_alg && a.signature_alg_id().as_ref() == alg)
        .ok_or(())?;
    alg.verify_signature(key_bits, tbs, sig).map_err(|_| ())
}

/// A CRL's thisUpdate and nextUpdate (Unix seconds).
pub fn crl_times(crl: &[u8]) -> Option<(i64, Option<i64>)> {
    let mut outer = crl;
    let mut body = der::read(&mut outer, der::SEQUENCE)?.value;
    let mut tbs = der::read(&mut body, der::SEQUENCE)?.value;
    if tbs.first() == Some(&der::INTEGER) {
        der::read(&mut tbs, der::INTEGER)?;
    }
    der::read(&mut tbs, der::SEQUENCE)?; // signature algorithm
    der::read(&mut tbs, der::SEQUENCE)?; // issuer
    let this = der::read_time(&mut tbs)?;
    let next = match tbs.first() {
        Some(&der::UTC_TIME | &der::GENERALIZED_TIME) => Some(der::read_time(&mut tbs)?),
        _ => None,
    };
    Some((this, next))
}

/// The subject's common name and organizational unit of a certificate
/// (for listings; `None` when absent).
pub fn cert_subject(cert: &CertificateDer<'_>) -> (Option<String>, Option<String>) {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return (None, None);
    };
    let mut name = ee.subject();
    let (mut cn, mut ou) = (None, None);
    // Name ::= SEQUENCE OF SET OF SEQUENCE { OID, value }
    while let Some(set) = der::read(&mut name, der::SET) {
        let mut set = set.value;
        while let Some(atv) = der::read(&mut set, der::SEQUENCE) {
            let mut atv = atv.value;
            let Some(oid) = der::read(&mut atv, der::OID) else {
                break;
            };
            let Some(value) = der::read_any(&mut atv) else {
                break;
            };
            let text = String::from_utf8_lossy(value.value).into_owned();
            match oid.value {
                [0x55, 0x04, 0x03] => cn = Some(text),
                [0x55, 0x04, 0x0b] => ou = Some(text),
                _ => {}
            }
        }
    }
    (cn, ou)
}

/// `secs` (Unix) as RFC 3339 UTC (`2026-01-02T03:04:05Z`).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A minimal DER reader (definite lengths, single-byte tags): enough to
/// walk the fields of a CRL and a certificate name that webpki does not
/// expose.
mod der {
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OID: u8 = 0x06;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;

    pub struct Tlv<'a> {
        pub tag: u8,
        pub value: &'a [u8],
        /// Tag, length and value.
        pub full: &'a [u8],
    }

    pub fn read_any<'a>(input: &mut &'a [u8]) -> Option<Tlv<'a>> {
        let all = *input;
        let (&tag, rest) = all.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let mut len = 0usize;
            for &b in &rest[..n] {
                len = (len << 8) | usize::from(b);
            }
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        let header = all.len() - rest.len();
        *input = &rest[len..];
        Some(Tlv {
            tag,
            value: &rest[..len],
            full: &all[..header + len],
        })
    }

    pub fn read<'a>(input: &mut &'a [u8], tag: u8) -> Option<Tlv<'a>> {
        let mut peek = *input;
        let t = read_any(&mut peek)?;
        if t.tag != tag {
            return None;
        }
        *input = peek;
        Some(t)
    }

    /// A UTCTime or GeneralizedTime (`…Z`) as Unix seconds.
    pub fn read_time(input: &mut &[u8]) -> Option<i64> {
        let t = read_any(input)?;
        let s = std::str::from_utf8(t.value).ok()?;
        let s = s.strip_suffix('Z')?;
        let (year, rest) = match t.tag {
            UTC_TIME if s.len() == 12 => {
                let yy: i64 = s[..2].parse().ok()?;
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
            }
            GENERALIZED_TIME if s.len() == 14 => (s[..4].parse().ok()?, &s[4..]),
            _ => return None,
        };
        if !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = |i: usize| -> i64 { rest[i..i + 2].parse().unwrap_or(0) };
        let (mo, d, h, mi, se) = (n(0), n(2), n(4), n(6), n(8));
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let y = if mo <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = (mo + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(days * 86_400 + h * 3600 + mi * 60 + se)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_323_045), "2026-01-02T03:04:05Z");
        let mut utc: &[u8] = b"\x17\x0d260102030405Z";
        assert_eq!(der::read_time(&mut utc), Some(1_767_323_045));
        let mut gen_: &[u8] = b"\x18\x0f20260102030405Z";
        assert_eq!(der::read_time(&mut gen_), Some(1_767_323_045));
    }

    #[test]
    fn serials_normalize() {
        assert_eq!(normalize_serial(&[0, 0, 1]), vec![1]);
        assert_eq!(normalize_serial(&[0x80]), vec![0, 0x80]);
        assert_eq!(normalize_serial(&[0, 0x80]), vec![0, 0x80]);
        assert_eq!(normalize_serial(&[]), vec![0]);
    }
}
