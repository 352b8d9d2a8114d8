//! `fleet:` (SPEC §9): the node's id, how it reaches NATS, and the names its control stream and
//! key bucket derive from. Absent: the node runs alone.

use std::path::Path;
use std::time::Duration;

use super::problems::{duration_or, existing_file, read_secret_file, Problems};
use super::raw::{RawFleet, DEFAULT_FLEET_REPLAY_TIMEOUT_SECONDS, DEFAULT_FLEET_RETENTION_DAYS};
use super::types::{Fleet, FleetNats, Peer};

/// Longest `node_id` / `subject_prefix`.
const MAX_NAME: usize = 64;

/// Whether `name` can be a NATS subject token and part of a stream or bucket name.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The machine's hostname, the default `node_id`.
fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

pub(super) fn validate_fleet(
    raw: RawFleet,
    state_dir_set: bool,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<Fleet> {
    let node_id = raw.node_id.unwrap_or_else(|| {
        // a hostname may carry dots (FQDN): keep what a subject token allows
        hostname()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    });
    if !is_token(&node_id) {
        p.add(
            "fleet.node_id",
            format!(
                "{node_id:?} is not usable: 1 to {MAX_NAME} letters, digits, '-' or '_'. \
                 Fix: e.g. node_id: edge-fra-1"
            ),
        );
    }
    let subject_prefix = raw.subject_prefix.unwrap_or_else(|| "tollgate".into());
    if !is_token(&subject_prefix) {
        p.add(
            "fleet.subject_prefix",
            format!(
                "{subject_prefix:?} is not usable as a NATS subject token and stream name: 1 to \
                 {MAX_NAME} letters, digits, '-' or '_'. Fix: e.g. subject_prefix: tollgate"
            ),
        );
    }
    if !state_dir_set {
        p.add(
            "fleet",
            "a fleet node keeps the last control event it applied and its last good key set \
             under state_dir, so that a restart resumes where it stopped. Fix: set state_dir",
        );
    }
    let Some(raw_nats) = raw.nats else {
        p.add(
            "fleet.nats",
            "missing. Fix: nats: { url: [nats://127.0.0.1:4222] }",
        );
        return None;
    };
    let urls = raw_nats.url.into_vec();
    if urls.is_empty() {
        p.add(
            "fleet.nats.url",
            "no server given. Fix: url: [nats://10.0.0.5:4222]",
        );
    }
    for (i, url) in urls.iter().enumerate() {
        let ok = url.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "nats" | "tls") && !rest.is_empty() && !rest.contains('/')
        });
        if !ok {
            p.add(
                format!("fleet.nats.url[{i}]"),
                format!("{url:?} is not a NATS server URL. Fix: e.g. nats://10.0.0.5:4222"),
            );
        }
    }
    if raw_nats.creds_file.is_some() && raw_nats.token_file.is_some() {
        p.add(
            "fleet.nats",
            "both creds_file and token_file given. Fix: keep the one the server expects",
        );
    }
    let creds_file = raw_nats.creds_file.and_then(|f| {
        existing_file(
            base_dir,
            &f,
            "fleet.nats.creds_file",
            "NATS credentials file",
            p,
        )
    });
    let token = raw_nats.token_file.and_then(|f| {
        read_secret_file(&f, "fleet.nats.token_file", "NATS token file", base_dir, p)
    });
    let ca_file = raw_nats.tls.and_then(|t| t.ca_file).and_then(|f| {
        existing_file(
            base_dir,
            &f,
            "fleet.nats.tls.ca_file",
            "CA certificate (PEM)",
            p,
        )
    });
    let secret = raw.secret_file.and_then(|f| {
        let path = existing_file(base_dir, &f, "fleet.secret_file", "fleet secret", p)?;
        match std::fs::read(&path) {
            Ok(s) if s.trim_ascii().len() >= 16 => Some(s.trim_ascii().to_vec()),
            Ok(_) => {
                p.add(
                    "fleet.secret_file",
                    format!(
                        "{} holds fewer than 16 bytes. Fix: e.g. head -c 32 /dev/urandom | \
                         base64 > {}",
                        path.display(),
                        path.display()
                    ),
                );
                None
            }
            Err(e) => {
                p.add("fleet.secret_file", format!("{}: {e}", path.display()));
                None
            }
        }
    });
    let replay_timeout = duration_or(
        raw.replay_timeout,
        Duration::from_secs(DEFAULT_FLEET_REPLAY_TIMEOUT_SECONDS),
        "fleet.replay_timeout",
        p,
    );
    let retention = duration_or(
        raw.retention,
        Duration::from_secs(DEFAULT_FLEET_RETENTION_DAYS * 86_400),
        "fleet.retention",
        p,
    );
    if retention < Duration::from_secs(60) {
        p.add(
            "fleet.retention",
            "under a minute, a node restarting would miss control events. Fix: e.g. 7d",
        );
    }
    let mut peers: Vec<Peer> = Vec::with_capacity(raw.peers.len());
    for (i, peer) in raw.peers.into_iter().enumerate() {
        let key = format!("fleet.peers[{i}]");
        if !is_token(&peer.id) {
            p.add(
                format!("{key}.id"),
                format!(
                    "{:?} is not a node id: 1 to {MAX_NAME} letters, digits, '-' or '_'",
                    peer.id
                ),
            );
            continue;
        }
        let Ok(addr) = peer.addr.parse::<std::net::SocketAddr>() else {
            p.add(
                format!("{key}.addr"),
                format!(
                    "{:?} is not an address:port. Fix: the peer's plain HTTP listener, e.g. \
                     10.0.1.2:8080",
                    peer.addr
                ),
            );
            continue;
        };
        if peers.iter().any(|q| q.id == peer.id) {
            p.add(
                format!("{key}.id"),
                format!("{:?} is listed twice", peer.id),
            );
        } else if peers.iter().any(|q| q.addr == addr) {
            p.add(format!("{key}.addr"), format!("{addr} is listed twice"));
        } else {
            peers.push(Peer { id: peer.id, addr });
        }
    }
    let raw_shield = raw.shield.unwrap_or_default();
    let shield = raw_shield.enabled.unwrap_or(false);
    if let Some(hash) = raw_shield.hash.as_deref() {
        if hash != "ketama" {
            p.add(
                "fleet.shield.hash",
                format!("{hash:?} is not a hash this node knows. Fix: ketama (the default)"),
            );
        }
    }
    if shield {
        if secret.is_none() {
            p.add(
                "fleet.shield",
                "nodes trust a forwarded miss's variant only when it is signed with the fleet \
                 secret. Fix: set fleet.secret_file (the same file on every node)",
            );
        }
        if !peers.iter().any(|q| q.id == node_id) {
            p.add(
                "fleet.peers",
                format!(
                    "this node ({node_id:?}) is not in the list: every node must see the same \
                     ring. Fix: add {{ id: {node_id}, addr: <its listener> }}"
                ),
            );
        }
        if peers.len() < 2 {
            p.add(
                "fleet.peers",
                "a shield needs at least two nodes. Fix: list every node of the ring",
            );
        }
    }
    Some(Fleet {
        node_id,
        nats: FleetNats {
            urls,
            creds_file,
            token,
            ca_file,
        },
        subject_prefix,
        secret,
        replay_timeout,
        retention,
        peers,
        shield,
    })
}
