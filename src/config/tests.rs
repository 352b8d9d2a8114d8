//! Behaviour an operator sees: what loads, what defaults apply, and which problem (key path and
//! message) each mistake produces.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A config directory with the companion files the base config references, plus broken ones.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: [(&str, &str); 7] = [
            ("keys/jwks.json", r#"{"keys": []}"#),
            ("keys/k1.pem", "-----BEGIN PUBLIC KEY-----\n"),
            ("secrets/origin.secret", "s3cret-value\n"),
            (
                "secrets/admin.token",
                "  0123456789abcdef0123456789abcdef\n",
            ),
            ("secrets/short.token", "abcde\n"),
            ("secrets/empty", "\n"),
            ("secrets/bad.secret", "two\nlines\n"),
        ];
        for (path, text) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            std::fs::write(full, text).expect("write");
        }
        Fixture { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The base config with some top-level sections replaced (`""` removes a section).
    fn yaml(&self, overrides: &[(&str, &str)]) -> String {
        let base: [(&str, &str); 5] = [
            ("listeners", "listeners:\n  - addr: 127.0.0.1:8080\n"),
            (
                "admin",
                "admin:\n  addr: 127.0.0.1:9100\n  token_file: secrets/admin.token\n",
            ),
            (
                "origins",
                "origins:\n  news:\n    url: http://127.0.0.1:9000\n    secret_header: x-origin-secret\n    secret_file: secrets/origin.secret\n",
            ),
            ("keys", "keys:\n  jwks_file: keys/jwks.json\n"),
            (
                "routes",
                "routes:\n  - match: /premium/*\n    origin: news\n    access: paywall\n    require: [premium]\n  - match: /*\n    origin: news\n    access: public\n",
            ),
        ];
        let mut out = String::new();
        for (name, text) in base {
            match overrides.iter().find(|(n, _)| *n == name) {
                Some((_, replacement)) => out.push_str(replacement),
                None => out.push_str(text),
            }
        }
        for (name, text) in overrides {
            if !base.iter().any(|(n, _)| n == name) {
                out.push_str(text);
            }
        }
        out
    }

    fn load(&self, overrides: &[(&str, &str)]) -> Result<Config, ConfigError> {
        from_yaml_str_with_env(&self.yaml(overrides), self.path(), &fake_env)
    }

    fn problems(&self, overrides: &[(&str, &str)]) -> Vec<Problem> {
        match self.load(overrides) {
            Err(ConfigError::Invalid(problems)) => problems,
            Ok(_) => panic!("config validated, expected problems: {overrides:?}"),
            Err(other) => panic!("expected problems, got {other}"),
        }
    }
}

fn fake_env(name: &str) -> Option<String> {
    match name {
        "GOOD_SECRET" => Some("from-env".into()),
        "EMPTY_SECRET" => Some(String::new()),
        _ => None,
    }
}

fn assert_problem(problems: &[Problem], path: &str, needle: &str) {
    assert!(
        problems
            .iter()
            .any(|p| p.path == path && p.message.contains(needle)),
        "no problem at {path} containing {needle:?}; got:\n{}",
        problems
            .iter()
            .map(|p| format!("  {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn example_config_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/tollgate.yaml");
    let config = match load(&path) {
        Ok(config) => config,
        Err(err) => panic!("conf/tollgate.yaml must validate:\n{err}"),
    };
    let conf_dir = path.parent().expect("conf dir");
    assert_eq!(config.keys.jwks_file, Some(conf_dir.join("keys/jwks.json")));
    let admin = config.admin.as_ref().expect("admin");
    assert_eq!(admin.token.as_ref().map(String::len), Some(32));
    let news = &config.origins["news"];
    assert!(news.secret.as_ref().is_some_and(|s| s.len() >= 16));
    assert_eq!(news.secret_header.as_deref(), Some("x-origin-secret"));
    assert_eq!(
        config.route_for("/premium/a").map(|r| r.access),
        Some(AccessMode::Paywall)
    );
    assert_eq!(
        config.route_for("/").map(|r| r.access),
        Some(AccessMode::Public)
    );
}

#[test]
fn base_config_and_defaults() {
    let f = Fixture::new();
    let c = f.load(&[]).expect("base config validates");
    assert_eq!(
        c.listeners,
        vec![Listener {
            addr: "127.0.0.1:8080".parse().expect("addr"),
            tls: None,
            proxy_protocol: false,
        }]
    );
    assert_eq!(c.pingora, PingoraSettings::default());
    assert!(!c.pingora.daemon);
    let admin = c.admin.as_ref().expect("admin");
    assert_eq!(
        admin.token.as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    let news = &c.origins["news"];
    assert_eq!(
        (
            news.name.as_str(),
            news.scheme_https,
            news.host.as_str(),
            news.port,
            news.addr.as_str()
        ),
        ("news", false, "127.0.0.1", 9000, "127.0.0.1:9000")
    );
    assert_eq!(news.secret.as_deref(), Some("s3cret-value"));
    assert_eq!(c.keys.jwks_file, Some(f.path().join("keys/jwks.json")));
    assert_eq!(
        c.keys.reload_interval_seconds,
        raw::DEFAULT_KEYS_RELOAD_INTERVAL_SECONDS
    );
    assert_eq!(
        c.auth,
        AuthSettings {
            issuer: None,
            audience: None,
            leeway_seconds: 30,
            subscriptions_claim: "subs".into(),
            token_sources: vec![
                TokenSource::Path,
                TokenSource::Query("token".into()),
                TokenSource::Bearer,
                TokenSource::Cookie("token".into()),
            ],
            max_token_bytes: 8192,
            token_cache_entries: 100_000,
        }
    );
    assert_eq!(
        c.cache,
        CacheSettings {
            disk: None,
            memory_max_size: 256 << 20,
            fast_hits: true,
            max_object_size: 16 << 20,
            lock_timeout: Duration::from_secs(10),
        }
    );
    assert_eq!(
        c.routes[1].cache,
        RouteCache {
            default_ttl: Duration::from_secs(300),
            min_ttl: Duration::ZERO,
            max_ttl: Duration::from_secs(86400),
            enabled: true,
        }
    );
    assert_eq!(c.routes[0].require, vec!["premium".to_owned()]);
    assert_eq!((c.routes[0].index, c.routes[1].index), (0, 1));
    assert_eq!(c.state_dir, None);
    assert_eq!(c.logging.level, "info");
    assert_eq!(c.logging.access_log, crate::config::AccessLogTarget::Off);
}

#[test]
fn explicit_values_are_used() {
    let f = Fixture::new();
    let c = f
        .load(&[
            (
                "pingora",
                "pingora: { threads: 4, pid_file: run/t.pid, daemon: true, grace_period_seconds: 7 }\n",
            ),
            (
                "auth",
                "auth: { issuer: https://id.example.com, leeway_seconds: 0, subscriptions_claim: 'custom:subs', token_sources: [bearer, 'cookie:jwt'], max_token_bytes: 4096, token_cache_entries: 0 }\n",
            ),
            (
                "cache",
                "cache: { memory: { max_size: 1GiB }, max_object_size: 1048576, lock_timeout: 1500ms }\n",
            ),
            (
                "routes",
                "routes:\n  - { match: '*', origin: news, access: public, cache: { default_ttl: 1h30m, max_ttl: 2d, enabled: false } }\n",
            ),
            ("state_dir", "state_dir: state/tollgate\n"),
        ])
        .expect("valid");
    assert_eq!(c.pingora.threads, Some(4));
    assert_eq!(c.pingora.pid_file, Some(f.path().join("run/t.pid")));
    assert!(c.pingora.daemon);
    assert_eq!(c.pingora.grace_period_seconds, Some(7));
    assert_eq!(c.auth.issuer.as_deref(), Some("https://id.example.com"));
    assert_eq!(c.auth.subscriptions_claim, "custom:subs");
    assert_eq!(
        c.auth.token_sources,
        vec![TokenSource::Bearer, TokenSource::Cookie("jwt".into())]
    );
    assert_eq!(
        (
            c.auth.leeway_seconds,
            c.auth.max_token_bytes,
            c.auth.token_cache_entries
        ),
        (0, 4096, 0)
    );
    assert_eq!(c.cache.memory_max_size, 1 << 30);
    assert_eq!(c.cache.max_object_size, 1 << 20);
    assert_eq!(c.cache.lock_timeout, Duration::from_millis(1500));
    assert_eq!(c.routes[0].cache.default_ttl, Duration::from_secs(5400));
    assert_eq!(c.routes[0].cache.max_ttl, Duration::from_secs(2 * 86400));
    assert!(!c.routes[0].cache.enabled);
    assert_eq!(c.state_dir, Some(f.path().join("state/tollgate")));
}

#[test]
fn route_for_first_match_wins() {
    let f = Fixture::new();
    let c = f
        .load(&[(
            "routes",
            "routes:\n  - { match: /premium/free-*, origin: news, access: public }\n  - { match: /premium/*, origin: news, access: paywall }\n  - { match: /*.m3u8, origin: news, access: public }\n",
        )])
        .expect("valid");
    let index = |path: &str| c.route_for(path).map(|r| r.index);
    assert_eq!(index("/premium/free-article"), Some(0));
    assert_eq!(index("/premium/article"), Some(1));
    assert_eq!(index("/premium/x.m3u8"), Some(1));
    assert_eq!(index("/video/x.m3u8"), Some(2));
    assert_eq!(index("/other"), None);
}

#[test]
fn secret_from_env_and_ipv6_origin() {
    let f = Fixture::new();
    let c = f
        .load(&[(
            "origins",
            "origins:\n  news:\n    url: https://[::1]:8443/\n    secret_header: X-Api-Key\n    secret_env: GOOD_SECRET\n",
        )])
        .expect("valid");
    let news = &c.origins["news"];
    assert_eq!(news.secret.as_deref(), Some("from-env"));
    assert_eq!(news.secret_header.as_deref(), Some("x-api-key"));
    assert_eq!(
        (news.scheme_https, news.host.as_str(), news.addr.as_str()),
        (true, "::1", "[::1]:8443")
    );
}

#[test]
fn admin_without_token_file_disables_admin_api() {
    let f = Fixture::new();
    let c = f
        .load(&[("admin", "admin: { addr: '127.0.0.1:9100' }\n")])
        .expect("valid");
    assert_eq!(c.admin.as_ref().and_then(|a| a.token.clone()), None);
}

#[test]
fn port_zero_never_conflicts() {
    let f = Fixture::new();
    f.load(&[
        (
            "listeners",
            "listeners: [{ addr: '127.0.0.1:0' }, { addr: '127.0.0.1:0' }]\n",
        ),
        ("admin", "admin: { addr: '127.0.0.1:0' }\n"),
    ])
    .expect("ephemeral ports are distinct");
}

#[test]
fn debug_output_redacts_secrets() {
    let f = Fixture::new();
    let c = f.load(&[]).expect("valid");
    let debug = format!("{c:?}");
    assert!(!debug.contains("s3cret-value"), "{debug}");
    assert!(!debug.contains("0123456789abcdef"), "{debug}");
    assert!(debug.contains("<redacted>"));
}

#[test]
fn three_errors_in_one_pass() {
    let f = Fixture::new();
    let err = f
        .load(&[
            ("listeners", "listeners: [{ addr: 'localhost:8080' }]\n"),
            (
                "routes",
                "routes:\n  - { match: /*, origin: nwes, access: public }\n",
            ),
            ("cache", "cache: { memory: { max_size: lots } }\n"),
        ])
        .expect_err("invalid");
    let ConfigError::Invalid(problems) = &err else {
        panic!("expected Invalid, got {err}");
    };
    assert_eq!(problems.len(), 3, "{err}");
    assert_problem(
        problems,
        "listeners[0].addr",
        "'localhost:8080' is not an IP:port address",
    );
    assert_problem(
        problems,
        "routes[0].origin",
        "unknown origin 'nwes'; defined origins are: news. Fix: use one of them or add it under origins:",
    );
    assert_problem(
        problems,
        "cache.memory.max_size",
        "does not start with a number",
    );
    let text = err.to_string();
    assert!(
        text.starts_with("3 problem(s) in the configuration:\n  - "),
        "{text}"
    );
    assert!(
        text.contains("\n  - routes[0].origin: unknown origin 'nwes'"),
        "{text}"
    );
}

/// (section overrides, expected problem path, expected text in its message)
type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

#[test]
fn each_mistake_is_reported_at_its_path() {
    let f = Fixture::new();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        // listeners
        (&[("listeners", "")], "listeners", "no listener is configured"),
        (&[("listeners", "listeners: [{}]\n")], "listeners[0].addr", "missing"),
        (&[("listeners", "listeners: [{ addr: '1.2.3.4' }]\n")], "listeners[0].addr", "not an IP:port"),
        (&[("listeners", "listeners: [{ addr: '127.0.0.1:80' }, { addr: '127.0.0.1:80' }]\n")], "listeners[1].addr", "is also used by listeners[0]"),
        (&[("listeners", "listeners: [{ addr: '0.0.0.0:80' }, { addr: '127.0.0.1:80' }]\n")], "listeners[1].addr", "overlaps 0.0.0.0:80 of listeners[0]"),
        (&[("listeners", "listeners: [{ addr: '127.0.0.1:80', tls: { cert: c.pem, key: secrets/admin.token } }]\n")], "listeners[0].tls.cert", "cannot use"),
        (&[("listeners", "listeners: [{ addr: '127.0.0.1:80', tls: { cert: secrets/admin.token, key: secrets/admin.token } }]\n")], "listeners[0].tls.cert", "not a PEM certificate"),
        (&[("listeners", "listeners: [{ addr: '127.0.0.1:80', tls: { key: secrets/admin.token } }]\n")], "listeners[0].tls.cert", "missing"),
        // route behaviours
        (&[("routes", "routes: [{ match: /*, origin: news, access: public, query: some }]\n")], "routes[0].query", "not all, none or a list"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: public, viewer_protocol: https }]\n")], "routes[0].viewer_protocol", "not a viewer protocol policy"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: public, methods: ['G T'] }]\n")], "routes[0].methods[0]", "not an HTTP method"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: public, methods: [] }]\n")], "routes[0].methods", "empty"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: public, forward_headers: ['bad header'] }]\n")], "routes[0].forward_headers[0]", "not a valid name"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: signed }]\n")], "routes[0].access", "needs signed_keys"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: basic, realm: editors }]\n")], "routes[0].realm", "not under basic_auth"),
        (&[("signed_keys", "signed_keys: { K1: nope.pem }\n")], "signed_keys.K1", "cannot use"),
        (&[("basic_auth", "basic_auth: { 'a b': secrets/admin.token }\n")], "basic_auth.a b", "not a valid name"),
        // origin TLS and SigV4
        (&[("origins", "origins:\n  news: { url: 'https://127.0.0.1:9000', ca_file: secrets/admin.token }\n")], "origins.news.ca_file", "holds no PEM certificate"),
        (&[("origins", "origins:\n  news: { url: 'http://127.0.0.1:9000', tls_name: origin.test }\n")], "origins.news.ca_file", "only used for https://"),
        (&[("origins", "origins:\n  news: { url: 'https://127.0.0.1:9000', tls_name: 'a b' }\n")], "origins.news.tls_name", "not a DNS name"),
        (&[("origins", "origins:\n  news: { url: 'https://b.s3.amazonaws.com', sigv4: { access_key_id: AK, secret_access_key_file: secrets/origin.secret } }\n")], "origins.news.sigv4.region", "missing"),
        (&[("origins", "origins:\n  news: { url: 'https://b.s3.amazonaws.com', sigv4: { region: eu-west-1, access_key_id: AK, secret_access_key_env: NOPE_NOT_SET } }\n")], "origins.news.sigv4.secret_access_key_env", "not set"),
        (&[("origins", "origins:\n  news: { url: 'https://b.s3.amazonaws.com', sigv4: { region: eu-west-1, secret_access_key_file: secrets/origin.secret } }\n")], "origins.news.sigv4.access_key_id", "exactly one"),
        // admin
        (&[("admin", "admin: { addr: '127.0.0.1:8080' }\n")], "admin.addr", "conflicts with listeners[0]"),
        (&[("admin", "admin: { token_file: secrets/admin.token }\n")], "admin.addr", "missing"),
        (&[("admin", "admin: { addr: '127.0.0.1:9100', token_file: secrets/nope }\n")], "admin.token_file", "cannot use"),
        (&[("admin", "admin: { addr: '127.0.0.1:9100', token_file: secrets/short.token }\n")], "admin.token_file", "only 5 characters"),
        (&[("admin", "admin: { addr: '127.0.0.1:9100', token_file: secrets/empty }\n")], "admin.token_file", "is empty"),
        (&[("admin", "admin: { addr: '127.0.0.1:9100', token_file: secrets }\n")], "admin.token_file", "not a regular file"),
        // origins
        (&[("origins", "origins:\n  news: { secret_header: x-s, secret_env: GOOD_SECRET }\n")], "origins.news.url", "missing"),
        (&[("origins", "origins:\n  news: { url: 'ftp://x' }\n")], "origins.news.url", "scheme 'ftp'"),
        (&[("origins", "origins:\n  news: { url: 'http://x/api' }\n")], "origins.news.url", "Fix: write http://x"),
        (&[("origins", "origins:\n  news: { url: 'http://x', secret_header: 'x api', secret_env: GOOD_SECRET }\n")], "origins.news.secret_header", "not a valid HTTP header name"),
        (&[("origins", "origins:\n  news: { url: 'http://x', secret_header: Host, secret_env: GOOD_SECRET }\n")], "origins.news.secret_header", "'host' is managed by the proxy"),
        (&[("origins", "origins:\n  news: { url: 'http://x', secret_header: x-s }\n")], "origins.news.secret_header", "no secret to send"),
        (&[("origins", "origins:\n  news: { url: 'http://x', secret_env: GOOD_SECRET }\n")], "origins.news", "no secret_header"),
        (&[("origins", "origins:\n  news: { url: 'http://x', secret_header: x-s, secret_env: GOOD_SECRET, secret_file: secrets/origin.secret }\n")], "origins.news", "both set"),
        (&[("origins", "origins:\n  news: { url: 'http://x', secret_header: x-s, secret_env: MISSING_SECRET }\n")], "origins.news.secret_env", "MISSING_SECRET is not set"),
        (&[("origins", "origins:\n  news: { url: 'http://x', secret_header: x-s, secret_env: EMPTY_SECRET }\n")], "origins.news.secret_env", "is empty"),
        (&[("origins", "origins:\n  news: { url: 'http://x', secret_header: x-s, secret_file: secrets/empty }\n")], "origins.news.secret_file", "is empty"),
        (&[("origins", "origins:\n  news: { url: 'http://x', secret_header: x-s, secret_file: secrets/bad.secret }\n")], "origins.news.secret_file", "cannot be sent in an HTTP header"),
        (&[("origins", "origins:\n  news: { url: 'http://x', secret_header: x-s, secret_file: secrets/missing }\n")], "origins.news.secret_file", "cannot use"),
        (&[("origins", "origins:\n  news: { url: 'http://x' }\n  'bad name': { url: 'http://y' }\n")], "origins.bad name", "not usable"),
        // keys
        (&[("keys", "keys: { jwks_file: keys/missing.json }\n")], "keys.jwks_file", "cannot use"),
        (&[("keys", "keys: { pem: [{ kid: k1, alg: HS256, path: keys/k1.pem }] }\n")], "keys.pem[0].alg", "'HS256' is not supported"),
        (&[("keys", "keys: { pem: [{ alg: ES256, path: keys/k1.pem }] }\n")], "keys.pem[0].kid", "missing"),
        (&[("keys", "keys: { pem: [{ kid: k1, alg: ES256 }] }\n")], "keys.pem[0].path", "missing"),
        (&[("keys", "keys: { pem: [{ kid: k1, alg: ES256, path: keys/k1.pem }, { kid: k1, alg: RS256, path: keys/k1.pem }] }\n")], "keys.pem[1].kid", "also used by keys.pem[0]"),
        (&[("keys", "keys: { jwks_file: keys/jwks.json, reload_interval_seconds: 0 }\n")], "keys.reload_interval_seconds", "at least 1"),
        // auth
        (&[("auth", "auth: { issuer: '' }\n")], "auth.issuer", "empty"),
        (&[("auth", "auth: { audience: ' ' }\n")], "auth.audience", "empty"),
        (&[("auth", "auth: { leeway_seconds: 7200 }\n")], "auth.leeway_seconds", "more than 3600"),
        (&[("auth", "auth: { subscriptions_claim: '' }\n")], "auth.subscriptions_claim", "empty"),
        (&[("auth", "auth: { token_sources: [] }\n")], "auth.token_sources", "no token would ever be found"),
        (&[("auth", "auth: { token_sources: [path, 'query:'] }\n")], "auth.token_sources[1]", "empty name"),
        (&[("auth", "auth: { token_sources: [query] }\n")], "auth.token_sources[0]", "needs a name"),
        (&[("auth", "auth: { token_sources: ['header:x'] }\n")], "auth.token_sources[0]", "unknown token source"),
        (&[("auth", "auth: { token_sources: ['cookie:a;b'] }\n")], "auth.token_sources[0]", "not allowed in a cookie name"),
        (&[("auth", "auth: { token_sources: ['query:a&b'] }\n")], "auth.token_sources[0]", "query parameter name"),
        (&[("auth", "auth: { token_sources: [bearer, path, bearer] }\n")], "auth.token_sources[2]", "already listed at auth.token_sources[0]"),
        (&[("auth", "auth: { max_token_bytes: 10 }\n")], "auth.max_token_bytes", "out of range"),
        // routes
        (&[("routes", "")], "routes", "no route is configured"),
        (&[("routes", "routes: [{ origin: news, access: public }]\n")], "routes[0].match", "missing"),
        (&[("routes", "routes: [{ match: premium/*, origin: news, access: public }]\n")], "routes[0].match", "must start with '/'"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: public }, { match: /premium/*, origin: news, access: public }]\n")], "routes[1].match", "can never match: routes[0] ('/*')"),
        (&[("routes", "routes: [{ match: /a/*, origin: news, access: public }, { match: /a/b/*, origin: news, access: public }]\n")], "routes[1].match", "move this route above routes[0]"),
        (&[("routes", "routes: [{ match: /*, access: public }]\n")], "routes[0].origin", "missing"),
        (&[("routes", "routes: [{ match: /*, origin: news }]\n")], "routes[0].access", "missing"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: paywal }]\n")], "routes[0].access", "'paywal' is not an access mode"),
        (&[("keys", ""), ("routes", "routes: [{ match: /*, origin: news, access: token }]\n")], "routes[0].access", "token route needs keys"),
        (&[("revocation", "revocation: { auto: { window: 10m, max_ips: 0 } }\n")], "revocation.auto.max_ips", "at least 2"),
        (&[("keys", ""), ("routes", "routes: [{ match: /*, origin: news, access: paywall }]\n")], "routes[0].access", "paywall route needs keys: set keys.jwks_file"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: paywall, require: [premium, ''] }]\n")], "routes[0].require[1]", "empty subscription name"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: paywall, require: [' gold'] }]\n")], "routes[0].require[0]", "leading or trailing spaces"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: public, require: [gold] }]\n")], "routes[0].require", "no effect on access: public"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: paywall, realm: editors }]\n")], "routes[0].realm", "only used by access: basic"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: public, cache: { default_ttl: 5x } }]\n")], "routes[0].cache.default_ttl", "unknown unit 'x'"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: public, cache: { min_ttl: 2d } }]\n")], "routes[0].cache.min_ttl", "2d is above max_ttl (1d)"),
        (&[("routes", "routes: [{ match: /*, origin: news, access: public, cache: { default_ttl: 2d } }]\n")], "routes[0].cache.default_ttl", "outside min_ttl..max_ttl"),
        // cache
        (&[("cache", "cache: { disk: { max_size: 10GiB } }\n")], "cache.disk.path", "missing"),
        (&[("cache", "cache: { disk: { path: /tmp, max_size: 1KiB } }\n")], "cache.disk.max_size", "too small"),
        (&[("cache", "cache: { memory: { max_size: 0 } }\n")], "cache.memory.max_size", "leaves no room"),
        (&[("cache", "cache: { memory: { max_size: 1MiB }, max_object_size: 2MiB }\n")], "cache.max_object_size", "larger than the largest cache tier"),
        (&[("cache", "cache: { lock_timeout: -1s }\n")], "cache.lock_timeout", "negative"),
        // the rest
        (&[("state_dir", "state_dir: keys/jwks.json\n")], "state_dir", "is a file, not a directory"),
        (&[("state_dir", "state_dir: keys/jwks.json/sub\n")], "state_dir", "is a file, not a directory"),
        (&[("pingora", "pingora: { threads: 0 }\n")], "pingora.threads", "out of range"),
        (&[("pingora", "pingora: { threads: 1000 }\n")], "pingora.threads", "out of range"),
        (&[("logging", "logging: { level: loud }\n")], "logging.level", "'loud' is not a log directive"),
        (&[("logging", "logging: { level: 'info,tollgate=noisy' }\n")], "logging.level", "'tollgate=noisy'"),
        (&[("logging", "logging: { access_log: no-such-dir/access.log }\n")], "logging.access_log", "does not exist"),
        (&[("logging", "logging: { access_log: keys }\n")], "logging.access_log", "is a directory"),
    ];
    for (overrides, path, needle) in cases {
        let problems = f.problems(overrides);
        assert_problem(&problems, path, needle);
        // One mistake, one problem: no cascades into other sections.
        assert_eq!(problems.len(), 1, "{overrides:?} gave {problems:?}");
    }
}

#[test]
fn basic_route_reports_missing_realm() {
    let f = Fixture::new();
    let problems = f.problems(&[(
        "routes",
        "routes: [{ match: /drafts/*, origin: news, access: basic }]\n",
    )]);
    assert_problem(&problems, "routes[0].realm", "needs a realm");
}

#[test]
fn broken_origin_is_reported_once() {
    // Routes referencing an origin whose own settings are wrong do not add "unknown origin".
    let f = Fixture::new();
    let problems = f.problems(&[("origins", "origins:\n  news: { url: 'gopher://x' }\n")]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_problem(&problems, "origins.news.url", "gopher");
}

#[test]
fn no_origins_defined() {
    let f = Fixture::new();
    let problems = f.problems(&[("origins", "")]);
    assert_problem(&problems, "routes[0].origin", "no origins are defined");
    assert_problem(&problems, "routes[1].origin", "no origins are defined");
}

#[test]
fn unknown_key_is_reported_with_its_path_line_and_allowed_keys() {
    let f = Fixture::new();
    let problems = f.problems(&[(
        "routes",
        "routes:\n  - match: /*\n    origin: news\n    acess: public\n",
    )]);
    let p = problems
        .iter()
        .find(|p| p.path == "routes[0].acess")
        .unwrap_or_else(|| panic!("{problems:#?}"));
    assert!(p.message.contains("unknown field `acess`"), "{p}");
    assert!(p.message.contains("`access`"), "{p}");
    assert!(p.message.contains("line "), "{p}");
    assert!(p.message.contains("Fix:"), "{p}");

    let err = f.load(&[("extra", "cach: {}\n")]).expect_err("top-level");
    let msg = err.to_string();
    assert!(msg.contains("unknown field `cach`"), "{msg}");
    assert!(msg.contains("`cache`"), "{msg}");
}

#[test]
fn yaml_syntax_and_type_errors_have_locations() {
    let base = Path::new("/nonexistent");
    let err = from_yaml_str("listeners: [\n  - addr: x\n", base).expect_err("syntax");
    assert!(matches!(err, ConfigError::Parse(_)), "{err}");
    assert!(err.to_string().contains("line"), "{err}");

    let err = from_yaml_str("pingora: { threads: many }\n", base).expect_err("type");
    let msg = err.to_string();
    assert!(msg.contains("pingora.threads"), "{msg}");
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn empty_file_lists_what_is_missing() {
    for yaml in ["", "# nothing here\n\n", "---\n"] {
        let err = from_yaml_str(yaml, Path::new(".")).expect_err("empty");
        let ConfigError::Invalid(problems) = err else {
            panic!("expected Invalid for {yaml:?}");
        };
        assert_problem(&problems, "listeners", "no listener");
        assert_problem(&problems, "routes", "no route");
    }
}

#[test]
fn load_reports_unreadable_file_and_names_it_in_parse_errors() {
    let f = Fixture::new();
    let missing = f.path().join("nope.yaml");
    let err = load(&missing).expect_err("missing");
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().starts_with("cannot read "), "{err}");

    let bad: PathBuf = f.path().join("bad.yaml");
    std::fs::write(&bad, "listeners: [\n").expect("write");
    let msg = load(&bad).expect_err("YAML syntax").to_string();
    assert!(msg.starts_with(&bad.display().to_string()), "{msg}");

    // Relative paths resolve against the file's directory, not the working directory.
    let good = f.path().join("tollgate.yaml");
    std::fs::write(&good, f.yaml(&[])).expect("write");
    let c = load(&good).expect("valid");
    assert_eq!(c.keys.jwks_file, Some(f.path().join("keys/jwks.json")));
}

#[test]
fn sizes_and_durations_accept_yaml_integers() {
    let f = Fixture::new();
    let c = f
        .load(&[
            ("cache", "cache: { memory: { max_size: 1048576 }, max_object_size: 1024, lock_timeout: 3 }\n"),
            ("routes", "routes: [{ match: /*, origin: news, access: public, cache: { default_ttl: 60 } }]\n"),
        ])
        .expect("valid");
    assert_eq!(c.cache.memory_max_size, 1 << 20);
    assert_eq!(c.cache.max_object_size, 1024);
    assert_eq!(c.cache.lock_timeout, Duration::from_secs(3));
    assert_eq!(c.routes[0].cache.default_ttl, Duration::from_secs(60));
}

#[test]
fn edge_limits_default_and_validate() {
    let f = Fixture::new();
    let c = f.load(&[]).expect("base config");
    assert_eq!(c.limits.header_timeout, Duration::from_secs(10));
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(
        c.limits.failed_auth,
        Some(crate::config::FailedAuthLimit {
            per_second: 20.0,
            burst: 100
        })
    );
    assert!(c.trusted_proxies.is_empty());
    let c = f
        .load(&[
            (
                "listeners",
                "listeners:\n  - addr: 127.0.0.1:8080\n    proxy_protocol: true\n",
            ),
            (
                "trusted_proxies",
                "trusted_proxies: [10.0.0.0/8, \"2001:db8::1\"]\n",
            ),
            (
                "limits",
                "limits: { header_timeout: 2s, idle_timeout: 5m, failed_auth: { enabled: false } }\n",
            ),
        ])
        .expect("limits config");
    assert!(c.listeners[0].proxy_protocol);
    assert_eq!(c.trusted_proxies.len(), 2);
    assert_eq!(c.limits.header_timeout, Duration::from_secs(2));
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.limits.failed_auth, None);

    // every problem in one pass, each at its key
    let problems = f.problems(&[
        (
            "listeners",
            "listeners:\n  - addr: 127.0.0.1:8080\n    proxy_protocol: true\n",
        ),
        (
            "limits",
            "limits: { header_timeout: 0s, idle_timeout: forever, failed_auth: { per_address_per_second: 0, burst: 0 } }\n",
        ),
    ]);
    assert_problem(&problems, "listeners[0].proxy_protocol", "trusted_proxies");
    assert_problem(&problems, "limits.header_timeout", "0s");
    assert_problem(&problems, "limits.idle_timeout", "");
    assert_problem(
        &problems,
        "limits.failed_auth.per_address_per_second",
        "never refill",
    );
    assert_problem(&problems, "limits.failed_auth.burst", "at least 1");
    let problems = f.problems(&[(
        "trusted_proxies",
        "trusted_proxies: [10.0.0.0/33, nonsense]\n",
    )]);
    assert_problem(&problems, "trusted_proxies[0]", "CIDR");
    assert_problem(&problems, "trusted_proxies[1]", "CIDR");
}

#[test]
fn a_default_never_invalidates_a_config_and_fits_the_tiers() {
    let f = Fixture::new();
    let dir = f.path().join("cache");
    let disk = |size: &str| {
        format!(
            "cache: {{ memory: {{ max_size: 4MiB }}, disk: {{ path: {}, max_size: {size} }} }}\n",
            dir.display()
        )
    };
    // a 4 MiB memory tier alone: the default shrinks to a quarter of it
    let c = f
        .load(&[("cache", "cache: { memory: { max_size: 4MiB } }\n")])
        .unwrap();
    assert_eq!(c.cache.max_object_size, 1 << 20);
    // with a disk tier, downloads of hundreds of MiB are cacheable
    let c = f.load(&[("cache", &disk("10GiB"))]).unwrap();
    assert_eq!(c.cache.max_object_size, 1 << 30);
    let c = f.load(&[("cache", &disk("400MiB"))]).unwrap();
    assert_eq!(c.cache.max_object_size, 100 << 20);
    // what the operator writes is still checked against the tiers
    let problems = f.problems(&[(
        "cache",
        "cache: { memory: { max_size: 4MiB }, max_object_size: 8MiB }\n",
    )]);
    assert_problem(
        &problems,
        "cache.max_object_size",
        "larger than the largest",
    );
}

#[test]
fn unknown_keys_do_not_hide_the_other_problems() {
    let f = Fixture::new();
    let problems = f.problems(&[
        (
            "listeners",
            "listeners:\n  - addr: 127.0.0.1:8080\n    colour: red\n",
        ),
        ("cache", "cache: { memory: { max_size: 0, sizes: 1 } }\n"),
        ("logging", "logging: { level: 5 }\n"),
        ("frobnicate", "frobnicate: true\n"),
        (
            "routes",
            "routes:\n  - match: /*\n    origin: nowhere\n    access: public\n",
        ),
    ]);
    assert_problem(&problems, "listeners[0].colour", "unknown field `colour`");
    assert_problem(&problems, "cache.memory.sizes", "unknown field `sizes`");
    assert_problem(&problems, "logging.level", "invalid type");
    assert_problem(&problems, "frobnicate", "unknown field `frobnicate`");
    // and the validator's own problems, found in the same pass
    assert_problem(&problems, "routes[0].origin", "unknown origin");
    assert_problem(&problems, "cache.memory.max_size", "0 leaves no room");
    assert_eq!(problems.len(), 6, "{problems:#?}");
}
