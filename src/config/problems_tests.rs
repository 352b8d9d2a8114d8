//! How problems are reported (continued from `tests.rs`): several in one pass, each at its key
//! path, with line and column for YAML errors, and unknown keys beside the other problems.

use super::*;

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
