//! Admissions the HTTP/2 connection loop (`app::h2`) decided, waiting for the proxy that
//! answers the request.
//!
//! An HTTP/1 request goes to the proxy with its decision inside the stream the proxy reads
//! ([`crate::http1::one_request::OneRequest`]). Pingora's HTTP/2 session gives the proxy no
//! such per-request stream, so the loop leaves the decision here under a nonce and names the
//! nonce in the request it hands over ([`HANDOVER_HEADER`]); `request_filter` takes it out
//! again ([`super::admit`]). The nonce is a keyed hash of a counter — no client can name
//! another request's decision — and the header is removed from every request the proxy reads,
//! whichever way it came, so it never reaches an origin. An entry the proxy never takes (the
//! client reset the stream first) is forgotten by the loop when the stream ends.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use siphasher::sip::SipHasher13;

use crate::admission::Handover;

/// The request field that names a waiting decision.
pub const HANDOVER_HEADER: &str = "x-tollgate-handover";

/// Decisions waiting for the proxy, by nonce.
pub struct Handovers {
    key: (u64, u64),
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Handover>>,
}

impl Default for Handovers {
    fn default() -> Handovers {
        let mut key = [0u8; 16];
        // without randomness the nonces are still unique; only their secrecy would suffer
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).is_err() {
            log::warn!("no randomness for the HTTP/2 handover nonces");
        }
        let half = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        Handovers {
            key: (half(&key[..8]), half(&key[8..])),
            next: AtomicU64::new(0),
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

impl Handovers {
    /// Leave `decided` for the proxy; the nonce to name it by.
    pub fn put(&self, decided: Handover) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.key.0, self.key.1);
        h.write_u64(self.next.fetch_add(1, Ordering::Relaxed));
        let nonce = h.finish();
        self.waiting.lock().insert(nonce, decided);
        nonce
    }

    /// The decision named by `nonce` (the value of [`HANDOVER_HEADER`]), once.
    pub fn take(&self, nonce: &[u8]) -> Option<Handover> {
        let nonce = u64::from_str_radix(std::str::from_utf8(nonce).ok()?, 16).ok()?;
        self.waiting.lock().remove(&nonce)
    }

    /// Drop a decision the proxy never took.
    pub fn forget(&self, nonce: u64) {
        self.waiting.lock().remove(&nonce);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Refused;
    use crate::proxy::respond::Answer;

    fn refusal() -> Handover {
        Box::new(Err(Refused {
            answer: Answer::Status(403),
            route: None,
            auth: None,
            claims: None,
        }))
    }

    #[test]
    fn a_decision_is_taken_once_by_its_nonce_and_a_guess_takes_nothing() {
        let h = Handovers::default();
        let a = h.put(refusal());
        let b = h.put(refusal());
        assert_ne!(a, b);
        assert!(h.take(b"0").is_none());
        assert!(h.take(b"not hex").is_none());
        assert!(h.take(format!("{a:x}").as_bytes()).is_some());
        assert!(h.take(format!("{a:x}").as_bytes()).is_none());
        h.forget(b);
        assert!(h.waiting.lock().is_empty());
    }
}
