//! The NATS side of the fleet: the client (with the configured credentials), the control stream,
//! and the names everything derives from `fleet.subject_prefix`.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use super::Event;
use crate::config::Fleet as FleetConfig;

/// Subjects, stream and bucket of one fleet (one `subject_prefix`).
#[derive(Debug, Clone)]
pub struct Names {
    /// The control stream: `<prefix>-control`.
    pub stream: String,
    /// Its subjects: `<prefix>.control.*`.
    pub control_subjects: String,
    /// `<prefix>.control.`, followed by the event's kind.
    pub control_prefix: String,
    /// Sightings: `<prefix>.sightings`.
    pub sightings: String,
    /// The key-value bucket of key sets: `<prefix>-keys`.
    pub bucket: String,
}

impl Names {
    /// The names for `prefix` (checked by the config: a subject token).
    pub fn new(prefix: &str) -> Names {
        Names {
            stream: format!("{prefix}-control"),
            control_subjects: format!("{prefix}.control.*"),
            control_prefix: format!("{prefix}.control."),
            sightings: format!("{prefix}.sightings"),
            bucket: format!("{prefix}-keys"),
        }
    }
}

/// A connected (or reconnecting) client.
pub struct Link {
    /// Plain NATS.
    pub client: async_nats::Client,
    /// JetStream over it.
    pub js: jetstream::Context,
    /// Woken on every (re)connection: the control stream's reader starts afresh from its own
    /// last applied sequence then, instead of waiting for its consumer to notice the server
    /// restarted (missed heartbeats take seconds).
    pub reconnected: std::sync::Arc<tokio::sync::Notify>,
}

/// What the connection's events update.
pub struct Watchers {
    /// `tollgate_fleet_connected`.
    pub connected: prometheus::IntGauge,
    /// Woken on each connection.
    pub reconnected: std::sync::Arc<tokio::sync::Notify>,
}

/// The stream's bounds when it was read.
pub struct StreamState {
    /// First sequence still stored.
    pub first_sequence: u64,
    /// Last sequence stored (0: none yet).
    pub last_sequence: u64,
    /// Messages stored.
    pub messages: u64,
}

/// A client for `config`; with `retry`, it returns at once and connects in the background
/// (a node starts, and serves, without NATS).
pub async fn connect(
    config: &FleetConfig,
    retry: bool,
    watchers: Option<Watchers>,
) -> Result<async_nats::Client, String> {
    let mut options = match &config.nats.creds_file {
        Some(creds) => async_nats::ConnectOptions::with_credentials_file(creds.clone())
            .await
            .map_err(|e| format!("{}: {e}", creds.display()))?,
        None => async_nats::ConnectOptions::new(),
    };
    if let Some(token) = &config.nats.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &config.nats.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    options = options
        .name(format!("tollgate {}", config.node_id))
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| {
            // quick at first (a restarted server is back in a second), then every 2 s
            Duration::from_millis((100u64 << attempts.min(5)).min(2000))
        });
    if retry {
        options = options.retry_on_initial_connect();
    }
    if let Some(Watchers {
        connected: gauge,
        reconnected,
    }) = watchers
    {
        options = options.event_callback(move |event| {
            let gauge = gauge.clone();
            let reconnected = reconnected.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        gauge.set(1);
                        reconnected.notify_waiters();
                        log::info!("fleet: connected to NATS");
                    }
                    async_nats::Event::Disconnected => {
                        gauge.set(0);
                        log::warn!("fleet: disconnected from NATS; serving goes on");
                    }
                    other => log::info!("fleet: NATS: {other}"),
                }
            }
        });
    }
    options
        .connect(config.nats.urls.clone())
        .await
        .map_err(|e| format!("connecting to {:?}: {e}", config.nats.urls))
}

impl Link {
    /// The node's client, connecting in the background.
    pub async fn open(
        config: &FleetConfig,
        connected: &prometheus::IntGauge,
    ) -> Result<Link, String> {
        let reconnected = std::sync::Arc::new(tokio::sync::Notify::new());
        let watchers = Watchers {
            connected: connected.clone(),
            reconnected: reconnected.clone(),
        };
        let client = connect(config, true, Some(watchers)).await?;
        let js = jetstream::new(client.clone());
        Ok(Link {
            client,
            js,
            reconnected,
        })
    }

    /// Publish `event` on its subject and wait for JetStream's acknowledgement; `msg_id` lets
    /// JetStream drop a duplicate published by another node within its duplicate window.
    pub async fn publish_event(
        &self,
        names: &Names,
        event: &Event,
        msg_id: Option<&str>,
        timeout: Duration,
    ) -> Result<u64, String> {
        let subject = format!("{}{}", names.control_prefix, event.kind());
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        }
        let publish = async {
            let ack = self
                .js
                .publish_with_headers(subject, headers, event.encode().into())
                .await
                .map_err(|e| format!("publishing: {e}"))?;
            ack.await.map_err(|e| format!("waiting for JetStream: {e}"))
        };
        match tokio::time::timeout(timeout, publish).await {
            Ok(Ok(ack)) => Ok(ack.sequence),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no acknowledgement within {timeout:?}")),
        }
    }

    /// The control stream, created if missing.
    pub async fn control_stream(
        &self,
        names: &Names,
        retention: Duration,
    ) -> Result<stream::Stream, String> {
        self.js
            .get_or_create_stream(stream::Config {
                name: names.stream.clone(),
                subjects: vec![names.control_subjects.clone()],
                max_age: retention,
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("stream {}: {e}", names.stream))
    }

    /// The stream's bounds now.
    pub async fn stream_state(&self, stream: &stream::Stream) -> Result<StreamState, String> {
        let info = stream
            .get_info()
            .await
            .map_err(|e| format!("stream info: {e}"))?;
        Ok(StreamState {
            first_sequence: info.state.first_sequence,
            last_sequence: info.state.last_sequence,
            messages: info.state.messages,
        })
    }

    /// The stream's last sequence (for `GET /admin/fleet`), within a second.
    pub async fn stream_last_sequence(&self, names: &Names) -> Result<u64, String> {
        let read = async {
            let stream = self
                .js
                .get_stream(&names.stream)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(self.stream_state(&stream).await?.last_sequence)
        };
        tokio::time::timeout(Duration::from_secs(1), read)
            .await
            .map_err(|_| "timed out".to_string())?
    }

    /// Every control event from sequence `start` on, in order (an ordered consumer: no
    /// acknowledgements; this node's own record of what it applied is the acknowledgement).
    pub async fn messages_from(
        &self,
        stream: &stream::Stream,
        names: &Names,
        start: u64,
    ) -> Result<consumer::pull::Ordered, String> {
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: names.control_subjects.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| format!("consumer from {start}: {e}"))?;
        consumer
            .messages()
            .await
            .map_err(|e| format!("subscribing from {start}: {e}"))
    }
}
