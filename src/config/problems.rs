//! What every section's validation shares: the list of problems found so far (validation goes
//! on after a problem, so `tollgate check` reports them all), and the readers of values that
//! may be wrong — paths, files, durations, sizes — each adding its problem with its key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::UnitValue;
use super::units::{parse_duration, parse_size};
use super::Problem;

/// Collects problems while validation continues.
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(path, message));
    }
}

/// Resolves `path` against the config directory unless it is absolute.
pub(super) fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// Resolves a path that must name an existing regular file.
pub(super) fn existing_file(
    base_dir: &Path,
    path: &Path,
    key: &str,
    what: &str,
    p: &mut Problems,
) -> Option<PathBuf> {
    if path.as_os_str().is_empty() {
        p.add(key, format!("empty path. Fix: set it to the {what}"));
        return None;
    }
    let full = resolve(base_dir, path);
    match std::fs::metadata(&full) {
        Ok(meta) if meta.is_file() => Some(full),
        Ok(_) => {
            p.add(
                key,
                format!(
                    "{} is not a regular file. Fix: point it at the {what}",
                    full.display()
                ),
            );
            None
        }
        Err(err) => {
            p.add(
                key,
                format!(
                    "cannot use {}: {err}. Fix: create the {what} there or correct the path \
                     (relative paths are resolved against {})",
                    full.display(),
                    base_dir.display()
                ),
            );
            None
        }
    }
}

/// Whether `secret` can be sent in an HTTP header (printable ASCII, no surrounding space).
pub(super) fn check_secret(secret: &str, key: &str, source: &str, p: &mut Problems) -> bool {
    let fix = "Fix: use printable ASCII, e.g. the output of openssl rand -hex 32";
    if secret.is_empty() {
        p.add(key, format!("{source} is empty. {fix}"));
        false
    } else if secret.trim() != secret || !secret.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        p.add(
            key,
            format!(
                "the secret in {source} contains control, non-ASCII or surrounding whitespace \
                 characters and cannot be sent in an HTTP header. {fix}"
            ),
        );
        false
    } else {
        true
    }
}

/// A secret read from `file` (its trailing newline dropped), checked by [`check_secret`].
pub(super) fn read_secret_file(
    file: &Path,
    key: &str,
    what: &str,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<String> {
    let full = existing_file(base_dir, file, key, what, p)?;
    match std::fs::read_to_string(&full) {
        Ok(text) => {
            // Editors and `echo` add a trailing newline; it is never part of the secret.
            let secret = text.trim_end_matches(['\n', '\r']).to_owned();
            check_secret(&secret, key, &full.display().to_string(), p).then_some(secret)
        }
        Err(err) => {
            p.add(
                key,
                format!(
                    "cannot read {}: {err}. Fix: make it readable by the service user",
                    full.display()
                ),
            );
            None
        }
    }
}

/// A duration in the config's units, or `default` when the key is absent.
pub(super) fn duration_or(
    value: Option<UnitValue>,
    default: Duration,
    key: &str,
    p: &mut Problems,
) -> Duration {
    match value {
        None => default,
        Some(UnitValue(text)) => parse_duration(&text).unwrap_or_else(|err| {
            p.add(key, err);
            default
        }),
    }
}

/// A size in the config's units, or `default` when the key is absent.
pub(super) fn size_or(
    value: Option<UnitValue>,
    default: u64,
    key: &str,
    p: &mut Problems,
) -> Option<u64> {
    match value {
        None => Some(default),
        Some(UnitValue(text)) => match parse_size(&text) {
            Ok(size) => Some(size),
            Err(err) => {
                p.add(key, err);
                None
            }
        },
    }
}
