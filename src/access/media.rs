//! Media token claims (seed 002): `paths` scopes and `ip` binding, as pure functions.

use crate::request::path_in_scope;
use std::net::IpAddr;

/// Whether any of the token's `paths` covers the request. A token without `paths` covers
/// every path of the route.
pub fn paths_allow(paths: &[String], path: &str) -> bool {
    paths.is_empty() || paths.iter().any(|p| path_in_scope(path, p))
}

/// Whether `client` is the address or inside the CIDR `bound`. Addresses are compared in
/// canonical form, so `::ffff:192.0.2.1` is `192.0.2.1` and `2001:db8::1` equals
/// `2001:0db8:0:0::1`. An unparsable claim matches nothing (fail closed).
pub fn ip_allows(bound: &str, client: Option<IpAddr>) -> bool {
    let Some(client) = client.map(|c| c.to_canonical()) else {
        return false;
    };
    let (addr, bits) = match bound.split_once('/') {
        Some((a, b)) => match b.parse::<u8>() {
            Ok(bits) => (a, Some(bits)),
            Err(_) => return false,
        },
        None => (bound, None),
    };
    let Ok(net) = addr.trim().parse::<IpAddr>().map(|a| a.to_canonical()) else {
        return false;
    };
    match (net, client) {
        (IpAddr::V4(n), IpAddr::V4(c)) => {
            let bits = bits.unwrap_or(32);
            if bits > 32 {
                return false;
            }
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(c) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(c)) => {
            let bits = bits.unwrap_or(128);
            if bits > 128 {
                return false;
            }
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(c) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_on_segment_boundaries() {
        assert!(path_in_scope("/vod/abc", "/vod/abc"));
        assert!(path_in_scope("/vod/abc/index.m3u8", "/vod/abc"));
        assert!(path_in_scope("/vod/abc/seg/1.ts", "/vod/abc/"));
        assert!(!path_in_scope("/vod/abcdef/index.m3u8", "/vod/abc"));
        assert!(!path_in_scope("/vod/abcdef", "/vod/abc"));
        assert!(!path_in_scope("/vod/ab", "/vod/abc"));
        assert!(!path_in_scope("/vod/abc", "vod/abc"));
        assert!(!path_in_scope("/vod/abc", ""));
        assert!(path_in_scope("/anything", "/"));
        assert!(paths_allow(&[], "/x"));
        assert!(paths_allow(
            &["/a/".into(), "/vod/abc".into()],
            "/vod/abc/1.ts"
        ));
        assert!(!paths_allow(&["/a/".into()], "/b"));
    }

    #[test]
    fn ip_binding_v4_v6_and_cidr() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert!(ip_allows("192.0.2.7", ip("192.0.2.7")));
        assert!(!ip_allows("192.0.2.7", ip("192.0.2.8")));
        assert!(ip_allows("192.0.2.0/24", ip("192.0.2.200")));
        assert!(!ip_allows("192.0.2.0/24", ip("192.0.3.1")));
        assert!(ip_allows("0.0.0.0/0", ip("203.0.113.9")));
        assert!(ip_allows("192.0.2.7", ip("::ffff:192.0.2.7")));
        assert!(ip_allows("2001:db8::1", ip("2001:0db8:0000::0001")));
        assert!(ip_allows("2001:db8::/32", ip("2001:db8:ffff::1")));
        assert!(!ip_allows("2001:db8::/32", ip("2001:db9::1")));
        assert!(ip_allows("::", ip("::")));
        assert!(ip_allows("::/0", ip("2001:db8::1")));
        assert!(!ip_allows("192.0.2.7", ip("2001:db8::1")));
        assert!(!ip_allows("192.0.2.0/33", ip("192.0.2.1")));
        assert!(!ip_allows("not-an-ip", ip("192.0.2.1")));
        assert!(!ip_allows("192.0.2.7", None));
    }
}
