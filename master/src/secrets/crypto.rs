//! Envelope encryption of secret values with `ring` (no hand-made crypto).
//!
//! - The **key-encryption key** (KEK, [`Kek`]) is 32 bytes read from
//!   `--secrets-key-file`; its id is the first 8 bytes (hex) of
//!   SHA-256(`"agora-kek-id\0"` + key).
//! - Each secret **version** gets a fresh 32-byte data key from the system
//!   RNG. The value is sealed with AES-256-GCM under it (random 96-bit
//!   nonce, AAD = `"agora-secret-v1\0" + path + "\0" + version (u64 BE)`).
//! - The data key is **wrapped** with the KEK (AES-256-GCM, its own random
//!   nonce, AAD = `"agora-dek-v1\0" + path + "\0" + version (u64 BE)`).
//!   Because both AADs bind the path and version, a record copied to another
//!   path or version does not open.
//! - A **key check** ([`KeyCheck`]) is the KEK sealing an empty plaintext
//!   under a fixed AAD: it tells a master started with the wrong key file
//!   apart from a corrupt record.
//!
//! Key material and plaintexts live in zeroizing buffers; `Debug` of a key
//! shows only its id.

use agora_core::secrets::SecretValue;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use zeroize::Zeroizing;

/// Length of a KEK and of a data key.
pub const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const VALUE_AAD: &[u8] = b"agora-secret-v1\0";
const DEK_AAD: &[u8] = b"agora-dek-v1\0";
const CHECK_AAD: &[u8] = b"agora-kek-check-v1";
const KEK_ID_PREFIX: &[u8] = b"agora-kek-id\0";

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the secrets key file {path}: {message}")]
    Io { path: String, message: String },
    #[error("key file {path} is readable by others (mode {mode:04o}); run chmod 600 {path}")]
    Permissions { path: String, mode: u32 },
    #[error(
        "key file {path} holds {len} bytes: it must hold exactly 32 raw bytes or 64 hex characters (create one with `openssl rand -hex 32 > {path}; chmod 600 {path}`)"
    )]
    Length { path: String, len: usize },
    #[error(
        "key file {path} holds 64 characters that are not all hex digits: it must hold exactly 32 raw bytes or 64 hex characters"
    )]
    NotHex { path: String },
}

/// Why sealing or opening failed. Never carries key or value bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the system random number generator failed")]
    Random,
    #[error(
        "the sealed record of {path} version {version} does not open with key {kek_id}: it was altered, moved, or sealed with another key"
    )]
    Open {
        path: String,
        version: u64,
        kek_id: String,
    },
    #[error("the sealed record of {path} version {version} is malformed: {reason}")]
    Malformed {
        path: String,
        version: u64,
        reason: &'static str,
    },
}

/// The key-encryption key. Zeroed on drop; `Debug` shows only its id.
pub struct Kek {
    key: Zeroizing<[u8; KEY_LEN]>,
    id: String,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek(id {})", self.id)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Kek {
    /// A key from its 32 bytes.
    pub fn from_key(key: Zeroizing<[u8; KEY_LEN]>) -> Kek {
        let mut input = Zeroizing::new(Vec::with_capacity(KEK_ID_PREFIX.len() + KEY_LEN));
        input.extend_from_slice(KEK_ID_PREFIX);
        input.extend_from_slice(&key[..]);
        let d = ring::digest::digest(&ring::digest::SHA256, &input);
        Kek {
            id: hex(&d.as_ref()[..8]),
            key,
        }
    }

    /// A fresh random key (tests, `agora dev`).
    pub fn generate() -> Result<Kek, CryptoError> {
        Ok(Kek::from_key(random_key()?))
    }

    /// Parses a key file's content: exactly 32 raw bytes, or 64 hex
    /// characters with an optional trailing newline (`openssl rand -hex 32`).
    /// `shown` names the file in errors.
    pub fn parse(content: &[u8], shown: &str) -> Result<Kek, KeyError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if content.len() == KEY_LEN {
            key.copy_from_slice(content);
            return Ok(Kek::from_key(key));
        }
        let text = content
            .strip_suffix(b"\n")
            .map(|t| t.strip_suffix(b"\r").unwrap_or(t))
            .unwrap_or(content);
        if text.len() != 2 * KEY_LEN {
            return Err(KeyError::Length {
                path: shown.to_string(),
                len: content.len(),
            });
        }
        for (i, pair) in text.chunks(2).enumerate() {
            match (unhex_digit(pair[0]), unhex_digit(pair[1])) {
                (Some(h), Some(l)) => key[i] = (h << 4) | l,
                _ => {
                    return Err(KeyError::NotHex {
                        path: shown.to_string(),
                    });
                }
            }
        }
        Ok(Kek::from_key(key))
    }

    /// Reads a key file, refusing one that group or others may access.
    pub fn load(path: &Path) -> Result<Kek, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display().to_string();
        let io = |e: std::io::Error| KeyError::Io {
            path: shown.clone(),
            message: e.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: shown, mode });
        }
        if meta.len() > 1024 {
            return Err(KeyError::Length {
                path: shown,
                len: meta.len() as usize,
            });
        }
        let content = Zeroizing::new(std::fs::read(path).map_err(io)?);
        Kek::parse(&content, &shown)
    }

    /// Creates `path` holding a fresh random key (32 raw bytes), with mode
    /// 0600 from the start (never readable by others, not even briefly).
    /// An existing file is left alone and `Ok(false)` returned.
    pub fn create_file(path: &Path) -> Result<bool, KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let shown = path.display().to_string();
        let io = |e: std::io::Error| KeyError::Io {
            path: shown.clone(),
            message: e.to_string(),
        };
        let key = random_key().map_err(|e| KeyError::Io {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io(e)),
        };
        f.write_all(&key[..]).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(true)
    }

    /// The key's id (safe to show and log).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aead(&self) -> LessSafeKey {
        aead_key(&self.key)
    }
}

fn aead_key(key: &[u8; KEY_LEN]) -> LessSafeKey {
    // Only fails for a key of the wrong length, which the type rules out.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"))
}

fn rng() -> &'static SystemRandom {
    static RNG: std::sync::OnceLock<SystemRandom> = std::sync::OnceLock::new();
    RNG.get_or_init(SystemRandom::new)
}

fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    rng().fill(&mut k[..]).map_err(|_| CryptoError::Random)?;
    Ok(k)
}

fn random_nonce() -> Result<[u8; NONCE_LEN], CryptoError> {
    let mut n = [0u8; NONCE_LEN];
    rng().fill(&mut n).map_err(|_| CryptoError::Random)?;
    Ok(n)
}

fn aad(domain: &[u8], path: &str, version: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(domain.len() + path.len() + 9);
    a.extend_from_slice(domain);
    a.extend_from_slice(path.as_bytes());
    a.push(0);
    a.extend_from_slice(&version.to_be_bytes());
    a
}

/// Bytes as lowercase hex in JSON (records are stored as JSON).
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, T: AsRef<[u8]>>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(v.as_ref()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<Vec<u8>>>(
        d: D,
    ) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd number of hex digits"));
        }
        let mut out = Vec::with_capacity(s.len() / 2);
        for pair in s.as_bytes().chunks(2) {
            match (super::unhex_digit(pair[0]), super::unhex_digit(pair[1])) {
                (Some(h), Some(l)) => out.push((h << 4) | l),
                _ => return Err(serde::de::Error::custom("not hex")),
            }
        }
        T::try_from(out).map_err(|_| serde::de::Error::custom("wrong length"))
    }
}

/// One sealed secret version as stored: ciphertexts, nonces and the id of
/// the KEK that wrapped its data key. No plaintext, no unwrapped key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Id of the KEK that wrapped `wrapped_key`.
    pub kek_id: String,
    #[serde(with = "hex_bytes")]
    pub key_nonce: [u8; NONCE_LEN],
    /// The data key sealed with the KEK (32 bytes + 16-byte tag).
    #[serde(with = "hex_bytes")]
    pub wrapped_key: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub nonce: [u8; NONCE_LEN],
    /// The value sealed with the data key (value + 16-byte tag).
    #[serde(with = "hex_bytes")]
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sealed(kek {}, {} bytes)",
            self.kek_id,
            self.ciphertext.len().saturating_sub(TAG_LEN)
        )
    }
}

/// Seals `value` as version `version` of `path` under a fresh data key.
pub fn seal(kek: &Kek, path: &str, version: u64, value: &[u8]) -> Result<Sealed, CryptoError> {
    let dek = random_key()?;
    let nonce = random_nonce()?;
    // Capacity for the tag up front: no reallocation leaves a plaintext copy behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(value.len() + TAG_LEN));
    buf.extend_from_slice(value);
    aead_key(&dek)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(VALUE_AAD, path, version)),
            &mut *buf,
        )
        .map_err(|_| CryptoError::Random)?;
    let ciphertext = std::mem::take(&mut *buf);
    let (key_nonce, wrapped_key) = wrap(kek, &dek, path, version)?;
    Ok(Sealed {
        kek_id: kek.id.clone(),
        key_nonce,
        wrapped_key,
        nonce,
        ciphertext,
    })
}

fn wrap(
    kek: &Kek,
    dek: &[u8; KEY_LEN],
    path: &str,
    version: u64,
) -> Result<([u8; NONCE_LEN], Vec<u8>), CryptoError> {
    let nonce = random_nonce()?;
    let mut buf = Zeroizing::new(Vec::with_capacity(KEY_LEN + TAG_LEN));
    buf.extend_from_slice(dek);
    kek.aead()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(DEK_AAD, path, version)),
            &mut *buf,
        )
        .map_err(|_| CryptoError::Random)?;
    Ok((nonce, std::mem::take(&mut *buf)))
}

fn unwrap_key(
    kek: &Kek,
    s: &Sealed,
    path: &str,
    version: u64,
) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let refused = || CryptoError::Open {
        path: path.to_string(),
        version,
        kek_id: kek.id.clone(),
    };
    if s.wrapped_key.len() != KEY_LEN + TAG_LEN {
        return Err(CryptoError::Malformed {
            path: path.to_string(),
            version,
            reason: "the wrapped data key has the wrong length",
        });
    }
    let mut buf = Zeroizing::new(s.wrapped_key.clone());
    let plain = kek
        .aead()
        .open_in_place(
            Nonce::assume_unique_for_key(s.key_nonce),
            Aad::from(aad(DEK_AAD, path, version)),
            &mut buf,
        )
        .map_err(|_| refused())?;
    let mut dek = Zeroizing::new([0u8; KEY_LEN]);
    dek.copy_from_slice(plain);
    Ok(dek)
}

/// Opens version `version` of `path`. Fails if anything in the record was
/// altered, if it belongs to another path or version, or if `kek` is not
/// the key that wrapped it.
pub fn open(kek: &Kek, path: &str, version: u64, s: &Sealed) -> Result<SecretValue, CryptoError> {
    let dek = unwrap_key(kek, s, path, version)?;
    if s.ciphertext.len() < TAG_LEN {
        return Err(CryptoError::Malformed {
            path: path.to_string(),
            version,
            reason: "the ciphertext is shorter than its tag",
        });
    }
    let mut buf = Zeroizing::new(s.ciphertext.clone());
    let len = aead_key(&dek)
        .open_in_place(
            Nonce::assume_unique_for_key(s.nonce),
            Aad::from(aad(VALUE_AAD, path, version)),
            &mut buf,
        )
        .map_err(|_| CryptoError::Open {
            path: path.to_string(),
            version,
            kek_id: kek.id.clone(),
        })?
        .len();
    buf.truncate(len);
    Ok(SecretValue::new(std::mem::take(&mut *buf)))
}

/// Re-wraps a record's data key from `old` to `new`; the value's
/// ciphertext is unchanged.
pub fn rewrap(
    old: &Kek,
    new: &Kek,
    path: &str,
    version: u64,
    s: &Sealed,
) -> Result<Sealed, CryptoError> {
    let dek = unwrap_key(old, s, path, version)?;
    let (key_nonce, wrapped_key) = wrap(new, &dek, path, version)?;
    Ok(Sealed {
        kek_id: new.id.clone(),
        key_nonce,
        wrapped_key,
        ..s.clone()
    })
}

/// Proof of which KEK sealed a store: the KEK sealing an empty plaintext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCheck {
    pub kek_id: String,
    #[serde(with = "hex_bytes")]
    pub nonce: [u8; NONCE_LEN],
    #[serde(with = "hex_bytes")]
    pub tag: Vec<u8>,
}

impl KeyCheck {
    pub fn new(kek: &Kek) -> Result<KeyCheck, CryptoError> {
        let nonce = random_nonce()?;
        let mut buf = Vec::with_capacity(TAG_LEN);
        kek.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(CHECK_AAD),
                &mut buf,
            )
            .map_err(|_| CryptoError::Random)?;
        Ok(KeyCheck {
            kek_id: kek.id.clone(),
            nonce,
            tag: buf,
        })
    }

    /// Whether `kek` is the key that made this check.
    pub fn verifies(&self, kek: &Kek) -> bool {
        let mut buf = self.tag.clone();
        kek.aead()
            .open_in_place(
                Nonce::assume_unique_for_key(self.nonce),
                Aad::from(CHECK_AAD),
                &mut buf,
            )
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek() -> Kek {
        Kek::generate().unwrap()
    }

    #[test]
    fn round_trip_and_fresh_ciphertexts() {
        let k = kek();
        let a = seal(&k, "/db/pw", 1, b"hunter2").unwrap();
        let b = seal(&k, "/db/pw", 2, b"hunter2").unwrap();
        let c = seal(&k, "/db/other", 1, b"hunter2").unwrap();
        let d = seal(&k, "/db/pw", 1, b"hunter2").unwrap();
        for (x, y) in [(&a, &b), (&a, &c), (&a, &d), (&b, &c)] {
            assert_ne!(x.ciphertext, y.ciphertext);
            assert_ne!(x.nonce, y.nonce);
            assert_ne!(x.wrapped_key, y.wrapped_key);
        }
        assert_eq!(open(&k, "/db/pw", 1, &a).unwrap().expose(), b"hunter2");
        assert_eq!(open(&k, "/db/pw", 2, &b).unwrap().expose(), b"hunter2");
        assert_eq!(open(&k, "/db/other", 1, &c).unwrap().expose(), b"hunter2");
        let empty = seal(&k, "/e", 1, b"").unwrap();
        assert!(open(&k, "/e", 1, &empty).unwrap().is_empty());
        assert!(!format!("{a:?}").contains("hunter2"));
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let k = kek();
        let s = seal(&k, "/p", 3, b"some value").unwrap();
        for i in 0..s.ciphertext.len() {
            let mut t = s.clone();
            t.ciphertext[i] ^= 1;
            assert!(open(&k, "/p", 3, &t).is_err(), "ciphertext byte {i}");
        }
        for i in 0..NONCE_LEN {
            let mut t = s.clone();
            t.nonce[i] ^= 0x80;
            assert!(open(&k, "/p", 3, &t).is_err(), "nonce byte {i}");
            let mut t = s.clone();
            t.key_nonce[i] ^= 0x80;
            assert!(open(&k, "/p", 3, &t).is_err(), "key nonce byte {i}");
        }
        for i in 0..s.wrapped_key.len() {
            let mut t = s.clone();
            t.wrapped_key[i] ^= 1;
            assert!(open(&k, "/p", 3, &t).is_err(), "wrapped key byte {i}");
        }
        let mut t = s.clone();
        t.ciphertext.truncate(3);
        assert!(matches!(
            open(&k, "/p", 3, &t),
            Err(CryptoError::Malformed { .. })
        ));
        assert!(open(&k, "/p", 3, &s).is_ok());
    }

    #[test]
    fn records_moved_to_another_path_or_version_do_not_open() {
        let k = kek();
        let s = seal(&k, "/prod/db", 4, b"v").unwrap();
        let e = open(&k, "/prod/dc", 4, &s).unwrap_err();
        assert!(matches!(e, CryptoError::Open { .. }), "{e}");
        assert!(open(&k, "/prod/db", 5, &s).is_err());
        assert!(open(&k, "/prod/db", 3, &s).is_err());
        assert!(open(&k, "/prod/db", 4, &s).is_ok());
    }

    #[test]
    fn the_wrong_kek_is_detected_and_rotation_rewraps() {
        let (k1, k2) = (kek(), kek());
        assert_ne!(k1.id(), k2.id());
        let s = seal(&k1, "/a", 1, b"value").unwrap();
        let e = open(&k2, "/a", 1, &s).unwrap_err();
        assert!(e.to_string().contains(k2.id()), "{e}");
        let r = rewrap(&k1, &k2, "/a", 1, &s).unwrap();
        assert_eq!(r.ciphertext, s.ciphertext, "the value is not re-encrypted");
        assert_ne!(r.wrapped_key, s.wrapped_key);
        assert_eq!(r.kek_id, k2.id());
        assert_eq!(open(&k2, "/a", 1, &r).unwrap().expose(), b"value");
        assert!(open(&k1, "/a", 1, &r).is_err());
        assert!(rewrap(&k2, &k1, "/a", 1, &s).is_err());

        let check = KeyCheck::new(&k1).unwrap();
        assert!(check.verifies(&k1));
        assert!(!check.verifies(&k2));
        let json = serde_json::to_string(&check).unwrap();
        let back: KeyCheck = serde_json::from_str(&json).unwrap();
        assert!(back.verifies(&k1));
        let json = serde_json::to_string(&s).unwrap();
        let back: Sealed = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn key_files_are_parsed_and_checked() {
        let raw = [7u8; 32];
        let a = Kek::parse(&raw, "k").unwrap();
        let hexed = format!("{}\n", "07".repeat(32));
        let b = Kek::parse(hexed.as_bytes(), "k").unwrap();
        assert_eq!(a.id(), b.id(), "raw and hex forms are the same key");
        assert_eq!(a.id().len(), 16);
        let upper = "AB".repeat(32);
        assert!(Kek::parse(upper.as_bytes(), "k").is_ok());
        let e = Kek::parse(&[1u8; 31], "k").unwrap_err();
        assert!(e.to_string().contains("31 bytes"), "{e}");
        let e = Kek::parse("zz".repeat(32).as_bytes(), "k").unwrap_err();
        assert!(matches!(e, KeyError::NotHex { .. }), "{e}");
        assert!(!format!("{a:?}").contains("07070707"));

        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("agora-kek-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("key");
        std::fs::write(&f, &hexed).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Kek::load(&f).unwrap_err();
        let shown = f.display().to_string();
        assert_eq!(
            e.to_string(),
            format!("key file {shown} is readable by others (mode 0644); run chmod 600 {shown}")
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Kek::load(&f).unwrap().id(), a.id());
        std::fs::write(&f, b"short").unwrap();
        assert!(matches!(
            Kek::load(&f).unwrap_err(),
            KeyError::Length { len: 5, .. }
        ));
        assert!(matches!(
            Kek::load(&dir.join("missing")).unwrap_err(),
            KeyError::Io { .. }
        ));
        let created = dir.join("created.key");
        assert!(Kek::create_file(&created).unwrap());
        let mode = std::fs::metadata(&created).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let id = Kek::load(&created).unwrap().id().to_string();
        assert!(!Kek::create_file(&created).unwrap(), "never rewritten");
        assert_eq!(Kek::load(&created).unwrap().id(), id);
        std::fs::remove_dir_all(dir).ok();
    }
}
