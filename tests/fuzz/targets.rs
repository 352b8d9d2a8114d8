//! Bodies of the fuzz targets (issue 18), shared by the cargo-fuzz binaries under
//! `tests/fuzz/fuzz_targets/` and by the corpus replay test `tests/fuzz_corpora.rs`.
//!
//! Each `pub fn <target>(data: &[u8])` takes any bytes. Where a property is cheap to state it
//! is asserted (a failed assertion is a finding, like a panic in the code under test). Most
//! targets read a mode from the first byte (`data[0] % N`; the ASCII digits `'0'`, `'1'`, ...
//! select modes 0, 1, ... so seeds stay readable) and split the rest into `\n`-separated
//! fields. Only the public API of `tollgate`, std and crates the main package already
//! depends on are used.

#![allow(dead_code)]

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde_json::Value;

use tollgate::admission::{find_token, Headers, RequestParts};
use tollgate::auth::cloudfront::{self, SignedDenial, SignedKey, SignedKeys, SignedRequest};
use tollgate::auth::htpasswd::{self, BasicDenial, Htpasswd, HtpasswdError};
use tollgate::auth::mint::{self, SigningKey};
use tollgate::auth::smd::{self, Binding, SmdRequest, SmdSecrets};
use tollgate::auth::{Alg, Claims, Denial, KeySet, Policy};
use tollgate::cache::disk::RawMeta;
use tollgate::cache::format::{self, Fixed, BLOCK, FIXED_LEN};
use tollgate::cache::DiskStore;
use tollgate::config::{self, ConfigError, TokenSource};
use tollgate::request as req;

/// The fixed clock of the JWS target (seed tokens are minted for it).
pub const JWS_NOW: u64 = 1_800_000_000;

/// Throw-away fuzz keys (see `keys/README.md`).
pub const FUZZ_ES256_PEM: &str = include_str!("keys/fuzz_es256.pem");
/// Public half of [`FUZZ_ES256_PEM`].
pub const FUZZ_ES256_PUB_PEM: &str = include_str!("keys/fuzz_es256.pub.pem");
/// RSA 2048 fuzz key.
pub const FUZZ_RS256_PEM: &str = include_str!("keys/fuzz_rs256.pem");
/// CloudFront key-pair id of the fuzz EC key.
pub const CF_FUZZ_KEY_ID: &str = "KFUZZEC";
/// CloudFront key-pair id of a key generated per process: nothing can be signed with it.
pub const CF_SECRET_KEY_ID: &str = "KSECRETRANDOM";
/// SMD kid of a secret generated per process.
pub const SMD_SECRET_KID: &str = "20990101_00000000000000000000";
/// SMD fixture vectors (secrets and tokens minted by PyJWT).
pub const SMD_VECTORS: &str = include_str!("../fixtures/smd/vectors.json");

/// Findings already reported whose assertions a long fuzz run may mask, so the fuzzer keeps
/// exploring instead of stopping at the same bug: the comma-separated names in the
/// `TOLLGATE_FUZZ_MASK` environment variable *at build time* (see README.md). The replay test
/// is built without it and checks everything.
fn masked(finding: &str) -> bool {
    option_env!("TOLLGATE_FUZZ_MASK").is_some_and(|m| m.split(',').any(|f| f == finding))
}

/// `data[0] % modes` and the rest.
fn mode(data: &[u8], modes: u8) -> Option<(u8, &[u8])> {
    let (&first, rest) = data.split_first()?;
    Some((first % modes, rest))
}

fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// The repository root (this file is compiled from `tests/fuzz` and from the main package).
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if manifest.join("conf/tollgate.yaml").exists() {
        manifest.to_path_buf()
    } else {
        manifest.join("../..")
    }
}

fn der_of_pem(pem_text: &str) -> Vec<u8> {
    let blocks = tollgate::auth::pem::parse_pem(pem_text).expect("fuzz key PEM");
    blocks[0].der.clone()
}

// ---------------------------------------------------------------------------------------------
// jws

/// Keys of the `jws` target.
pub struct JwsKeys {
    /// The fuzz ES256 key (kid `fz-es`), which the target signs structured inputs with.
    pub es: SigningKey,
    /// The fuzz RS256 key (kid `fz-rs`).
    pub rs: SigningKey,
    /// Their public halves.
    pub keys: KeySet,
    /// Same kids and algorithms, but keys generated in this process: nothing verifies.
    pub secret: KeySet,
}

/// The `jws` target's keys (built once per process).
pub fn jws_keys() -> &'static JwsKeys {
    static KEYS: OnceLock<JwsKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let es = SigningKey::from_pkcs8_pem("fz-es", FUZZ_ES256_PEM).expect("fuzz ES256 key");
        let rs = SigningKey::from_pkcs8_pem("fz-rs", FUZZ_RS256_PEM).expect("fuzz RS256 key");
        let keys = KeySet::from_keys([es.verify_key().unwrap(), rs.verify_key().unwrap()])
            .expect("key set");
        let secret_es = SigningKey::generate(Alg::ES256, "fz-es").expect("generate ES256");
        let secret_rs = SigningKey::generate(Alg::RS256, "fz-rs").expect("generate RS256");
        let secret = KeySet::from_keys([
            secret_es.verify_key().unwrap(),
            secret_rs.verify_key().unwrap(),
        ])
        .expect("secret key set");
        JwsKeys {
            es,
            rs,
            keys,
            secret,
        }
    })
}

fn strict_policy() -> Policy {
    Policy {
        issuer: Some("https://fuzz.example".to_string()),
        audience: Some("tollgate".to_string()),
        leeway_secs: 0,
        ..Policy::default()
    }
}

/// What any accepted token must satisfy, from the module's documented rules.
fn check_claims(claims: &Claims, policy: &Policy, now: u64) {
    assert!(
        now <= claims.exp.saturating_add(policy.leeway_secs),
        "accepted an expired token: {claims:?}"
    );
    if let Some(nbf) = claims.nbf {
        assert!(
            nbf <= now.saturating_add(policy.leeway_secs),
            "accepted a not-yet-valid token: {claims:?}"
        );
    }
    assert!(
        claims.kid == "fz-es" || claims.kid == "fz-rs",
        "unknown kid accepted: {claims:?}"
    );
    for s in &claims.subs {
        assert!(
            !s.is_empty() && s.trim() == s,
            "untrimmed subscription: {claims:?}"
        );
    }
}

/// A raw token against the fuzz keys, the secret keys, a stricter policy and the key directly.
fn jws_check_token(token: &str) {
    let k = jws_keys();
    let lenient = Policy::default();
    let strict = strict_policy();
    let got = tollgate::auth::verify(token, &k.keys, &lenient, JWS_NOW);
    if let Ok(claims) = &got {
        check_claims(claims, &lenient, JWS_NOW);
    }
    // Keys the fuzzer cannot know: never accepted, and every denial before the signature
    // check is the same as with the fuzz keys.
    let secret = tollgate::auth::verify(token, &k.secret, &lenient, JWS_NOW);
    match secret {
        Ok(c) => panic!("token verified with a key generated in this process: {c:?}"),
        Err(Denial::BadSignature) => {}
        Err(d) => assert_eq!(got, Err(d), "same denial before the signature check"),
    }
    // A stricter policy accepts a subset, with the same claims.
    let strict_got = tollgate::auth::verify(token, &k.keys, &strict, JWS_NOW);
    if let Ok(claims) = &strict_got {
        check_claims(claims, &strict, JWS_NOW);
        assert_eq!(
            Ok(claims),
            got.as_ref(),
            "strict accepts what lenient refuses"
        );
    }
    // verify_with_key with the key the header names gives the same answer.
    if let Ok(claims) = &got {
        let key = k.keys.get(&claims.kid).expect("kid of an accepted token");
        let direct = tollgate::auth::verify_with_key(token, key, &lenient, JWS_NOW);
        assert_eq!(direct.as_ref(), Ok(claims), "verify_with_key disagrees");
    }
}

/// Sign `header.payload` (as given) with the fuzz ES256 key and check the claims parser.
fn jws_check_signed(header_json: &[u8], payload_json: &[u8]) {
    let k = jws_keys();
    let token = mint::sign_segments(
        &k.es,
        &mint::b64url(header_json),
        &mint::b64url(payload_json),
    )
    .expect("sign");
    let policy = Policy::default();
    let es_key = k.keys.get("fz-es").expect("fz-es");
    let direct = tollgate::auth::verify_with_key(&token, es_key, &policy, JWS_NOW);
    let by_kid = tollgate::auth::verify(&token, &k.keys, &policy, JWS_NOW);
    let too_long = token.len() > policy.max_token_bytes;
    for r in [&direct, &by_kid] {
        assert_ne!(r, &Err(Denial::BadSignature), "our own signature refused");
        if !too_long {
            assert_ne!(r, &Err(Denial::TooLong), "short token refused as too long");
        }
    }
    assert_ne!(
        direct,
        Err(Denial::UnknownKid),
        "verify_with_key has no kid lookup"
    );
    if let Ok(claims) = &by_kid {
        assert_eq!(Ok(claims), direct.as_ref(), "by kid and by key disagree");
    }
    let header: Option<serde_json::Map<String, Value>> = serde_json::from_slice(header_json).ok();
    if let Ok(claims) = &direct {
        check_claims(claims, &policy, JWS_NOW);
        // Finding `non-utf8-json`: JSON text is UTF-8 (RFC 8259 section 8.1), but invalid UTF-8
        // inside a string of a header member the parser ignores is accepted.
        if !masked("non-utf8-json") {
            assert!(
                std::str::from_utf8(header_json).is_ok(),
                "accepted a header that is not UTF-8: {}",
                String::from_utf8_lossy(header_json)
            );
        }
        // The header must have said ES256.
        let alg = header
            .as_ref()
            .and_then(|h| h.get("alg"))
            .and_then(Value::as_str);
        assert_eq!(alg, Some("ES256"), "accepted with another alg");
        // Claims agree with an independent parse of the payload.
        let payload: serde_json::Map<String, Value> =
            serde_json::from_slice(payload_json).expect("accepted payload is a JSON object");
        match payload.get("exp") {
            Some(Value::Number(n)) => {
                if let Some(exp) = n.as_u64() {
                    assert_eq!(claims.exp, exp, "exp differs from the payload");
                }
            }
            other => panic!("accepted without a numeric exp: {other:?}"),
        }
        assert_eq!(
            claims.sub.as_deref(),
            payload.get("sub").and_then(Value::as_str),
            "sub differs from the payload"
        );
        assert_eq!(
            claims.sid.as_deref(),
            payload.get("sid").and_then(Value::as_str),
            "sid differs from the payload"
        );
        // Never accepted by a key the fuzzer cannot know.
        assert!(tollgate::auth::verify(&token, &k.secret, &policy, JWS_NOW).is_err());
        // Tampering with the signature is always caught.
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert!(
            tollgate::auth::verify_with_key(&tampered, es_key, &policy, JWS_NOW).is_err(),
            "tampered signature accepted"
        );
    }
}

/// Target `jws`: mode 0 raw compact token; mode 1 `header\npayload` JSON signed with the fuzz
/// key; mode 2 payload JSON under a fixed valid header, signed; mode 3 a JWK Set.
pub fn jws(data: &[u8]) {
    let Some((m, rest)) = mode(data, 4) else {
        return;
    };
    match m {
        0 => jws_check_token(&text(rest)),
        1 => {
            let (h, p) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            jws_check_signed(h, p);
        }
        2 => jws_check_signed(br#"{"alg":"ES256","typ":"JWT","kid":"fz-es"}"#, rest),
        _ => {
            if let Ok(set) = KeySet::from_jwks_json(&text(rest)) {
                assert_eq!(set.kids().count(), set.len());
                for key in set.iter() {
                    assert!(set.get(&key.kid).is_some());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// token_sources

const SOURCE_ORDERS: [[usize; 4]; 6] = [
    [0, 1, 2, 3],
    [1, 2, 3, 0],
    [2, 3, 0, 1],
    [3, 0, 1, 2],
    [3, 2, 1, 0],
    [1, 0, 3, 2],
];

/// Target `token_sources`: `<order byte><path>\n<query>\n<authorization>\n<cookie>...`.
pub fn token_sources(data: &[u8]) {
    let Some((m, rest)) = mode(data, 6) else {
        return;
    };
    let mut fields = rest.split(|&b| b == b'\n');
    let path = text(fields.next().unwrap_or_default()).into_owned();
    let query = text(fields.next().unwrap_or_default()).into_owned();
    let authorization = fields.next();
    let cookies: Vec<&[u8]> = fields.collect();

    // normalize_path: a normalized path is a fixed point, origin-form, with no empty, `.` or
    // `..` segment and nothing the function refuses.
    // Finding `normalize-non-ascii`: raw non-ASCII bytes are re-encoded as Latin-1 when the path
    // needs work (`%`, `//`, `/.`), so the result is neither the same text nor a fixed point.
    let check_non_ascii = !masked("normalize-non-ascii") || path.is_ascii();
    if let Ok(n) = req::normalize_path(&path) {
        assert!(n.starts_with('/'), "{path:?} -> {n:?}");
        assert!(!n.contains("//") && !n.contains('\\'), "{path:?} -> {n:?}");
        assert!(
            !n.split('/').any(|s| s == "." || s == ".."),
            "dot segment left: {path:?} -> {n:?}"
        );
        if check_non_ascii {
            assert_eq!(
                req::normalize_path(&n).as_deref(),
                Ok(&*n),
                "not a fixed point: {path:?}"
            );
        }
        // Only ASCII structure is rewritten (percent-decoding yields unreserved ASCII only) and
        // `..` drops whole segments: the non-ASCII characters that come out are a subsequence of
        // those that went in, unchanged and in order.
        if check_non_ascii {
            let mut input = path.chars().filter(|c| !c.is_ascii());
            assert!(
                n.chars()
                    .filter(|c| !c.is_ascii())
                    .all(|c| input.any(|i| i == c)),
                "non-ASCII characters changed: {path:?} -> {n:?}"
            );
        }
    }

    // split_path_token: the pieces put back together are the path.
    if let Some((jwt, sid, remainder)) = req::split_path_token(&path) {
        assert!(
            jwt.starts_with("eyJ") && jwt.matches('.').count() == 2,
            "{jwt:?}"
        );
        assert!(remainder.starts_with('/'));
        let sid_part = sid.map(|s| format!("{s}.")).unwrap_or_default();
        assert!(sid.is_none_or(|s| !s.is_empty() && !s.contains('.')));
        let rebuilt = format!("/{sid_part}{jwt}{remainder}");
        let rebuilt_no_slash = format!("/{sid_part}{jwt}");
        assert!(
            rebuilt == path || (remainder == "/" && rebuilt_no_slash == path),
            "{path:?} split into {sid:?} {jwt:?} {remainder:?}"
        );
    }

    // Query parameters: stripping leaves no token parameter and is idempotent; the allow-list
    // keeps only the named parameters and the first value.
    for name in ["token", "t", "Expires"] {
        let names = [name];
        let stripped = req::strip_query_params(&query, &names);
        assert_eq!(
            req::query_param(&stripped, name),
            None,
            "{query:?} strip {name}"
        );
        assert_eq!(req::strip_query_params(&stripped, &names), stripped);
        let kept = req::keep_query_params(&query, &names);
        assert!(kept
            .split('&')
            .filter(|p| !p.is_empty())
            .all(|p| p.split_once('=').map_or(p, |(k, _)| k) == name));
        assert_eq!(
            req::query_param(&kept, name),
            req::query_param(&query, name)
        );
    }

    // Bearer: a token is non-empty, trimmed, after a `Bearer ` scheme.
    if let Some(auth) = authorization {
        if let Some(t) = req::bearer_token(auth) {
            assert!(!t.is_empty() && t.trim_ascii() == t, "{t:?}");
            assert!(auth[..6].eq_ignore_ascii_case(b"bearer") && auth[6] == b' ');
        }
    }

    // Cookies: stripping removes the cookie, leaves no empty cookie and is idempotent.
    for c in &cookies {
        if let Some(stripped) = req::strip_cookies(c, &["token"]) {
            assert_eq!(req::cookie_value(stripped.as_bytes(), "token"), None);
            assert!(
                !stripped.split("; ").any(|p| p.trim().is_empty()),
                "{stripped:?}"
            );
            assert_eq!(
                req::strip_cookies(stripped.as_bytes(), &["token"]).as_deref(),
                Some(stripped.as_str())
            );
        }
        let _ = req::cookie_value(c, "token");
    }

    // find_token: the first source (in the configured order) that yields a token decides.
    let all = [
        TokenSource::Path,
        TokenSource::Query("token".to_string()),
        TokenSource::Bearer,
        TokenSource::Cookie("token".to_string()),
    ];
    let sources: Vec<TokenSource> = SOURCE_ORDERS[m as usize]
        .iter()
        .map(|&i| all[i].clone())
        .collect();
    let fields: Vec<(&str, &[u8])> = cookies.iter().map(|c| ("cookie", &c[..])).collect();
    let parts = RequestParts {
        path_token: req::split_path_token(&path).map(|(t, sid, _)| (t, sid)),
        query: &query,
        authorization,
        headers: Headers::List(&fields),
    };
    let found = find_token(&sources, &parts);
    let expected = sources.iter().find_map(|s| {
        let one = [s.clone()];
        find_token(&one, &parts)
    });
    assert_eq!(found, expected, "precedence");
    if let Some(f) = &found {
        let direct: Option<Cow<'_, [u8]>> = match f.source {
            "path" => parts.path_token.map(|(t, _)| Cow::Borrowed(t.as_bytes())),
            "query" => req::query_param(&query, "token").map(|t| match t {
                Cow::Borrowed(t) => Cow::Borrowed(t.as_bytes()),
                Cow::Owned(t) => Cow::Owned(t.into_bytes()),
            }),
            "bearer" => authorization.and_then(req::bearer_token).map(Cow::Borrowed),
            "cookie" => cookies
                .iter()
                .find_map(|c| req::cookie_value(c, "token"))
                .map(Cow::Borrowed),
            other => panic!("unknown source {other}"),
        };
        assert_eq!(direct.as_ref(), Some(&f.token));
        assert_eq!(
            f.path_sid.is_some(),
            f.source == "path" && f.path_sid.is_some()
        );
    }

    let host = req::host_name(&path);
    assert!(path.starts_with(host));
}

// ---------------------------------------------------------------------------------------------
// cloudfront

/// Keys of the `cloudfront` target.
pub struct CfKeys {
    /// Fixture keys, the fuzz EC key and a per-process secret key.
    pub keys: SignedKeys,
    /// The fuzz EC key pair (ECDSA-SHA256, DER signatures, as openssl writes them).
    pub signer: EcdsaKeyPair,
    /// Randomness for signing.
    pub rng: SystemRandom,
}

/// The `cloudfront` target's keys.
pub fn cf_keys() -> &'static CfKeys {
    static KEYS: OnceLock<CfKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rng = SystemRandom::new();
        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &der_of_pem(FUZZ_ES256_PEM),
            &rng,
        )
        .expect("fuzz EC key");
        let secret_pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("gen");
        let secret =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, secret_pkcs8.as_ref(), &rng)
                .expect("secret EC key");
        // SubjectPublicKeyInfo of a P-256 point.
        let mut spki = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        spki.extend_from_slice(secret.public_key().as_ref());
        let secret_pem = tollgate::auth::pem::encode_pem("PUBLIC KEY", &spki);
        let fixtures = [
            (
                "K2JCJMDEHXQW5F",
                include_str!("../fixtures/cloudfront/rsa_spki.pem"),
            ),
            (
                "KPKCS1RSAEXAMPLE",
                include_str!("../fixtures/cloudfront/rsa_pkcs1.pem"),
            ),
            (
                "KECDSAP256EXAMPLE",
                include_str!("../fixtures/cloudfront/ec_p256.pem"),
            ),
            (
                "KE2ERSA",
                include_str!("../fixtures/cloudfront/e2e_rsa.pem"),
            ),
            (
                "KE2EECDSA",
                include_str!("../fixtures/cloudfront/e2e_ec.pem"),
            ),
            (CF_FUZZ_KEY_ID, FUZZ_ES256_PUB_PEM),
            (CF_SECRET_KEY_ID, secret_pem.as_str()),
        ];
        let keys = SignedKeys::from_keys(
            fixtures
                .iter()
                .map(|(id, pem)| SignedKey::from_pem(id, pem).expect("fixture key")),
        )
        .expect("key set");
        CfKeys { keys, signer, rng }
    })
}

/// CloudFront's base64: standard alphabet with `+`→`-`, `=`→`_`, `/`→`~`.
pub fn cf_b64(bytes: &[u8]) -> String {
    STANDARD
        .encode(bytes)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '=' => '_',
            '/' => '~',
            c => c,
        })
        .collect()
}

/// Sign `message` with the fuzz EC key (SHA-256, DER), CloudFront base64.
pub fn cf_sign(message: &[u8]) -> String {
    let k = cf_keys();
    let sig = k.signer.sign(&k.rng, message).expect("sign");
    cf_b64(sig.as_ref())
}

/// The canned policy as botocore writes it (`json.dumps`, `ensure_ascii`), built here from
/// serde_json's escaping plus `\uXXXX` for everything outside printable ASCII.
pub fn python_canned_policy(url: &str, expires: u64) -> String {
    let quoted = serde_json::to_string(url).expect("string");
    let mut escaped = String::with_capacity(quoted.len());
    for c in quoted.chars() {
        if (' '..='~').contains(&c) {
            escaped.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                escaped.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    format!(
        r#"{{"Statement":[{{"Resource":{escaped},"Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#
    )
}

fn lines(data: &[u8], n: usize) -> (Vec<String>, &[u8]) {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    for _ in 0..n {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                out.push(text(&rest[..i]).into_owned());
                rest = &rest[i + 1..];
            }
            None => {
                out.push(text(rest).into_owned());
                rest = &[];
            }
        }
    }
    (out, rest)
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.trim().parse().ok()
}

fn parse_now(s: &str, default: u64) -> u64 {
    s.trim().parse().unwrap_or(default)
}

fn check_grant(r: &Result<cloudfront::SignedGrant, SignedDenial>, query: &str, now: u64) {
    if let Ok(g) = r {
        assert_ne!(
            &*g.key_pair_id, CF_SECRET_KEY_ID,
            "per-process key accepted"
        );
        assert!(now < g.expires, "expired grant: {g:?} at {now}");
        if let Some(nb) = g.not_before {
            assert!(now > nb, "not yet valid grant: {g:?}");
        }
        assert_eq!(
            g.source == cloudfront::SignedSource::Url,
            cloudfront::has_signing_params(query),
            "source: {g:?}"
        );
    }
}

/// Target `cloudfront`: mode 0 `scheme\nhost\npath\nquery\nclient_ip\nnow\ncookie...` as a
/// request; mode 1 `path\nquery\nclient_ip\nnow\nflags\n<custom policy JSON>` signed with
/// the fuzz key (URL or cookies); mode 2 `host\npath\nquery\nnow\nexpires` as a canned
/// signed URL, which must verify exactly when `now < expires`.
pub fn cloudfront(data: &[u8]) {
    let Some((m, rest)) = mode(data, 3) else {
        return;
    };
    let keys = &cf_keys().keys;
    match m {
        0 => {
            let (f, rest) = lines(rest, 6);
            let cookie_owned: Vec<String> = rest
                .split(|&b| b == b'\n')
                .filter(|c| !c.is_empty())
                .map(|c| text(c).into_owned())
                .collect();
            let cookie_headers: Vec<&str> = cookie_owned.iter().map(String::as_str).collect();
            let now = parse_now(&f[5], 1_900_000_000);
            let r = SignedRequest {
                scheme: &f[0],
                host: &f[1],
                path: &f[2],
                query: &f[3],
                cookie_headers: &cookie_headers,
                client_ip: parse_ip(&f[4]),
            };
            let got = cloudfront::verify(&r, keys, now);
            check_grant(&got, &f[3], now);
            // Stripping: no signing parameter or signed cookie is left, idempotently; a request
            // stripped of both carries nothing to verify.
            let q = cloudfront::strip_signing_params(&f[3]);
            assert!(!cloudfront::has_signing_params(&q), "{:?} -> {q:?}", f[3]);
            assert_eq!(cloudfront::strip_signing_params(&q), q);
            let stripped_cookies: Vec<String> = cookie_headers
                .iter()
                .map(|c| cloudfront::strip_signed_cookies(c).into_owned())
                .collect();
            for c in &stripped_cookies {
                assert_eq!(&cloudfront::strip_signed_cookies(c), c);
            }
            let stripped_refs: Vec<&str> = stripped_cookies.iter().map(String::as_str).collect();
            let bare = SignedRequest {
                query: &q,
                cookie_headers: &stripped_refs,
                ..r
            };
            let missing = cloudfront::verify(&bare, keys, now);
            assert_eq!(missing, Err(SignedDenial::Missing), "stripped request");
        }
        1 => {
            let (f, policy) = lines(rest, 5);
            let base = cloudfront::strip_signing_params(&f[1]).into_owned();
            let now = parse_now(&f[3], 1_900_000_000);
            let in_cookies = f[4].contains('c');
            let sha1_label = f[4].contains('1');
            let p64 = cf_b64(policy);
            let sig = cf_sign(policy);
            let hash = if sha1_label { "SHA1" } else { "SHA256" };
            let signing = format!(
                "Policy={p64}&Signature={sig}&Key-Pair-Id={CF_FUZZ_KEY_ID}&Hash-Algorithm=SHA256"
            );
            let (query, cookie) = if in_cookies {
                let cookie = format!(
                    "CloudFront-Policy={p64}; CloudFront-Signature={sig}; \
                     CloudFront-Key-Pair-Id={CF_FUZZ_KEY_ID}; CloudFront-Hash-Algorithm={hash}"
                );
                (base.clone(), Some(cookie))
            } else if base.is_empty() {
                (signing, None)
            } else {
                (format!("{base}&{signing}"), None)
            };
            let cookies: Vec<&str> = cookie.iter().map(String::as_str).collect();
            let r = SignedRequest {
                scheme: "https",
                host: "media.fuzz",
                path: &f[0],
                query: &query,
                cookie_headers: &cookies,
                client_ip: parse_ip(&f[2]),
            };
            let got = cloudfront::verify(&r, keys, now);
            check_grant(&got, &query, now);
            let too_long = p64.len() > cloudfront::MAX_POLICY_CHARS;
            match &got {
                Err(SignedDenial::BadSignature) if in_cookies && sha1_label => {}
                Err(d) => assert!(
                    !matches!(
                        d,
                        SignedDenial::Missing
                            | SignedDenial::UnknownKey
                            | SignedDenial::BadHashAlgorithm
                            | SignedDenial::BadSignature
                    ),
                    "our own signed policy: {d:?}"
                ),
                Ok(g) => {
                    assert!(!too_long);
                    assert!(!(in_cookies && sha1_label), "SHA-256 signature under SHA1");
                    let v: Value = serde_json::from_slice(policy).expect("accepted policy JSON");
                    let cond = &v["Statement"][0]["Condition"];
                    assert_eq!(
                        cond["DateLessThan"]["AWS:EpochTime"].as_u64(),
                        Some(g.expires)
                    );
                    assert_eq!(
                        cond["DateGreaterThan"]["AWS:EpochTime"].as_u64(),
                        g.not_before
                    );
                    assert_eq!(&*g.key_pair_id, CF_FUZZ_KEY_ID);
                    assert_eq!(g.policy, cloudfront::PolicyKind::Custom);
                }
            }
            if policy.is_empty() || too_long {
                assert_eq!(got, Err(SignedDenial::Malformed));
            }
        }
        _ => {
            let (f, _) = lines(rest, 5);
            let base = cloudfront::strip_signing_params(&f[2]).into_owned();
            let now = parse_now(&f[3], 1_900_000_000);
            let expires = parse_now(&f[4], 2_000_000_000);
            let mut url = format!("https://{}{}", f[0], f[1]);
            if !base.is_empty() {
                url.push('?');
                url.push_str(&base);
            }
            let sig = cf_sign(python_canned_policy(&url, expires).as_bytes());
            let signing =
                format!("Expires={expires}&Signature={sig}&Key-Pair-Id={CF_FUZZ_KEY_ID}&Hash-Algorithm=SHA256");
            let query = if base.is_empty() {
                signing
            } else {
                format!("{base}&{signing}")
            };
            let r = SignedRequest {
                scheme: "https",
                host: &f[0],
                path: &f[1],
                query: &query,
                cookie_headers: &[],
                client_ip: None,
            };
            let got = cloudfront::verify(&r, keys, now);
            check_grant(&got, &query, now);
            if now < expires {
                let g = got.unwrap_or_else(|d| panic!("canned signed URL {url:?} refused: {d}"));
                assert_eq!(g.expires, expires);
                assert_eq!(g.policy, cloudfront::PolicyKind::Canned);
            } else {
                assert_eq!(got, Err(SignedDenial::Expired), "{url:?}");
            }
            // Another Expires than the signed one never verifies.
            let other = expires ^ 1;
            let forged = query.replacen(
                &format!("Expires={expires}"),
                &format!("Expires={other}"),
                1,
            );
            let r = SignedRequest {
                query: &forged,
                ..r
            };
            assert_eq!(
                cloudfront::verify(&r, keys, now),
                Err(SignedDenial::BadSignature),
                "{forged:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// smd

/// Secrets of the `smd` target.
pub struct SmdFixture {
    /// The fixture secrets plus one generated per process.
    pub secrets: SmdSecrets,
    /// First fixture (kid, secret), used to sign structured inputs.
    pub signer: (String, String),
    /// The fixture clock.
    pub now: u64,
}

/// The `smd` target's secrets.
pub fn smd_fixture() -> &'static SmdFixture {
    static F: OnceLock<SmdFixture> = OnceLock::new();
    F.get_or_init(|| {
        let doc: Value = serde_json::from_str(SMD_VECTORS).expect("smd vectors");
        let mut map = doc["secrets"].as_object().expect("secrets").clone();
        let signer = map
            .iter()
            .next()
            .map(|(k, v)| (k.clone(), v.as_str().expect("secret").to_string()))
            .expect("a secret");
        let mut random = [0u8; 32];
        SystemRandom::new().fill(&mut random).expect("random");
        let secret: String = random.iter().map(|b| format!("{b:02x}")).collect();
        map.insert(SMD_SECRET_KID.to_string(), Value::String(secret));
        let secrets = SmdSecrets::from_json(&Value::Object(map).to_string()).expect("smd secrets");
        SmdFixture {
            secrets,
            signer,
            now: doc["now"].as_u64().expect("now"),
        }
    })
}

/// HS256 compact JWS of `header.payload` with `secret` (the string's bytes, as SMD does).
pub fn smd_sign(secret: &str, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", mint::b64url(header), mint::b64url(payload));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", mint::b64url(tag.as_ref()))
}

fn smd_check(token: &str, req: &SmdRequest<'_>, now: u64) -> Result<smd::SmdClaims, Denial> {
    let f = smd_fixture();
    let got = smd::verify(token, &f.secrets, req, now);
    if let Ok(c) = &got {
        assert_ne!(c.kid, SMD_SECRET_KID, "per-process secret accepted");
        assert!(now <= c.exp, "expired: {c:?} at {now}");
        assert!(c.nbf.is_none_or(|n| n <= now), "not yet valid: {c:?}");
        match c.binding {
            Binding::Excluded => assert!(
                c.exc
                    .iter()
                    .any(|e| tollgate::request::path_in_scope(req.path, e)),
                "excluded but no exc entry covers {:?}: {c:?}",
                req.path
            ),
            _ => assert!(
                c.paths
                    .iter()
                    .any(|p| tollgate::request::path_in_scope(req.path, p)),
                "no paths entry covers {:?}: {c:?}",
                req.path
            ),
        }
        if c.sid.is_some() {
            assert_eq!(
                c.binding,
                Binding::Verified,
                "sid without a verified intsig"
            );
        }
        // Leeway only widens.
        let wide = smd::verify_with_leeway(token, &f.secrets, req, now, 60);
        assert_eq!(wide.as_ref(), Ok(c), "leeway changed an accepted token");
    }
    got
}

fn smd_headers(lines: &[u8]) -> Vec<(String, Vec<u8>)> {
    lines
        .split(|&b| b == b'\n')
        .filter_map(|l| {
            let i = l.iter().position(|&b| b == b':')?;
            Some((
                text(&l[..i]).trim().to_ascii_lowercase(),
                l[i + 1..].trim_ascii().to_vec(),
            ))
        })
        .collect()
}

/// Target `smd`: mode 0 `uri\nnow\nclient_ip\nquery\nname: value...` (token in the first path
/// segment); mode 1 `path\nclient_ip\nquery\nheaders ('|'-separated)\n<payload JSON>` signed
/// with a fixture secret; mode 2 a secrets file.
pub fn smd(data: &[u8]) {
    let Some((m, rest)) = mode(data, 3) else {
        return;
    };
    let f = smd_fixture();
    match m {
        0 => {
            let (l, headers) = lines(rest, 4);
            let uri = &l[0];
            let (token, path) = match smd::split_token_from_path(uri) {
                Some((t, p)) => {
                    assert_eq!(format!("/{t}{p}"), *uri);
                    assert!(!t.is_empty() && !t.contains('/') && p.starts_with('/'));
                    (t, p)
                }
                None => (uri.as_str(), "/"),
            };
            let owned = smd_headers(headers);
            let headers: Vec<(&str, &[u8])> = owned
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            let r = SmdRequest {
                path,
                client_ip: parse_ip(&l[2]),
                headers: &headers,
                query: &l[3],
            };
            let _ = smd_check(token, &r, parse_now(&l[1], f.now));
        }
        1 => {
            let (l, payload) = lines(rest, 4);
            let owned: Vec<(String, Vec<u8>)> = smd_headers(l[3].replace('|', "\n").as_bytes());
            let headers: Vec<(&str, &[u8])> = owned
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            let (kid, secret) = &f.signer;
            let header = format!(r#"{{"alg":"HS256","kid":"{kid}","typ":"JWT"}}"#);
            let token = smd_sign(secret, header.as_bytes(), payload);
            let r = SmdRequest {
                path: &l[0],
                client_ip: parse_ip(&l[1]),
                headers: &headers,
                query: &l[2],
            };
            let got = smd_check(&token, &r, f.now);
            assert_ne!(got, Err(Denial::UnknownKid));
            if token.len() <= smd::MAX_TOKEN_BYTES {
                assert_ne!(got, Err(Denial::TooLong));
            }
            if let Ok(c) = &got {
                // Finding `non-utf8-json`: JSON text is UTF-8 (RFC 8259 section 8.1) and
                // the module promises strict JSON, but invalid UTF-8 inside a string of a
                // member it ignores is accepted.
                if !masked("non-utf8-json") {
                    assert!(
                        std::str::from_utf8(payload).is_ok(),
                        "accepted a claims payload that is not UTF-8: {}",
                        String::from_utf8_lossy(payload)
                    );
                }
                // (Lone surrogate escapes are valid JSON grammar that serde_json's Value
                // refuses, so the cross-check is only made when it parses.)
                if let Ok(v) = serde_json::from_slice::<Value>(payload) {
                    if let Some(exp) = v["exp"].as_u64() {
                        assert_eq!(c.exp, exp);
                    }
                }
                assert_eq!(&c.kid, kid);
            }
            // The same token signed by a secret the fuzzer cannot know is refused.
            let mut forged = token.clone();
            forged.replace_range(forged.rfind('.').unwrap() + 1.., "");
            forged.push_str(&mint::b64url(&[0u8; 32]));
            assert!(smd::verify(&forged, &f.secrets, &r, f.now).is_err());
        }
        _ => {
            if let Ok(s) = SmdSecrets::from_json(&text(rest)) {
                assert!(!s.is_empty() && s.kids().count() == s.len());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// htpasswd

/// Users of the fixed credentials file: (user, password).
pub const HTPASSWD_USERS: [(&str, &str); 3] = [
    ("alice", "wonderland"),
    ("bob", "builder:with:colons"),
    ("zoë", "pässwörd"),
];

/// The fixed credentials file (bcrypt cost 4, hashed once per process).
pub fn htpasswd_fixture() -> &'static Htpasswd {
    static H: OnceLock<Htpasswd> = OnceLock::new();
    H.get_or_init(|| {
        let mut file = String::from("# fuzz users\n\n");
        for (user, password) in HTPASSWD_USERS {
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            file.push_str(&format!("{user}:{hash}\r\n"));
        }
        Htpasswd::from_bytes(file.as_bytes(), Path::new("fuzz.htpasswd")).expect("fixture file")
    })
}

/// bcrypt costs 5..=14 (however spelled: `9`, `09`, `014`) lowered to `04`, so loading a
/// fuzzed file (which hashes a dummy at the file's highest cost) stays cheap; costs the
/// loader refuses without hashing are kept.
fn cheap_costs(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let w = &bytes[i..];
        if w.len() >= 4
            && w[0] == b'$'
            && w[1] == b'2'
            && matches!(w[2], b'a' | b'b' | b'y')
            && w[3] == b'$'
        {
            let digits = w[4..].iter().take_while(|b| b.is_ascii_digit()).count();
            let cost = std::str::from_utf8(&w[4..4 + digits])
                .ok()
                .and_then(|d| d.parse::<u64>().ok());
            out.extend_from_slice(&w[..4]);
            if cost.is_some_and(|c| (5..=14).contains(&c)) {
                out.extend_from_slice(b"04");
            } else {
                out.extend_from_slice(&w[4..4 + digits]);
            }
            i += 4 + digits;
        } else {
            out.push(w[0]);
            i += 1;
        }
    }
    out
}

/// Target `htpasswd`: mode 0 a credentials file; mode 1 an `Authorization` value checked
/// against the fixed file (and the realm quoting of `www_authenticate`).
pub fn htpasswd(data: &[u8]) {
    let Some((m, rest)) = mode(data, 2) else {
        return;
    };
    match m {
        0 => {
            let file = cheap_costs(rest);
            match Htpasswd::from_bytes(&file, Path::new("fuzz.htpasswd")) {
                Ok(h) => {
                    assert!(!h.is_empty());
                    assert!(h.len() <= file.split(|&b| b == b'\n').count());
                    assert_eq!(h.check_cached(None), Some(Err(BasicDenial::Missing)));
                    assert_eq!(
                        h.check_cached(Some(b"Basic !!")),
                        Some(Err(BasicDenial::Malformed))
                    );
                }
                Err(HtpasswdError::Invalid { problems, .. }) => {
                    assert!(!problems.is_empty());
                    let lines = file.split(|&b| b == b'\n').count();
                    let mut last = 0;
                    for p in &problems {
                        assert!(p.line > last && p.line <= lines, "{problems:?}");
                        last = p.line;
                    }
                }
                Err(HtpasswdError::NoUsers { .. }) => {}
                Err(e) => panic!("unexpected error from bytes: {e}"),
            }
        }
        _ => {
            let h = htpasswd_fixture();
            let cached = h.check_cached(Some(rest));
            let got = match &cached {
                Some(r) => r.clone(),
                None => h.check(Some(rest)),
            };
            match &got {
                Ok(user) => {
                    let (_, password) = HTPASSWD_USERS
                        .iter()
                        .find(|(u, _)| u == user)
                        .unwrap_or_else(|| panic!("unknown user {user:?} let in"));
                    // The header carried exactly this user's password.
                    let value = std::str::from_utf8(rest).expect("accepted header is UTF-8");
                    let b64 = value
                        .trim_matches([' ', '\t'])
                        .split_once(' ')
                        .expect("scheme")
                        .1;
                    let decoded = STANDARD
                        .decode(b64.trim_start_matches(' '))
                        .expect("base64");
                    assert_eq!(decoded, format!("{user}:{password}").into_bytes());
                    // Remembered now.
                    assert_eq!(h.check_cached(Some(rest)), Some(Ok(user.clone())));
                }
                Err(BasicDenial::Missing) => panic!("a header is never missing"),
                Err(BasicDenial::Malformed) => {
                    assert_eq!(cached, Some(Err(BasicDenial::Malformed)));
                }
                Err(BasicDenial::BadCredentials) => assert_eq!(cached, None),
            }
            assert_eq!(h.check(None), Err(BasicDenial::Missing));

            let realm = text(rest);
            let w = htpasswd::www_authenticate(&realm);
            let inner = w
                .strip_prefix("Basic realm=\"")
                .and_then(|s| s.strip_suffix("\", charset=\"UTF-8\""))
                .expect("www-authenticate shape");
            assert!(!inner.chars().any(char::is_control));
            let mut unescaped = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => unescaped.push(chars.next().expect("escape")),
                    '"' => panic!("unescaped quote in {w:?}"),
                    c => unescaped.push(c),
                }
            }
            let want: String = realm.chars().filter(|c| !c.is_control()).collect();
            assert_eq!(unescaped, want);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// config

/// Target `config`: mode 0 a YAML configuration (parsed, then validated against the repo's
/// `conf/` directory); mode 1 `size\nduration\nglob\npath\ntoken source` for the unit parsers
/// (which must round-trip through their formatters), globs and token sources.
pub fn config(data: &[u8]) {
    let Some((m, rest)) = mode(data, 2) else {
        return;
    };
    match m {
        0 => {
            let yaml = text(rest);
            let base = repo_root().join("conf");
            let env = |name: &str| {
                (name == "TOLLGATE_ORIGIN_SECRET").then(|| "fuzz-secret-0123456789".to_string())
            };
            let raw = config::parse_raw(&yaml);
            let full = config::from_yaml_str_with_env(&yaml, &base, &env);
            match (&raw, &full) {
                // YAML that does not parse at all: both say so
                (Err(ConfigError::Parse(a)), Err(ConfigError::Parse(b))) => {
                    assert!(!a.is_empty() && !b.is_empty());
                }
                // a tree of the wrong shape (unknown keys, wrong types): the strict reader
                // stops at the first problem, the full check lists every one with its path
                (Err(ConfigError::Parse(a)), Err(ConfigError::Invalid(problems))) => {
                    assert!(!a.is_empty());
                    assert!(!problems.is_empty(), "invalid without a problem");
                    for p in problems {
                        assert!(!p.message.is_empty() && !p.path.is_empty(), "{p:?}");
                    }
                }
                (Err(e), _) => panic!("parse_raw: unexpected {e:?}, then {full:?}"),
                (Ok(_), Err(ConfigError::Invalid(problems))) => {
                    assert!(!problems.is_empty(), "invalid without a problem");
                    for p in problems {
                        assert!(!p.message.is_empty(), "{p:?}");
                    }
                }
                (Ok(_), Ok(_)) => {}
                // a key twice in one mapping: the strict reader keeps the last copy in a
                // name → value map, the full check refuses the ambiguity
                (Ok(_), Err(ConfigError::Parse(msg))) if msg.contains("duplicate") => {}
                (Ok(_), Err(e)) => panic!("parsed, then {e:?}"),
            }
        }
        _ => {
            let (l, _) = lines(rest, 5);
            if let Ok(n) = config::parse_size(&l[0]) {
                let f = config::format_size(n);
                assert_eq!(config::parse_size(&f), Ok(n), "{:?} -> {n} -> {f:?}", l[0]);
            }
            if let Ok(d) = config::parse_duration(&l[1]) {
                let f = config::format_duration(d);
                // Finding `duration-bare-seconds`: a bare number of seconds is accepted up to
                // u64::MAX s, the unit form only up to u64::MAX ms, so the formatted form of a
                // huge bare duration does not parse back.
                let huge_bare = d.as_millis() > u128::from(u64::MAX);
                if !(masked("duration-bare-seconds") && huge_bare) {
                    assert_eq!(
                        config::parse_duration(&f),
                        Ok(d),
                        "{:?} -> {d:?} -> {f:?}",
                        l[1]
                    );
                }
            }
            // Any number formats to something that parses back.
            let mut word = [0u8; 8];
            for (i, b) in rest.iter().take(8).enumerate() {
                word[i] = *b;
            }
            let n = u64::from_le_bytes(word);
            assert_eq!(config::parse_size(&config::format_size(n)), Ok(n));
            let d = Duration::from_millis(n >> 20);
            assert_eq!(config::parse_duration(&config::format_duration(d)), Ok(d));
            if let Ok(g) = config::Glob::new(&l[2]) {
                let _ = g.matches(&l[3]);
                // `*` may match nothing and `?` any one character.
                let sample: String = l[2]
                    .chars()
                    .filter(|&c| c != '*')
                    .map(|c| if c == '?' { 'x' } else { c })
                    .collect();
                assert!(g.matches(&sample), "{:?} misses {sample:?}", l[2]);
                let literal = !l[2].contains('*') && !l[2].contains('?');
                if literal {
                    assert!(g.matches(&l[2]), "literal glob {:?} misses itself", l[2]);
                }
                if g.as_str() == "*" || g.as_str() == "/*" {
                    assert!(g.matches("/"));
                }
            }
            let _ = TokenSource::parse(&l[4]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// disk_reader

/// The key hash every `disk_reader` input is stored under.
pub const DISK_HASH: [u8; 16] = [0x5a; 16];

struct DiskFixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: DiskStore,
}

fn disk_fixture() -> &'static DiskFixture {
    static F: OnceLock<DiskFixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-fuzz-disk")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().to_path_buf();
        let store = DiskStore::open(&root, 1 << 30, 64 << 20, None, None).expect("disk store");
        store.scan();
        DiskFixture {
            _dir: dir,
            root,
            store,
        }
    })
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn le64(b: &[u8], o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}

/// An object file made consistent: lengths from the input's header (clamped to the bytes
/// that follow), every checksum recomputed, the block table appended. Returns the file and
/// (path bytes, internal meta, header meta, body).
pub fn disk_fixup(data: &[u8]) -> (Vec<u8>, Fixed) {
    let mut head = [0u8; FIXED_LEN];
    let n = data.len().min(FIXED_LEN);
    head[..n].copy_from_slice(&data[..n]);
    let rest = &data[n..];
    let avail = rest.len() as u64;
    let path_len = u64::from(le32(&head, 16)).min(avail);
    let internal_len = u64::from(le32(&head, 20)).min(avail - path_len);
    let header_len = u64::from(le32(&head, 24)).min(avail - path_len - internal_len);
    let meta_len = path_len + internal_len + header_len;
    let body_len = le64(&head, 28).min(avail - meta_len);
    let meta = &rest[..meta_len as usize];
    let body = &rest[meta_len as usize..(meta_len + body_len) as usize];
    let table: Vec<u32> = body.chunks(BLOCK as usize).map(crc32fast::hash).collect();
    let table_bytes = format::encode_table(&table);
    let fixed = Fixed {
        generation: le64(&head, 8),
        path_len: path_len as u32,
        internal_len: internal_len as u32,
        header_len: header_len as u32,
        body_len,
        meta_crc: crc32fast::hash(meta),
        table_crc: crc32fast::hash(&table_bytes),
    };
    let mut file = fixed.encode().to_vec();
    file.extend_from_slice(meta);
    file.extend_from_slice(body);
    file.extend_from_slice(&table_bytes);
    (file, fixed)
}

fn disk_put(bytes: &[u8]) {
    let f = disk_fixture();
    let path = f.root.join(format::object_rel_path(&DISK_HASH));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("object dir");
    std::fs::write(&path, bytes).expect("write object file");
}

/// Target `disk_reader`: mode 0 a raw object file looked up through a real `DiskStore`;
/// mode 1 the same with lengths and checksums made consistent (so pingora's meta decoding
/// and the body checks are reached), where a hit must happen exactly when the path is UTF-8
/// and the meta decodes; mode 2 the format functions; mode 3 the start-up scan.
pub fn disk_reader(data: &[u8]) {
    let Some((m, rest)) = mode(data, 4) else {
        return;
    };
    let f = disk_fixture();
    f.store.purge_hash(&DISK_HASH);
    match m {
        0 => {
            disk_put(rest);
            if let Some(o) = f.store.open_object(&DISK_HASH) {
                let fixed = Fixed::decode(rest).expect("a hit has a valid header");
                assert_eq!(o.fixed, fixed);
                assert_eq!(rest.len() as u64, fixed.file_len());
                let body_at = fixed.body_offset() as usize;
                if let Some(body) = &o.body {
                    assert_eq!(&body[..], &rest[body_at..body_at + fixed.body_len as usize]);
                }
                let path = &rest[FIXED_LEN..FIXED_LEN + fixed.path_len as usize];
                assert_eq!(o.path.as_bytes(), path);
            }
        }
        1 => {
            let (file, fixed) = disk_fixup(rest);
            disk_put(&file);
            let meta_at = FIXED_LEN;
            let (plen, ilen, hlen) = (
                fixed.path_len as usize,
                fixed.internal_len as usize,
                fixed.header_len as usize,
            );
            let path = &file[meta_at..meta_at + plen];
            let raw = RawMeta {
                internal: bytes::Bytes::copy_from_slice(
                    &file[meta_at + plen..meta_at + plen + ilen],
                ),
                header: bytes::Bytes::copy_from_slice(
                    &file[meta_at + plen + ilen..meta_at + plen + ilen + hlen],
                ),
            };
            let expect_hit = std::str::from_utf8(path).is_ok() && raw.to_meta().is_some();
            let got = f.store.open_object(&DISK_HASH);
            assert_eq!(
                got.is_some(),
                expect_hit,
                "consistent object file, hit = {expect_hit}"
            );
            if let Some(o) = got {
                assert_eq!(o.fixed, fixed);
                let body_at = fixed.body_offset() as usize;
                let body = &file[body_at..body_at + fixed.body_len as usize];
                assert_eq!(o.body.as_deref(), Some(body));
                assert_eq!(o.path.as_bytes(), path);
                assert_eq!(o.raw_meta.internal, raw.internal);
                assert_eq!(o.raw_meta.header, raw.header);
                // A second lookup (now from the open-file cache when the page cache has it).
                if let Some(again) = f.store.open_object_nonblocking(&DISK_HASH) {
                    assert_eq!(again.fixed, fixed);
                }
            }
        }
        2 => {
            if let Ok(fixed) = Fixed::decode(rest) {
                let again = fixed.encode();
                assert_eq!(Fixed::decode(&again), Ok(fixed));
                // Everything but the reserved u16 at 6..8 is reproduced.
                assert_eq!(&again[..6], &rest[..6]);
                assert_eq!(&again[8..FIXED_LEN], &rest[8..FIXED_LEN]);
                let _ = fixed.blocks();
                let _ = fixed.file_len();
            }
            let table = format::decode_table(rest);
            assert_eq!(table.len(), rest.len() / 4);
            assert_eq!(format::encode_table(&table), &rest[..rest.len() / 4 * 4]);
            let name = text(rest);
            if let Some(hash) = format::hash_of_file_name(&name) {
                let rel = format::object_rel_path(&hash);
                let file_name = rel.file_name().and_then(|n| n.to_str()).expect("name");
                assert_eq!(file_name.to_ascii_lowercase(), name.to_ascii_lowercase());
                assert_eq!(format::hash_of_file_name(file_name), Some(hash));
            }
            let mut h = format::BlockHasher::default();
            h.update(rest);
            let t = h.finish();
            assert_eq!(t.len() as u64, (rest.len() as u64).div_ceil(BLOCK));
        }
        _ => {
            let (fixup, raw) = rest.split_first().unwrap_or((&0, &[][..]));
            let bytes = if fixup & 1 == 1 {
                disk_fixup(raw).0
            } else {
                raw.to_vec()
            };
            disk_put(&bytes);
            f.store.scan();
            assert!(f.store.objects() <= 1);
            let indexed = f.store.objects() == 1;
            let exists = f.root.join(format::object_rel_path(&DISK_HASH)).exists();
            assert!(!indexed || exists, "indexed a file the scan removed");
            let _ = f.store.open_object(&DISK_HASH);
        }
    }
    f.store.purge_hash(&DISK_HASH);
}
