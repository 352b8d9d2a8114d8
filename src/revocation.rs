//! Session revocation: an in-process list of revoked session ids (the signed `sid` claim, never
//! token bytes: ES256 signatures are malleable, so the same session can present many different
//! token strings), persisted to `state_dir/revocations.json`, plus automatic revocation of
//! sessions seen from too many client addresses or user agents inside a sliding window.
//!
//! AWS's secure-media design revokes with an Athena batch job and WAF rules; here a revocation
//! takes effect on the session's next request, within the same process.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::config::AutoRevocation;

/// Longest session id accepted on the admin API.
pub const MAX_SID_LEN: usize = 256;
/// Sessions tracked by auto-revocation at once; beyond this, new sessions are not tracked
/// (they are still verified and still revocable by hand).
const MAX_TRACKED_SESSIONS: usize = 1_000_000;
/// Events remembered per session (enough to see any configured limit crossed).
const MAX_EVENTS: usize = 64;

/// One persisted revocation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revoked {
    /// Session id.
    pub sid: String,
    /// Unix seconds after which the revocation lapses.
    pub expires_at: u64,
    /// Why: `admin` or `auto`.
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
struct File {
    revocations: Vec<Revoked>,
}

/// Why the revocation list could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the state file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("{path}: not a revocation list: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// The revocation list.
pub struct Revocations {
    map: DashMap<String, (u64, String), ahash::RandomState>,
    file: Option<PathBuf>,
    save_lock: parking_lot::Mutex<()>,
}

impl Revocations {
    /// A list persisted under `state_dir` (if given), loaded now; expired entries are dropped.
    pub fn open(state_dir: Option<&Path>, now: u64) -> Result<Revocations, StateError> {
        let file = state_dir.map(|d| d.join("revocations.json"));
        let map = DashMap::with_hasher(ahash::RandomState::new());
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let parsed: File =
                        serde_json::from_slice(&bytes).map_err(|source| StateError::Format {
                            path: path.clone(),
                            source,
                        })?;
                    for r in parsed.revocations {
                        if r.expires_at > now {
                            map.insert(r.sid, (r.expires_at, r.reason));
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StateError::Io {
                        path: path.clone(),
                        source,
                    })
                }
            }
        }
        Ok(Revocations {
            map,
            file,
            save_lock: parking_lot::Mutex::new(()),
        })
    }

    /// Whether `sid` is revoked at `now`.
    pub fn is_revoked(&self, sid: &str, now: u64) -> bool {
        self.map.get(sid).is_some_and(|e| e.0 > now)
    }

    /// Revoke `sid` until `now + ttl` (extending, never shortening, an existing revocation) and
    /// persist the list. The in-memory list takes effect even if saving fails.
    pub fn revoke(
        &self,
        sid: &str,
        ttl: Duration,
        reason: &str,
        now: u64,
    ) -> Result<u64, StateError> {
        let until = now.saturating_add(ttl.as_secs());
        let expires = {
            let mut e = self
                .map
                .entry(sid.to_owned())
                .or_insert((until, reason.to_owned()));
            if e.0 < until {
                *e = (until, reason.to_owned());
            }
            e.0
        };
        self.save(now)?;
        Ok(expires)
    }

    /// Revoke `sid` until the absolute time `expires_at` (extending, never shortening) and
    /// persist the list: how a fleet event, which carries its expiry, is applied, so that
    /// applying it twice has the same effect as once.
    pub fn revoke_until(
        &self,
        sid: &str,
        expires_at: u64,
        reason: &str,
        now: u64,
    ) -> Result<u64, StateError> {
        self.revoke(
            sid,
            Duration::from_secs(expires_at.saturating_sub(now)),
            reason,
            now,
        )
    }

    /// Lift the revocation of `sid` (if any) and persist the list; returns whether it was
    /// revoked.
    pub fn unrevoke(&self, sid: &str, now: u64) -> Result<bool, StateError> {
        let was = self.map.remove(sid).is_some_and(|(_, e)| e.0 > now);
        self.save(now)?;
        Ok(was)
    }

    /// Every live revocation, soonest expiry first.
    pub fn list(&self, now: u64) -> Vec<Revoked> {
        let mut v: Vec<Revoked> = self
            .map
            .iter()
            .filter(|e| e.value().0 > now)
            .map(|e| Revoked {
                sid: e.key().clone(),
                expires_at: e.value().0,
                reason: e.value().1.clone(),
            })
            .collect();
        v.sort_by(|a, b| (a.expires_at, &a.sid).cmp(&(b.expires_at, &b.sid)));
        v
    }

    /// Live revocations.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drop lapsed revocations; returns how many.
    pub fn sweep(&self, now: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, v| v.0 > now);
        let n = before - self.map.len();
        if n > 0 {
            if let Err(e) = self.save(now) {
                log::warn!("saving revocations: {e}");
            }
        }
        n
    }

    fn save(&self, now: u64) -> Result<(), StateError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let _g = self.save_lock.lock();
        let body = File {
            revocations: self.list(now),
        };
        let tmp = path.with_extension("json.tmp");
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(&body).map_err(|source| StateError::Format {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, json).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// What one session was seen from, inside the window.
#[derive(Default)]
struct Seen {
    events: VecDeque<(u64, u64, u64)>, // (time, ip hash, user-agent hash)
}

/// Automatic revocation: per session, distinct client IPs and user agents in a sliding window.
///
/// Addresses and user agents are counted by a keyed SipHash (`siphasher`): stable across
/// processes and machines for the same key, so that the nodes of a fleet, which share the key,
/// count a pair seen by two of them once.
pub struct AutoRevoker {
    limits: AutoRevocation,
    sessions: DashMap<String, Seen, ahash::RandomState>,
    key: [u8; 16],
    /// Where pairs new to this node and this node's automatic revocations go to be shared with
    /// the fleet (set once by the fleet link; unset on a node alone).
    outbox: std::sync::OnceLock<tokio::sync::mpsc::Sender<Shared>>,
}

/// What a node tells the fleet about sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shared {
    /// Session `sid` was seen from a (client address, user agent) pair new to this node.
    Sighting {
        /// Session id.
        sid: String,
        /// Keyed hash of the client address.
        ip: u64,
        /// Keyed hash of the user agent.
        ua: u64,
        /// When (unix seconds).
        at: u64,
        /// The token's expiry (a revocation lasts at least until then).
        exp: u64,
    },
    /// This node revoked `sid` automatically until `expires_at`.
    Revoked {
        /// Session id.
        sid: String,
        /// Unix seconds.
        expires_at: u64,
    },
}

/// Sightings and revocations waiting to be shared; beyond this they are dropped (and counted
/// on this node only), never blocking a request.
pub const OUTBOX_CAPACITY: usize = 8192;

/// Why a session was revoked automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trip {
    /// Too many client addresses.
    Addresses(usize),
    /// Too many user agents.
    UserAgents(usize),
}

impl AutoRevoker {
    /// A tracker with the configured limits, hashing with `key` (nodes of one fleet share it;
    /// a node alone may use any).
    pub fn new(limits: AutoRevocation, key: [u8; 16]) -> AutoRevoker {
        AutoRevoker {
            limits,
            sessions: DashMap::with_hasher(ahash::RandomState::new()),
            key,
            outbox: std::sync::OnceLock::new(),
        }
    }

    /// Share this node's new sightings and automatic revocations through `outbox` from now on.
    /// Returns false if an outbox was already set.
    pub fn share_through(&self, outbox: tokio::sync::mpsc::Sender<Shared>) -> bool {
        self.outbox.set(outbox).is_ok()
    }

    fn hash(&self, domain: &[u8], bytes: &[u8]) -> u64 {
        use std::hash::Hasher;
        let mut h = siphasher::sip::SipHasher24::new_with_key(&self.key);
        h.write(domain);
        h.write(bytes);
        h.finish()
    }

    /// Record a request of session `sid` from `ip` with `user_agent` at `now` (seconds), for a
    /// token expiring at `exp`; returns the limit crossed, if any. A pair new to this node is
    /// shared with the fleet when a fleet outbox is set.
    pub fn observe(
        &self,
        sid: &str,
        ip: Option<IpAddr>,
        user_agent: &[u8],
        exp: u64,
        now: u64,
    ) -> Option<Trip> {
        let ip = match ip.map(|i| i.to_canonical()) {
            Some(IpAddr::V4(v4)) => self.hash(b"ip4", &v4.octets()),
            Some(IpAddr::V6(v6)) => self.hash(b"ip6", &v6.octets()),
            None => self.hash(b"ip-", b""),
        };
        let ua = self.hash(b"ua", user_agent);
        let (new, trip) = self.record(sid, ip, ua, now, now)?;
        if new {
            if let Some(outbox) = self.outbox.get() {
                let _ = outbox.try_send(Shared::Sighting {
                    sid: sid.to_owned(),
                    ip,
                    ua,
                    at: now,
                    exp,
                });
            }
        }
        trip
    }

    /// Record a sighting another node shared (hashes made with the fleet's key); returns the
    /// limit crossed, if any.
    pub fn observe_remote(&self, sid: &str, ip: u64, ua: u64, at: u64, now: u64) -> Option<Trip> {
        if at.saturating_add(self.limits.window.as_secs()) < now {
            return None; // already outside the window
        }
        self.record(sid, ip, ua, at.min(now), now)?.1
    }

    /// Tell the fleet this node revoked `sid` automatically (no-op on a node alone).
    pub fn share_revocation(&self, sid: &str, expires_at: u64) {
        if let Some(outbox) = self.outbox.get() {
            if outbox
                .try_send(Shared::Revoked {
                    sid: sid.to_owned(),
                    expires_at,
                })
                .is_err()
            {
                log::warn!("fleet outbox full: the revocation of {sid:?} stays on this node");
            }
        }
    }

    /// Add the pair (`ip`, `ua`) seen at `at` to `sid`'s window; `None` when the session is not
    /// tracked (too many sessions), else whether the pair was new and the limit crossed.
    fn record(
        &self,
        sid: &str,
        ip: u64,
        ua: u64,
        at: u64,
        now: u64,
    ) -> Option<(bool, Option<Trip>)> {
        let ev = (at, ip, ua);
        if self.sessions.len() >= MAX_TRACKED_SESSIONS && !self.sessions.contains_key(sid) {
            return None;
        }
        let mut seen = self.sessions.entry(sid.to_owned()).or_default();
        let horizon = now.saturating_sub(self.limits.window.as_secs());
        while seen.events.front().is_some_and(|e| e.0 < horizon) {
            seen.events.pop_front();
        }
        // one event per distinct (ip, ua) pair is enough to count them
        let new = match seen.events.iter_mut().find(|e| e.1 == ev.1 && e.2 == ev.2) {
            Some(e) => {
                e.0 = e.0.max(at);
                false
            }
            None => {
                if seen.events.len() >= MAX_EVENTS {
                    seen.events.pop_front();
                }
                seen.events.push_back(ev);
                true
            }
        };
        let mut ips: Vec<u64> = seen.events.iter().map(|e| e.1).collect();
        ips.sort_unstable();
        ips.dedup();
        let mut uas: Vec<u64> = seen.events.iter().map(|e| e.2).collect();
        uas.sort_unstable();
        uas.dedup();
        let trip = if ips.len() > self.limits.max_ips {
            Some(Trip::Addresses(ips.len()))
        } else if uas.len() > self.limits.max_user_agents {
            Some(Trip::UserAgents(uas.len()))
        } else {
            None
        };
        Some((new, trip))
    }

    /// Forget sessions with no event inside the window.
    pub fn sweep(&self, now: u64) {
        let horizon = now.saturating_sub(self.limits.window.as_secs());
        self.sessions
            .retain(|_, s| s.events.iter().any(|e| e.0 >= horizon));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_persist_expire_and_only_grow() {
        let dir = tempfile::tempdir().unwrap();
        let r = Revocations::open(Some(dir.path()), 1000).unwrap();
        assert!(!r.is_revoked("s1", 1000));
        assert_eq!(
            r.revoke("s1", Duration::from_secs(100), "admin", 1000)
                .unwrap(),
            1100
        );
        // a shorter TTL never shortens it
        assert_eq!(
            r.revoke("s1", Duration::from_secs(10), "admin", 1000)
                .unwrap(),
            1100
        );
        r.revoke("s2", Duration::from_secs(5), "auto", 1000)
            .unwrap();
        assert!(r.is_revoked("s1", 1099));
        assert!(!r.is_revoked("s1", 1100));
        let reopened = Revocations::open(Some(dir.path()), 1001).unwrap();
        assert!(reopened.is_revoked("s1", 1001));
        assert!(reopened.is_revoked("s2", 1001));
        let later = Revocations::open(Some(dir.path()), 1006).unwrap();
        assert!(!later.is_revoked("s2", 1006));
        assert_eq!(later.list(1006).len(), 1);
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("revocations.json"), "{not json").unwrap();
        assert!(Revocations::open(Some(dir.path()), 0).is_err());
    }

    fn limits() -> AutoRevocation {
        AutoRevocation {
            window: Duration::from_secs(600),
            max_ips: 4,
            max_user_agents: 3,
        }
    }

    #[test]
    fn auto_revocation_trips_for_many_addresses_not_for_two() {
        let a = AutoRevoker::new(limits(), [7; 16]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        for i in 0..50 {
            // wifi and mobile, same player
            let addr = if i % 2 == 0 {
                "192.0.2.1"
            } else {
                "2001:db8::1"
            };
            assert_eq!(a.observe("viewer", ip(addr), b"player/1", 0, 100 + i), None);
        }
        // the same address in IPv4-mapped form is the same address
        assert_eq!(
            a.observe("viewer", ip("::ffff:192.0.2.1"), b"player/1", 0, 200),
            None
        );
        let mut tripped = None;
        for i in 0..5 {
            tripped = tripped.or(a.observe("leaked", ip(&format!("198.51.100.{i}")), b"p", 0, 100));
        }
        assert_eq!(tripped, Some(Trip::Addresses(5)));
        let mut tripped = None;
        for i in 0..4 {
            tripped =
                tripped.or(a.observe("ua", ip("192.0.2.9"), format!("ua{i}").as_bytes(), 0, 100));
        }
        assert_eq!(tripped, Some(Trip::UserAgents(4)));
    }

    #[test]
    fn the_window_slides() {
        let a = AutoRevoker::new(limits(), [7; 16]);
        for i in 0..6u64 {
            let addr = format!("198.51.100.{i}").parse().ok();
            assert_eq!(
                a.observe("s", addr, b"p", 0, i * 1000),
                None,
                "old addresses must age out"
            );
        }
        a.sweep(10_000);
        assert!(a.sessions.is_empty());
    }

    #[test]
    fn nodes_sharing_a_key_count_a_pair_once_and_share_only_new_pairs() {
        // node a sees two addresses itself and hears of three from other nodes: 5 > 4
        let a = AutoRevoker::new(limits(), [9; 16]);
        let b = AutoRevoker::new(limits(), [9; 16]);
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        assert!(b.share_through(tx));
        let addr = |i: u8| Some(IpAddr::from([198, 51, 100, i]));
        for i in 0..3 {
            assert_eq!(b.observe("s", addr(i), b"p", 5000, 100), None);
            assert_eq!(b.observe("s", addr(i), b"p", 5000, 101), None);
        }
        let mut shared = Vec::new();
        while let Ok(Shared::Sighting {
            sid,
            ip,
            ua,
            at,
            exp,
        }) = rx.try_recv()
        {
            assert_eq!((sid.as_str(), at, exp), ("s", 100, 5000));
            shared.push((ip, ua));
        }
        assert_eq!(shared.len(), 3, "each new pair once, repeats not shared");
        assert_eq!(a.observe("s", addr(0), b"p", 5000, 102), None);
        assert_eq!(a.observe("s", addr(7), b"p", 5000, 102), None);
        let mut trip = None;
        for (ip, ua) in shared {
            trip = trip.or(a.observe_remote("s", ip, ua, 100, 102));
        }
        // addr(0) was seen by both: it counts once (1 own + 1 shared + 2 more = 4, not over)
        assert_eq!(trip, None);
        assert_eq!(
            a.observe("s", addr(8), b"p", 5000, 103),
            Some(Trip::Addresses(5))
        );
        // a sighting from outside the window does not count
        assert_eq!(a.observe_remote("t", 1, 2, 100, 100 + 601), None);
        // a different key is a different fleet: its hashes do not match ours
        let c = AutoRevoker::new(limits(), [1; 16]);
        assert_ne!(c.hash(b"ua", b"p"), a.hash(b"ua", b"p"));
    }
}
