//! Bearer tokens: created at random, shown once, stored only as hashes.
//!
//! A token reads `agora_<id>_<secret>`: `id` is 12 hex digits that name the
//! record (not secret: it is what `agora token list` shows and `revoke`
//! takes), `secret` is 256 random bits from ring's `SystemRandom`, base64url
//! without padding. The store keeps the SHA-256 digest of the whole token,
//! never the token itself.
//!
//! Verification looks the record up by the id in the token, then compares
//! the digest of the presented token with the stored digest in fixed time
//! ([`digests_equal`]). Looking up by id (not by digest) means no secret
//! material picks a map slot, and the only comparison that depends on the
//! secret runs over all 32 bytes whatever they hold.

use base64::Engine as _;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// What every token starts with (lets secret scanners recognise them).
pub const TOKEN_PREFIX: &str = "agora_";
const ID_HEX_LEN: usize = 12;
/// Longest principal name.
pub const MAX_PRINCIPAL_LEN: usize = 64;

/// A token in clear: only ever held between its creation and the answer
/// that shows it once, or while a request presenting it is checked.
/// `Debug` and `Display` never print it; the buffer is zeroized on drop.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// Wraps a presented token (e.g. read from a file or a header).
    pub fn new(s: impl Into<String>) -> Token {
        Token(Zeroizing::new(s.into()))
    }
    /// The token, to put in a header or a file. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    fn digest(&self) -> [u8; 32] {
        let d = digest::digest(&digest::SHA256, self.0.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
    /// The record id the token names, if it is well formed.
    fn id(&self) -> Option<&str> {
        let rest = self.0.strip_prefix(TOKEN_PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        (id.len() == ID_HEX_LEN
            && id.bytes().all(|b| b.is_ascii_hexdigit())
            && secret.len() >= 43
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then_some(id)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Equality of two SHA-256 digests in time independent of their contents:
/// every byte pair is XORed and OR-ed into one accumulator, with no early
/// exit, and `black_box` keeps the compiler from turning the loop into a
/// short-circuiting `memcmp`. Both inputs have a fixed length, so the
/// length leaks nothing. (We compare digests, not tokens, so even a leak
/// would reveal bytes of a hash, which do not help forge a token.) This
/// avoids a dependency for one 32-byte comparison; `ring::constant_time`
/// is deprecated for this use.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut acc = 0u8;
    for i in 0..32 {
        acc |= std::hint::black_box(a[i] ^ b[i]);
    }
    std::hint::black_box(acc) == 0
}

/// One token as stored (the digest, never the token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub principal: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Seconds since the Unix epoch; `None`: never expires.
    pub expires: Option<u64>,
    /// When it was revoked (seconds since the Unix epoch).
    pub revoked: Option<u64>,
    /// Hex SHA-256 of the whole token.
    pub sha256: String,
}

/// What `GET /v1/tokens` shows of a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub principal: String,
    pub created: u64,
    pub expires: Option<u64>,
    pub revoked: Option<u64>,
}

impl From<&TokenRecord> for TokenInfo {
    fn from(r: &TokenRecord) -> Self {
        TokenInfo {
            id: r.id.clone(),
            principal: r.principal.clone(),
            created: r.created,
            expires: r.expires,
            revoked: r.revoked,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    #[error("token store: {0}")]
    Io(String),
    #[error("token store record {id} is corrupt: {message}")]
    Corrupt { id: String, message: String },
}

/// Where token records live. Small on purpose: the set of tokens is
/// loaded once and kept in memory by [`Tokens`]; the store only persists.
pub trait TokenStore: Send + Sync + 'static {
    fn load(&self) -> Result<Vec<TokenRecord>, TokenStoreError>;
    /// Inserts or replaces the record with this id.
    fn put(&self, record: &TokenRecord) -> Result<(), TokenStoreError>;
}

/// Tokens in memory (tests; a master without a data dir).
#[derive(Default)]
pub struct MemoryTokenStore(Mutex<BTreeMap<String, TokenRecord>>);

impl TokenStore for MemoryTokenStore {
    fn load(&self) -> Result<Vec<TokenRecord>, TokenStoreError> {
        let g = self
            .0
            .lock()
            .map_err(|_| TokenStoreError::Io("poisoned".into()))?;
        Ok(g.values().cloned().collect())
    }
    fn put(&self, record: &TokenRecord) -> Result<(), TokenStoreError> {
        let mut g = self
            .0
            .lock()
            .map_err(|_| TokenStoreError::Io("poisoned".into()))?;
        g.insert(record.id.clone(), record.clone());
        Ok(())
    }
}

const TOKENS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("tokens");

/// Tokens in the master's registry file (`registry.redb`), table `tokens`.
pub struct RedbTokenStore {
    db: Arc<redb::Database>,
}

impl RedbTokenStore {
    pub fn open(db: Arc<redb::Database>) -> Result<Self, TokenStoreError> {
        let io = |e: &dyn fmt::Display| TokenStoreError::Io(e.to_string());
        let tx = db.begin_write().map_err(|e| io(&e))?;
        tx.open_table(TOKENS).map_err(|e| io(&e))?;
        tx.commit().map_err(|e| io(&e))?;
        Ok(RedbTokenStore { db })
    }
}

impl TokenStore for RedbTokenStore {
    fn load(&self) -> Result<Vec<TokenRecord>, TokenStoreError> {
        use redb::{ReadableDatabase, ReadableTable};
        let io = |e: &dyn fmt::Display| TokenStoreError::Io(e.to_string());
        let tx = self.db.begin_read().map_err(|e| io(&e))?;
        let table = tx.open_table(TOKENS).map_err(|e| io(&e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| io(&e))? {
            let (k, v) = entry.map_err(|e| io(&e))?;
            let r: TokenRecord =
                serde_json::from_slice(v.value()).map_err(|e| TokenStoreError::Corrupt {
                    id: k.value().to_string(),
                    message: e.to_string(),
                })?;
            out.push(r);
        }
        Ok(out)
    }
    fn put(&self, record: &TokenRecord) -> Result<(), TokenStoreError> {
        let io = |e: &dyn fmt::Display| TokenStoreError::Io(e.to_string());
        let bytes = serde_json::to_vec(record).map_err(|e| io(&e))?;
        let tx = self.db.begin_write().map_err(|e| io(&e))?;
        {
            let mut t = tx.open_table(TOKENS).map_err(|e| io(&e))?;
            t.insert(record.id.as_str(), bytes.as_slice())
                .map_err(|e| io(&e))?;
        }
        tx.commit().map_err(|e| io(&e))?;
        Ok(())
    }
}

/// Why a presented token was not accepted (every case is a 401 /
/// UNAUTHENTICATED). No message ever contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no bearer token: send `Authorization: Bearer <token>` (agora CLI: --token-file, AGORA_TOKEN or the client context file)"
    )]
    Missing,
    #[error(
        "the authorization header is not `Bearer <token>` with a token of the form agora_<id>_<secret>"
    )]
    Malformed,
    #[error("unknown token: it was never issued by this cluster (or its record was lost)")]
    Unknown,
    #[error("token {id} expired at {at} (Unix time); create a new one with `agora token create`")]
    Expired { id: String, at: u64 },
    #[error("token {id} was revoked; create a new one with `agora token create`")]
    Revoked { id: String },
}

/// Refusals of token management calls.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid principal {0:?}: use 1 to 64 letters, digits, `.`, `_` or `-`")]
    BadPrincipal(String),
    #[error("invalid ttl {0:?}: use a number with s, m, h or d (e.g. 30d), or \"never\"")]
    BadTtl(String),
    #[error("no token with id {0}")]
    NotFound(String),
    #[error("the system random generator failed")]
    Random,
    #[error(transparent)]
    Store(#[from] TokenStoreError),
}

/// Checks a principal name: `[A-Za-z0-9._-]{1,64}`.
pub fn valid_principal(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_PRINCIPAL_LEN
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses a token lifetime: `30d`, `12h`, `15m`, `3600s`, or `never`.
pub fn parse_ttl(s: &str) -> Result<Option<Duration>, TokenError> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let bad = || TokenError::BadTtl(s.chars().take(40).collect());
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(bad());
    }
    let secs = n.checked_mul(mult).ok_or_else(bad)?;
    Ok(Some(Duration::from_secs(secs)))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let txt = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(txt, 16).ok()?;
    }
    Some(out)
}

struct Entry {
    record: TokenRecord,
    digest: [u8; 32],
}

/// The master's tokens: the store, and its records in memory (verifying a
/// token is a map lookup and one hash, no disk read).
pub struct Tokens {
    store: Box<dyn TokenStore>,
    entries: RwLock<BTreeMap<String, Entry>>,
    rng: SystemRandom,
    /// Serialises writers so the memory view and the store agree.
    write: Mutex<()>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.entries.read().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("Tokens").field("count", &n).finish()
    }
}

impl Tokens {
    pub fn open(store: Box<dyn TokenStore>) -> Result<Tokens, TokenStoreError> {
        let mut entries = BTreeMap::new();
        for record in store.load()? {
            let digest = unhex32(&record.sha256).ok_or_else(|| TokenStoreError::Corrupt {
                id: record.id.clone(),
                message: "the digest is not 64 hex digits".into(),
            })?;
            entries.insert(record.id.clone(), Entry { record, digest });
        }
        Ok(Tokens {
            store,
            entries: RwLock::new(entries),
            rng: SystemRandom::new(),
            write: Mutex::new(()),
        })
    }

    pub fn memory() -> Tokens {
        Tokens::open(Box::new(MemoryTokenStore::default())).expect("an empty memory store loads")
    }

    /// Whether no token was ever created (revoked ones count).
    pub fn is_empty(&self) -> bool {
        self.entries.read().map(|e| e.is_empty()).unwrap_or(false)
    }

    /// Creates a token for `principal` valid for `ttl` (`None`: no expiry).
    /// The clear token is returned once and never stored.
    pub fn create(
        &self,
        principal: &str,
        ttl: Option<Duration>,
    ) -> Result<(Token, TokenInfo), TokenError> {
        if !valid_principal(principal) {
            return Err(TokenError::BadPrincipal(
                principal.chars().take(80).collect(),
            ));
        }
        let _w = self.write.lock().map_err(|_| TokenError::Random)?;
        let mut id_bytes = [0u8; ID_HEX_LEN / 2];
        let mut id = String::new();
        for _ in 0..8 {
            self.rng
                .fill(&mut id_bytes)
                .map_err(|_| TokenError::Random)?;
            id = hex(&id_bytes);
            let taken = self
                .entries
                .read()
                .map(|e| e.contains_key(&id))
                .unwrap_or(true);
            if !taken {
                break;
            }
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        self.rng
            .fill(secret.as_mut())
            .map_err(|_| TokenError::Random)?;
        let encoded =
            Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*secret));
        let token = Token::new(format!("{TOKEN_PREFIX}{id}_{}", encoded.as_str()));
        let created = unix_now();
        let digest = token.digest();
        let record = TokenRecord {
            id: id.clone(),
            principal: principal.to_string(),
            created,
            expires: ttl.map(|d| created.saturating_add(d.as_secs())),
            revoked: None,
            sha256: hex(&digest),
        };
        self.store.put(&record)?;
        let info = TokenInfo::from(&record);
        if let Ok(mut e) = self.entries.write() {
            e.insert(id, Entry { record, digest });
        }
        Ok((token, info))
    }

    /// Every token's metadata, by id.
    pub fn list(&self) -> Vec<TokenInfo> {
        self.entries
            .read()
            .map(|e| e.values().map(|x| TokenInfo::from(&x.record)).collect())
            .unwrap_or_default()
    }

    /// Revokes a token; effective for every request from now on.
    /// Revoking twice is not an error (the first time is kept).
    pub fn revoke(&self, id: &str) -> Result<TokenInfo, TokenError> {
        let _w = self.write.lock().map_err(|_| TokenError::Random)?;
        let mut record = {
            let e = self.entries.read().map_err(|_| TokenError::Random)?;
            match e.get(id) {
                Some(x) => x.record.clone(),
                None => return Err(TokenError::NotFound(id.chars().take(40).collect())),
            }
        };
        if record.revoked.is_none() {
            record.revoked = Some(unix_now());
            self.store.put(&record)?;
            if let Ok(mut e) = self.entries.write()
                && let Some(x) = e.get_mut(id)
            {
                x.record = record.clone();
            }
        }
        Ok(TokenInfo::from(&record))
    }

    /// The principal a presented token authenticates, at time `now` (Unix s).
    pub fn verify_at(&self, token: &Token, now: u64) -> Result<String, AuthError> {
        let id = token.id().ok_or(AuthError::Malformed)?;
        let digest = token.digest();
        let e = self.entries.read().map_err(|_| AuthError::Unknown)?;
        let entry = e.get(id).ok_or(AuthError::Unknown)?;
        if !digests_equal(&digest, &entry.digest) {
            return Err(AuthError::Unknown);
        }
        if entry.record.revoked.is_some() {
            return Err(AuthError::Revoked {
                id: entry.record.id.clone(),
            });
        }
        if let Some(at) = entry.record.expires
            && now >= at
        {
            return Err(AuthError::Expired {
                id: entry.record.id.clone(),
                at,
            });
        }
        Ok(entry.record.principal.clone())
    }

    pub fn verify(&self, token: &Token) -> Result<String, AuthError> {
        self.verify_at(token, unix_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_revoked_or_expired() {
        let t = Tokens::memory();
        let (tok, info) = t.create("ops", parse_ttl("1h").unwrap()).unwrap();
        assert!(tok.expose().starts_with("agora_"));
        assert_eq!(tok.expose().len(), 6 + 12 + 1 + 43);
        assert_eq!(t.verify(&tok).unwrap(), "ops");
        let exp = info.expires.unwrap();
        assert_eq!(
            t.verify_at(&tok, exp),
            Err(AuthError::Expired {
                id: info.id.clone(),
                at: exp
            })
        );
        t.revoke(&info.id).unwrap();
        assert_eq!(
            t.verify(&tok),
            Err(AuthError::Revoked {
                id: info.id.clone()
            })
        );
        assert!(matches!(
            t.revoke("000000000000"),
            Err(TokenError::NotFound(_))
        ));
    }

    #[test]
    fn a_forged_secret_with_a_real_id_is_unknown() {
        let t = Tokens::memory();
        let (tok, info) = t.create("ops", None).unwrap();
        let mut forged = tok.expose().to_string();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(t.verify(&Token::new(forged)), Err(AuthError::Unknown));
        assert_eq!(
            t.verify(&Token::new(format!("agora_{}_short", info.id))),
            Err(AuthError::Malformed)
        );
        assert_eq!(t.verify(&Token::new("Bearer x")), Err(AuthError::Malformed));
        assert!(!format!("{tok:?}").contains(&tok.expose()[6..]));
    }

    #[test]
    fn ttls_parse() {
        assert_eq!(
            parse_ttl("30d").unwrap(),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_ttl("90m").unwrap(), Some(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("never").unwrap(), None);
        for bad in ["", "d", "0h", "3w", "1.5h", "-1d", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_compare_exactly() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(digests_equal(&a, &b));
        b[31] ^= 1;
        assert!(!digests_equal(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!digests_equal(&a, &b));
    }

    #[test]
    fn the_registry_file_holds_digests_not_tokens() {
        let dir = std::env::temp_dir().join(format!("agora-tok-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("registry.redb");
        let (tok, info) = {
            let db = Arc::new(redb::Database::create(&path).unwrap());
            let t = Tokens::open(Box::new(RedbTokenStore::open(db).unwrap())).unwrap();
            t.create("admin", None).unwrap()
        };
        let bytes = std::fs::read(&path).unwrap();
        let secret = tok.expose().rsplit_once('_').unwrap().1;
        let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(
            !contains(secret.as_bytes()),
            "the token's secret is on disk"
        );
        assert!(contains(info.id.as_bytes()), "the record is on disk");
        // Reopened, the token still verifies (from its digest).
        let db = Arc::new(redb::Database::create(&path).unwrap());
        let t = Tokens::open(Box::new(RedbTokenStore::open(db).unwrap())).unwrap();
        assert_eq!(t.verify(&tok).unwrap(), "admin");
        std::fs::remove_dir_all(dir).ok();
    }
}
