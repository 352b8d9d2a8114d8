//! Key sets through the fleet: a JWK Set put into the `<prefix>-keys` bucket (by `tollgate keys
//! publish` or `PUT /admin/keys`) is checked like a key file by every node; a broken set keeps
//! the previous one, a good one is installed beside the configured keys and kept under
//! `state_dir`, so that a restart without NATS still verifies.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;

use super::progress::SavedKeys;
use super::{Fleet, FleetError, Names};
use crate::auth::KeySet;

/// The bucket key holding the JWK Set.
const KEY: &str = "jwks";

async fn bucket(js: &jetstream::Context, names: &Names) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(&names.bucket).await {
        return Ok(store);
    }
    // The bucket's stream, made the way the key-value convention (NATS ADR-8) lays it out.
    // Not `create_key_value`: it first reads the account's info, whose shape Debian's
    // nats-server 2.9 answers in a form async-nats 0.52 does not parse.
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{}", names.bucket),
        subjects: vec![format!("$KV.{}.>", names.bucket)],
        max_messages_per_subject: 5,
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("key bucket {}: {e}", names.bucket))?;
    js.get_key_value(&names.bucket)
        .await
        .map_err(|e| format!("key bucket {}: {e}", names.bucket))
}

/// Check `jwks` and put it into the bucket; returns its revision.
pub(super) async fn publish_checked(
    js: &jetstream::Context,
    names: &Names,
    jwks: &str,
) -> Result<u64, FleetError> {
    let set = KeySet::from_jwks_json(jwks)
        .map_err(|e| FleetError::Invalid(format!("not a usable JWK Set: {e}")))?;
    if set.is_empty() {
        return Err(FleetError::Invalid(
            "the JWK Set has no keys: every token would be refused".into(),
        ));
    }
    let put = async {
        bucket(js, names)
            .await?
            .put(KEY, jwks.to_owned().into())
            .await
            .map_err(|e| format!("putting the key set: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(5), put)
        .await
        .map_err(|_| FleetError::Unavailable("no answer within 5 s".into()))?
        .map_err(FleetError::Unavailable)
}

/// `tollgate keys publish`: connect with the config's fleet settings and publish `jwks`.
pub async fn publish_key_set(config: &crate::config::Fleet, jwks: &str) -> Result<u64, String> {
    let client = super::connect(config, false, None).await?;
    let js = jetstream::new(client);
    publish_checked(&js, &Names::new(&config.subject_prefix), jwks)
        .await
        .map_err(|e| e.to_string())
}

/// Watch the bucket and install every good key set; resumes after errors.
pub(super) async fn watch(fleet: Arc<Fleet>) {
    let Some(link) = fleet.link.get() else {
        return;
    };
    let mut last_revision = fleet
        .progress
        .keys()
        .ok()
        .flatten()
        .map_or(0, |k| k.revision);
    loop {
        let result = async {
            let store = bucket(&link.js, &fleet.names).await?;
            let mut updates = store
                .watch_with_history(KEY)
                .await
                .map_err(|e| format!("watching: {e}"))?;
            while let Some(entry) = updates.next().await {
                let entry = entry.map_err(|e| format!("reading: {e}"))?;
                if entry.revision <= last_revision {
                    continue;
                }
                last_revision = entry.revision;
                match entry.operation {
                    kv::Operation::Put => install(&fleet, entry.revision, &entry.value),
                    kv::Operation::Delete | kv::Operation::Purge => log::warn!(
                        "fleet: the key set was deleted from {}; keeping the current one",
                        fleet.names.bucket
                    ),
                }
            }
            Ok::<(), String>(())
        }
        .await;
        if let Err(e) = result {
            log::debug!("fleet: key bucket: {e}; retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn install(fleet: &Fleet, revision: u64, value: &[u8]) {
    let parsed = std::str::from_utf8(value)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            KeySet::from_jwks_json(text)
                .map(|set| (text, set))
                .map_err(|e| e.to_string())
        });
    match parsed {
        Ok((text, set)) => {
            let n = fleet.edge.install_fleet_keys(set);
            fleet.metrics.applied.with_label_values(&["keys"]).inc();
            log::info!("fleet: key set revision {revision} installed; {n} keys in force");
            let saved = SavedKeys {
                revision,
                jwks: text.to_owned(),
            };
            if let Err(e) = fleet.progress.save_keys(&saved) {
                log::error!("fleet: keeping key set revision {revision} on disk: {e}");
            }
        }
        Err(e) => {
            log::error!(
                "fleet: key set revision {revision} refused, keeping the previous keys: {e}"
            );
            fleet.metrics.rejected.inc();
            fleet.edge.metrics.key_reload_errors.inc();
        }
    }
}
