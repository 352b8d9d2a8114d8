//! `logging:` — the log filter and the access log.

use std::path::Path;

use super::problems::{resolve, Problems};
use super::raw::{RawLogging, DEFAULT_LOG_LEVEL};
use super::types::{AccessLogTarget, LoggingSettings};

pub(super) fn validate_logging(
    raw: RawLogging,
    base_dir: &Path,
    p: &mut Problems,
) -> LoggingSettings {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let level = raw.level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
    let bad = level
        .split(',')
        .map(str::trim)
        .find(|directive| !valid_log_directive(directive, &LEVELS));
    if let Some(directive) = bad {
        p.add(
            "logging.level",
            format!(
                "'{directive}' is not a log directive. Fix: use a level ({}) or target=level \
                 pairs, e.g. info,tollgate=debug",
                LEVELS.join(", ")
            ),
        );
    }
    let access_log = match raw.access_log {
        None => AccessLogTarget::Off,
        Some(v) => access_log_target(&v.0, base_dir, p),
    };
    LoggingSettings { level, access_log }
}

/// `off`, `stdout`, or a file whose directory exists (the file itself is created at start).
fn access_log_target(value: &str, base_dir: &Path, p: &mut Problems) -> AccessLogTarget {
    const KEY: &str = "logging.access_log";
    match value.trim() {
        "off" => return AccessLogTarget::Off,
        "stdout" => return AccessLogTarget::Stdout,
        "" => {
            p.add(
                KEY,
                "empty value. Fix: use off, stdout or a file path such as \
                 /var/log/tollgate/access.log",
            );
            return AccessLogTarget::Off;
        }
        _ => {}
    }
    let full = resolve(base_dir, Path::new(value));
    if full.is_dir() {
        p.add(
            KEY,
            format!(
                "{} is a directory. Fix: name a file inside it, e.g. {}",
                full.display(),
                full.join("access.log").display()
            ),
        );
        return AccessLogTarget::Off;
    }
    match full.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            p.add(
                KEY,
                format!(
                    "directory {} does not exist. Fix: create it, writable by the user tollgate \
                     runs as (the systemd unit's LogsDirectory= does), or use stdout",
                    dir.display()
                ),
            );
            AccessLogTarget::Off
        }
        _ => AccessLogTarget::File(full),
    }
}

/// `level` or `target=level`. (`env_logger` also reads a bare `target`, but here a bare word
/// that is not a level is far more likely a misspelt level.)
fn valid_log_directive(directive: &str, levels: &[&str]) -> bool {
    let is_level = |l: &str| levels.contains(&l.to_ascii_lowercase().as_str());
    match directive.split_once('=') {
        Some((target, level)) => {
            !target.is_empty()
                && target
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && is_level(level)
        }
        None => is_level(directive),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_raw;

    fn target(yaml: &str, base: &Path) -> (AccessLogTarget, Vec<String>) {
        let raw = parse_raw(yaml).expect("parses");
        let mut p = Problems(Vec::new());
        let settings = validate_logging(raw.logging, base, &mut p);
        let problems = p.0.iter().map(ToString::to_string).collect();
        (settings.access_log, problems)
    }

    #[test]
    fn access_log_forms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        let file = |name: &str| AccessLogTarget::File(base.join(name));
        let cases = [
            ("logging: {}\n", AccessLogTarget::Off),
            ("logging: { access_log: off }\n", AccessLogTarget::Off),
            ("logging: { access_log: false }\n", AccessLogTarget::Off),
            ("logging: { access_log: true }\n", AccessLogTarget::Stdout),
            ("logging: { access_log: stdout }\n", AccessLogTarget::Stdout),
            ("logging: { access_log: access.log }\n", file("access.log")),
        ];
        for (yaml, want) in cases {
            assert_eq!(target(yaml, base), (want, vec![]), "{yaml}");
        }
        let abs = base.join("a.log");
        let yaml = format!("logging: {{ access_log: {:?} }}\n", abs.to_string_lossy());
        assert_eq!(target(&yaml, base), (AccessLogTarget::File(abs), vec![]));
    }

    #[test]
    fn access_log_problems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (t, problems) = target("logging: { access_log: '' }\n", dir.path());
        assert_eq!(t, AccessLogTarget::Off);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("logging.access_log: empty value"));
        let err = parse_raw("logging: { access_log: [a] }\n").expect_err("a list is refused");
        assert!(
            err.to_string().contains("off, stdout, a file path"),
            "{err}"
        );
    }
}
