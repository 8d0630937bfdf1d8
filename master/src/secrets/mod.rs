//! The master's secret store: values sealed at rest with envelope
//! encryption ([`crypto`]), persisted through the registry ([`store`]),
//! served to operators as metadata only (`/v1/secrets`, see
//! `http_secrets.rs`) and to agents as values only for the tasks that
//! reference them (`AgentLink.ResolveSecrets`).
//!
//! [`SecretStore`] keeps the sealed records in memory behind one small
//! `std::sync::Mutex` (never held across an `.await`); every change is
//! written to the registry (durably) before the call returns, so callers on
//! an async runtime run the writing methods in `spawn_blocking`.
//!
//! Who may read what is decided by a [`SecretPolicy`] (allow-all by
//! default; the ACL layer plugs its own in through
//! [`MasterConfig::secret_policy`](crate::MasterConfig)).

pub mod crypto;
pub mod store;

use agora_core::FrameworkId;
use agora_core::secrets::{MAX_VALUE_LEN, SecretPath, SecretValue};
use crypto::{CryptoError, Kek, KeyCheck, KeyError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use store::{SecretOp, SecretRecord, SecretRegistry, VersionRecord};

/// How many versions of each secret are kept unless configured.
pub const DEFAULT_VERSIONS: usize = 10;

/// The message for a master started without a key file.
pub const NO_STORE: &str = "this master has no secret store: start it with --secrets-key-file FILE (agora dev does this for you)";

/// Whether a framework's tasks may read a secret path.
///
/// This is the seam for access control: the master asks it for every
/// reference `ResolveSecrets` resolves (and nothing else). `principal` is
/// the authenticated principal of the framework when authentication knows
/// one. Return `Err(message)` to refuse; the message is sent to the agent
/// (PERMISSION_DENIED) and must not contain secret values.
pub trait SecretPolicy: Send + Sync + 'static {
    fn may_read(
        &self,
        framework: &FrameworkId,
        principal: Option<&str>,
        path: &SecretPath,
    ) -> Result<(), String>;
}

/// The default policy: every framework may read every secret.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl SecretPolicy for AllowAll {
    fn may_read(&self, _: &FrameworkId, _: Option<&str>, _: &SecretPath) -> Result<(), String> {
        Ok(())
    }
}

/// A shared policy, as held by the configuration (allow-all by default).
#[derive(Clone)]
pub struct SharedSecretPolicy(pub Arc<dyn SecretPolicy>);

impl Default for SharedSecretPolicy {
    fn default() -> Self {
        SharedSecretPolicy(Arc::new(AllowAll))
    }
}

impl fmt::Debug for SharedSecretPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPolicy")
    }
}

/// What the edges (HTTP, gRPC) hold: the store, if this master has one,
/// and the read policy.
#[derive(Clone, Default)]
pub struct Secrets {
    pub store: Option<Arc<SecretStore>>,
    pub policy: SharedSecretPolicy,
}

/// Why a secret operation failed. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {0} does not exist")]
    Unknown(String),
    #[error(
        "secret {path} has no version {version}: kept versions are {kept} (see `agora secret show {path}`)"
    )]
    VersionNotKept {
        path: String,
        version: u64,
        kept: String,
    },
    #[error("the value is {0} bytes; a secret holds at most 64 KiB (65536 bytes)")]
    TooLarge(usize),
    #[error("the value is empty; a secret must hold at least one byte")]
    Empty,
    #[error(
        "the secret store was sealed with key id {sealed} but --secrets-key-file {file} has key id {given}; start with the key file that sealed it (or the new one after `agora secret rotate-key`)"
    )]
    WrongKey {
        sealed: String,
        given: String,
        file: String,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// One version as shown to operators.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VersionMeta {
    pub version: u64,
    pub created: f64,
    pub size: u64,
    pub rollout: bool,
}

/// A secret's metadata (never its value).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SecretMeta {
    pub path: String,
    /// The latest version.
    pub version: u64,
    /// The latest version's size in bytes.
    pub size: u64,
    /// When the oldest kept version was created (seconds since the epoch).
    pub created: f64,
    /// When the latest version was created.
    pub updated: f64,
    /// The newest version put with rollout requested (0: none kept).
    pub rollout: u64,
    /// Kept versions, oldest first.
    pub versions: Vec<VersionMeta>,
}

/// What a framework learns about a path (`Scheduler.SecretVersions`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    pub exists: bool,
    pub latest: u64,
    pub rollout: u64,
}

/// The outcome of a key rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rotated {
    pub old_key_id: String,
    pub new_key_id: String,
    pub rewrapped: usize,
}

fn meta(r: &SecretRecord) -> Option<SecretMeta> {
    let first = r.versions.first()?;
    let last = r.versions.last()?;
    Some(SecretMeta {
        path: r.path.clone(),
        version: last.version,
        size: last.size,
        created: first.created,
        updated: last.created,
        rollout: r
            .versions
            .iter()
            .rev()
            .find(|v| v.rollout)
            .map_or(0, |v| v.version),
        versions: r
            .versions
            .iter()
            .map(|v| VersionMeta {
                version: v.version,
                created: v.created,
                size: v.size,
                rollout: v.rollout,
            })
            .collect(),
    })
}

fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

struct Inner {
    kek: Kek,
    records: BTreeMap<String, SecretRecord>,
}

/// The secret store. See the module docs.
pub struct SecretStore {
    inner: Mutex<Inner>,
    registry: Arc<dyn SecretRegistry>,
    keep: usize,
}

impl fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SecretStore(key id {}, keep {})",
            self.key_id(),
            self.keep
        )
    }
}

impl SecretStore {
    /// Opens the store with the KEK read from `key_file`.
    pub fn open_with_file(
        registry: Arc<dyn SecretRegistry>,
        key_file: &Path,
        keep: usize,
    ) -> Result<SecretStore, SecretError> {
        let kek = Kek::load(key_file)?;
        Self::open(registry, kek, keep, &key_file.display().to_string())
    }

    /// Opens the store: loads the records and checks that `kek` is the key
    /// that sealed them (a fresh store is sealed with it). `shown` names the
    /// key file in errors.
    pub fn open(
        registry: Arc<dyn SecretRegistry>,
        kek: Kek,
        keep: usize,
        shown: &str,
    ) -> Result<SecretStore, SecretError> {
        let stored = registry.load_secrets()?;
        match &stored.key_check {
            Some(check) if !check.verifies(&kek) => {
                return Err(SecretError::WrongKey {
                    sealed: check.kek_id.clone(),
                    given: kek.id().to_string(),
                    file: shown.to_string(),
                });
            }
            Some(_) => {}
            None => registry.apply_secrets(&[SecretOp::SetKeyCheck(KeyCheck::new(&kek)?)])?,
        }
        let records = stored
            .records
            .into_iter()
            .map(|r| (r.path.clone(), r))
            .collect();
        Ok(SecretStore {
            inner: Mutex::new(Inner { kek, records }),
            registry,
            keep: keep.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied change:
        // records are replaced only after the registry write succeeded.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id of the KEK in use.
    pub fn key_id(&self) -> String {
        self.lock().kek.id().to_string()
    }

    /// Stores a new version of `path` (durably) and returns its metadata.
    pub fn put(
        &self,
        path: &SecretPath,
        value: &SecretValue,
        rollout: bool,
    ) -> Result<SecretMeta, SecretError> {
        self.put_keeping(path, value, rollout, &[])
    }

    /// [`put`](Self::put), keeping beyond the last N the versions in
    /// `in_use` (those live tasks reference: a task relaunched on its pinned
    /// version must still find it, however many versions were put since).
    pub fn put_keeping(
        &self,
        path: &SecretPath,
        value: &SecretValue,
        rollout: bool,
        in_use: &[u64],
    ) -> Result<SecretMeta, SecretError> {
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(SecretError::TooLarge(value.len()));
        }
        let mut g = self.lock();
        let mut rec = g
            .records
            .get(path.as_str())
            .cloned()
            .unwrap_or_else(|| SecretRecord {
                path: path.to_string(),
                last_version: 0,
                versions: Vec::new(),
            });
        let version = rec.last_version + 1;
        let sealed = crypto::seal(&g.kek, path.as_str(), version, value.expose())?;
        rec.last_version = version;
        rec.versions.push(VersionRecord {
            version,
            created: now_epoch(),
            size: value.len() as u64,
            rollout,
            sealed,
        });
        // Keep the last N versions, plus any older one a live task uses
        // (the new one always stays).
        while rec
            .versions
            .iter()
            .filter(|v| !in_use.contains(&v.version))
            .count()
            > self.keep
        {
            let last = rec.versions.len() - 1;
            match rec
                .versions
                .iter()
                .position(|v| !in_use.contains(&v.version))
            {
                Some(i) if i < last => {
                    rec.versions.remove(i);
                }
                _ => break,
            }
        }
        self.registry.apply_secrets(&[SecretOp::Put(rec.clone())])?;
        let m = meta(&rec);
        g.records.insert(rec.path.clone(), rec);
        m.ok_or_else(|| SecretError::Unknown(path.to_string()))
    }

    /// Metadata of every existing secret, by path.
    pub fn list(&self) -> Vec<SecretMeta> {
        self.lock().records.values().filter_map(meta).collect()
    }

    /// Metadata of one secret.
    pub fn get(&self, path: &SecretPath) -> Option<SecretMeta> {
        self.lock().records.get(path.as_str()).and_then(meta)
    }

    /// What a framework may know about a path.
    pub fn version_info(&self, path: &SecretPath) -> VersionInfo {
        match self.get(path) {
            Some(m) => VersionInfo {
                exists: true,
                latest: m.version,
                rollout: m.rollout,
            },
            None => VersionInfo {
                exists: false,
                latest: 0,
                rollout: 0,
            },
        }
    }

    /// Deletes every version of `path` (durably). Its version numbers are
    /// not reused. Whether it is in use is the caller's question.
    pub fn delete(&self, path: &SecretPath) -> Result<SecretMeta, SecretError> {
        let mut g = self.lock();
        let Some(rec) = g.records.get(path.as_str()) else {
            return Err(SecretError::Unknown(path.to_string()));
        };
        let Some(m) = meta(rec) else {
            return Err(SecretError::Unknown(path.to_string()));
        };
        let tomb = SecretRecord {
            path: rec.path.clone(),
            last_version: rec.last_version,
            versions: Vec::new(),
        };
        self.registry
            .apply_secrets(&[SecretOp::Put(tomb.clone())])?;
        g.records.insert(tomb.path.clone(), tomb);
        Ok(m)
    }

    /// The value of `path` at `version` (0: the latest), with the version
    /// returned.
    pub fn resolve(
        &self,
        path: &SecretPath,
        version: u64,
    ) -> Result<(u64, SecretValue), SecretError> {
        let g = self.lock();
        let rec = g
            .records
            .get(path.as_str())
            .filter(|r| !r.versions.is_empty())
            .ok_or_else(|| SecretError::Unknown(path.to_string()))?;
        let v = if version == 0 {
            rec.versions.last()
        } else {
            rec.versions.iter().find(|v| v.version == version)
        };
        let Some(v) = v else {
            return Err(SecretError::VersionNotKept {
                path: path.to_string(),
                version,
                kept: rec
                    .versions
                    .iter()
                    .map(|v| v.version.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let value = crypto::open(&g.kek, path.as_str(), v.version, &v.sealed)?;
        Ok((v.version, value))
    }

    /// Re-wraps every data key with `new` in one transaction and uses
    /// `new` from then on. Values are not re-encrypted.
    pub fn rotate_key(&self, new: Kek) -> Result<Rotated, SecretError> {
        let mut g = self.lock();
        let mut ops = Vec::with_capacity(g.records.len() + 1);
        let mut rewrapped = 0;
        let mut updated = Vec::with_capacity(g.records.len());
        for rec in g.records.values() {
            let mut r = rec.clone();
            for v in &mut r.versions {
                v.sealed = crypto::rewrap(&g.kek, &new, &r.path, v.version, &v.sealed)?;
                rewrapped += 1;
            }
            ops.push(SecretOp::Put(r.clone()));
            updated.push(r);
        }
        ops.push(SecretOp::SetKeyCheck(KeyCheck::new(&new)?));
        self.registry.apply_secrets(&ops)?;
        let old_key_id = g.kek.id().to_string();
        let new_key_id = new.id().to_string();
        for r in updated {
            g.records.insert(r.path.clone(), r);
        }
        g.kek = new;
        Ok(Rotated {
            old_key_id,
            new_key_id,
            rewrapped,
        })
    }
}

/// Settings of a master's secret store.
#[derive(Clone, Debug)]
pub struct SecretsConfig {
    /// The KEK file (`--secrets-key-file`).
    pub key_file: PathBuf,
    /// Versions kept per secret (`--secret-versions`).
    pub versions: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RedbRegistry, Registry};

    fn p(s: &str) -> SecretPath {
        SecretPath::parse(s).unwrap()
    }
    fn v(s: &str) -> SecretValue {
        SecretValue::new(s.as_bytes().to_vec())
    }
    fn key(b: u8) -> Kek {
        Kek::parse(&[b; 32], "test-key").unwrap()
    }

    /// A version live tasks pin survives any number of later puts (staged
    /// ones included): their relaunches still resolve it.
    #[test]
    fn versions_in_use_are_kept_beyond_the_last_n() {
        let reg = Arc::new(store::MemorySecrets::default());
        let s = SecretStore::open(reg, key(1), 2, "k").unwrap();
        s.put(&p("/db/pw"), &v("pinned"), true).unwrap();
        for i in 2..=12 {
            s.put_keeping(&p("/db/pw"), &v(&format!("staged-{i}")), false, &[1])
                .unwrap();
        }
        let m = s.get(&p("/db/pw")).unwrap();
        assert_eq!(
            m.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            [1, 11, 12]
        );
        assert_eq!(s.resolve(&p("/db/pw"), 1).unwrap().1.expose(), b"pinned");
        // Once no task uses it, it goes with the next put.
        s.put_keeping(&p("/db/pw"), &v("next"), true, &[]).unwrap();
        let m = s.get(&p("/db/pw")).unwrap();
        assert_eq!(
            m.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            [12, 13]
        );
    }

    #[test]
    fn versions_are_kept_resolved_and_pruned() {
        let reg = Arc::new(store::MemorySecrets::default());
        let s = SecretStore::open(reg.clone(), key(1), 3, "k").unwrap();
        for i in 1..=5 {
            let m = s
                .put(&p("/db/pw"), &v(&format!("value-{i}")), i != 4)
                .unwrap();
            assert_eq!(m.version, i);
        }
        let m = s.get(&p("db/pw")).unwrap();
        assert_eq!(
            m.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(m.rollout, 5);
        assert_eq!(m.size, 7);
        assert_eq!(s.resolve(&p("/db/pw"), 0).unwrap().1.expose(), b"value-5");
        assert_eq!(s.resolve(&p("/db/pw"), 4).unwrap().1.expose(), b"value-4");
        let e = s.resolve(&p("/db/pw"), 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret /db/pw has no version 1: kept versions are 3, 4, 5 (see `agora secret show /db/pw`)"
        );
        assert!(matches!(
            s.resolve(&p("/nope"), 0),
            Err(SecretError::Unknown(_))
        ));
        assert!(matches!(
            s.put(&p("/e"), &v(""), true),
            Err(SecretError::Empty)
        ));
        let big = SecretValue::new(vec![0; MAX_VALUE_LEN + 1]);
        assert!(matches!(
            s.put(&p("/e"), &big, true),
            Err(SecretError::TooLarge(_))
        ));
        // Staged (no rollout) versions leave `rollout` where it was.
        s.put(&p("/db/pw"), &v("staged"), false).unwrap();
        let info = s.version_info(&p("/db/pw"));
        assert_eq!((info.exists, info.latest, info.rollout), (true, 6, 5));

        s.delete(&p("/db/pw")).unwrap();
        assert!(s.get(&p("/db/pw")).is_none());
        assert!(!s.version_info(&p("/db/pw")).exists);
        assert!(s.list().is_empty());
        assert!(matches!(
            s.delete(&p("/db/pw")),
            Err(SecretError::Unknown(_))
        ));
        // Version numbers are not reused after a delete.
        assert_eq!(s.put(&p("/db/pw"), &v("again"), true).unwrap().version, 7);
        // Records hold no plaintext.
        let stored = format!("{:?}", reg.load_secrets().unwrap());
        assert!(!stored.contains("again") && !stored.contains("value-"));
    }

    #[test]
    fn a_redb_store_survives_reopen_and_refuses_the_wrong_key() {
        let dir = std::env::temp_dir().join(format!("agora-sec-{}", uuid::Uuid::new_v4()));
        let k1 = key(1).id().to_string();
        {
            let r = RedbRegistry::open(&dir).unwrap();
            let s = SecretStore::open(r.secret_registry().unwrap(), key(1), 10, "k1").unwrap();
            s.put(&p("/a"), &v("alpha"), true).unwrap();
            s.put(&p("/b/c"), &v("beta"), false).unwrap();
        }
        {
            let r = RedbRegistry::open(&dir).unwrap();
            let e =
                SecretStore::open(r.secret_registry().unwrap(), key(2), 10, "/etc/k2").unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "the secret store was sealed with key id {k1} but --secrets-key-file /etc/k2 has key id {}; start with the key file that sealed it (or the new one after `agora secret rotate-key`)",
                    key(2).id()
                )
            );
            let s = SecretStore::open(r.secret_registry().unwrap(), key(1), 10, "k1").unwrap();
            assert_eq!(s.list().len(), 2);
            assert_eq!(s.resolve(&p("/a"), 0).unwrap().1.expose(), b"alpha");
            let rot = s.rotate_key(key(3)).unwrap();
            assert_eq!(rot.old_key_id, k1);
            assert_eq!(rot.rewrapped, 2);
            assert_eq!(s.resolve(&p("/b/c"), 1).unwrap().1.expose(), b"beta");
            assert_eq!(s.put(&p("/a"), &v("alpha2"), true).unwrap().version, 2);
        }
        let r = RedbRegistry::open(&dir).unwrap();
        assert!(matches!(
            SecretStore::open(r.secret_registry().unwrap(), key(1), 10, "k1"),
            Err(SecretError::WrongKey { .. })
        ));
        let s = SecretStore::open(r.secret_registry().unwrap(), key(3), 10, "k3").unwrap();
        assert_eq!(s.resolve(&p("/a"), 1).unwrap().1.expose(), b"alpha");
        assert_eq!(s.resolve(&p("/a"), 2).unwrap().1.expose(), b"alpha2");
        assert_eq!(s.resolve(&p("/b/c"), 0).unwrap().1.expose(), b"beta");
        // The file holds no plaintext.
        drop(s);
        drop(r);
        let raw = std::fs::read(dir.join("registry.redb")).unwrap();
        for needle in [&b"alpha"[..], b"beta"] {
            assert!(!raw.windows(needle.len()).any(|w| w == needle));
        }
        std::fs::remove_dir_all(dir).ok();
    }
}
