//! `routes[]` validation: pattern, origin reference, access mode, entitlements, cache policy,
//! and routes that an earlier one makes unreachable.

use std::collections::BTreeSet;
use std::time::Duration;

use super::glob::Glob;
use super::problems::{duration_or, Problems};
use super::raw::*;
use super::types::{AccessMode, Route, RouteCache};

/// Does every path `later` matches also match `earlier` (so `later` can never be chosen)?
/// Detects the common cases: same pattern, `*`, and `prefix*` before a pattern starting with
/// that literal prefix (`/premium/*` before `/premium/video/*`).
fn shadows(earlier: &Glob, later: &Glob) -> bool {
    let (e, l) = (earlier.as_str(), later.as_str());
    if e == l || e == "*" {
        return true;
    }
    match e.strip_suffix('*') {
        Some(prefix) if !prefix.contains(['*', '?']) => l.starts_with(prefix),
        _ => false,
    }
}

/// What the rest of the file declares, for cross references from routes.
pub(super) struct Declared<'a> {
    pub origins: &'a BTreeSet<String>,
    pub keys: bool,
    pub signed_keys: bool,
    pub realms: &'a std::collections::BTreeMap<String, std::path::PathBuf>,
}

pub(super) fn validate_routes(
    raw: Vec<RawRoute>,
    declared: &Declared,
    p: &mut Problems,
) -> Vec<Route> {
    let origins = declared.origins;
    if raw.is_empty() {
        p.add(
            "routes",
            "no route is configured, so every request would get 404. Fix: add one, e.g. \
             routes: [{ match: /*, origin: news, access: public }]",
        );
    }
    let mut routes = Vec::new();
    let mut globs: Vec<(usize, Glob)> = Vec::new();
    for (i, route) in raw.into_iter().enumerate() {
        let at = |field: &str| format!("routes[{i}].{field}");
        let glob = match route.pattern.as_deref() {
            None => {
                p.add(at("match"), "missing. Fix: add a path pattern, e.g. match: /premium/* (or * for everything)");
                None
            }
            Some(pattern) => match Glob::new(pattern) {
                Ok(glob) => {
                    if let Some((j, earlier)) =
                        globs.iter().find(|(_, earlier)| shadows(earlier, &glob))
                    {
                        p.add(
                            at("match"),
                            format!(
                                "'{pattern}' can never match: routes[{j}] ('{earlier}') comes \
                                 first and matches every path this one would (the first match \
                                 wins). Fix: move this route above routes[{j}], or remove it"
                            ),
                        );
                    }
                    globs.push((i, glob.clone()));
                    Some(glob)
                }
                Err(err) => {
                    p.add(at("match"), err);
                    None
                }
            },
        };
        let origin = match route.origin {
            None => {
                p.add(
                    at("origin"),
                    "missing. Fix: name one of the origins defined under origins:",
                );
                None
            }
            Some(name) if origins.contains(&name) => Some(name),
            Some(name) => {
                let defined = if origins.is_empty() {
                    "no origins are defined".to_owned()
                } else {
                    format!(
                        "defined origins are: {}",
                        origins.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                };
                p.add(
                    at("origin"),
                    format!("unknown origin '{name}'; {defined}. Fix: use one of them or add it under origins:"),
                );
                None
            }
        };
        let access = validate_access(route.access.as_deref(), &at("access"), declared, p);
        let require = validate_require(route.require, access, &at("require"), p);
        match (&route.realm, access) {
            (Some(_), Some(mode)) if mode != AccessMode::Basic => p.add(
                at("realm"),
                format!("realm is only used by access: basic, not {mode}. Fix: remove it"),
            ),
            (Some(realm), _) if realm.trim().is_empty() => {
                p.add(at("realm"), "empty. Fix: name the basic_auth realm")
            }
            (None, Some(AccessMode::Basic)) => p.add(
                at("realm"),
                "access: basic needs a realm. Fix: add realm: NAME (a key of basic_auth:)",
            ),
            (Some(realm), Some(AccessMode::Basic)) if !declared.realms.contains_key(realm) => p.add(
                at("realm"),
                format!("realm '{realm}' is not under basic_auth:. Fix: add basic_auth: {{ {realm}: FILE }}"),
            ),
            _ => {}
        }
        let behaviour = super::behaviour::validate_behaviour(
            super::behaviour::RawBehaviour {
                query: route.query,
                viewer_protocol: route.viewer_protocol,
                methods: route.methods,
                forward_headers: route.forward_headers,
                forward_cookies: route.forward_cookies,
            },
            i,
            p,
        );
        let cache = validate_route_cache(route.cache.unwrap_or_default(), i, p);
        if let (Some(glob), Some(origin), Some(access)) = (glob, origin, access) {
            routes.push(Route {
                index: i,
                pattern: route.pattern.unwrap_or_default(),
                glob,
                origin,
                access,
                require,
                realm: route.realm,
                cache,
                behaviour,
            });
        }
    }
    routes
}

fn validate_access(
    text: Option<&str>,
    key: &str,
    declared: &Declared,
    p: &mut Problems,
) -> Option<AccessMode> {
    let keys_declared = declared.keys;
    let Some(text) = text else {
        // No default: a forgotten `access:` must not silently make paid content public.
        p.add(
            key,
            "missing. Fix: set access: public, paywall, token, signed or basic",
        );
        return None;
    };
    let Some(mode) = AccessMode::parse(text) else {
        let modes: Vec<&str> = AccessMode::ALL.iter().map(|m| m.as_str()).collect();
        p.add(
            key,
            format!(
                "'{text}' is not an access mode; modes are: {}. Fix: use one of them",
                modes.join(", ")
            ),
        );
        return None;
    };
    if mode == AccessMode::Signed && !declared.signed_keys {
        p.add(
            key,
            "signed route needs signed_keys: (CloudFront Key-Pair-Id → public key PEM); \
             without keys no signed URL could ever be accepted",
        );
    }
    if matches!(mode, AccessMode::Paywall | AccessMode::Token) && !keys_declared {
        p.add(
            key,
            format!(
                "{mode} route needs keys: set keys.jwks_file (or keys.pem) to the publisher's \
                 public keys; without keys no subscriber could ever be recognised"
            ),
        );
    }
    Some(mode)
}

fn validate_require(
    raw: Option<Vec<String>>,
    access: Option<AccessMode>,
    key: &str,
    p: &mut Problems,
) -> Vec<String> {
    let require = raw.unwrap_or_default();
    if !require.is_empty() && access == Some(AccessMode::Public) {
        p.add(
            key,
            "require has no effect on access: public (everyone gets the public variant). \
             Fix: use access: paywall, or remove require",
        );
    }
    for (j, name) in require.iter().enumerate() {
        if name.trim().is_empty() {
            p.add(
                format!("{key}[{j}]"),
                "empty subscription name. Fix: write the name, e.g. premium, or remove the entry",
            );
        } else if name.trim() != name {
            p.add(
                format!("{key}[{j}]"),
                format!(
                    "'{name}' has leading or trailing spaces. Fix: write '{}'",
                    name.trim()
                ),
            );
        }
    }
    require
}
fn validate_route_cache(raw: RawRouteCache, i: usize, p: &mut Problems) -> RouteCache {
    use super::units::format_duration as f;
    let at = |field: &str| format!("routes[{i}].cache.{field}");
    let default_ttl = duration_or(
        raw.default_ttl,
        Duration::from_secs(DEFAULT_ROUTE_DEFAULT_TTL_SECONDS),
        &at("default_ttl"),
        p,
    );
    let min_ttl = duration_or(
        raw.min_ttl,
        Duration::from_secs(DEFAULT_ROUTE_MIN_TTL_SECONDS),
        &at("min_ttl"),
        p,
    );
    let max_ttl = duration_or(
        raw.max_ttl,
        Duration::from_secs(DEFAULT_ROUTE_MAX_TTL_SECONDS),
        &at("max_ttl"),
        p,
    );
    if min_ttl > max_ttl {
        p.add(
            at("min_ttl"),
            format!(
                "{} is above max_ttl ({}). Fix: keep min_ttl <= default_ttl <= max_ttl",
                f(min_ttl),
                f(max_ttl)
            ),
        );
    } else if default_ttl < min_ttl || default_ttl > max_ttl {
        p.add(
            at("default_ttl"),
            format!(
                "{} is outside min_ttl..max_ttl ({}..{}). Fix: keep min_ttl <= default_ttl <= max_ttl",
                f(default_ttl),
                f(min_ttl),
                f(max_ttl)
            ),
        );
    }
    RouteCache {
        default_ttl,
        min_ttl,
        max_ttl,
        enabled: raw.enabled.unwrap_or(true),
    }
}
