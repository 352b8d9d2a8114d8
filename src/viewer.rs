//! Who the viewer is: the client address and scheme every decision uses, resolved through the
//! load balancers named in `trusted_proxies` (SPEC §10).
//!
//! The connection's peer is the starting point: the TCP peer, or the source a PROXY header from
//! a trusted peer gave ([`crate::app`]). If that peer is a trusted proxy, its
//! `X-Forwarded-For` is read from the right: trusted hops are skipped and the first address
//! that is not trusted is the viewer (the right-most untrusted address: everything to its left
//! was written by the client and proves nothing). Its `X-Forwarded-Proto` (the last value)
//! gives the scheme. From any other peer both headers are ignored, so a client cannot choose
//! its own address or scheme. The resolved viewer feeds `ip`-bound tokens, signed-URL
//! `AWS:SourceIp`, automatic revocation, the failed-credential budget, `viewer_protocol`, the
//! signed-URL resource, the origin's `X-Forwarded-For`/`-Proto` and the access log.

use std::net::IpAddr;

use crate::cidr::Cidr;

/// The resolved viewer of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// The client's address, if known.
    pub addr: Option<IpAddr>,
    /// The viewer reached the edge (or its trusted load balancer) over HTTPS.
    pub https: bool,
}

/// `trusted_proxies`.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// The configured blocks.
    pub fn new(blocks: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(blocks)
    }

    /// Whether any proxy is trusted (else forwarding headers are never read).
    pub fn any(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// Resolve the viewer of a request that came from `peer` over a connection that is TLS or
    /// not. `forwarded_for` and `forwarded_proto` are called only when `peer` is trusted, and
    /// give every field value of the header, in the order received.
    pub fn viewer<'a, F, P>(
        &self,
        peer: Option<IpAddr>,
        tls: bool,
        forwarded_for: F,
        forwarded_proto: P,
    ) -> Viewer
    where
        F: FnOnce() -> Vec<&'a [u8]>,
        P: FnOnce() -> Option<&'a [u8]>,
    {
        let direct = Viewer {
            addr: peer,
            https: tls,
        };
        let Some(peer) = peer.filter(|p| self.trusts(*p)) else {
            return direct;
        };
        let mut addr = peer;
        'fields: for value in forwarded_for().iter().rev() {
            for hop in value.rsplit(|&b| b == b',') {
                let Some(ip) = std::str::from_utf8(hop)
                    .ok()
                    .and_then(|s| s.trim_matches([' ', '\t']).parse::<IpAddr>().ok())
                else {
                    // garbage: whoever wrote it is the last hop we can vouch for
                    break 'fields;
                };
                addr = ip;
                if !self.trusts(ip) {
                    break 'fields;
                }
            }
        }
        let https = match forwarded_proto().map(last_value) {
            Some(v) if v.eq_ignore_ascii_case(b"https") => true,
            Some(v) if v.eq_ignore_ascii_case(b"http") => false,
            _ => tls,
        };
        Viewer {
            addr: Some(addr.to_canonical()),
            https,
        }
    }
}

/// The last element of a comma-separated field value, trimmed.
fn last_value(value: &[u8]) -> &[u8] {
    value
        .rsplit(|&b| b == b',')
        .next()
        .unwrap_or(value)
        .trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn trusted(blocks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            blocks
                .iter()
                .map(|b| Cidr::parse(b).expect("cidr"))
                .collect(),
        )
    }

    fn resolve(t: &TrustedProxies, peer: &str, xff: &[&str], proto: Option<&str>) -> Viewer {
        let xff: Vec<&[u8]> = xff.iter().map(|s| s.as_bytes()).collect();
        t.viewer(Some(ip(peer)), false, || xff, || proto.map(str::as_bytes))
    }

    #[test]
    fn untrusted_peers_choose_nothing() {
        let t = trusted(&["10.0.0.0/8"]);
        let v = resolve(&t, "127.0.0.1", &["203.0.113.7"], Some("https"));
        assert_eq!(
            v,
            Viewer {
                addr: Some(ip("127.0.0.1")),
                https: false
            }
        );
        let none = TrustedProxies::default();
        assert_eq!(
            resolve(&none, "10.0.0.1", &["203.0.113.7"], Some("https")).addr,
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn right_most_untrusted_address_is_the_viewer() {
        let t = trusted(&["127.0.0.1/32"]);
        let v = resolve(&t, "127.0.0.1", &["198.51.100.9, 203.0.113.7"], None);
        assert_eq!(v.addr, Some(ip("203.0.113.7")));
        let t = trusted(&["127.0.0.1/32", "203.0.113.0/24"]);
        let v = resolve(&t, "127.0.0.1", &["198.51.100.9, 203.0.113.7"], None);
        assert_eq!(v.addr, Some(ip("198.51.100.9")));
        // several header lines read as one list, in order
        let v = resolve(&t, "127.0.0.1", &["198.51.100.9", "203.0.113.7"], None);
        assert_eq!(v.addr, Some(ip("198.51.100.9")));
        // every hop trusted: the left-most
        let v = resolve(&t, "127.0.0.1", &["203.0.113.1, 203.0.113.7"], None);
        assert_eq!(v.addr, Some(ip("203.0.113.1")));
        // no header: the peer itself
        assert_eq!(
            resolve(&t, "127.0.0.1", &[], None).addr,
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_vouched_hop() {
        let t = trusted(&["127.0.0.1/32", "203.0.113.0/24"]);
        let v = resolve(
            &t,
            "127.0.0.1",
            &["198.51.100.9, unknown, 203.0.113.7"],
            None,
        );
        assert_eq!(v.addr, Some(ip("203.0.113.7")));
        let v = resolve(&t, "127.0.0.1", &["not an address"], None);
        assert_eq!(v.addr, Some(ip("127.0.0.1")));
        let v = resolve(&t, "127.0.0.1", &[" 2001:db8::5 "], None);
        assert_eq!(v.addr, Some(ip("2001:db8::5")));
    }

    #[test]
    fn scheme_from_the_trusted_proxy() {
        let t = trusted(&["127.0.0.1/32"]);
        assert!(resolve(&t, "127.0.0.1", &[], Some("https")).https);
        assert!(resolve(&t, "127.0.0.1", &[], Some("http, HTTPS")).https);
        assert!(!resolve(&t, "127.0.0.1", &[], Some("https, http")).https);
        assert!(!resolve(&t, "127.0.0.1", &[], Some("gopher")).https);
        let tls = t.viewer(Some(ip("127.0.0.1")), true, Vec::new, || None);
        assert!(tls.https);
    }
}
