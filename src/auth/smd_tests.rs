//! Known-answer tests from tokens minted by PyJWT (`tests/fixtures/smd/mint.py`), plus
//! unit tests of the pieces.

use super::*;
use std::path::Path;

const VECTORS: &str = include_str!("../../tests/fixtures/smd/vectors.json");

fn outcome(r: &Result<SmdClaims, Denial>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(d) => d.as_str(),
    }
}

#[test]
fn known_answer_vectors() {
    let doc: Value = serde_json::from_str(VECTORS).unwrap();
    let now = doc["now"].as_u64().unwrap();
    let secrets = SmdSecrets::from_json(&doc["secrets"].to_string()).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 60, "fixture looks truncated");
    let mut failures = Vec::new();
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let token = v["token"].as_str().unwrap();
        let path = v["path"].as_str().unwrap();
        // The token travels as the first path segment.
        let uri = v["uri"].as_str().unwrap();
        assert_eq!(
            split_token_from_path(uri),
            Some((token, path)),
            "{name}: split"
        );
        let client_ip = v["client_ip"]
            .as_str()
            .map(|s| s.parse::<IpAddr>().unwrap());
        let owned: Vec<(String, String)> = v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h[0].as_str().unwrap().to_string(),
                    h[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let headers: Vec<(&str, &[u8])> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        let req = SmdRequest {
            path,
            client_ip,
            headers: &headers,
            query: v["query"].as_str().unwrap(),
        };
        let got = verify(token, &secrets, &req, now);
        let want = v["expect"].as_str().unwrap();
        if outcome(&got) != want {
            failures.push(format!("{name}: want {want}, got {got:?}"));
            continue;
        }
        if let Ok(claims) = &got {
            let want_sid = v["expect_sid"].as_str();
            if claims.sid.as_deref() != want_sid {
                failures.push(format!("{name}: sid {:?} != {want_sid:?}", claims.sid));
            }
        }
        // Where the fixture recorded the generator's intsig input, ours must be identical.
        if let Some(want_input) = v["intsig_input"].as_str() {
            let auth = token;
            let parts = split(auth).unwrap();
            let payload = parse_payload(parts.payload).unwrap();
            let got_input = intsig_input(&payload, &req, parts.sid).unwrap();
            if got_input != Input::Data(want_input.as_bytes().to_vec()) {
                failures.push(format!(
                    "{name}: intsig input {got_input:?} != {want_input:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn vectors_cover_the_required_cases() {
    let doc: Value = serde_json::from_str(VECTORS).unwrap();
    let names: Vec<&str> = doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for required in [
        "valid_plain",
        "wrong_secret",
        "unknown_kid",
        "expired",
        "nbf_future",
        "intsig_full_ok",
        "intsig_wrong_ip",
        "intsig_wrong_ua",
        "intsig_wrong_referer",
        "intsig_wrong_userid",
        "intsig_wrong_device",
        "intsig_wrong_session",
        "exc_excluded_path_other_viewer",
        "paths_no_boundary",
        "ipv6_compressed",
        "ipv6_expanded",
    ] {
        assert!(names.contains(&required), "missing vector {required}");
    }
}

#[test]
fn binding_is_reported() {
    let doc: Value = serde_json::from_str(VECTORS).unwrap();
    let now = doc["now"].as_u64().unwrap();
    let secrets = SmdSecrets::from_json(&doc["secrets"].to_string()).unwrap();
    let find = |n: &str| {
        doc["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == n)
            .unwrap()
            .clone()
    };
    let check = |n: &str, ip: Option<&str>, hdrs: &[(&str, &[u8])], want: Binding| {
        let v = find(n);
        let req = SmdRequest {
            path: v["path"].as_str().unwrap(),
            client_ip: ip.map(|s| s.parse().unwrap()),
            headers: hdrs,
            query: v["query"].as_str().unwrap(),
        };
        let c = verify(v["token"].as_str().unwrap(), &secrets, &req, now).unwrap();
        assert_eq!(c.binding, want, "{n}");
        c
    };
    let c = check("valid_plain", None, &[], Binding::Unbound);
    assert_eq!(c.paths, ["/out/v1/abc/"]);
    assert_eq!(c.exp, now + 3600);
    assert_eq!(c.iat, Some(now - 60));
    assert_eq!(c.kid, "20240101_0a1b2c3d4e5f60718293");
    check(
        "ipv6_compressed",
        Some("2001:db8::1"),
        &[],
        Binding::Verified,
    );
    let c = check(
        "exc_excluded_path_other_viewer",
        Some("198.51.100.77"),
        &[],
        Binding::Excluded,
    );
    assert_eq!(c.exc, ["/ads/", "/out/v1/abc/keys"]);
    assert_eq!(c.sid, None);
    check(
        "geo_fallback_header_absent",
        Some("198.51.100.77"),
        &[],
        Binding::GeoFallback,
    );
}

#[test]
fn leeway_is_optional() {
    let doc: Value = serde_json::from_str(VECTORS).unwrap();
    let now = doc["now"].as_u64().unwrap();
    let secrets = SmdSecrets::from_json(&doc["secrets"].to_string()).unwrap();
    let v = doc["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "expired")
        .unwrap();
    let req = SmdRequest {
        path: v["path"].as_str().unwrap(),
        client_ip: None,
        headers: &[],
        query: "",
    };
    let token = v["token"].as_str().unwrap();
    assert_eq!(verify(token, &secrets, &req, now), Err(Denial::Expired));
    assert!(verify_with_leeway(token, &secrets, &req, now, 1).is_ok());
}

#[test]
fn secrets_parse_strictly() {
    let s = SmdSecrets::from_json(r#"{"a": "s1", "b": "s2"}"#).unwrap();
    assert_eq!(s.len(), 2);
    assert!(!s.is_empty());
    let dbg = format!("{s:?}");
    assert!(dbg.contains("\"a\"") && !dbg.contains("s1"), "{dbg}");
    for bad in [
        "",
        "[]",
        "{}",
        r#"{"a": 1}"#,
        r#"{"a": ""}"#,
        r#"{"": "s"}"#,
        r#"{"a": "s", "a": "t"}"#,
        r#"{"a": null}"#,
    ] {
        assert!(
            matches!(SmdSecrets::from_json(bad), Err(SmdError::Invalid(_))),
            "{bad}"
        );
    }
    let missing = SmdSecrets::load(Path::new("/nonexistent/smd-secrets.json"));
    assert!(matches!(missing, Err(SmdError::Io { .. })));
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("smd.json");
    std::fs::write(&p, r#"{"20240101_aa": "deadbeef"}"#).unwrap();
    let s = SmdSecrets::load(&p).unwrap();
    assert_eq!(s.kids().collect::<Vec<_>>(), ["20240101_aa"]);
}

#[test]
fn token_segment_split() {
    assert_eq!(
        split_token_from_path("/a.b.c/out/x.ts"),
        Some(("a.b.c", "/out/x.ts"))
    );
    assert_eq!(split_token_from_path("/a.b.c/"), Some(("a.b.c", "/")));
    assert_eq!(split_token_from_path("/a.b.c"), None);
    assert_eq!(split_token_from_path("//x"), None);
    assert_eq!(split_token_from_path("a.b.c/x"), None);
    assert_eq!(split_token_from_path(""), None);
}

#[test]
fn auth_sequence_split() {
    let p = split("s.h.p.sig").unwrap();
    assert_eq!(
        (p.sid, p.header, p.payload, p.signature),
        (Some("s"), "h", "p", "sig")
    );
    assert_eq!(p.signing_input, "h.p");
    let p = split("h.p.sig").unwrap();
    assert_eq!((p.sid, p.signing_input), (None, "h.p"));
    let p = split(".h.p.sig").unwrap();
    assert_eq!(p.sid, None);
    assert!(split("h.p").is_err());
    assert!(split("a.b.c.d.e").is_err());
}

#[test]
fn ip_forms_are_canonical() {
    let t = |s: &str| ip_text(s.parse().unwrap());
    assert_eq!(t("192.0.2.1"), (4, "192.0.2.1".to_string()));
    assert_eq!(t("::ffff:192.0.2.1"), (4, "192.0.2.1".to_string()));
    let full = "2001:0db8:0000:0000:0000:0000:0000:0001".to_string();
    for spelling in ["2001:db8::1", "2001:DB8:0:0:0:0:0:1", "2001:0db8::0:1"] {
        assert_eq!(t(spelling), (6, full.clone()), "{spelling}");
    }
    assert_eq!(
        t("::"),
        (6, "0000:0000:0000:0000:0000:0000:0000:0000".into())
    );
}

#[test]
fn query_params_are_form_decoded_first_wins() {
    let q = "a=1&b=x%20y&c=p+q&a=2&d&e=%2B&f%3D=z";
    assert_eq!(query_param(q, "a"), Some(b"1".to_vec()));
    assert_eq!(query_param(q, "b"), Some(b"x y".to_vec()));
    assert_eq!(query_param(q, "c"), Some(b"p q".to_vec()));
    assert_eq!(query_param(q, "d"), Some(Vec::new()));
    assert_eq!(query_param(q, "e"), Some(b"+".to_vec()));
    assert_eq!(query_param(q, "f="), Some(b"z".to_vec()));
    assert_eq!(query_param(q, "zz"), None);
    assert_eq!(query_param("", "a"), None);
}

#[test]
fn oversized_and_garbage_tokens_are_denied() {
    let secrets = SmdSecrets::from_json(r#"{"k": "s"}"#).unwrap();
    let req = SmdRequest {
        path: "/x",
        client_ip: None,
        headers: &[],
        query: "",
    };
    let big = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(verify(&big, &secrets, &req, 0), Err(Denial::TooLong));
    for t in ["", ".", "..", "...", "a.b.c", "e30.e30.", "W10.e30.AA"] {
        assert_eq!(verify(t, &secrets, &req, 0), Err(Denial::Malformed), "{t}");
    }
    // {"alg":"HS256","kid":"k","crit":["x"]} → unsupported crit.
    let h = B64URL_STRICT.encode(br#"{"alg":"HS256","kid":"k","crit":["x"]}"#);
    assert_eq!(
        verify(&format!("{h}.e30.AA"), &secrets, &req, 0),
        Err(Denial::UnsupportedCrit)
    );
    let h = B64URL_STRICT.encode(br#"{"alg":"HS256"}"#);
    assert_eq!(
        verify(&format!("{h}.e30.AA"), &secrets, &req, 0),
        Err(Denial::Malformed)
    );
}
