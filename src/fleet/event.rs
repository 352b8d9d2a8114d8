//! Control events: what travels on the control stream, how it is checked when it arrives, and
//! how it is applied. Every event carries its full effect (a revocation its absolute expiry),
//! so that applying one twice, after a crash between applying and recording it, changes
//! nothing.

use serde::{Deserialize, Serialize};

use crate::edge::{unix_now, Edge};
use crate::revocation::MAX_SID_LEN;

/// Most paths plus prefixes in one purge event.
pub const MAX_PURGE_ITEMS: usize = 10_000;

/// One control event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// Remove every variant of these exact paths and path prefixes from every tier.
    Purge {
        /// Normalized paths.
        #[serde(default)]
        paths: Vec<String>,
        /// Path prefixes, each starting with `/`.
        #[serde(default)]
        prefixes: Vec<String>,
    },
    /// Refuse session `sid` until `expires_at` (unix seconds).
    Revoke {
        /// Session id.
        sid: String,
        /// Unix seconds.
        expires_at: u64,
        /// `admin` or `auto`.
        reason: String,
    },
    /// Lift the revocation of `sid`.
    Unrevoke {
        /// Session id.
        sid: String,
    },
}

/// What applying an event did on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Objects removed.
    Purged(usize),
    /// The session is refused until then.
    Revoked(u64),
    /// Whether the session had been revoked.
    Unrevoked(bool),
}

impl Event {
    /// The label of `tollgate_fleet_events_applied_total{kind}` and the last subject token.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Purge { .. } => "purge",
            Event::Revoke { .. } => "revoke",
            Event::Unrevoke { .. } => "unrevoke",
        }
    }

    /// Every kind, for metrics.
    pub const KINDS: [&'static str; 3] = ["purge", "revoke", "unrevoke"];

    /// Check an event (from the admin API before publishing, and from the stream before
    /// applying: another node, or anyone with publish rights, may have sent anything).
    pub fn check(&self) -> Result<(), String> {
        match self {
            Event::Purge { paths, prefixes } => {
                if paths.is_empty() && prefixes.is_empty() {
                    return Err("a purge needs at least one of paths, prefixes".into());
                }
                if paths.len() + prefixes.len() > MAX_PURGE_ITEMS {
                    return Err(format!(
                        "a purge names at most {MAX_PURGE_ITEMS} paths and prefixes"
                    ));
                }
                for p in paths {
                    match crate::request::normalize_path(p) {
                        Ok(n) if n == p.as_str() => {}
                        Ok(_) => return Err(format!("path {p:?} is not normalized")),
                        Err(why) => {
                            return Err(format!("path {p:?} is not valid ({})", why.as_str()))
                        }
                    }
                }
                if let Some(bad) = prefixes.iter().find(|p| !p.starts_with('/')) {
                    return Err(format!("prefix {bad:?} must start with '/'"));
                }
                Ok(())
            }
            Event::Revoke { sid, reason, .. } => {
                check_sid(sid)?;
                if !matches!(reason.as_str(), "admin" | "auto") {
                    return Err(format!("reason {reason:?} is not admin or auto"));
                }
                Ok(())
            }
            Event::Unrevoke { sid } => check_sid(sid),
        }
    }

    /// Decode and check an event read from the stream.
    pub fn decode(payload: &[u8]) -> Result<Event, String> {
        let event: Event =
            serde_json::from_slice(payload).map_err(|e| format!("not a control event: {e}"))?;
        event.check()?;
        Ok(event)
    }

    /// The bytes published.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an event always serializes")
    }

    /// Apply the event to this node.
    pub async fn apply(&self, edge: &Edge) -> Applied {
        let now = unix_now();
        match self {
            Event::Purge { paths, prefixes } => {
                let n = edge.purge(paths.clone(), prefixes.clone()).await;
                log::info!("fleet purge: {n} objects (paths {paths:?}, prefixes {prefixes:?})");
                Applied::Purged(n)
            }
            Event::Revoke {
                sid,
                expires_at,
                reason,
            } => {
                let until = edge
                    .revocations
                    .revoke_until(sid, *expires_at, reason, now)
                    .unwrap_or_else(|e| {
                        // in force in memory; the next save retries
                        log::error!("revocation of {sid:?} not saved: {e}");
                        *expires_at
                    });
                edge.metrics
                    .revoked_sessions
                    .set(edge.revocations.len() as i64);
                log::info!("fleet revocation: session {sid:?} until {until} ({reason})");
                Applied::Revoked(until)
            }
            Event::Unrevoke { sid } => {
                let was = edge.revocations.unrevoke(sid, now).unwrap_or_else(|e| {
                    log::error!("lifting the revocation of {sid:?} not saved: {e}");
                    true
                });
                edge.metrics
                    .revoked_sessions
                    .set(edge.revocations.len() as i64);
                log::info!("fleet: revocation of session {sid:?} lifted (was revoked: {was})");
                Applied::Unrevoked(was)
            }
        }
    }
}

fn check_sid(sid: &str) -> Result<(), String> {
    if sid.is_empty() || sid.len() > MAX_SID_LEN {
        return Err(format!("sid must be 1 to {MAX_SID_LEN} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_bad_ones_are_refused_with_a_reason() {
        let e = Event::Revoke {
            sid: "s-1".into(),
            expires_at: 99,
            reason: "admin".into(),
        };
        assert_eq!(Event::decode(&e.encode()).unwrap(), e);
        assert_eq!(
            String::from_utf8(e.encode()).unwrap(),
            r#"{"kind":"revoke","sid":"s-1","expires_at":99,"reason":"admin"}"#
        );
        for (bad, why) in [
            (&b"{not json"[..], "not a control event"),
            (br#"{"kind":"reboot"}"#, "not a control event"),
            (br#"{"kind":"purge"}"#, "at least one"),
            (br#"{"kind":"purge","paths":["/a/../b"]}"#, "not normalized"),
            (
                br#"{"kind":"purge","prefixes":["news/"]}"#,
                "must start with",
            ),
            (br#"{"kind":"unrevoke","sid":""}"#, "sid must be"),
            (
                br#"{"kind":"revoke","sid":"s","expires_at":1,"reason":"x"}"#,
                "reason",
            ),
            (
                br#"{"kind":"unrevoke","sid":"s","extra":1}"#,
                "not a control event",
            ),
        ] {
            let err = Event::decode(bad).unwrap_err();
            assert!(err.contains(why), "{}: {err}", String::from_utf8_lossy(bad));
        }
    }
}
