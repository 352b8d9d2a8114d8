//! Session sightings shared across the fleet, so that `revocation.auto` counts a session's
//! (address, user agent) pairs over every node. A node publishes a pair only when it is new to
//! it — traffic grows with sessions, not requests — on a plain subject (a restarted node starts
//! counting from what it hears next). A node that sees a limit crossed revokes the session at
//! once and publishes one revoke event, with a message id JetStream uses to drop the same
//! revocation published by the other nodes that saw it cross too.

use std::sync::Arc;

use async_nats::Subscriber;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Event, Fleet};
use crate::edge::unix_now;
use crate::revocation::Shared;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sighting {
    node: String,
    sid: String,
    ip: u64,
    ua: u64,
    at: u64,
    exp: u64,
}

/// Publish what the auto-revoker hands over.
pub(super) async fn send(fleet: Arc<Fleet>, mut outbox: tokio::sync::mpsc::Receiver<Shared>) {
    let Some(link) = fleet.link.get() else {
        return;
    };
    while let Some(item) = outbox.recv().await {
        match item {
            Shared::Sighting {
                sid,
                ip,
                ua,
                at,
                exp,
            } => {
                let body = Sighting {
                    node: fleet.config.node_id.clone(),
                    sid,
                    ip,
                    ua,
                    at,
                    exp,
                };
                let payload = serde_json::to_vec(&body).expect("serializes");
                if let Err(e) = link
                    .client
                    .publish(fleet.names.sightings.clone(), payload.into())
                    .await
                {
                    log::debug!("fleet: sighting not shared: {e}");
                }
            }
            Shared::Revoked { sid, expires_at } => {
                let event = Event::Revoke {
                    sid: sid.clone(),
                    expires_at,
                    reason: "auto".into(),
                };
                let id = format!("auto-revoke:{sid}");
                match fleet.publish(&event, Some(&id)).await {
                    Ok(seq) => log::info!("fleet: automatic revocation of {sid:?} is event {seq}"),
                    Err(e) => log::warn!(
                        "fleet: automatic revocation of {sid:?} in force here, not shared: {e}"
                    ),
                }
            }
        }
    }
}

/// Subscribe to the fleet's sightings (registered with the server before the first replay
/// request goes out on the same connection; kept across reconnections by the client).
pub(super) async fn subscribe(fleet: &Fleet, link: &super::link::Link) -> Option<Subscriber> {
    match link.client.subscribe(fleet.names.sightings.clone()).await {
        Ok(sub) => Some(sub),
        Err(e) => {
            log::error!("fleet: subscribing to sightings: {e}; counting this node's alone");
            None
        }
    }
}

/// Count the sightings other nodes share.
pub(super) async fn receive(fleet: Arc<Fleet>, subscription: Option<Subscriber>) {
    let (Some(mut sub), Some(auto)) = (subscription, &fleet.edge.auto_revoker) else {
        return;
    };
    while let Some(message) = sub.next().await {
        let Ok(s) = serde_json::from_slice::<Sighting>(&message.payload) else {
            log::debug!("fleet: a sighting that does not parse, ignored");
            continue;
        };
        if s.node == fleet.config.node_id
            || s.sid.is_empty()
            || s.sid.len() > crate::revocation::MAX_SID_LEN
        {
            continue;
        }
        fleet.metrics.sightings_received.inc();
        let now = unix_now();
        let Some(trip) = auto.observe_remote(&s.sid, s.ip, s.ua, s.at, now) else {
            continue;
        };
        let edge = &fleet.edge;
        if edge.revocations.is_revoked(&s.sid, now) {
            continue;
        }
        log::warn!(
            "session {:?} revoked automatically: {trip:?} across the fleet",
            s.sid
        );
        edge.revoke_automatically(&s.sid, s.exp, now);
    }
}
