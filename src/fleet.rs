//! The fleet (SPEC §9): many nodes sharing purges, revocations, key sets and session sightings
//! through NATS JetStream, so that what is done on one node takes effect on all within a second.
//!
//! How a control event takes effect — one way, on every node, the publishing one included:
//!
//! ```text
//! POST /admin/purge|revoke|unrevoke on any node
//!   → Event::check → publish on <prefix>.control.<kind> → JetStream acks with its sequence
//!   → the admin call answers {"seq": N, ...} (after this node applied it, or its wait ran out)
//! every node: ordered consumer from (last applied + 1)
//!   → Event::decode (a bad event is logged, counted and skipped) → Event::apply → the sequence
//!     is written to state_dir/fleet-applied.json (after the effect: a crash in between applies
//!     the event again, which changes nothing)
//! ```
//!
//! A starting node replays what it missed before it serves: the edge listeners depend on the
//! fleet service, which reports ready once it has applied up to the stream's last sequence, or
//! after `fleet.replay_timeout` (then it logs that it serves without a complete replay and
//! `tollgate_fleet_replay_complete` stays 0) — the persisted revocations are in force either way.
//!
//! Key sets go through a JetStream key-value bucket (`keys`); session sightings through a plain
//! subject (`sightings`), each (address, user agent) pair published by the first node to see
//! it, counted by every node (see [`crate::revocation::AutoRevoker`]).

mod event;
mod keys;
mod link;
mod progress;
mod sightings;

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::services::ServiceReadyNotifier;

pub use event::{Applied, Event};
pub use keys::publish_key_set;
pub use link::{connect, Names};
pub use progress::Progress;

use crate::edge::Edge;

/// How long the admin API waits for JetStream's acknowledgement.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the last applied sequence is written under `state_dir` while events flow (writing
/// it per event was a third of a node's CPU time at 100 events/s in `benches/fleet/run.py`).
const RECORD_EVERY: Duration = Duration::from_millis(100);
/// How long the admin API waits for this node to apply what it published.
const LOCAL_APPLY_WAIT: Duration = Duration::from_secs(2);
/// Results of recently applied events kept for the admin answers.
const RECENT: usize = 256;

/// Why a fleet call failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// NATS cannot be reached: the node serves on, fleet calls answer 503.
    #[error("NATS is unreachable ({0}); serving goes on with what this node has")]
    Unavailable(String),
    /// The event or key set was refused before publishing.
    #[error("{0}")]
    Invalid(String),
}

/// The fleet metrics (registered only on fleet nodes).
pub struct FleetMetrics {
    /// `tollgate_fleet_connected`
    pub connected: prometheus::IntGauge,
    /// `tollgate_fleet_events_applied_total{kind}`
    pub applied: prometheus::IntCounterVec,
    /// `tollgate_fleet_events_rejected_total`
    pub rejected: prometheus::IntCounter,
    /// `tollgate_fleet_apply_lag_seconds`
    pub lag: prometheus::Histogram,
    /// `tollgate_fleet_last_applied_sequence`
    pub last_applied: prometheus::IntGauge,
    /// `tollgate_fleet_replay_complete`
    pub replay_complete: prometheus::IntGauge,
    /// `tollgate_fleet_sightings_received_total`
    pub sightings_received: prometheus::IntCounter,
}

impl FleetMetrics {
    fn new(metrics: &crate::metrics::Metrics) -> prometheus::Result<FleetMetrics> {
        use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
        let connected = IntGauge::new(
            "tollgate_fleet_connected",
            "1 while this node is connected to NATS, else 0.",
        )?;
        let applied = IntCounterVec::new(
            Opts::new(
                "tollgate_fleet_events_applied_total",
                "Control events applied from the fleet's stream, by kind (purge, revoke, \
                 unrevoke, keys).",
            ),
            &["kind"],
        )?;
        for kind in Event::KINDS.iter().chain(&["keys"]) {
            applied.with_label_values(&[kind]);
        }
        let rejected = IntCounter::new(
            "tollgate_fleet_events_rejected_total",
            "Control events and key sets read from NATS that failed their checks and were \
             skipped (see the log).",
        )?;
        let lag = Histogram::with_opts(
            HistogramOpts::new(
                "tollgate_fleet_apply_lag_seconds",
                "From JetStream storing a control event to this node having applied it.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
            ]),
        )?;
        let last_applied = IntGauge::new(
            "tollgate_fleet_last_applied_sequence",
            "The control stream's sequence of the last event this node applied.",
        )?;
        let replay_complete = IntGauge::new(
            "tollgate_fleet_replay_complete",
            "1 once this node has applied every control event it missed while stopped; 0 if \
             it started serving without (NATS unreachable for fleet.replay_timeout).",
        )?;
        let sightings_received = IntCounter::new(
            "tollgate_fleet_sightings_received_total",
            "Session sightings (a session's address and user agent pair new to another node) \
             received from the fleet and counted by revocation.auto.",
        )?;
        for c in [
            Box::new(sightings_received.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(connected.clone()),
            Box::new(applied.clone()),
            Box::new(rejected.clone()),
            Box::new(lag.clone()),
            Box::new(last_applied.clone()),
            Box::new(replay_complete.clone()),
        ] {
            metrics.register(c)?;
        }
        Ok(FleetMetrics {
            connected,
            applied,
            rejected,
            lag,
            last_applied,
            replay_complete,
            sightings_received,
        })
    }
}

/// A node's membership of the fleet: what the admin API publishes through, and (as a
/// background service, [`FleetService`]) what applies the fleet's events here.
pub struct Fleet {
    edge: Arc<Edge>,
    config: crate::config::Fleet,
    names: Names,
    metrics: FleetMetrics,
    progress: Progress,
    link: OnceLock<link::Link>,
    /// The last applied sequence; admin calls wait on it.
    applied: tokio::sync::watch::Sender<u64>,
    /// What the last events did here, for the admin answers.
    recent: parking_lot::Mutex<VecDeque<(u64, Applied)>>,
}

impl Fleet {
    /// The fleet membership of `edge`, or `None` when `fleet:` is not configured.
    pub fn new(edge: Arc<Edge>) -> anyhow::Result<Option<Arc<Fleet>>> {
        let Some(config) = edge.config.fleet.clone() else {
            return Ok(None);
        };
        let state_dir = edge
            .config
            .state_dir
            .clone()
            .ok_or_else(|| anyhow::anyhow!("fleet: needs state_dir"))?;
        let progress = Progress::new(&state_dir);
        let applied = match progress.applied() {
            Ok(seq) => seq,
            Err(e) => {
                log::error!("fleet: {e}; replaying the whole control stream (harmless)");
                0
            }
        };
        let metrics = FleetMetrics::new(&edge.metrics)?;
        metrics.last_applied.set(applied as i64);
        let fleet = Fleet {
            names: Names::new(&config.subject_prefix),
            config,
            metrics,
            progress,
            link: OnceLock::new(),
            applied: tokio::sync::watch::channel(applied).0,
            recent: parking_lot::Mutex::new(VecDeque::with_capacity(RECENT)),
            edge,
        };
        fleet.load_saved_keys();
        Ok(Some(Arc::new(fleet)))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The connection, if it is up.
    fn connected_link(&self) -> Result<&link::Link, FleetError> {
        let link = self
            .link
            .get()
            .ok_or_else(|| FleetError::Unavailable("not connected yet".into()))?;
        match link.client.connection_state() {
            async_nats::connection::State::Connected => Ok(link),
            state => Err(FleetError::Unavailable(format!("connection {state}"))),
        }
    }

    /// Check and publish `event`; returns the stream sequence JetStream acknowledged.
    pub async fn publish(&self, event: &Event, msg_id: Option<&str>) -> Result<u64, FleetError> {
        event.check().map_err(FleetError::Invalid)?;
        let link = self.connected_link()?;
        link.publish_event(&self.names, event, msg_id, PUBLISH_TIMEOUT)
            .await
            .map_err(FleetError::Unavailable)
    }

    /// Wait (at most [`LOCAL_APPLY_WAIT`]) until this node applied `seq`; returns what
    /// applying it did, if it was applied in time and is still remembered.
    pub async fn applied_here(&self, seq: u64) -> Option<Option<Applied>> {
        let mut rx = self.applied.subscribe();
        let reached = tokio::time::timeout(LOCAL_APPLY_WAIT, rx.wait_for(|a| *a >= seq)).await;
        if !matches!(reached, Ok(Ok(_))) {
            return None;
        }
        let recent = self.recent.lock();
        Some(recent.iter().find(|(s, _)| *s == seq).map(|(_, a)| *a))
    }

    /// `GET /admin/fleet`.
    pub async fn status(&self) -> serde_json::Value {
        let connected = self.connected_link();
        let stream_last = match &connected {
            Ok(link) => link.stream_last_sequence(&self.names).await.ok(),
            Err(_) => None,
        };
        serde_json::json!({
            "node_id": self.config.node_id,
            "connected": connected.is_ok(),
            "connection": match &connected {
                Ok(_) => "connected".to_string(),
                Err(e) => e.to_string(),
            },
            "last_applied_sequence": *self.applied.borrow(),
            "stream_last_sequence": stream_last,
            "replay_complete": self.metrics.replay_complete.get() == 1,
            "stream": self.names.stream,
            "key_bucket": self.names.bucket,
        })
    }

    /// Check a JWK Set and put it into the fleet's key bucket; returns its revision.
    pub async fn publish_keys(&self, jwks: &str) -> Result<u64, FleetError> {
        let link = self.connected_link()?;
        keys::publish_checked(&link.js, &self.names, jwks).await
    }

    /// Apply one event read from the stream, record its sequence, and tell waiters.
    async fn apply(&self, seq: u64, payload: &[u8], stored_at_nanos: i128) {
        match Event::decode(payload) {
            Ok(event) => {
                let applied = event.apply(&self.edge).await;
                self.metrics
                    .applied
                    .with_label_values(&[event.kind()])
                    .inc();
                let mut recent = self.recent.lock();
                if recent.len() == RECENT {
                    recent.pop_front();
                }
                recent.push_back((seq, applied));
            }
            Err(e) => {
                log::error!("fleet: control event {seq} skipped: {e}");
                self.metrics.rejected.inc();
            }
        }
        let now_nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        self.metrics
            .lag
            .observe(((now_nanos - stored_at_nanos).max(0) as f64) / 1e9);
        self.metrics.last_applied.set(seq as i64);
        self.applied.send_replace(seq);
    }

    /// Record the last applied sequence under `state_dir` if it moved since `saved`; returns
    /// what is recorded now. Until then a restart applies the events after `saved` again, which
    /// changes nothing.
    fn record_applied(&self, saved: u64) -> u64 {
        let applied = *self.applied.borrow();
        if applied == saved {
            return saved;
        }
        match self.progress.save_applied(applied) {
            Ok(()) => applied,
            Err(e) => {
                log::error!("fleet: recording event {applied} as applied: {e}");
                saved
            }
        }
    }

    fn load_saved_keys(&self) {
        match self.progress.keys() {
            Ok(Some(saved)) => match crate::auth::KeySet::from_jwks_json(&saved.jwks) {
                Ok(set) => {
                    let n = self.edge.install_fleet_keys(set);
                    log::info!(
                        "fleet: last good key set (revision {}) loaded from state_dir; {n} keys",
                        saved.revision
                    );
                }
                Err(e) => log::error!("fleet: the saved key set is not usable: {e}"),
            },
            Ok(None) => {}
            Err(e) => log::error!("fleet: reading the saved key set: {e}"),
        }
    }
}

/// The background service that connects, replays, and then applies the fleet's events, key sets
/// and sightings as they come. The edge listeners depend on it (see [`crate::app::build`]).
pub struct FleetService(pub Arc<Fleet>);

/// The ready notifier, taken once: by the replay when it completes, or by the timer.
type Ready = Arc<parking_lot::Mutex<Option<ServiceReadyNotifier>>>;

#[async_trait]
impl BackgroundService for FleetService {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready_notifier: ServiceReadyNotifier,
    ) {
        let fleet = &self.0;
        let ready: Ready = Arc::new(parking_lot::Mutex::new(Some(ready_notifier)));
        {
            let ready = ready.clone();
            let timeout = fleet.config.replay_timeout;
            let fleet = fleet.clone();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                if let Some(r) = ready.lock().take() {
                    log::warn!(
                        "fleet: serving without a complete replay: no NATS within {timeout:?} \
                         (applied up to sequence {}); missed events are applied once it is back",
                        *fleet.applied.borrow()
                    );
                    r.notify_ready();
                }
            });
        }
        let link = match link::Link::open(&fleet.config, &fleet.metrics.connected).await {
            Ok(link) => link,
            Err(e) => {
                // only a broken credentials file gets here; the config check reads it too
                log::error!("fleet: cannot set up the NATS client: {e}");
                return;
            }
        };
        let link = fleet.link.get_or_init(|| link);
        tokio::spawn(keys::watch(fleet.clone()));
        if let Some(auto) = &fleet.edge.auto_revoker {
            let (tx, rx) = tokio::sync::mpsc::channel(crate::revocation::OUTBOX_CAPACITY);
            if auto.share_through(tx) {
                tokio::spawn(sightings::send(fleet.clone(), rx));
                // subscribed before the listeners open, so no sighting is missed after
                let subscription = sightings::subscribe(fleet, link).await;
                tokio::spawn(sightings::receive(fleet.clone(), subscription));
            }
        }
        let mut backoff = Duration::from_millis(100);
        let mut saved = *fleet.applied.borrow();
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                r = consume(fleet, link, &ready, &mut saved) => r,
                _ = shutdown.changed() => {
                    fleet.record_applied(saved);
                    return;
                }
            };
            saved = fleet.record_applied(saved);
            if let Err(e) = result {
                log::warn!(
                    "fleet: control stream: {e}; resuming from {}",
                    *fleet.applied.borrow()
                );
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// Read the control stream from the last applied sequence on, applying each event; returns when
/// the subscription ends or fails (the caller resumes).
async fn consume(
    fleet: &Arc<Fleet>,
    link: &link::Link,
    ready: &Ready,
    saved: &mut u64,
) -> Result<(), String> {
    let stream = link
        .control_stream(&fleet.names, fleet.config.retention)
        .await?;
    let state = link.stream_state(&stream).await?;
    let mut applied = *fleet.applied.borrow();
    if applied > state.last_sequence {
        log::warn!(
            "fleet: this node applied up to {applied} but the stream ends at {} (recreated?); \
             applying it from its start (applying an event twice is harmless)",
            state.last_sequence
        );
        applied = 0;
        fleet.applied.send_replace(0);
        *saved = fleet.record_applied(u64::MAX);
    }
    if state.messages > 0 && state.first_sequence > applied + 1 {
        log::warn!(
            "fleet: events {}..{} aged out of the stream before this node applied them \
             (offline longer than fleet.retention?)",
            applied + 1,
            state.first_sequence - 1
        );
    }
    let replay_to = state.last_sequence;
    let mark_replayed = |applied: u64| {
        if applied < replay_to {
            return;
        }
        if fleet.metrics.replay_complete.get() == 0 {
            fleet.metrics.replay_complete.set(1);
            log::info!("fleet: replay complete at sequence {applied}");
        }
        if let Some(r) = ready.lock().take() {
            r.notify_ready();
        }
    };
    mark_replayed(applied);
    let mut messages = link
        .messages_from(&stream, &fleet.names, applied + 1)
        .await?;
    let mut record = tokio::time::interval(RECORD_EVERY);
    record.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            m = messages.next() => m,
            _ = record.tick() => {
                *saved = fleet.record_applied(*saved);
                continue;
            }
            _ = link.reconnected.notified() => {
                log::info!("fleet: reconnected; reading the control stream afresh");
                return Ok(());
            }
        };
        let Some(message) = message else {
            return Ok(());
        };
        let message = message.map_err(|e| format!("reading: {e}"))?;
        let (seq, stored_at) = match message.info() {
            Ok(info) => (info.stream_sequence, info.published.unix_timestamp_nanos()),
            Err(e) => return Err(format!("a message without its stream sequence: {e}")),
        };
        if seq <= *fleet.applied.borrow() {
            continue; // delivered again after a reconnect
        }
        fleet.apply(seq, &message.payload, stored_at).await;
        mark_replayed(seq);
    }
}
