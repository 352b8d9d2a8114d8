//! Validation: raw YAML tree → [`Config`], reporting every problem in one pass.
//!
//! Each check pushes a [`Problem`] and carries on with a placeholder value, so one run of
//! `tollgate check` lists everything that is wrong. Messages follow one shape: what is wrong,
//! then `Fix:` and what to do.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::auth::{validate_auth, validate_keys};
use super::origin::validate_origins;
use super::problems::{duration_or, existing_file, resolve, size_or, Problems};
use super::raw::*;
use super::routes::validate_routes;
use super::types::*;
use super::units::format_size;
use super::Problem;

/// Validates a parsed file. `base_dir` resolves relative paths; `env` looks up `secret_env`.
pub fn validate(
    raw: RawConfig,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Problem>> {
    let mut p = Problems(Vec::new());
    // Cross references are checked against what the file *declares*, so a broken origin or a
    // missing key file is reported once, where it is, not again at every route using it.
    let declared_origins: BTreeSet<String> = raw.origins.keys().cloned().collect();
    let keys_declared = raw.keys.jwks_file.is_some() || !raw.keys.pem.is_empty();
    let pingora = validate_pingora(raw.pingora, base_dir, &mut p);
    let listeners = validate_listeners(raw.listeners, base_dir, &mut p);
    let admin = raw
        .admin
        .and_then(|admin| validate_admin(admin, &listeners, base_dir, &mut p));
    let origins = validate_origins(raw.origins, base_dir, env, &mut p);
    let keys = validate_keys(raw.keys, base_dir, &mut p);
    let auth = validate_auth(raw.auth, &mut p);
    let signed_keys = named_files(
        raw.signed_keys,
        "signed_keys",
        "PEM public key",
        base_dir,
        &mut p,
    );
    let basic_auth = named_files(
        raw.basic_auth,
        "basic_auth",
        "htpasswd file",
        base_dir,
        &mut p,
    );
    let declared = super::routes::Declared {
        origins: &declared_origins,
        keys: keys_declared,
        signed_keys: !signed_keys.is_empty(),
        realms: &basic_auth,
    };
    let routes = validate_routes(raw.routes, &declared, &mut p);
    let cache = validate_cache(raw.cache, base_dir, &mut p);
    let revocation = validate_revocation(raw.revocation, &mut p);
    let smd = raw.smd.and_then(|s| validate_smd(s, base_dir, &mut p));
    let state_dir = raw
        .state_dir
        .and_then(|dir| validate_state_dir(&dir, base_dir, &mut p));
    let logging = super::logging::validate_logging(raw.logging, base_dir, &mut p);
    let trusted_proxies =
        super::limits::validate_trusted_proxies(raw.trusted_proxies, &listeners, &mut p);
    let limits = super::limits::validate_limits(raw.limits, &mut p);
    let resolver = validate_resolver(raw.resolver, &mut p);
    let fleet = raw
        .fleet
        .and_then(|f| super::fleet::validate_fleet(f, state_dir.is_some(), base_dir, &mut p));

    if !p.0.is_empty() {
        return Err(p.0);
    }
    Ok(Config {
        pingora,
        listeners,
        admin,
        origins,
        keys,
        auth,
        routes,
        cache,
        state_dir,
        logging,
        revocation,
        smd,
        signed_keys,
        basic_auth,
        trusted_proxies,
        limits,
        fleet,
        resolver,
    })
}

/// `name: path` maps (`signed_keys`, `basic_auth`): names non-empty, files present.
fn named_files(
    raw: std::collections::BTreeMap<String, PathBuf>,
    section: &str,
    what: &str,
    base_dir: &Path,
    p: &mut Problems,
) -> std::collections::BTreeMap<String, PathBuf> {
    let mut out = std::collections::BTreeMap::new();
    for (name, path) in raw {
        let key = format!("{section}.{name}");
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            p.add(
                &key,
                format!("'{name}' is not a valid name. Fix: use letters, digits, '.', '_', '-'"),
            );
            continue;
        }
        if let Some(full) = existing_file(base_dir, &path, &key, what, p) {
            out.insert(name, full);
        }
    }
    out
}

fn validate_pingora(raw: RawPingora, base_dir: &Path, p: &mut Problems) -> PingoraSettings {
    if let Some(threads) = raw.threads {
        if threads == 0 || threads > MAX_THREADS {
            p.add(
                "pingora.threads",
                format!(
                    "{threads} is out of range. Fix: use 1 to {MAX_THREADS}, or remove the key \
                     to use one thread per core"
                ),
            );
        }
    }
    let path = |opt: Option<PathBuf>, key: &str, p: &mut Problems| {
        let path = opt?;
        if path.as_os_str().is_empty() {
            p.add(key, "empty path. Fix: set a path or remove the key");
            return None;
        }
        Some(resolve(base_dir, &path))
    };
    PingoraSettings {
        threads: raw.threads,
        pid_file: path(raw.pid_file, "pingora.pid_file", p),
        upgrade_sock: path(raw.upgrade_sock, "pingora.upgrade_sock", p),
        error_log: path(raw.error_log, "pingora.error_log", p),
        grace_period_seconds: raw.grace_period_seconds,
        graceful_shutdown_timeout_seconds: raw.graceful_shutdown_timeout_seconds,
        daemon: raw.daemon.unwrap_or(false),
    }
}

/// Would binding both addresses fail? Port 0 (ephemeral, used by tests) never conflicts.
fn addrs_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    a.ip() == b.ip()
        || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified()))
}

fn parse_addr(text: &str, key: &str, example: &str, p: &mut Problems) -> Option<SocketAddr> {
    match text.trim().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p.add(
                key,
                format!(
                    "'{text}' is not an IP:port address. Fix: write an IP address and a port, \
                     e.g. {example} or [::]:{} (host names are not resolved here)",
                    example.rsplit(':').next().unwrap_or("8080")
                ),
            );
            None
        }
    }
}

fn validate_listeners(raw: Vec<RawListener>, base_dir: &Path, p: &mut Problems) -> Vec<Listener> {
    if raw.is_empty() {
        p.add(
            "listeners",
            "no listener is configured, so the edge would accept no traffic. \
             Fix: add one, e.g. listeners: [{ addr: 0.0.0.0:8080 }]",
        );
    }
    let mut listeners: Vec<(usize, Listener)> = Vec::new();
    for (i, listener) in raw.into_iter().enumerate() {
        let key = format!("listeners[{i}].addr");
        let proxy_protocol = listener.proxy_protocol.unwrap_or(false);
        let tls = listener
            .tls
            .map(|tls| super::tls::validate_tls(tls, i, base_dir, p));
        let Some(text) = listener.addr else {
            p.add(
                &key,
                "missing. Fix: add addr: 0.0.0.0:8080 (IP:port to listen on)",
            );
            continue;
        };
        let Some(addr) = parse_addr(&text, &key, "0.0.0.0:8080", p) else {
            continue;
        };
        if let Some((j, other)) = listeners.iter().find(|(_, l)| addrs_conflict(l.addr, addr)) {
            let why = if other.addr == addr {
                "is also used by".to_owned()
            } else {
                format!("overlaps {} of", other.addr)
            };
            p.add(
                &key,
                format!(
                    "{addr} {why} listeners[{j}]; both cannot be bound. Fix: give each \
                     listener its own port, or remove one"
                ),
            );
            continue;
        }
        match tls {
            Some(None) => {}
            Some(Some(tls)) => listeners.push((
                i,
                Listener {
                    addr,
                    tls: Some(tls),
                    proxy_protocol,
                },
            )),
            None => listeners.push((
                i,
                Listener {
                    addr,
                    tls: None,
                    proxy_protocol,
                },
            )),
        }
    }
    listeners.into_iter().map(|(_, l)| l).collect()
}

fn validate_admin(
    raw: RawAdmin,
    listeners: &[Listener],
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Admin> {
    let token = raw.token_file.and_then(|file| {
        let full = existing_file(base_dir, &file, "admin.token_file", "admin token file", p)?;
        let text = match std::fs::read_to_string(&full) {
            Ok(text) => text,
            Err(err) => {
                p.add(
                    "admin.token_file",
                    format!(
                        "cannot read {}: {err}. Fix: make it readable by the service user",
                        full.display()
                    ),
                );
                return None;
            }
        };
        let token = text.trim();
        let fix = format!(
            "Fix: write a random token of at least {MIN_ADMIN_TOKEN_LEN} printable characters, \
             e.g. openssl rand -hex 24 > {}",
            full.display()
        );
        if token.is_empty() {
            p.add(
                "admin.token_file",
                format!("{} is empty. {fix}", full.display()),
            );
            None
        } else if token.chars().any(|c| !c.is_ascii_graphic()) {
            p.add(
                "admin.token_file",
                format!(
                    "the token in {} contains spaces, control or non-ASCII characters, which \
                     cannot travel in an Authorization header. {fix}",
                    full.display()
                ),
            );
            None
        } else if token.len() < MIN_ADMIN_TOKEN_LEN {
            p.add(
                "admin.token_file",
                format!(
                    "the token in {} is only {} characters, too short to resist guessing. {fix}",
                    full.display(),
                    token.len()
                ),
            );
            None
        } else {
            Some(token.to_owned())
        }
    });
    let Some(text) = raw.addr else {
        p.add(
            "admin.addr",
            "missing. Fix: add addr: 127.0.0.1:9100, or remove admin: to run without it",
        );
        return None;
    };
    let addr = parse_addr(&text, "admin.addr", "127.0.0.1:9100", p)?;
    if let Some(i) = listeners.iter().position(|l| addrs_conflict(l.addr, addr)) {
        p.add(
            "admin.addr",
            format!(
                "{addr} conflicts with listeners[{i}] ({}); the admin API needs its own \
                 address. Fix: use another port, e.g. 127.0.0.1:9100",
                listeners[i].addr
            ),
        );
    }
    Some(Admin { addr, token })
}
fn validate_smd(raw: RawSmd, base_dir: &Path, p: &mut Problems) -> Option<SmdSettings> {
    let Some(file) = raw.secrets_file else {
        p.add(
            "smd.secrets_file",
            "missing. Fix: point it at the JSON map {\"<kid>\": \"<secret>\"} your token service uses",
        );
        return None;
    };
    let file = resolve(base_dir, &file);
    if !file.is_file() {
        p.add(
            "smd.secrets_file",
            format!("{} does not exist or is not a file", file.display()),
        );
        return None;
    }
    Some(SmdSettings { secrets_file: file })
}

fn validate_revocation(raw: RawRevocation, p: &mut Problems) -> RevocationSettings {
    let default_ttl = duration_or(
        raw.default_ttl,
        Duration::from_secs(DEFAULT_REVOCATION_TTL_SECONDS),
        "revocation.default_ttl",
        p,
    );
    let raw_auto = raw.auto.unwrap_or_default();
    let window = duration_or(
        raw_auto.window,
        Duration::from_secs(DEFAULT_AUTO_REVOCATION_WINDOW_SECONDS),
        "revocation.auto.window",
        p,
    );
    if window.is_zero() {
        p.add(
            "revocation.auto.window",
            "0s never sees two requests together. Fix: use minutes, e.g. 10m",
        );
    }
    let max_ips = raw_auto.max_ips.unwrap_or(DEFAULT_AUTO_REVOCATION_MAX_IPS);
    let max_user_agents = raw_auto
        .max_user_agents
        .unwrap_or(DEFAULT_AUTO_REVOCATION_MAX_USER_AGENTS);
    for (key, v) in [
        ("revocation.auto.max_ips", max_ips),
        ("revocation.auto.max_user_agents", max_user_agents),
    ] {
        if v < 2 {
            p.add(
                key,
                format!(
                    "{v} would revoke a viewer who switches from Wi-Fi to mobile. Fix: use at \
                     least 2 (default {})",
                    if key.ends_with("ips") {
                        DEFAULT_AUTO_REVOCATION_MAX_IPS
                    } else {
                        DEFAULT_AUTO_REVOCATION_MAX_USER_AGENTS
                    }
                ),
            );
        }
    }
    let auto = raw_auto.enabled.unwrap_or(true).then_some(AutoRevocation {
        window,
        max_ips,
        max_user_agents,
    });
    RevocationSettings { default_ttl, auto }
}

fn validate_disk(raw: RawCacheDisk, base_dir: &Path, p: &mut Problems) -> Option<DiskSettings> {
    let Some(path) = raw.path else {
        p.add(
            "cache.disk.path",
            "missing. Fix: name a directory for the disk tier, e.g. /var/cache/tollgate",
        );
        return None;
    };
    let path = resolve(base_dir, &path);
    if path.exists() && !path.is_dir() {
        p.add(
            "cache.disk.path",
            format!(
                "{} exists and is not a directory. Fix: point it at a directory",
                path.display()
            ),
        );
    }
    let max_size = size_or(
        raw.max_size,
        DEFAULT_CACHE_DISK_MAX_SIZE,
        "cache.disk.max_size",
        p,
    )?;
    if max_size < MIN_CACHE_DISK_MAX_SIZE {
        p.add(
            "cache.disk.max_size",
            format!(
                "{} is too small for a disk tier. Fix: give it at least {}",
                format_size(max_size),
                format_size(MIN_CACHE_DISK_MAX_SIZE)
            ),
        );
    }
    Some(DiskSettings { path, max_size })
}

fn validate_resolver(raw: RawResolver, p: &mut Problems) -> ResolverSettings {
    let mut servers = Vec::with_capacity(raw.servers.len());
    for (i, text) in raw.servers.iter().enumerate() {
        let parsed = text
            .parse::<std::net::SocketAddr>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()));
        match parsed {
            Ok(addr) => servers.push(addr),
            Err(_) => p.add(
                format!("resolver.servers[{i}]"),
                format!("{text:?} is not an IP address (with an optional port). Fix: e.g. 10.0.0.2 or 10.0.0.2:53"),
            ),
        }
    }
    let min_ttl = duration_or(
        raw.min_ttl,
        Duration::from_secs(DEFAULT_RESOLVER_MIN_TTL_SECONDS),
        "resolver.min_ttl",
        p,
    );
    let max_ttl = duration_or(
        raw.max_ttl,
        Duration::from_secs(DEFAULT_RESOLVER_MAX_TTL_SECONDS),
        "resolver.max_ttl",
        p,
    );
    if min_ttl < Duration::from_secs(1) {
        p.add(
            "resolver.min_ttl",
            "under a second would look names up on every request. Fix: e.g. 10s",
        );
    }
    if max_ttl < min_ttl {
        p.add(
            "resolver.max_ttl",
            "shorter than resolver.min_ttl. Fix: at least min_ttl, e.g. 10m",
        );
    }
    ResolverSettings {
        servers,
        min_ttl,
        max_ttl,
    }
}

/// `cache.max_object_size` when the file does not say: it always fits the tiers configured.
/// With a disk tier, a quarter of it up to 1 GiB (downloads and video files of hundreds of MiB
/// are cached; a 10 GiB tier holds at least ten of the largest); memory alone, a quarter of it
/// up to 16 MiB (one object never evicts the whole tier).
pub(super) fn default_max_object_size(memory: u64, disk: Option<u64>) -> u64 {
    match disk {
        Some(disk) => (disk / 4).clamp(1, DEFAULT_CACHE_DISK_MAX_OBJECT_SIZE),
        None => (memory / 4).clamp(1, DEFAULT_CACHE_MAX_OBJECT_SIZE),
    }
}

fn validate_cache(raw: RawCache, base_dir: &Path, p: &mut Problems) -> CacheSettings {
    let disk = raw.disk.and_then(|d| validate_disk(d, base_dir, p));
    let raw_memory = raw.memory.unwrap_or_default();
    let fast_hits = raw_memory.fast_hits.unwrap_or(true);
    let memory = size_or(
        raw_memory.max_size,
        DEFAULT_CACHE_MEMORY_MAX_SIZE,
        "cache.memory.max_size",
        p,
    );
    if memory == Some(0) {
        p.add(
            "cache.memory.max_size",
            "0 leaves no room for any object. Fix: give it a size such as 256MiB; to stop \
             caching a route set cache: { enabled: false } on it",
        );
    }
    let written = raw.max_object_size.is_some();
    let default_max_object = default_max_object_size(
        memory.unwrap_or(DEFAULT_CACHE_MEMORY_MAX_SIZE),
        disk.as_ref().map(|d| d.max_size),
    );
    let max_object = size_or(
        raw.max_object_size,
        default_max_object,
        "cache.max_object_size",
        p,
    );
    // Objects above the memory tier's size live on disk only; without a disk tier they must fit
    // in memory.
    let largest_tier = match &disk {
        Some(d) => memory.unwrap_or(0).max(d.max_size),
        None => memory.unwrap_or(0),
    };
    if let (Some(object), true) = (max_object, written) {
        if largest_tier > 0 && object > largest_tier {
            p.add(
                "cache.max_object_size",
                format!(
                    "{} is larger than the largest cache tier ({}). Fix: lower max_object_size \
                     or raise the tier's max_size",
                    format_size(object),
                    format_size(largest_tier)
                ),
            );
        }
    }
    CacheSettings {
        disk,
        memory_max_size: memory.unwrap_or(DEFAULT_CACHE_MEMORY_MAX_SIZE),
        fast_hits,
        max_object_size: max_object.unwrap_or(default_max_object),
        lock_timeout: duration_or(
            raw.lock_timeout,
            Duration::from_secs(DEFAULT_CACHE_LOCK_TIMEOUT_SECONDS),
            "cache.lock_timeout",
            p,
        ),
    }
}

/// `state_dir` may not exist yet (the edge creates it), but must not be a file, nor sit under
/// one.
fn validate_state_dir(dir: &Path, base_dir: &Path, p: &mut Problems) -> Option<PathBuf> {
    if dir.as_os_str().is_empty() {
        p.add(
            "state_dir",
            "empty path. Fix: set a directory or remove the key",
        );
        return None;
    }
    let full = resolve(base_dir, dir);
    let existing = full.ancestors().find(|a| a.exists());
    match existing {
        Some(found) if !found.is_dir() => {
            p.add(
                "state_dir",
                format!(
                    "{} is a file, not a directory. Fix: point state_dir at a directory (it is \
                     created if missing)",
                    found.display()
                ),
            );
            None
        }
        _ => Some(full),
    }
}
