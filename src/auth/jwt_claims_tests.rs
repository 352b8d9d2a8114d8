//! Tests for `jwt.rs` (continued): the time, issuer and audience claims, the
//! subscription and media claims, and the packed subscription names.

use super::*;

#[test]
fn time_claims_and_leeway_boundaries() {
    let e = es("k1");
    let keys = set(&[&e]);
    let p = Policy::default();
    let tok = |extra| e.sign(&claims(extra)).unwrap();
    // exp: valid through exp + leeway inclusive.
    let t = tok(json!({"exp": NOW}));
    assert!(verify(&t, &keys, &p, NOW + 30).is_ok());
    assert_eq!(verify(&t, &keys, &p, NOW + 31), Err(Denial::Expired));
    let strict = Policy {
        leeway_secs: 0,
        ..Policy::default()
    };
    assert!(verify(&t, &keys, &strict, NOW).is_ok());
    assert_eq!(verify(&t, &keys, &strict, NOW + 1), Err(Denial::Expired));
    // nbf: not yet valid iff nbf > now + leeway.
    let t = tok(json!({"nbf": NOW + 30}));
    assert!(verify(&t, &keys, &p, NOW).is_ok());
    let t = tok(json!({"nbf": NOW + 31}));
    assert_eq!(verify(&t, &keys, &p, NOW), Err(Denial::NotYetValid));
    assert!(verify(&t, &keys, &p, NOW + 1).is_ok());
    // Floats are floored; strings are malformed; exp is required.
    let c = verify(&tok(json!({"exp": (NOW as f64) + 0.9})), &keys, &p, NOW).unwrap();
    assert_eq!(c.exp, NOW);
    for bad in [
        json!({"exp": "soon"}),
        json!({"nbf": "1"}),
        json!({"iat": true}),
    ] {
        assert_eq!(verify(&tok(bad), &keys, &p, NOW), Err(Denial::Malformed));
    }
    let no_exp = sign_raw(&e, &header(&e), &json!({"sub": "u1"})).unwrap();
    assert_eq!(verify(&no_exp, &keys, &p, NOW), Err(Denial::Malformed));
    // Negative and absurd values do not panic.
    assert_eq!(
        verify(&tok(json!({"exp": -5})), &keys, &p, NOW),
        Err(Denial::Expired)
    );
    assert!(verify(&tok(json!({"exp": 1e300})), &keys, &p, NOW).is_ok());
    assert!(verify(&tok(json!({"exp": u64::MAX})), &keys, &p, u64::MAX).is_ok());
    // A payload that is not an object.
    let t = sign_raw(&e, &header(&e), &json!([NOW + 60])).unwrap();
    assert_eq!(verify(&t, &keys, &p, NOW), Err(Denial::Malformed));
}

#[test]
fn issuer_and_audience() {
    let e = es("k1");
    let keys = set(&[&e]);
    let p = Policy {
        issuer: Some("https://id.example.com".into()),
        audience: Some("news-edge".into()),
        ..Policy::default()
    };
    let tok = |extra| e.sign(&claims(extra)).unwrap();
    let iss = "https://id.example.com";
    assert!(verify(
        &tok(json!({"iss": iss, "aud": "news-edge"})),
        &keys,
        &p,
        NOW
    )
    .is_ok());
    assert!(verify(
        &tok(json!({"iss": iss, "aud": ["x", "news-edge"]})),
        &keys,
        &p,
        NOW
    )
    .is_ok());
    for (extra, want) in [
        (
            json!({"iss": "https://evil", "aud": "news-edge"}),
            Denial::WrongIssuer,
        ),
        (json!({"aud": "news-edge"}), Denial::WrongIssuer),
        (
            json!({"iss": [iss], "aud": "news-edge"}),
            Denial::WrongIssuer,
        ),
        (json!({"iss": iss, "aud": "other"}), Denial::WrongAudience),
        (
            json!({"iss": iss, "aud": ["other", "news"]}),
            Denial::WrongAudience,
        ),
        (json!({"iss": iss, "aud": []}), Denial::WrongAudience),
        (json!({"iss": iss}), Denial::WrongAudience),
        (
            json!({"iss": iss, "aud": {"news-edge": true}}),
            Denial::WrongAudience,
        ),
    ] {
        assert_eq!(
            verify(&tok(extra.clone()), &keys, &p, NOW),
            Err(want),
            "{extra}"
        );
    }
    // Unconfigured: anything goes.
    let open = Policy::default();
    assert!(verify(&tok(json!({"iss": "x", "aud": 5})), &keys, &open, NOW).is_ok());
}

#[test]
fn subscriptions_claim_forms() {
    let e = es("k1");
    let keys = set(&[&e]);
    let p = Policy::default();
    let subs = |extra| {
        verify(&e.sign(&claims(extra)).unwrap(), &keys, &p, NOW)
            .unwrap()
            .subs
    };
    assert_eq!(
        subs(json!({"subs": ["premium", "video"]})),
        ["premium", "video"]
    );
    assert_eq!(
        subs(json!({"subs": " premium, ,video ,"})),
        ["premium", "video"]
    );
    assert_eq!(subs(json!({"subs": ["a", 5, {"b": 1}, " c "]})), ["a", "c"]);
    assert!(subs(json!({"subs": 5})).is_empty());
    assert!(subs(json!({"subs": {"premium": true}})).is_empty());
    assert!(subs(json!({})).is_empty());
    let cognito = Policy {
        subscriptions_claim: "custom:subs".into(),
        ..Policy::default()
    };
    let t = e
        .sign(&claims(
            json!({"custom:subs": "premium,gold", "subs": ["x"]}),
        ))
        .unwrap();
    let c = verify(&t, &keys, &cognito, NOW).unwrap();
    assert_eq!(c.subs, ["premium", "gold"]);
    assert!(c.entitled(&["gold".to_string(), "z".to_string()]));
}

#[test]
fn media_claims() {
    let e = es("k1");
    let keys = set(&[&e]);
    let p = Policy::default();
    let tok = |extra| e.sign(&claims(extra)).unwrap();
    let c = verify(
        &tok(json!({"sid": "s-42", "paths": ["/video/a/"], "ip": "10.0.0.0/8"})),
        &keys,
        &p,
        NOW,
    )
    .unwrap();
    assert_eq!(c.sid.as_deref(), Some("s-42"));
    assert_eq!(c.paths, ["/video/a/"]);
    assert_eq!(c.ip.as_deref(), Some("10.0.0.0/8"));
    // Restricting claims with the wrong type fail closed.
    for bad in [
        json!({"paths": "/video/a/"}),
        json!({"paths": []}),
        json!({"paths": ["/a/", 1]}),
        json!({"sid": 42}),
        json!({"ip": ["1.2.3.4"]}),
        json!({"sub": 7}),
    ] {
        assert_eq!(
            verify(&tok(bad.clone()), &keys, &p, NOW),
            Err(Denial::Malformed),
            "{bad}"
        );
    }
}

/// The packed subscriptions answer exactly as a search of the list, and step aside (`None`)
/// when the names do not fit: short and long names, duplicates, empty names, and sets just
/// under and over the packed size, against every name asked.
#[test]
fn packed_names_agree_with_the_list() {
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let asked = [
        "",
        "p",
        "premium",
        "premiu",
        "premium2",
        "gold",
        "Gold",
        "a-name-of-twenty-chars",
        "x".repeat(46).leak(),
        "x".repeat(45).leak(),
    ];
    let sets: Vec<Vec<String>> = vec![
        names(&[]),
        names(&[""]),
        names(&["premium"]),
        names(&["premium", "gold", "premium"]),
        names(&["gold", "premium2", "p"]),
        names(&["a-name-of-twenty-chars", "premium", "gold"]),
        names(&[&"x".repeat(46)]), // 47 bytes with its length: fits exactly
        names(&[&"x".repeat(47)]), // one over
        names(&["premium", &"x".repeat(40)]), // the second does not fit
    ];
    let mut packed_some = 0;
    for set in &sets {
        let packed = PackedNames::new(set);
        for name in asked {
            let listed = set.iter().any(|s| s == name);
            match packed.contains(name) {
                Some(found) => {
                    packed_some += 1;
                    assert_eq!(found, listed, "{name:?} in {set:?}");
                }
                None => assert!(
                    set.iter().map(|s| s.len() + 1).sum::<usize>() > 47,
                    "{set:?} fits, yet was not packed"
                ),
            }
            let claims = Claims {
                subs: set.clone(),
                subs_packed: packed.clone(),
                ..claims_with_subs(&[])
            };
            assert_eq!(claims.entitled(&[name.to_string()]), listed);
        }
    }
    assert!(packed_some > 0);
    assert_eq!(
        PackedNames::new(&names(&[&"x".repeat(47)])).contains("x"),
        None
    );
    assert_eq!(
        PackedNames::new(&names(&[&"x".repeat(46)])).contains(&"x".repeat(46)),
        Some(true)
    );
}

fn claims_with_subs(subs: &[&str]) -> Claims {
    let subs: Vec<String> = subs.iter().map(|s| s.to_string()).collect();
    Claims {
        kid: "k".into(),
        key_id: 0,
        exp: 0,
        nbf: None,
        iat: None,
        sub: None,
        subs_packed: PackedNames::new(&subs),
        subs,
        sid: None,
        paths: Vec::new(),
        ip: None,
    }
}
