//! Secrets as the rest of the system sees them: **references**, never values.
//!
//! A task description carries [`SecretUse`]s (this secret, at this version,
//! as this env variable or this file); the agent resolves them from the
//! master at launch and only [`SecretValue`] ever holds the bytes. Nothing
//! here implements `Serialize` for a value, and `Debug` of a value prints
//! only its length.

use std::fmt;

/// Longest secret path, in bytes.
pub const MAX_PATH_LEN: usize = 256;
/// Most segments in a secret path.
pub const MAX_SEGMENTS: usize = 16;
/// Largest secret value, in bytes (64 KiB).
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// A validated secret path: `/seg/seg/...`, each segment of
/// `[A-Za-z0-9._-]`, not `.` or `..`. A missing leading slash is added
/// (Marathon/DC/OS write `db/password`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretPath(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid secret path {path:?}: {reason}")]
pub struct BadSecretPath {
    pub path: String,
    pub reason: &'static str,
}

impl SecretPath {
    pub fn parse(raw: &str) -> Result<SecretPath, BadSecretPath> {
        let bad = |reason| BadSecretPath {
            path: raw.chars().take(MAX_PATH_LEN + 1).collect(),
            reason,
        };
        let body = raw.strip_prefix('/').unwrap_or(raw);
        if body.is_empty() {
            return Err(bad("it is empty"));
        }
        if body.len() + 1 > MAX_PATH_LEN {
            return Err(bad("it is longer than 256 bytes"));
        }
        let mut n = 0;
        for seg in body.split('/') {
            n += 1;
            if seg.is_empty() {
                return Err(bad("it has an empty segment (`//` or a trailing `/`)"));
            }
            if seg == "." || seg == ".." {
                return Err(bad("`.` and `..` are not allowed as segments"));
            }
            if !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(bad(
                    "segments may hold only letters, digits, `.`, `_` and `-`",
                ));
            }
        }
        if n > MAX_SEGMENTS {
            return Err(bad("it has more than 16 segments"));
        }
        Ok(SecretPath(format!("/{body}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this path is `prefix` or lies under it (segment-wise:
    /// `/prod` covers `/prod/db` but not `/production`). `/` covers all.
    pub fn is_under(&self, prefix: &str) -> bool {
        let p = prefix.trim_end_matches('/');
        if p.is_empty() {
            return true;
        }
        self.0 == p || (self.0.starts_with(p) && self.0.as_bytes().get(p.len()) == Some(&b'/'))
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretPath({})", self.0)
    }
}

/// A reference to one version of a secret in the master's store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretRef {
    pub path: SecretPath,
    /// The version to use; 0 means the latest at resolve time.
    pub version: u64,
}

/// Where a resolved secret goes in the task.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SecretTarget {
    /// An environment variable of this name.
    Env(String),
    /// A read-only file (mode 0400, on tmpfs) at this path: absolute inside
    /// a container; relative to the sandbox for a process task.
    File(String),
}

/// One secret a task uses, and how.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretUse {
    pub target: SecretTarget,
    pub secret: SecretRef,
}

/// A secret's bytes. Zeroed on drop; `Debug` shows only the length; no
/// `Display`, no `Serialize`, no `Clone` (copies are explicit via
/// [`SecretValue::expose`]).
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue(bytes)
    }
    /// The bytes, for the one place that must use them (sealing, an env
    /// variable handed to the runtime, a tmpfs file).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<redacted, {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_checked() {
        assert_eq!(
            SecretPath::parse("db/password").unwrap().as_str(),
            "/db/password"
        );
        assert_eq!(
            SecretPath::parse("/prod/db/pass_word-1.txt")
                .unwrap()
                .as_str(),
            "/prod/db/pass_word-1.txt"
        );
        for bad in [
            "", "/", "//a", "/a/", "/a//b", "/a/../b", "/./a", "/a b", "/a\nb", "/ä",
        ] {
            assert!(SecretPath::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("/{}", "a".repeat(300));
        assert!(SecretPath::parse(&long).is_err());
        let deep = "/a".repeat(17);
        assert!(SecretPath::parse(&deep).is_err());
        assert!(SecretPath::parse(&"/a".repeat(16)).is_ok());
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let p = SecretPath::parse("/prod/db/password").unwrap();
        assert!(p.is_under("/prod"));
        assert!(p.is_under("/prod/"));
        assert!(p.is_under("/"));
        assert!(p.is_under(""));
        assert!(p.is_under("/prod/db/password"));
        assert!(!p.is_under("/pro"));
        assert!(!p.is_under("/prod/db/password2"));
        assert!(!SecretPath::parse("/production").unwrap().is_under("/prod"));
    }

    #[test]
    fn value_debug_is_redacted() {
        let v = SecretValue::new(b"hunter2".to_vec());
        let d = format!("{v:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("7 bytes"), "{d}");
    }
}
