//! What a fleet node keeps under `state_dir` so that a restart resumes where it stopped: the
//! sequence of the last control event it applied, and the last good key set it received.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The state files of one node.
pub struct Progress {
    applied_file: PathBuf,
    keys_file: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Applied {
    /// The control stream's sequence of the last event applied.
    stream_seq: u64,
}

/// The last good key set received from the bucket.
#[derive(Serialize, Deserialize)]
pub struct SavedKeys {
    /// The bucket revision it came from.
    pub revision: u64,
    /// The JWK Set, as published.
    pub jwks: String,
}

impl Progress {
    /// The files under `state_dir`.
    pub fn new(state_dir: &Path) -> Progress {
        Progress {
            applied_file: state_dir.join("fleet-applied.json"),
            keys_file: state_dir.join("fleet-keys.json"),
        }
    }

    /// The last applied sequence (0: none). A missing file is 0; an unreadable one is an error
    /// (replaying from 0 would be harmless, but an operator should hear about it).
    pub fn applied(&self) -> Result<u64, String> {
        match std::fs::read(&self.applied_file) {
            Ok(bytes) => serde_json::from_slice::<Applied>(&bytes)
                .map(|a| a.stream_seq)
                .map_err(|e| format!("{}: {e}", self.applied_file.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(format!("{}: {e}", self.applied_file.display())),
        }
    }

    /// Record `seq` as applied: written and renamed into place, not synced. A crash of the
    /// machine may bring back an older sequence; the events after it are then applied again,
    /// which changes nothing (every event carries its whole effect). The fleet writes it every
    /// 100 ms while events flow, not per event (see `RECORD_EVERY`).
    pub fn save_applied(&self, seq: u64) -> Result<(), String> {
        write_file(
            &self.applied_file,
            &serde_json::to_vec(&Applied { stream_seq: seq }).expect("serializes"),
            false,
        )
    }

    /// The last good key set, if one was saved.
    pub fn keys(&self) -> Result<Option<SavedKeys>, String> {
        match std::fs::read(&self.keys_file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", self.keys_file.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", self.keys_file.display())),
        }
    }

    /// Keep `keys` as the last good set.
    pub fn save_keys(&self, keys: &SavedKeys) -> Result<(), String> {
        write_file(
            &self.keys_file,
            &serde_json::to_vec_pretty(keys).expect("serializes"),
            true,
        )
    }
}

/// Write `bytes` to a temporary file (synced if `sync`) and rename it over `path`.
fn write_file(path: &Path, bytes: &[u8], sync: bool) -> Result<(), String> {
    let tmp = path.with_extension("json.tmp");
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    if sync {
        f.sync_data().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_survives_a_restart_and_a_corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = Progress::new(dir.path());
        assert_eq!(p.applied().unwrap(), 0);
        p.save_applied(41).unwrap();
        p.save_applied(42).unwrap();
        assert_eq!(Progress::new(dir.path()).applied().unwrap(), 42);
        std::fs::write(dir.path().join("fleet-applied.json"), "{").unwrap();
        assert!(p.applied().unwrap_err().contains("fleet-applied.json"));
        assert!(p.keys().unwrap().is_none());
        p.save_keys(&SavedKeys {
            revision: 3,
            jwks: "{\"keys\":[]}".into(),
        })
        .unwrap();
        assert_eq!(p.keys().unwrap().unwrap().revision, 3);
    }
}
