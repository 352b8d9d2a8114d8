//! Hand-made seed inputs for the fuzz targets, in the input formats of `targets.rs`. Written by
//! the ignored test `write_seed_corpora` in `tests/fuzz_corpora.rs`; the fuzzers and `cargo fuzz
//! cmin` then grow and shrink the corpora around them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use tollgate::auth::mint;
use tollgate::cache::disk::RawMeta;
use tollgate::cache::format;
use tollgate::cache::DiskStore;

use super::targets::{self, JWS_NOW};

fn with_mode(mode: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(body);
    v
}

struct Writer<'a> {
    root: &'a Path,
    count: usize,
}

impl Writer<'_> {
    fn put(&mut self, target: &str, name: &str, data: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
        self.count += 1;
    }
}

/// Write every seed under `root/<target>/`; returns how many.
pub fn write_all(root: &Path) -> usize {
    let mut w = Writer { root, count: 0 };
    jws(&mut w);
    token_sources(&mut w);
    cloudfront(&mut w);
    smd(&mut w);
    htpasswd(&mut w);
    config(&mut w);
    disk_reader(&mut w);
    w.count
}

fn claims(exp: i64) -> Value {
    json!({
        "sub": "reader-42",
        "subs": ["premium", "sports"],
        "iss": "https://fuzz.example",
        "aud": "tollgate",
        "iat": JWS_NOW,
        "exp": exp,
        "sid": "s-1",
        "paths": ["/video/"],
        "ip": "192.0.2.0/24",
    })
}

fn jws(w: &mut Writer<'_>) {
    let k = targets::jws_keys();
    let now = JWS_NOW as i64;
    let valid_es = k.es.sign(&claims(now + 3600)).unwrap();
    let valid_rs = k.rs.sign(&claims(now + 3600)).unwrap();
    let raw: Vec<(&str, String)> = vec![
        ("valid-es256", valid_es.clone()),
        ("valid-rs256", valid_rs),
        ("expired", k.es.sign(&claims(now - 3600)).unwrap()),
        ("at-leeway-edge", k.es.sign(&claims(now - 30)).unwrap()),
        ("nbf-future", {
            let mut c = claims(now + 7200);
            c["nbf"] = json!(now + 3600);
            k.es.sign(&c).unwrap()
        }),
        ("float-dates", {
            let mut c = claims(0);
            c["exp"] = json!(JWS_NOW as f64 + 10.5);
            c["nbf"] = json!(-5);
            c["subs"] = json!(" premium, ,sports ");
            k.es.sign(&c).unwrap()
        }),
        ("unknown-kid", {
            let h = json!({"alg": "ES256", "typ": "JWT", "kid": "nope"});
            mint::sign_raw(&k.es, &h, &claims(now + 60)).unwrap()
        }),
        ("crit", {
            let h = json!({"alg": "ES256", "kid": "fz-es", "crit": ["exp"]});
            mint::sign_raw(&k.es, &h, &claims(now + 60)).unwrap()
        }),
        ("jku", {
            let h = json!({"alg": "ES256", "kid": "fz-es", "jku": "https://x"});
            mint::sign_raw(&k.es, &h, &claims(now + 60)).unwrap()
        }),
        ("alg-none", {
            let h = mint::b64url(br#"{"alg":"none","kid":"fz-es"}"#);
            let p = mint::b64url(claims(now + 60).to_string().as_bytes());
            format!("{h}.{p}.")
        }),
        ("rs-as-es", {
            let h = json!({"alg": "RS256", "kid": "fz-es"});
            mint::sign_raw(&k.rs, &h, &claims(now + 60)).unwrap()
        }),
        ("padded", {
            let h = format!("{}=", mint::b64url(br#"{"alg":"ES256","kid":"fz-es"}"#));
            let p = mint::b64url(claims(now + 60).to_string().as_bytes());
            mint::sign_segments(&k.es, &h, &p).unwrap()
        }),
        ("tampered", {
            let mut t = valid_es.clone();
            t.pop();
            t.push('Q');
            t
        }),
        ("malformed", "this.is-not.a-jwt".to_string()),
        ("two-parts", "eyJhbGciOiJFUzI1NiJ9.eyJleHAiOjF9".to_string()),
    ];
    for (name, token) in raw {
        w.put(
            "jws",
            &format!("raw-{name}"),
            &with_mode(b'0', token.as_bytes()),
        );
    }
    let header = br#"{"alg":"ES256","typ":"JWT","kid":"fz-es"}"#;
    let payloads: Vec<(&str, Value)> = vec![
        ("full", claims(now + 3600)),
        ("minimal", json!({"exp": now + 1})),
        (
            "aud-array",
            json!({"exp": now + 1, "aud": ["a", "tollgate"], "iss": "https://fuzz.example"}),
        ),
        ("paths-empty", json!({"exp": now + 1, "paths": []})),
        ("paths-mixed", json!({"exp": now + 1, "paths": ["/a", 1]})),
        ("sub-number", json!({"exp": now + 1, "sub": 7})),
        ("no-exp", json!({"sub": "x"})),
        ("exp-huge", json!({"exp": 1e300, "nbf": 1.5, "iat": -1})),
        ("exp-string", json!({"exp": "tomorrow"})),
        (
            "subs-custom",
            json!({"exp": now + 1, "custom:subs": ["x"], "subs": [1, "a", " "]}),
        ),
    ];
    for (name, p) in payloads {
        let body = p.to_string();
        w.put(
            "jws",
            &format!("payload-{name}"),
            &with_mode(b'2', body.as_bytes()),
        );
        let mut two = header.to_vec();
        two.push(b'\n');
        two.extend_from_slice(body.as_bytes());
        w.put("jws", &format!("signed-{name}"), &with_mode(b'1', &two));
    }
    for (name, h) in [
        ("kidless", r#"{"alg":"ES256"}"#),
        ("dup-alg", r#"{"alg":"ES256","alg":"ES256","kid":"fz-es"}"#),
        ("array", r#"["alg","ES256"]"#),
        ("x5c", r#"{"alg":"ES256","kid":"fz-es","x5c":null}"#),
    ] {
        let body = format!("{h}\n{}", json!({"exp": now + 60}));
        w.put(
            "jws",
            &format!("signed-header-{name}"),
            &with_mode(b'1', body.as_bytes()),
        );
    }
    let jwks = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/keys/jwks.json"))
        .expect("conf/keys/jwks.json");
    w.put("jws", "jwks-conf", &with_mode(b'3', &jwks));
    let both = mint::jwks_json(&[&k.es, &k.rs]);
    w.put("jws", "jwks-fuzz-keys", &with_mode(b'3', both.as_bytes()));
    w.put("jws", "jwks-empty", &with_mode(b'3', br#"{"keys":[]}"#));
}

fn token_sources(w: &mut Writer<'_>) {
    let k = targets::jws_keys();
    let token = k.es.sign(&claims(JWS_NOW as i64 + 60)).unwrap();
    let cases: Vec<(&str, u8, String)> = vec![
        (
            "path-token",
            b'0',
            format!("/{token}/video/x.m3u8\na=1\n\n"),
        ),
        ("path-sid", b'0', format!("/s-1.{token}/v\n\n\n")),
        (
            "query",
            b'1',
            format!("/premium/a\na=1&token={token}&b=2\n\n"),
        ),
        (
            "query-escaped",
            b'1',
            "/p\ntoken=a%2Eb%2Ec&token=2\n\n".to_string(),
        ),
        ("bearer", b'2', format!("/x\n\nBearer {token}\n")),
        ("bearer-odd", b'2', "/x\n\nbEaReR  a.b.c \r\n".to_string()),
        (
            "cookie",
            b'3',
            format!("/x\n\n\na=1; token={token}; b=2\ntoken=\"quoted\""),
        ),
        (
            "all",
            b'4',
            format!("/{token}/v\ntoken=q\nBearer b\ntoken=c"),
        ),
        (
            "normalize",
            b'5',
            "/x/../%70remium/./a//b%c3%a9/\n&&token&=\nBasic x\n; ;token".to_string(),
        ),
        ("escapes-root", b'0', "/a/../../b\n\n\n".to_string()),
        ("bad-escape", b'0', "/a%zz%2F\\\n\n\n".to_string()),
        ("ipv6-host", b'0', "[::1]:8080\n\n\n".to_string()),
    ];
    for (name, m, body) in cases {
        w.put("token_sources", name, &with_mode(m, body.as_bytes()));
    }
}

fn cloudfront(w: &mut Writer<'_>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cloudfront");
    let vectors: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("vectors.json")).unwrap()).unwrap();
    for case in vectors["cases"].as_array().unwrap() {
        let s = |n: &str| case[n].as_str().unwrap_or("").to_string();
        let mut body = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            s("scheme"),
            s("host"),
            s("path"),
            s("query"),
            s("client_ip"),
            case["now"].as_u64().unwrap()
        );
        for c in case["cookies"].as_array().unwrap() {
            body.push('\n');
            body.push_str(c.as_str().unwrap());
        }
        w.put(
            "cloudfront",
            &format!("vector-{}", s("name")),
            &with_mode(b'0', body.as_bytes()),
        );
    }
    let e2e: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("e2e.json")).unwrap()).unwrap();
    let host = e2e["host"].as_str().unwrap();
    for case in e2e["cases"].as_array().unwrap() {
        let full = case["path"].as_str().unwrap();
        let (path, query) = full.split_once('?').unwrap_or((full, ""));
        let mut body = format!("https\n{host}\n{path}\n{query}\n\n1900000000");
        if let Some(c) = case["cookie"].as_str() {
            body.push('\n');
            body.push_str(c);
        }
        let name = case["name"].as_str().unwrap();
        w.put(
            "cloudfront",
            &format!("e2e-{name}"),
            &with_mode(b'0', body.as_bytes()),
        );
    }
    let policies = [
        (
            "plain",
            r#"{"Statement":[{"Resource":"https://media.fuzz/*","Condition":{"DateLessThan":{"AWS:EpochTime":2000000000}}}]}"#,
        ),
        (
            "no-resource",
            r#"{"Statement":[{"Condition":{"DateLessThan":{"AWS:EpochTime":2000000000}}}]}"#,
        ),
        (
            "ip-window",
            r#"{"Statement":[{"Resource":"https://media.fuzz/v/?/*.ts","Condition":{"DateLessThan":{"AWS:EpochTime":2000000000},"DateGreaterThan":{"AWS:EpochTime":1800000000},"IpAddress":{"AWS:SourceIp":"192.0.2.0/24"}}}]}"#,
        ),
        (
            "ipv6",
            r#"{"Statement":[{"Condition":{"DateLessThan":{"AWS:EpochTime":2000000000},"IpAddress":{"AWS:SourceIp":"2001:db8::/32"}}}]}"#,
        ),
        (
            "two-statements",
            r#"{"Statement":[{"Condition":{"DateLessThan":{"AWS:EpochTime":2000000000}}},{"Condition":{"DateLessThan":{"AWS:EpochTime":2000000000}}}]}"#,
        ),
        (
            "unknown-field",
            r#"{"Statement":[{"Condition":{"DateLessThan":{"AWS:EpochTime":2000000000}},"Effect":"Allow"}]}"#,
        ),
        (
            "expired",
            r#"{"Statement":[{"Condition":{"DateLessThan":{"AWS:EpochTime":1000}}}]}"#,
        ),
    ];
    for (name, p) in policies {
        for (flags, ip) in [("u", "192.0.2.7"), ("c", "2001:db8::1"), ("c1", "")] {
            let body = format!("/v/a/seg1.ts\nx=1&y=2\n{ip}\n1900000000\n{flags}\n{p}");
            w.put(
                "cloudfront",
                &format!("custom-{name}-{flags}"),
                &with_mode(b'1', body.as_bytes()),
            );
        }
    }
    for (name, body) in [
        (
            "plain",
            "d111111abcdef8.cloudfront.net\n/images/image.jpg\n\n1900000000\n2000000000",
        ),
        (
            "query",
            "media.fuzz:8443\n/a b/\"q\"\\\ncolor=red&size=medium\n1900000000\n2000000000",
        ),
        ("unicode", "media.fuzz\n/café/😀/\u{7f}.html\n\n1\n7"),
        (
            "expired",
            "media.fuzz\n/x\nExpires=5&a=1\n2000000000\n2000000000",
        ),
    ] {
        w.put(
            "cloudfront",
            &format!("canned-{name}"),
            &with_mode(b'2', body.as_bytes()),
        );
    }
}

fn smd(w: &mut Writer<'_>) {
    let doc: Value = serde_json::from_str(targets::SMD_VECTORS).unwrap();
    let now = doc["now"].as_u64().unwrap();
    for v in doc["vectors"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let mut body = format!(
            "{}\n{now}\n{}\n{}",
            v["uri"].as_str().unwrap(),
            v["client_ip"].as_str().unwrap_or(""),
            v["query"].as_str().unwrap()
        );
        let mut header_line = String::new();
        for h in v["headers"].as_array().unwrap() {
            let (k, val) = (h[0].as_str().unwrap(), h[1].as_str().unwrap());
            body.push_str(&format!("\n{k}: {val}"));
            if !header_line.is_empty() {
                header_line.push('|');
            }
            header_line.push_str(&format!("{k}: {val}"));
        }
        w.put(
            "smd",
            &format!("vector-{name}"),
            &with_mode(b'0', body.as_bytes()),
        );
        // The vector's claims, re-signed by the target with a fixture secret.
        let token = v["token"].as_str().unwrap();
        let payload = token.rsplit('.').nth(1).unwrap();
        if let Ok(payload) = URL_SAFE_NO_PAD.decode(payload) {
            let mut body = format!(
                "{}\n{}\n{}\n{header_line}\n",
                v["path"].as_str().unwrap(),
                v["client_ip"].as_str().unwrap_or(""),
                v["query"].as_str().unwrap()
            )
            .into_bytes();
            body.extend_from_slice(&payload);
            w.put("smd", &format!("signed-{name}"), &with_mode(b'1', &body));
        }
    }
    w.put(
        "smd",
        "secrets",
        &with_mode(b'2', doc["secrets"].to_string().as_bytes()),
    );
    w.put(
        "smd",
        "secrets-dup",
        &with_mode(b'2', br#"{"a":"x","a":"y"}"#),
    );
}

fn htpasswd(w: &mut Writer<'_>) {
    let conf =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/secrets/editors.htpasswd"))
            .expect("editors.htpasswd");
    w.put("htpasswd", "file-conf", &with_mode(b'0', &conf));
    let hash = bcrypt::hash("pw", 4).unwrap();
    let files = [
        (
            "file-good",
            format!("# editors\n\nalice:{hash}\r\n  bob:{hash}  \n"),
        ),
        (
            "file-bad-schemes",
            format!(
                "a:$apr1$x$y\nb:{{SHA}}abc=\nc:plaintext\nd:$2x$04$abc\ne:$2b$03${}\nf\n:{hash}\n",
                &hash[7..]
            ),
        ),
        ("file-dup", format!("a:{hash}\na:{hash}\n")),
        ("file-cost15", format!("a:$2b$15${}\n", &hash[7..])),
        ("file-empty", "# nothing\n\n".to_string()),
    ];
    for (name, f) in files {
        w.put("htpasswd", name, &with_mode(b'0', f.as_bytes()));
    }
    w.put(
        "htpasswd",
        "file-not-utf8",
        &with_mode(b'0', b"a:\xff\xfe\n"),
    );
    for (name, header) in [
        (
            "alice",
            format!("Basic {}", STANDARD.encode("alice:wonderland")),
        ),
        (
            "bob",
            format!("  basic   {}\t", STANDARD.encode("bob:builder:with:colons")),
        ),
        ("zoe", format!("BASIC {}", STANDARD.encode("zoë:pässwörd"))),
        ("wrong", format!("Basic {}", STANDARD.encode("alice:wrong"))),
        ("unknown", format!("Basic {}", STANDARD.encode("mallory:x"))),
        ("no-colon", format!("Basic {}", STANDARD.encode("alice"))),
        ("control", format!("Basic {}", STANDARD.encode("a\u{1}:b"))),
        ("bearer", "Bearer abc".to_string()),
        ("realm", "edi\"tors\\ \u{7}zone".to_string()),
    ] {
        w.put(
            "htpasswd",
            &format!("auth-{name}"),
            &with_mode(b'1', header.as_bytes()),
        );
    }
}

fn config(w: &mut Writer<'_>) {
    let conf = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/tollgate.yaml"))
        .expect("conf/tollgate.yaml");
    w.put("config", "conf-tollgate", &with_mode(b'0', &conf));
    let small = [
        ("empty", "# nothing\n---\n"),
        ("minimal", "listeners:\n  - addr: 127.0.0.1:8080\norigins:\n  o:\n    url: http://127.0.0.1:9000\nroutes:\n  - match: /*\n    origin: o\n    access: public\n"),
        ("unknown-key", "listeners: []\nbogus: 1\n"),
        ("wrong-type", "listeners: 5\n"),
        ("bad-yaml", "routes: [\n  - {match: /a\n"),
        ("anchors", "a: &x {b: *x}\n"),
    ];
    for (name, y) in small {
        w.put(
            "config",
            &format!("yaml-{name}"),
            &with_mode(b'0', y.as_bytes()),
        );
    }
    for (name, u) in [
        (
            "units",
            "256MiB\n1h30m\n/premium/*\n/premium/a/b\nquery:token",
        ),
        ("units-odd", "5 mb\n1500ms\n*\n/\ncookie:"),
        ("units-bad", "-1\n1.5h\n/a?c**d\n/abcd\nbearer"),
    ] {
        w.put("config", name, &with_mode(b'1', u.as_bytes()));
    }
}

fn disk_reader(w: &mut Writer<'_>) {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), 1 << 30, 64 << 20, None, None).unwrap();
    store.scan();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let objects: [(&str, &str, Vec<u8>, bool); 3] = [
        (
            "small",
            "/news/a.html",
            b"<html>hello</html>".to_vec(),
            true,
        ),
        ("empty", "/e", Vec::new(), false),
        (
            "binary",
            "/media/seg-1.ts",
            (0..2000u32).map(|i| (i * 7) as u8).collect(),
            true,
        ),
    ];
    for (i, (name, path, body, headers)) in objects.iter().enumerate() {
        let mut h = pingora_http::ResponseHeader::build(200, None).unwrap();
        if *headers {
            h.insert_header("content-type", "text/html").unwrap();
            h.insert_header("cache-control", "max-age=60").unwrap();
            h.insert_header("x-tollgate-variant", "premium").unwrap();
        }
        let meta = pingora_cache::CacheMeta::new(now + Duration::from_secs(60), now, 5, 10, h);
        let hash = [i as u8 + 1; 16];
        let mut fill = store
            .begin_fill(hash, Arc::from(*path), &RawMeta::of(&meta).unwrap())
            .unwrap();
        assert!(fill.write(body));
        assert!(store.commit(fill));
        let file = std::fs::read(dir.path().join(format::object_rel_path(&hash))).unwrap();
        w.put(
            "disk_reader",
            &format!("raw-{name}"),
            &with_mode(b'0', &file),
        );
        w.put(
            "disk_reader",
            &format!("fixup-{name}"),
            &with_mode(b'1', &file),
        );
        w.put(
            "disk_reader",
            &format!("format-{name}"),
            &with_mode(b'2', &file),
        );
        w.put(
            "disk_reader",
            &format!("scan-{name}"),
            &with_mode(b'3', &[&[1u8][..], &file].concat()),
        );
        if *name == "small" {
            let mut flipped = file.clone();
            let n = flipped.len();
            flipped[n - 6] ^= 1;
            w.put(
                "disk_reader",
                "raw-flipped-body",
                &with_mode(b'0', &flipped),
            );
            w.put(
                "disk_reader",
                "raw-truncated",
                &with_mode(b'0', &file[..file.len() - 3]),
            );
            let mut meta_flip = file.clone();
            meta_flip[format::FIXED_LEN + 2] ^= 0x20;
            w.put(
                "disk_reader",
                "raw-flipped-meta",
                &with_mode(b'0', &meta_flip),
            );
            w.put(
                "disk_reader",
                "fixup-flipped-meta",
                &with_mode(b'1', &meta_flip),
            );
            w.put(
                "disk_reader",
                "scan-raw-truncated",
                &with_mode(b'3', &[&[0u8][..], &file[..40]].concat()),
            );
        }
    }
    let name = format!(
        "{}.tgc",
        format::object_rel_path(&[0xab; 16])
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
    );
    w.put(
        "disk_reader",
        "format-name",
        &with_mode(b'2', name.as_bytes()),
    );
    w.put(
        "disk_reader",
        "format-name-upper",
        &with_mode(b'2', name.to_uppercase().as_bytes()),
    );
}
