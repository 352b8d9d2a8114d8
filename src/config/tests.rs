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

#[path = "problems_tests.rs"]
mod problems;
