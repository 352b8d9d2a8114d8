//! Credentials files hashed by `htpasswd -B` and Python bcrypt
//! (`tests/fixtures/basic/mint.py`) and by the `bcrypt` crate, written to a
//! temporary directory and loaded from disk.

use std::fs;

use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::*;

const VECTORS: &str = include_str!("../../tests/fixtures/basic/vectors.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).unwrap()
}

fn basic(user: &str, password: &str) -> Vec<u8> {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))).into_bytes()
}

fn write(dir: &tempfile::TempDir, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, text).unwrap();
    path
}

fn users(doc: &Value) -> Vec<(String, String)> {
    doc["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let s = |k: &str| u[k].as_str().unwrap().to_owned();
            (s("user"), s("password"))
        })
        .collect()
}

#[test]
fn independent_hashes_verify_and_wrong_ones_do_not() {
    let doc = vectors();
    let dir = tempfile::tempdir().unwrap();
    let file = Htpasswd::load(&write(
        &dir,
        "editors.htpasswd",
        doc["good"].as_str().unwrap(),
    ))
    .unwrap();
    let users = users(&doc);
    assert_eq!(users.len(), 4);
    assert_eq!(file.len(), 4);
    for (user, password) in &users {
        assert_eq!(
            file.check(Some(&basic(user, password))),
            Ok(user.clone()),
            "{user}"
        );
        for wrong in [
            format!("{password}x"),
            password[1..].to_owned(),
            String::new(),
            password.to_uppercase(),
        ] {
            if wrong != *password {
                assert_eq!(
                    file.check(Some(&basic(user, &wrong))),
                    Err(BasicDenial::BadCredentials),
                    "{user} / {wrong:?}"
                );
            }
        }
        // Another user's password does not work either.
        let other = &users.iter().find(|(u, _)| u != user).unwrap().1;
        assert_eq!(
            file.check(Some(&basic(user, other))),
            Err(BasicDenial::BadCredentials)
        );
    }
    let (alice, pw) = &users[0];
    for unknown in ["mallory", "Alice", "alice ", ""] {
        assert_eq!(
            file.check(Some(&basic(unknown, pw))),
            Err(BasicDenial::BadCredentials),
            "{unknown:?}"
        );
    }
    assert_eq!(file.check(Some(&basic(alice, pw))), Ok(alice.clone()));
}

#[test]
fn bcrypt_crate_hashes_in_every_accepted_prefix() {
    let parts = bcrypt::hash_with_result("s3cret pw", 4).unwrap();
    let text = format!(
        "y:{}\nb:{}\na:{}\n",
        parts.format_for_version(bcrypt::Version::TwoY),
        parts.format_for_version(bcrypt::Version::TwoB),
        parts.format_for_version(bcrypt::Version::TwoA)
    );
    let dir = tempfile::tempdir().unwrap();
    let file = Htpasswd::load(&write(&dir, "f", text)).unwrap();
    for user in ["y", "b", "a"] {
        assert_eq!(
            file.check(Some(&basic(user, "s3cret pw"))),
            Ok(user.to_owned())
        );
        assert_eq!(
            file.check(Some(&basic(user, "s3cret pW"))),
            Err(BasicDenial::BadCredentials)
        );
    }
}

#[test]
fn refused_files_name_each_bad_line_without_echoing_secrets() {
    let doc = vectors();
    let dir = tempfile::tempdir().unwrap();
    let refused = doc["refused"].as_array().unwrap();
    assert!(refused.len() >= 16, "fixture looks truncated");
    for case in refused {
        let name = case["name"].as_str().unwrap();
        let path = write(&dir, name, case["text"].as_str().unwrap());
        let err = Htpasswd::load(&path).expect_err(name);
        let message = err.to_string();
        let HtpasswdError::Invalid { problems, .. } = err else {
            panic!("{name}: {message}");
        };
        let expected = case["problems"].as_array().unwrap();
        assert_eq!(problems.len(), expected.len(), "{name}: {message}");
        for (got, want) in problems.iter().zip(expected) {
            assert_eq!(
                got.line as u64,
                want["line"].as_u64().unwrap(),
                "{name}: {message}"
            );
            let word = want["contains"].as_str().unwrap();
            assert!(
                got.reason.contains(word),
                "{name}: {:?} lacks {word:?}",
                got.reason
            );
            assert!(
                message.contains(&format!("line {}: ", got.line)),
                "{message}"
            );
        }
        assert!(message.contains(name), "names the file: {message}");
        let secret = case["secret"].as_str().unwrap();
        if !secret.is_empty() {
            assert!(
                !message.contains(secret),
                "{name} echoes a secret: {message}"
            );
        }
    }
}

#[test]
fn unreadable_empty_oversized_and_non_utf8_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    assert!(matches!(
        Htpasswd::load(&missing),
        Err(HtpasswdError::Io { .. })
    ));
    let comments = write(&dir, "comments", "# nobody yet\n\n   \n");
    assert!(matches!(
        Htpasswd::load(&comments),
        Err(HtpasswdError::NoUsers { .. })
    ));
    let big = write(&dir, "big", vec![b'#'; MAX_FILE_BYTES as usize + 1]);
    assert!(matches!(
        Htpasswd::load(&big),
        Err(HtpasswdError::TooLarge { .. })
    ));
    let hash = bcrypt::hash("pw", 4).unwrap();
    let mut latin1 = format!("ok:{hash}\n").into_bytes();
    latin1.extend_from_slice(b"caf\xe9:");
    latin1.extend_from_slice(hash.as_bytes());
    match Htpasswd::load(&write(&dir, "latin1", latin1)) {
        Err(HtpasswdError::Invalid { problems, .. }) => {
            assert_eq!(
                problems,
                vec![LineProblem {
                    line: 2,
                    reason: "not valid UTF-8".into()
                }]
            );
        }
        other => panic!("{other:?}"),
    }
    let low_cost = format!("u:{}", hash.replacen("$04$", "$03$", 1));
    let err = Htpasswd::load(&write(&dir, "low", low_cost))
        .unwrap_err()
        .to_string();
    assert!(err.contains("below 4"), "{err}");
}

#[test]
fn headers_are_parsed_strictly() {
    let hash = bcrypt::hash("pw:with:colons", 4).unwrap();
    let file = Htpasswd::from_bytes(format!("ed:{hash}\n").as_bytes(), Path::new("mem")).unwrap();
    let ok = |h: &str| file.check(Some(h.as_bytes()));
    let token = STANDARD.encode("ed:pw:with:colons");
    assert_eq!(ok(&format!("Basic {token}")), Ok("ed".into()));
    assert_eq!(
        ok(&format!("basic {token}")),
        Ok("ed".into()),
        "scheme is case-insensitive"
    );
    assert_eq!(
        ok(&format!("  BASIC   {token} ")),
        Ok("ed".into()),
        "extra blanks around"
    );

    assert_eq!(file.check(None), Err(BasicDenial::Missing));
    let malformed = [
        String::new(),
        "Basic".into(),
        "Basic ".into(),
        format!("Bearer {token}"),
        format!("Basic{token}"),
        format!("Basic {}", token.trim_end_matches('=')),
        format!("Basic {token}="),
        format!("Basic {token} extra"),
        format!("Basic {}", STANDARD.encode("no colon here")),
        format!("Basic {}", STANDARD.encode(b"ed:pw\xff")),
        format!("Basic {}", STANDARD.encode("ed:pw\u{7}")),
        format!("Basic {}", STANDARD.encode("e\td:pw")),
        "Basic YWxpY2U6eB==".into(), // non-canonical trailing bits
        "Basic !!!!".into(),
        format!(
            "Basic {}",
            base64::engine::general_purpose::URL_SAFE.encode("ed:??>>")
        ),
        format!("Basic {}", "A".repeat(5000)),
    ];
    for h in &malformed {
        assert_eq!(ok(h), Err(BasicDenial::Malformed), "{h:?}");
    }
    assert_eq!(
        file.check(Some(b"Basic \xff\xfe")),
        Err(BasicDenial::Malformed)
    );
    assert_eq!(
        file.stats(),
        HtpasswdStats {
            hits: 2,
            misses: 1,
            evictions: 0
        },
        "malformed headers never reach bcrypt"
    );
    assert_eq!(BasicDenial::BadCredentials.as_str(), "bad_credentials");
}

#[test]
fn only_successes_are_cached_and_a_reload_forgets_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "f",
        format!("ed:{}\n", bcrypt::hash("old", 4).unwrap()),
    );
    let file = Htpasswd::load(&path).unwrap();
    let (old, new) = (basic("ed", "old"), basic("ed", "new"));

    assert_eq!(file.check_cached(Some(&old)), None, "not verified yet");
    assert_eq!(file.check_cached(None), Some(Err(BasicDenial::Missing)));
    assert_eq!(
        file.check_cached(Some(b"Basic x")),
        Some(Err(BasicDenial::Malformed))
    );
    for _ in 0..2 {
        assert_eq!(file.check(Some(&new)), Err(BasicDenial::BadCredentials));
    }
    assert_eq!(
        file.check_cached(Some(&new)),
        None,
        "a failure is not cached"
    );
    assert_eq!(
        file.stats(),
        HtpasswdStats {
            hits: 0,
            misses: 2,
            evictions: 0
        }
    );
    assert_eq!(file.check(Some(&old)), Ok("ed".into()));
    assert_eq!(file.check(Some(&old)), Ok("ed".into()));
    assert_eq!(file.check_cached(Some(&old)), Some(Ok("ed".into())));
    assert_eq!(
        file.stats(),
        HtpasswdStats {
            hits: 2,
            misses: 3,
            evictions: 0
        }
    );

    // The password changes on disk; the reloaded file starts with an empty cache.
    fs::write(&path, format!("ed:{}\n", bcrypt::hash("new", 4).unwrap())).unwrap();
    let reloaded = Htpasswd::load(&path).unwrap();
    assert_eq!(reloaded.check_cached(Some(&old)), None);
    assert_eq!(reloaded.check(Some(&old)), Err(BasicDenial::BadCredentials));
    assert_eq!(reloaded.check(Some(&new)), Ok("ed".into()));
}

#[test]
fn the_cache_stays_bounded() {
    let text: String = ["a", "b", "c"]
        .iter()
        .map(|u| format!("{u}:{}\n", bcrypt::hash(format!("pw-{u}"), 4).unwrap()))
        .collect();
    let file = Htpasswd::from_bytes(text.as_bytes(), Path::new("mem"))
        .unwrap()
        .with_cache_capacity(2);
    for u in ["a", "b", "c"] {
        assert_eq!(
            file.check(Some(&basic(u, &format!("pw-{u}")))),
            Ok(u.to_owned())
        );
        assert!(file.verified.len() <= 2);
    }
    assert_eq!(file.stats().evictions, 1);
    assert_eq!(
        file.check_cached(Some(&basic("c", "pw-c"))),
        Some(Ok("c".into()))
    );
    assert_eq!(
        file.check_cached(Some(&basic("a", "pw-a"))),
        None,
        "evicted"
    );
    assert_eq!(file.check(Some(&basic("a", "pw-a"))), Ok("a".into()));

    let uncached = Htpasswd::from_bytes(text.as_bytes(), Path::new("mem"))
        .unwrap()
        .with_cache_capacity(0);
    assert_eq!(uncached.check(Some(&basic("a", "pw-a"))), Ok("a".into()));
    assert_eq!(uncached.check_cached(Some(&basic("a", "pw-a"))), None);
}

#[test]
fn unknown_users_pay_a_bcrypt_at_the_files_highest_cost() {
    let text = format!(
        "lo:{}\nhi:{}\n",
        bcrypt::hash("x", 4).unwrap(),
        bcrypt::hash("y", 6).unwrap()
    );
    let file = Htpasswd::from_bytes(text.as_bytes(), Path::new("mem")).unwrap();
    let dummy: bcrypt::HashParts = file.dummy_hash.parse().unwrap();
    assert_eq!(dummy.get_cost(), 6);
    assert_eq!(
        file.check(Some(&basic("ghost", "x"))),
        Err(BasicDenial::BadCredentials)
    );
    assert_eq!(
        file.stats().misses,
        1,
        "the unknown user went through bcrypt"
    );
    // Nothing about the plaintext is kept: only 32-byte keyed digests.
    assert_eq!(file.check(Some(&basic("lo", "x"))), Ok("lo".into()));
    let key = file.cache_key_for("lo", "x");
    assert!(file.verified.contains(&key));
    assert_ne!(key, file.cache_key_for("lo", "y"));
    let other = Htpasswd::from_bytes(text.as_bytes(), Path::new("mem")).unwrap();
    assert_ne!(key, other.cache_key_for("lo", "x"), "keys differ per load");
}

#[test]
fn www_authenticate_quotes_the_realm() {
    assert_eq!(
        www_authenticate("editors"),
        r#"Basic realm="editors", charset="UTF-8""#
    );
    assert_eq!(
        www_authenticate("a \"b\" \\c\r\n"),
        r#"Basic realm="a \"b\" \\c", charset="UTF-8""#
    );
}
