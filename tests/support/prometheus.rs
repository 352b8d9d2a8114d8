//! A strict reader of the Prometheus text format, and polling with a deadline.

use super::*;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`/`_sum`/`_count` suffixes as written).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

pub(super) fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parse the text exposition format strictly: every non-comment, non-empty line must be
/// `name{label="value",...} value` or `name value` with a float value.
pub fn parse_metrics(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(p) => line.split_at(p),
            None => return Err(bad("no value")),
        };
        if !valid_metric_name(name) {
            return Err(bad("invalid metric name"));
        }
        let mut labels = BTreeMap::new();
        let rest = if let Some(mut r) = rest.strip_prefix('{') {
            loop {
                r = r.trim_start_matches(',');
                if let Some(after) = r.strip_prefix('}') {
                    break after;
                }
                let (k, after) = r
                    .split_once("=\"")
                    .ok_or_else(|| bad("label without =\""))?;
                if !valid_metric_name(k) || k.contains(':') {
                    return Err(bad("invalid label name"));
                }
                let mut v = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => v.push('\n'),
                            Some((_, c @ ('\\' | '"'))) => v.push(c),
                            _ => return Err(bad("bad escape in label value")),
                        },
                        Some((j, '"')) => break j,
                        Some((_, c)) => v.push(c),
                        None => return Err(bad("unterminated label value")),
                    }
                };
                labels.insert(k.to_owned(), v);
                r = &after[end + 1..];
            }
        } else {
            rest
        };
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| bad("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| bad("value is not a float"))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| bad("timestamp is not an integer"))?;
        }
        if fields.next().is_some() {
            return Err(bad("trailing fields"));
        }
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(out)
}

/// Whether `text` has a `# TYPE` line for `name` (or the histogram or summary it is part of).
pub(super) fn declared(text: &str, name: &str) -> bool {
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    text.lines().any(|l| {
        l.starts_with(&format!("# TYPE {name} ")) || l.starts_with(&format!("# TYPE {base} "))
    })
}

/// Whether `text` exports `name` at all: a `# TYPE` line or a sample.
pub fn exported(text: &str, name: &str) -> bool {
    declared(text, name)
        || text.lines().any(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(['{', ' ']))
        })
}

/// Sum of the samples named `name` whose labels include all of `labels`; 0 when no series has
/// those label values. Panics when `name` is nowhere in the text (no sample, no `# TYPE`), or
/// when one of the label names is on none of its series: a misspelt or missing metric must fail
/// a test, never read as 0.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let samples = parse_metrics(text).unwrap_or_else(|e| panic!("metrics do not parse: {e}"));
    let family: Vec<&Sample> = samples.iter().filter(|s| s.name == name).collect();
    assert!(
        !family.is_empty() || declared(text, name),
        "metric {name} is not exported at all (misspelt, or never registered)"
    );
    for (k, _) in labels {
        assert!(
            family.is_empty() || family.iter().any(|s| s.labels.contains_key(*k)),
            "metric {name} has no label {k:?}"
        );
    }
    family
        .iter()
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Poll `f` every 100 ms until it returns true or `timeout` passes; returns whether it did.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
