//! The shield tier (SPEC §9): on a miss, a node asks the peer that owns the object — consistent
//! hashing (ketama, `pingora-load-balancing`) of the cache key over `fleet.peers`, skipping
//! peers its health checks find down — and only the owner goes to the origin. The owner stores
//! the object, the asking node stores the owner's answer; the owner's cache lock coalesces
//! concurrent misses from several nodes into one origin request.
//!
//! The asking node has already decided the reader's variant; the owner must serve that variant
//! and must not decide again (it never sees the reader's credential). The variant travels in
//! `x-tollgate-variant`, trusted only with `x-tollgate-shield`: an HMAC-SHA256 with the fleet
//! secret over the asking node's id, a timestamp, the method, host, target and variant. Why an
//! HMAC and not mutual TLS: it binds the trusted variant to exactly one request with one
//! shared file, needs no certificate authority per node, and works on the plain listener every
//! node already has; a client that sends the headers itself is not believed (they are removed
//! and the request is decided as any other). A captured signed request could be replayed for
//! [`MAX_SKEW_SECONDS`] — for the same object and variant only; nodes should talk over a
//! private network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::lb::health_check::{HealthObserve, TcpHealthCheck};
use pingora::lb::selection::consistent::KetamaHashing;
use pingora::lb::{Backend, LoadBalancer};
use ring::hmac;

use crate::cache::Variant;
use crate::config::{Fleet, Peer};

/// The header carrying the signature of a forwarded miss.
pub const SHIELD_HEADER: &str = "x-tollgate-shield";
/// How far a signature's timestamp may be from the owner's clock.
pub const MAX_SKEW_SECONDS: u64 = 30;
/// How often each peer's listener is checked.
pub const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Where a miss goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// This node owns the key (or no peer is up): the origin.
    Me,
    /// Another node.
    Peer(&'a Peer),
}

/// Keeps `tollgate_shield_peer_up` as the health checks see the peers.
struct PeerUp {
    up: prometheus::IntGaugeVec,
    peers: Vec<(SocketAddr, String)>,
}

#[async_trait]
impl HealthObserve for PeerUp {
    async fn observe(&self, target: &Backend, healthy: bool) {
        let addr = target.addr.as_inet().copied();
        if let Some((_, id)) = self.peers.iter().find(|(a, _)| Some(*a) == addr) {
            log::info!(
                "shield peer {id} is {}",
                if healthy { "up" } else { "down" }
            );
            self.up.with_label_values(&[id]).set(i64::from(healthy));
        }
    }
}

/// This node's view of the shield ring.
pub struct Shield {
    node_id: String,
    me: SocketAddr,
    peers: Vec<Peer>,
    key: hmac::Key,
    ring: Arc<LoadBalancer<KetamaHashing>>,
    /// `tollgate_shield_requests_total{peer, outcome}`.
    pub requests: prometheus::IntCounterVec,
}

impl Shield {
    /// The shield of `fleet`, if enabled (the config check guarantees a secret and this node in
    /// the peer list then).
    pub fn new(fleet: &Fleet, metrics: &crate::metrics::Metrics) -> Result<Option<Shield>, String> {
        if !fleet.shield {
            return Ok(None);
        }
        let secret = fleet
            .secret
            .as_ref()
            .ok_or("fleet.shield needs fleet.secret_file")?;
        let me = fleet
            .peers
            .iter()
            .find(|p| p.id == fleet.node_id)
            .ok_or("fleet.peers must list this node")?
            .addr;
        let mut ring =
            LoadBalancer::<KetamaHashing>::try_from_iter(fleet.peers.iter().map(|p| p.addr))
                .map_err(|e| format!("fleet.peers: {e}"))?;
        let mut check = TcpHealthCheck::new();
        // two failed connects in a row take a peer out, one success brings it back
        check.consecutive_failure = 2;
        let up = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "tollgate_shield_peer_up",
                "Whether this node's health checks count the shield peer as up (1; a peer not \
                 checked yet counts as up) or down (0, its misses go elsewhere).",
            ),
            &["peer"],
        )
        .map_err(|e| e.to_string())?;
        let others: Vec<(SocketAddr, String)> = fleet
            .peers
            .iter()
            .filter(|p| p.id != fleet.node_id)
            .map(|p| (p.addr, p.id.clone()))
            .collect();
        for (_, id) in &others {
            up.with_label_values(&[id]).set(1);
        }
        metrics
            .register(Box::new(up.clone()))
            .map_err(|e| e.to_string())?;
        check.health_changed_callback = Some(Box::new(PeerUp { up, peers: others }));
        ring.set_health_check(check);
        ring.health_check_frequency = Some(HEALTH_CHECK_EVERY);
        ring.parallel_health_check = true;
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "tollgate_shield_requests_total",
                "Misses sent to the peer owning the object, by peer and outcome (hit, miss: \
                 the owner's cache status; error: the peer could not be reached and the miss \
                 went on to the next node or the origin).",
            ),
            &["peer", "outcome"],
        )
        .map_err(|e| e.to_string())?;
        for p in fleet.peers.iter().filter(|p| p.id != fleet.node_id) {
            for outcome in ["hit", "miss", "error"] {
                requests.with_label_values(&[&p.id, outcome]);
            }
        }
        metrics
            .register(Box::new(requests.clone()))
            .map_err(|e| e.to_string())?;
        Ok(Some(Shield {
            node_id: fleet.node_id.clone(),
            me,
            peers: fleet.peers.clone(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            ring: Arc::new(ring),
            requests,
        }))
    }

    /// The ring with its health checks, to run as a background service.
    pub fn ring(&self) -> Arc<LoadBalancer<KetamaHashing>> {
        self.ring.clone()
    }

    /// The owner of `key` (a cache key's hash): the first node on the ring from it that is up,
    /// skipping the peers in `avoid` (they just failed).
    pub fn owner(&self, key: &[u8], avoid: &[String]) -> Owner<'_> {
        let avoid: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|p| avoid.contains(&p.id))
            .map(|p| p.addr)
            .collect();
        let pick = self.ring.select_with(key, 256, |backend, healthy| {
            let Some(addr) = backend.addr.as_inet().copied() else {
                return false;
            };
            // this node is always "up" for itself: its own listener may open after the check
            addr == self.me || (healthy && !avoid.contains(&addr))
        });
        let Some(addr) = pick.and_then(|b| b.addr.as_inet().copied()) else {
            return Owner::Me;
        };
        if addr == self.me {
            return Owner::Me;
        }
        match self.peers.iter().find(|p| p.addr == addr) {
            Some(peer) => Owner::Peer(peer),
            None => Owner::Me,
        }
    }

    /// Count a forwarded miss.
    pub fn count(&self, peer: &str, outcome: &str) {
        self.requests.with_label_values(&[peer, outcome]).inc();
    }

    fn message(
        node: &str,
        ts: u64,
        method: &str,
        host: &str,
        target: &str,
        variant: &str,
    ) -> String {
        format!("tollgate-shield v1\n{node}\n{ts}\n{method}\n{host}\n{target}\n{variant}")
    }

    /// The `x-tollgate-shield` value for a request this node forwards.
    pub fn sign(
        &self,
        method: &str,
        host: &str,
        target: &str,
        variant: Variant,
        now: u64,
    ) -> String {
        let msg = Self::message(&self.node_id, now, method, host, target, variant.as_str());
        let tag = hmac::sign(&self.key, msg.as_bytes());
        use base64::Engine;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref());
        format!("v1 {} {now} {tag}", self.node_id)
    }

    /// The variant a peer decided, if `shield` (the `x-tollgate-shield` value) is a valid
    /// signature by another node of this ring over exactly this request and `variant` (the
    /// `x-tollgate-variant` value), made within [`MAX_SKEW_SECONDS`] of `now`.
    pub fn verify(
        &self,
        shield: &[u8],
        method: &str,
        host: &str,
        target: &str,
        variant: &[u8],
        now: u64,
    ) -> Option<Variant> {
        let text = std::str::from_utf8(shield).ok()?;
        let mut parts = text.split(' ');
        let (Some("v1"), Some(node), Some(ts), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        if node == self.node_id || !self.peers.iter().any(|p| p.id == node) {
            return None;
        }
        let ts: u64 = ts.parse().ok()?;
        if ts.abs_diff(now) > MAX_SKEW_SECONDS {
            return None;
        }
        let variant = Variant::ALL
            .into_iter()
            .find(|v| v.as_str().as_bytes() == variant)?;
        use base64::Engine;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tag)
            .ok()?;
        let msg = Self::message(node, ts, method, host, target, variant.as_str());
        hmac::verify(&self.key, msg.as_bytes(), &tag).ok()?;
        Some(variant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::key::CacheHashKey;

    fn fleet(node: &str, dir: &std::path::Path) -> Fleet {
        std::fs::write(dir.join("secret"), "0123456789abcdef0123456789abcdef").unwrap();
        let cfg = crate::config::from_yaml_str(
            &format!(
                "listeners: [{{ addr: \"127.0.0.1:0\" }}]\n\
                 origins: {{ o: {{ url: \"http://127.0.0.1:1\" }} }}\n\
                 routes: [{{ match: \"/*\", origin: o, access: public }}]\n\
                 state_dir: state\n\
                 fleet:\n  node_id: {node}\n  nats: {{ url: [nats://127.0.0.1:4222] }}\n  \
                 secret_file: secret\n  shield: {{ enabled: true }}\n  peers:\n    \
                 - {{ id: a, addr: \"127.0.0.1:7001\" }}\n    \
                 - {{ id: b, addr: \"127.0.0.1:7002\" }}\n    \
                 - {{ id: c, addr: \"127.0.0.1:7003\" }}\n"
            ),
            dir,
        )
        .unwrap();
        cfg.fleet.unwrap()
    }

    fn shield(node: &str, dir: &std::path::Path) -> Shield {
        let metrics = crate::metrics::Metrics::new().unwrap();
        Shield::new(&fleet(node, dir), &metrics).unwrap().unwrap()
    }

    #[test]
    fn a_signature_covers_the_request_and_variant_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (shield("a", dir.path()), shield("b", dir.path()));
        let sig = a.sign(
            "GET",
            "news.example",
            "/premium/x?p=1",
            Variant::Subscriber,
            1000,
        );
        let ok = |sig: &str, target: &str, variant: &str, now: u64| {
            b.verify(
                sig.as_bytes(),
                "GET",
                "news.example",
                target,
                variant.as_bytes(),
                now,
            )
        };
        assert_eq!(
            ok(&sig, "/premium/x?p=1", "subscriber", 1010),
            Some(Variant::Subscriber)
        );
        assert_eq!(
            ok(&sig, "/premium/y?p=1", "subscriber", 1010),
            None,
            "other target"
        );
        assert_eq!(
            ok(&sig, "/premium/x?p=1", "anonymous", 1010),
            None,
            "other variant"
        );
        assert_eq!(
            ok(&sig, "/premium/x?p=1", "subscriber", 1031),
            None,
            "too old"
        );
        assert_eq!(
            b.verify(
                sig.as_bytes(),
                "HEAD",
                "news.example",
                "/premium/x?p=1",
                b"subscriber",
                1000
            ),
            None,
            "other method"
        );
        // a node does not accept its own signature, nor one naming an unknown node
        assert_eq!(
            a.verify(
                sig.as_bytes(),
                "GET",
                "news.example",
                "/premium/x?p=1",
                b"subscriber",
                1000
            ),
            None
        );
        let forged = sig.replacen("v1 a ", "v1 z ", 1);
        assert_eq!(ok(&forged, "/premium/x?p=1", "subscriber", 1000), None);
        assert_eq!(
            ok("v1 a 1000 AAAA", "/premium/x?p=1", "subscriber", 1000),
            None
        );
        assert_eq!(ok("garbage", "/premium/x?p=1", "subscriber", 1000), None);
    }

    #[test]
    fn every_node_sees_the_same_owner_and_skips_a_failed_peer() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (shield("a", dir.path()), shield("b", dir.path()));
        let mut owned = std::collections::BTreeMap::new();
        for i in 0..300u32 {
            let key = crate::cache::cache_key("h", &format!("/o/{i}"), "", Variant::Public);
            let key = key.primary_bin();
            let id = |o: Owner<'_>, me: &str| match o {
                Owner::Me => me.to_string(),
                Owner::Peer(p) => p.id.clone(),
            };
            // (health checks have not run: every peer counts as up)
            let from_a = id(a.owner(&key, &[]), "a");
            assert_eq!(from_a, id(b.owner(&key, &[]), "b"), "object {i}");
            *owned.entry(from_a.clone()).or_insert(0) += 1;
            if from_a != "a" {
                let next = id(a.owner(&key, std::slice::from_ref(&from_a)), "a");
                assert_ne!(next, from_a);
            }
        }
        assert_eq!(owned.len(), 3, "every node owns a share: {owned:?}");
        assert!(owned.values().all(|&n| n > 50), "{owned:?}");
    }
}
