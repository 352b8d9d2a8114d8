//! HTTP Basic auth for `access: basic` (seed 003): an htpasswd-style
//! credentials file of bcrypt hashes, and the `Authorization: Basic` check.
//!
//! File format: one `user:hash` per line; blank lines and `#` comments are
//! skipped, surrounding blanks and a CRLF ending are ignored. Only bcrypt
//! hashes (`$2y$` from `htpasswd -B`, `$2b$`, `$2a$`) load; plain text,
//! `{SHA}`, `$apr1$`, crypt and the rest are refused at load time with every
//! bad line named by number and scheme, never echoing a hash or a password.
//!
//! Cost model: a bcrypt check takes milliseconds at cost 10 (it doubles per
//! cost step), so verified credentials are remembered in a bounded set keyed
//! by HMAC-SHA256(per-load random key, `user:password`): a returning editor
//! costs an HMAC and a lookup, and no plaintext is ever stored. Only successes
//! are cached. The set belongs to one loaded file, so a reload (a new
//! [`Htpasswd`]) starts empty and a changed password takes effect at once.
//!
//! Timing: an unknown user is verified against a dummy hash of the file's
//! highest cost, so response time does not reveal which users exist; bcrypt
//! compares in constant time. A cache miss runs bcrypt on the calling thread:
//! in async code, answer [`Htpasswd::check_cached`] inline and run
//! [`Htpasswd::check`] on a blocking thread only when it returns `None`.
//! Unauthenticated clients can make the edge pay one bcrypt per request;
//! rate-limit failures per client if that matters.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use dashmap::DashSet;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Largest credentials file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Highest bcrypt cost accepted: each step doubles the work of every failed
/// (uncached) check, and cost 14 already takes about a second.
pub const MAX_BCRYPT_COST: u32 = 14;
/// Verified credentials remembered per loaded file (concurrent inserts may
/// briefly exceed it by the number of threads checking at once).
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;
/// Longest `Authorization` header value considered, in bytes.
const MAX_HEADER_BYTES: usize = 4096;

/// Why a credentials file did not load.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// The file could not be read.
    #[error("cannot read credentials file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("credentials file {path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Some lines are unusable; every one is listed.
    #[error("credentials file {path}: {}", LineProblems(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Each bad line, in file order.
        problems: Vec<LineProblem>,
    },
    /// The file defines no user, so nobody could ever log in.
    #[error(
        "credentials file {path} defines no user. Fix: add lines user:hash made with `htpasswd -B`"
    )]
    NoUsers {
        /// The file.
        path: PathBuf,
    },
    /// The system random generator failed.
    #[error("system random generator failed")]
    Random,
}

/// One unusable line of a credentials file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, without the line's content.
    pub reason: String,
}

struct LineProblems<'a>(&'a [LineProblem]);

impl fmt::Display for LineProblems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "line {}: {}", p.line, p.reason)?;
        }
        Ok(())
    }
}

/// Why a request was not let in. All answer 401; the label is for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicDenial {
    /// No `Authorization` header.
    Missing,
    /// Not `Basic` + strict base64 of UTF-8 `user:password`.
    Malformed,
    /// Unknown user or wrong password (not told apart, on purpose).
    BadCredentials,
}

impl BasicDenial {
    /// Stable metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            BasicDenial::Missing => "missing",
            BasicDenial::Malformed => "malformed",
            BasicDenial::BadCredentials => "bad_credentials",
        }
    }
}

/// Cache counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HtpasswdStats {
    /// Checks answered from the verified-credentials cache.
    pub hits: u64,
    /// Checks that ran bcrypt.
    pub misses: u64,
    /// Times the full cache was emptied to make room.
    pub evictions: u64,
}

/// A loaded credentials file with its verified-credentials cache.
pub struct Htpasswd {
    path: PathBuf,
    users: HashMap<String, String>,
    /// Same cost as the strongest real hash: unknown users cost as much as known ones.
    dummy_hash: String,
    cache_key: hmac::Key,
    verified: DashSet<[u8; 32]>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Htpasswd")
            .field("path", &self.path)
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl Htpasswd {
    /// Reads and validates the file at `path` (see the module docs for the format).
    pub fn load(path: &Path) -> Result<Self, HtpasswdError> {
        let io = |source| HtpasswdError::Io {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_FILE_BYTES {
            return Err(HtpasswdError::TooLarge {
                path: path.to_owned(),
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses file contents; `path` only names the file in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, HtpasswdError> {
        let mut users: HashMap<String, (String, usize)> = HashMap::new();
        let mut problems = Vec::new();
        let mut max_cost = 0;
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            let mut problem = |reason: String| problems.push(LineProblem { line, reason });
            let Ok(text) = std::str::from_utf8(raw) else {
                problem("not valid UTF-8".to_owned());
                continue;
            };
            let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = text.split_once(':') else {
                problem("no ':' between user name and hash".to_owned());
                continue;
            };
            if user.is_empty() {
                problem("empty user name".to_owned());
                continue;
            }
            if user.chars().any(char::is_control) {
                problem("user name contains a control character".to_owned());
                continue;
            }
            let cost = match bcrypt_cost(hash) {
                Ok(cost) => cost,
                Err(reason) => {
                    problem(reason);
                    continue;
                }
            };
            if let Some((_, first)) = users.get(user) {
                problem(format!("duplicate user, first defined on line {first}"));
                continue;
            }
            max_cost = max_cost.max(cost);
            users.insert(user.to_owned(), (hash.to_owned(), line));
        }
        let path = path.to_owned();
        if !problems.is_empty() {
            return Err(HtpasswdError::Invalid { path, problems });
        }
        if users.is_empty() {
            return Err(HtpasswdError::NoUsers { path });
        }

        let rng = SystemRandom::new();
        let mut key = [0u8; 32];
        let mut salt = [0u8; 16];
        rng.fill(&mut key).map_err(|_| HtpasswdError::Random)?;
        rng.fill(&mut salt).map_err(|_| HtpasswdError::Random)?;
        // The dummy's password is irrelevant: nothing is ever let in through it.
        let dummy_hash = bcrypt::hash_with_salt(key, max_cost, salt)
            .map_err(|_| HtpasswdError::Random)?
            .format_for_version(bcrypt::Version::TwoB);
        Ok(Self {
            path,
            users: users.into_iter().map(|(u, (h, _))| (u, h)).collect(),
            dummy_hash,
            cache_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            verified: DashSet::new(),
            capacity: DEFAULT_CACHE_CAPACITY,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    /// Sets how many verified credentials are remembered (0 disables the cache).
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users (never true for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Cache counters.
    pub fn stats(&self) -> HtpasswdStats {
        HtpasswdStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// Checks an `Authorization` header value; `Ok` holds the user name.
    /// May run bcrypt (milliseconds): see the module docs.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<String, BasicDenial> {
        let (user, password) = parse_basic(authorization)?;
        let key = self.cache_key_for(&user, &password);
        if self.verified.contains(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(user);
        }
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.as_str(), true),
            None => (self.dummy_hash.as_str(), false),
        };
        self.misses.fetch_add(1, Ordering::Relaxed);
        // A hash that loaded always parses; treat a failure as a wrong password.
        let matches = bcrypt::verify(password.as_bytes(), hash).unwrap_or(false);
        if !(matches && known) {
            return Err(BasicDenial::BadCredentials);
        }
        self.remember(key);
        Ok(user)
    }

    /// The answer when it needs no bcrypt: `Some` for a missing or malformed
    /// header and for cached credentials; `None` means call [`Htpasswd::check`].
    pub fn check_cached(
        &self,
        authorization: Option<&[u8]>,
    ) -> Option<Result<String, BasicDenial>> {
        let (user, password) = match parse_basic(authorization) {
            Ok(pair) => pair,
            Err(denial) => return Some(Err(denial)),
        };
        if self
            .verified
            .contains(&self.cache_key_for(&user, &password))
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(Ok(user));
        }
        None
    }

    fn cache_key_for(&self, user: &str, password: &str) -> [u8; 32] {
        // `user` holds no ':', so "user:password" is unambiguous.
        let mut ctx = hmac::Context::with_key(&self.cache_key);
        ctx.update(user.as_bytes());
        ctx.update(b":");
        ctx.update(password.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn remember(&self, key: [u8; 32]) {
        if self.capacity == 0 {
            return;
        }
        // Entries only come from correct passwords, so filling the set takes
        // many valid logins; emptying it then costs each editor one bcrypt.
        if self.verified.len() >= self.capacity {
            self.verified.clear();
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        self.verified.insert(key);
    }
}

/// The `WWW-Authenticate` value for a 401 in `realm`
/// (`Basic realm="editors", charset="UTF-8"`, RFC 7617).
pub fn www_authenticate(realm: &str) -> String {
    let mut out = String::with_capacity(realm.len() + 40);
    out.push_str("Basic realm=\"");
    for c in realm.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push_str("\", charset=\"UTF-8\"");
    out
}

/// Splits `Basic <base64(user:password)>` strictly: scheme case-insensitive,
/// canonical padded base64, UTF-8, a ':' present, no control characters.
fn parse_basic(header: Option<&[u8]>) -> Result<(String, String), BasicDenial> {
    let header = header.ok_or(BasicDenial::Missing)?;
    if header.len() > MAX_HEADER_BYTES {
        return Err(BasicDenial::Malformed);
    }
    let header = std::str::from_utf8(header).map_err(|_| BasicDenial::Malformed)?;
    let header = header.trim_matches([' ', '\t']);
    let (scheme, rest) = header.split_once(' ').ok_or(BasicDenial::Malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(BasicDenial::Malformed);
    }
    let encoded = rest.trim_start_matches(' ');
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| BasicDenial::Malformed)?;
    let decoded = String::from_utf8(decoded).map_err(|_| BasicDenial::Malformed)?;
    let (user, password) = decoded.split_once(':').ok_or(BasicDenial::Malformed)?;
    if user.chars().chain(password.chars()).any(char::is_control) {
        return Err(BasicDenial::Malformed);
    }
    Ok((user.to_owned(), password.to_owned()))
}

/// The cost of a usable bcrypt hash, or why the hash is refused (naming its
/// scheme, never its content).
fn bcrypt_cost(hash: &str) -> Result<u32, String> {
    const HINT: &str =
        "only bcrypt ($2y$, $2b$, $2a$) is accepted. Fix: re-create it with `htpasswd -B`";
    let kind = if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
        return match hash.parse::<bcrypt::HashParts>() {
            Ok(parts) if parts.get_cost() > MAX_BCRYPT_COST => Err(format!(
                "bcrypt cost {} is above the limit {MAX_BCRYPT_COST} (each check would take seconds). \
                 Fix: re-create it with `htpasswd -B -C 10`",
                parts.get_cost()
            )),
            Ok(parts) if parts.get_cost() < 4 => Err(format!("bcrypt cost {} is below 4; {HINT}", parts.get_cost())),
            Ok(parts) => Ok(parts.get_cost()),
            Err(_) => Err(format!(
                "malformed bcrypt hash (expected 60 characters: $2y$NN$ then 53 of [./A-Za-z0-9]); {HINT}"
            )),
        };
    } else if hash.starts_with("$2x$") {
        "bcrypt $2x$ (the flawed pre-2011 variant)"
    } else if hash.starts_with("$apr1$") {
        "Apache MD5 ($apr1$)"
    } else if hash.starts_with("{SHA}") {
        "unsalted SHA-1 ({SHA})"
    } else if hash.starts_with("$1$") {
        "MD5-crypt ($1$)"
    } else if hash.starts_with("$5$") {
        "SHA-256-crypt ($5$)"
    } else if hash.starts_with("$6$") {
        "SHA-512-crypt ($6$)"
    } else if hash.starts_with("$argon2") {
        "argon2"
    } else if hash.len() == 13
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        "DES crypt or plain text"
    } else {
        "plain text or an unknown scheme"
    };
    Err(format!("{kind} is not accepted: {HINT}"))
}

#[cfg(test)]
#[path = "htpasswd_tests.rs"]
mod tests;
