//! `keys:` and `auth:` validation: where verification keys come from and how tokens are found
//! and checked. The key files are only checked to exist here; the keys module parses them.

use std::collections::BTreeMap;
use std::path::Path;

use super::problems::{existing_file, Problems};
use super::raw::*;
use super::types::{AuthSettings, KeysSettings, PemKeyConf, TokenSource};

pub(super) fn validate_keys(raw: RawKeys, base_dir: &Path, p: &mut Problems) -> KeysSettings {
    let jwks_file = raw.jwks_file.and_then(|file| {
        existing_file(
            base_dir,
            &file,
            "keys.jwks_file",
            "JWK Set file (tollgate keygen writes one)",
            p,
        )
    });
    let mut pem: Vec<PemKeyConf> = Vec::new();
    let mut kids: BTreeMap<String, usize> = BTreeMap::new();
    for (i, key) in raw.pem.into_iter().enumerate() {
        let at = |field: &str| format!("keys.pem[{i}].{field}");
        let kid = match key.kid {
            Some(kid) if !kid.trim().is_empty() => {
                if let Some(j) = kids.insert(kid.clone(), i) {
                    p.add(
                        at("kid"),
                        format!(
                            "kid '{kid}' is also used by keys.pem[{j}]; a kid must name one key. \
                             Fix: give each key its own kid"
                        ),
                    );
                }
                Some(kid)
            }
            _ => {
                p.add(
                    at("kid"),
                    "missing or empty. Fix: set the key id tokens carry in their kid header",
                );
                None
            }
        };
        let alg = match key.alg.as_deref() {
            Some(alg @ ("ES256" | "RS256")) => Some(alg.to_owned()),
            Some(other) => {
                p.add(
                    at("alg"),
                    format!(
                        "'{other}' is not supported. Fix: use ES256 or RS256 (the algorithm is \
                         pinned per key; HS* and none are never accepted)"
                    ),
                );
                None
            }
            None => {
                p.add(at("alg"), "missing. Fix: set alg: ES256 or alg: RS256");
                None
            }
        };
        let path = match key.path {
            Some(path) => existing_file(base_dir, &path, &at("path"), "PEM public key", p),
            None => {
                p.add(
                    at("path"),
                    "missing. Fix: set path: to the PEM public key file",
                );
                None
            }
        };
        if let (Some(kid), Some(alg), Some(path)) = (kid, alg, path) {
            pem.push(PemKeyConf { kid, alg, path });
        }
    }
    let reload_interval_seconds = raw
        .reload_interval_seconds
        .unwrap_or(DEFAULT_KEYS_RELOAD_INTERVAL_SECONDS);
    if reload_interval_seconds == 0 {
        p.add(
            "keys.reload_interval_seconds",
            format!(
                "must be at least 1. Fix: set a number of seconds or remove the key (default \
                 {DEFAULT_KEYS_RELOAD_INTERVAL_SECONDS})"
            ),
        );
    }
    KeysSettings {
        jwks_file,
        pem,
        reload_interval_seconds,
    }
}

fn non_empty(value: Option<String>, key: &str, what: &str, p: &mut Problems) -> Option<String> {
    match value {
        Some(v) if v.trim().is_empty() => {
            p.add(key, format!("empty. Fix: set {what} or remove the key"));
            None
        }
        other => other,
    }
}

pub(super) fn validate_auth(raw: RawAuth, p: &mut Problems) -> AuthSettings {
    let issuer = non_empty(raw.issuer, "auth.issuer", "the expected iss value", p);
    let audience = non_empty(raw.audience, "auth.audience", "the expected aud value", p);
    let leeway_seconds = raw.leeway_seconds.unwrap_or(DEFAULT_LEEWAY_SECONDS);
    if leeway_seconds > MAX_LEEWAY_SECONDS {
        p.add(
            "auth.leeway_seconds",
            format!(
                "{leeway_seconds} s is more than {MAX_LEEWAY_SECONDS} s and would keep expired \
                 tokens working. Fix: use a few seconds of clock skew (default \
                 {DEFAULT_LEEWAY_SECONDS})"
            ),
        );
    }
    let subscriptions_claim = match raw.subscriptions_claim {
        Some(claim) if claim.trim().is_empty() => {
            p.add(
                "auth.subscriptions_claim",
                format!("empty. Fix: name the claim, or remove the key for '{DEFAULT_SUBSCRIPTIONS_CLAIM}'"),
            );
            claim
        }
        Some(claim) => claim,
        None => DEFAULT_SUBSCRIPTIONS_CLAIM.to_owned(),
    };
    let token_sources = match raw.token_sources {
        None => DEFAULT_TOKEN_SOURCES
            .iter()
            .filter_map(|s| TokenSource::parse(s).ok())
            .collect(),
        Some(list) => {
            if list.is_empty() {
                p.add(
                    "auth.token_sources",
                    format!(
                        "empty, so no token would ever be found. Fix: list at least one source, \
                         or remove the key for the default [{}]",
                        DEFAULT_TOKEN_SOURCES.join(", ")
                    ),
                );
            }
            let mut sources: Vec<TokenSource> = Vec::new();
            for (i, text) in list.iter().enumerate() {
                let key = format!("auth.token_sources[{i}]");
                match TokenSource::parse(text.trim()) {
                    Ok(source) => {
                        if let Some(j) = list[..i]
                            .iter()
                            .position(|t| TokenSource::parse(t.trim()).as_ref() == Ok(&source))
                        {
                            p.add(
                                key,
                                format!(
                                    "'{source}' is already listed at auth.token_sources[{j}]. \
                                     Fix: list each source once"
                                ),
                            );
                        } else {
                            sources.push(source);
                        }
                    }
                    Err(err) => p.add(key, err),
                }
            }
            sources
        }
    };
    let max_token_bytes = raw.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
    if !(MIN_MAX_TOKEN_BYTES..=MAX_MAX_TOKEN_BYTES).contains(&max_token_bytes) {
        p.add(
            "auth.max_token_bytes",
            format!(
                "{max_token_bytes} is out of range. Fix: use {MIN_MAX_TOKEN_BYTES} to \
                 {MAX_MAX_TOKEN_BYTES}, or remove the key (default {DEFAULT_MAX_TOKEN_BYTES})"
            ),
        );
    }
    AuthSettings {
        issuer,
        audience,
        leeway_seconds,
        subscriptions_claim,
        token_sources,
        max_token_bytes,
        token_cache_entries: raw
            .token_cache_entries
            .unwrap_or(DEFAULT_TOKEN_CACHE_ENTRIES),
    }
}
