//! The validated `fleet:` and `resolver:` sections.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `resolver:`: origin host names are resolved at start and again when their record's TTL
/// runs out (bounded by `min_ttl` and `max_ttl`); a failed lookup keeps the last good address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Name servers to ask; empty: the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// Shortest time between two lookups of one name.
    pub min_ttl: Duration,
    /// Longest time between two lookups of one name.
    pub max_ttl: Duration,
}

/// `fleet:` (SPEC §9).
#[derive(Clone)]
pub struct Fleet {
    /// This node's id (a subject token): `fleet.node_id`, default the hostname.
    pub node_id: String,
    /// How to reach NATS.
    pub nats: FleetNats,
    /// Subjects, the control stream and the key bucket derive their names from it.
    pub subject_prefix: String,
    /// `fleet.secret_file`'s bytes (trimmed): keys the hash of shared sightings.
    pub secret: Option<Vec<u8>>,
    /// How long a starting node waits to replay missed events before serving anyway.
    pub replay_timeout: Duration,
    /// How long the control stream keeps events.
    pub retention: Duration,
    /// `fleet.peers`: the nodes of the shield ring, this one included.
    pub peers: Vec<Peer>,
    /// `fleet.shield.enabled`: misses go to the key's owner on the ring.
    pub shield: bool,
}

/// `fleet.peers[]`: a node of the shield ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its `node_id`.
    pub id: String,
    /// Where its edge listener accepts plain HTTP from the other nodes.
    pub addr: SocketAddr,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("node_id", &self.node_id)
            .field("nats", &self.nats)
            .field("subject_prefix", &self.subject_prefix)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("replay_timeout", &self.replay_timeout)
            .field("retention", &self.retention)
            .field("peers", &self.peers)
            .field("shield", &self.shield)
            .finish()
    }
}

/// `fleet.nats`.
#[derive(Clone)]
pub struct FleetNats {
    /// Server URLs (`nats://` or `tls://`).
    pub urls: Vec<String>,
    /// A `.creds` file (JWT + nkey seed).
    pub creds_file: Option<PathBuf>,
    /// The token read from `token_file`.
    pub token: Option<String>,
    /// Extra CA certificate for TLS.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for FleetNats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetNats")
            .field("urls", &self.urls)
            .field("creds_file", &self.creds_file)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}
