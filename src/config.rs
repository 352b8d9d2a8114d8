//! Configuration: `conf/tollgate.yaml` → a validated [`Config`].
//!
//! Two layers. [`raw`] mirrors the YAML with serde (`deny_unknown_fields`, so a misspelt key is
//! an error with its line, column and the keys allowed there). [`validate`] turns the raw tree
//! into a [`Config`]: it applies the `DEFAULT_*` values, resolves relative paths against the
//! config file's directory, reads secret and token files, and reports **every** problem in one
//! pass, each with its key path and a fix — what `tollgate check` prints.
//!
//! ```text
//! routes[2].origin: unknown origin 'nwes'; defined origins are: news. Fix: use one of them or add it under origins:
//! ```
//!
//! Submodules: `raw` (serde structs, defaults), `validate` (entry point; listeners, admin,
//! cache) with `origin`, `auth` (keys, auth) and `routes`, `types` (the validated structs),
//! `units` (sizes, durations), `glob` (route patterns).

mod auth;
mod behaviour;
mod fleet;
mod glob;
mod limits;
mod logging;
mod origin;
mod problems;
pub mod raw;
mod routes;
mod tls;
mod types;
mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

pub use behaviour::{Behaviour, Forward, QueryPolicy, ViewerProtocol, ALWAYS_FORWARDED};
pub use glob::Glob;
pub use tls::{cert_names, CertPair, ListenerTls};
pub use types::AccessLogTarget;
pub use types::{
    is_tchar, AccessMode, Admin, AuthSettings, AutoRevocation, CacheSettings, Config, DiskSettings,
    FailedAuthLimit, Fleet, FleetNats, KeysSettings, Limits, Listener, LoggingSettings, Origin,
    Peer, PemKeyConf, PingoraSettings, ResolverSettings, RevocationSettings, Route, RouteCache,
    SigV4Settings, SmdSettings, TokenSource,
};
pub use units::{format_duration, format_size, parse_duration, parse_size};
pub use validate::validate;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file itself could not be read (secret and key files become [`Problem`]s).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax error, unknown key or wrong value type, with its key path and location.
    #[error("{0}")]
    Parse(String),
    /// The file parsed but has problems; all of them, in file order per section.
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), ProblemList(.0))]
    Invalid(Vec<Problem>),
}

/// One validation problem: where (`routes[2].origin`), what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `routes[2].origin` or `origins.news.secret_file`.
    pub path: String,
    /// What is wrong and the fix.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Formats problems one per line, indented, for [`ConfigError::Invalid`].
struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// Reads, parses and validates the config file at `path`.
///
/// Relative paths inside it (keys, secrets, state) are resolved against the file's directory.
/// Secret files, the admin token file and `secret_env` variables are read now, so a running
/// edge never fails later on a missing secret.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let yaml = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    from_yaml_str(&yaml, &base_dir).map_err(|err| match err {
        ConfigError::Parse(msg) => ConfigError::Parse(format!("{}: {msg}", path.display())),
        other => other,
    })
}

/// Parses and validates YAML text; relative paths are resolved against `base_dir`.
pub fn from_yaml_str(yaml: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    from_yaml_str_with_env(yaml, base_dir, &|name| std::env::var(name).ok())
}

/// [`from_yaml_str`] with an explicit environment lookup for `secret_env` (for tests and for
/// callers that sandbox the environment).
pub fn from_yaml_str_with_env(
    yaml: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let (raw, mut problems) = parse_raw_collecting(yaml)?;
    match validate(raw, base_dir, env) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError::Invalid(problems)),
        Err(more) => {
            // a key dropped for its shape may be reported missing again: once is enough
            let under = |p: &Problem, q: &Problem| {
                p.path == q.path
                    || p.path.starts_with(&format!("{}.", q.path))
                    || p.path.starts_with(&format!("{}[", q.path))
            };
            let more: Vec<Problem> = more
                .into_iter()
                .filter(|p| !problems.iter().any(|q| under(p, q)))
                .collect();
            problems.extend(more);
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// Parses YAML into the raw tree without validating it; the first unknown key or wrong value
/// type is an error (see [`from_yaml_str`] for every problem at once).
///
/// A file with no content (empty, or comments only) is an empty configuration, so the
/// validator can say what is missing instead of serde's "EOF while parsing a value".
pub fn parse_raw(yaml: &str) -> Result<raw::RawConfig, ConfigError> {
    if !has_content(yaml) {
        return Ok(raw::RawConfig::default());
    }
    serde_yaml::from_str(yaml).map_err(|err| ConfigError::Parse(explain_serde_error(&err)))
}

fn has_content(yaml: &str) -> bool {
    yaml.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#') && line != "---"
    })
}

/// Most shape problems (unknown keys, wrong types) collected from one file.
const MAX_SHAPE_PROBLEMS: usize = 100;

/// The raw tree, and every key that had to be left out of it: an unknown key, or a value of the
/// wrong type, is reported with its path and removed, and reading goes on, so that one
/// misspelt key does not hide the file's other problems. Only YAML that does not parse at all
/// is an error here.
fn parse_raw_collecting(yaml: &str) -> Result<(raw::RawConfig, Vec<Problem>), ConfigError> {
    if !has_content(yaml) {
        return Ok((raw::RawConfig::default(), Vec::new()));
    }
    let mut tree: serde_yaml::Value =
        serde_yaml::from_str(yaml).map_err(|err| ConfigError::Parse(explain_serde_error(&err)))?;
    let mut problems = Vec::new();
    while problems.len() < MAX_SHAPE_PROBLEMS {
        match serde_path_to_error::deserialize::<_, raw::RawConfig>(tree.clone()) {
            Ok(raw) => return Ok((raw, problems)),
            Err(err) => {
                let path = err.path().clone();
                let message = err.into_inner().to_string();
                let at = match path.to_string() {
                    root if root == "." => "(top level)".to_string(),
                    empty if empty.is_empty() => "\"\" (an empty key)".to_string(),
                    key => key,
                };
                let line = unknown_key_line(yaml, &message)
                    .map(|n| format!(" (line {n})"))
                    .unwrap_or_default();
                problems.push(Problem::new(
                    at,
                    format!("{message}{line}. {}", fix_for(&message)),
                ));
                if !remove_at(&mut tree, &path) {
                    break;
                }
            }
        }
    }
    Err(ConfigError::Invalid(problems))
}

/// The line of the first `key:` in the file for an "unknown field `key`" message (the tree
/// read from YAML keeps no positions; the first occurrence is almost always the one).
fn unknown_key_line(yaml: &str, message: &str) -> Option<usize> {
    let key = message.strip_prefix("unknown field `")?.split('`').next()?;
    yaml.lines()
        .position(|line| {
            line.match_indices(key).any(|(i, _)| {
                let before = line[..i].chars().last();
                let after = line[i + key.len()..].trim_start();
                matches!(before, None | Some(' ' | '{' | ',' | '-' | '\t'))
                    && after.starts_with(':')
            })
        })
        .map(|i| i + 1)
}

/// Remove the node at `path` from `tree`; false if there is none (nothing more can be read).
fn remove_at(tree: &mut serde_yaml::Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = tree;
    for segment in parents {
        let next = match segment {
            Segment::Map { key } => node.get_mut(key.as_str()),
            Segment::Seq { index } => node.get_mut(*index),
            Segment::Enum { .. } | Segment::Unknown => return false,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match last {
        Segment::Map { key } => node
            .as_mapping_mut()
            .and_then(|m| m.remove(key.as_str()))
            .is_some(),
        Segment::Seq { index } => match node.as_sequence_mut() {
            Some(seq) if *index < seq.len() => {
                seq.remove(*index);
                true
            }
            _ => false,
        },
        Segment::Enum { .. } | Segment::Unknown => false,
    }
}

fn fix_for(msg: &str) -> &'static str {
    if msg.contains("unknown field") {
        "Fix: correct the key's spelling (the keys allowed there are listed after 'expected') or \
         remove it; conf/tollgate.yaml documents every key"
    } else if msg.contains("duplicate") {
        "Fix: keep one copy of the key"
    } else if msg.contains("invalid type") || msg.contains("invalid value") {
        "Fix: give the key a value of the expected type; conf/tollgate.yaml documents every key"
    } else if msg.contains("missing field") {
        "Fix: add the missing key; conf/tollgate.yaml documents every key"
    } else {
        "Fix: correct the YAML at that position"
    }
}

/// serde_yaml's message already carries the key path, the location and, for unknown keys, the
/// allowed ones; add the fix.
fn explain_serde_error(err: &serde_yaml::Error) -> String {
    let msg = err.to_string();
    format!("invalid configuration: {msg}. {}", fix_for(&msg))
}
