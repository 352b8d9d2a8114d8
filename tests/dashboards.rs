//! The dashboard and the alerts that ship in `conf/` (`conf/grafana/tollgate.json`,
//! `conf/prometheus/alerts.yml`) against promtool and against a real node:
//!
//! - `promtool check rules` accepts the alert rules, and `promtool test rules` passes their unit
//!   tests (`conf/prometheus/alerts_test.yml`), which make every alert fire at least once;
//!   every alert has `for`, a `severity` and a summary and description.
//! - every query of the dashboard, its Grafana variables replaced, is accepted by promtool's
//!   query parser (written as recording rules and checked with `promtool check rules`); every
//!   panel uses the `${datasource}` variable, every `tollgate_*` selector the `$instance` one.
//! - every `tollgate_*` series the dashboard and the alerts read is in a real scrape of a node in
//!   a fleet (real `nats-server`) with the shield on and a disk tier, and every label they match,
//!   group by or print exists on the metrics it is applied to; matched values of labels with a
//!   known value set (auth results, tiers, cache statuses, ...) are values the node produces.
//!
//! promtool comes from Debian's `prometheus` package (`.ci/deps` installs it); without it these
//! tests fail, they do not skip.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{fleet_yaml, free_ports, get, Edge, EdgeOptions, Nats, Origin, Tok};

const DASHBOARD: &str = "conf/grafana/tollgate.json";
const ALERTS: &str = "conf/prometheus/alerts.yml";
const ALERT_TESTS: &str = "conf/prometheus/alerts_test.yml";

/// Labels Prometheus adds to every scraped series (not the node's).
const TARGET_LABELS: [&str; 2] = ["job", "instance"];
/// Grafana's built-in variables, and what they stand for when promtool parses a query.
const GRAFANA_BUILTINS: [(&str, &str); 4] = [
    ("__rate_interval", "5m"),
    ("__interval", "1m"),
    ("__range", "1h"),
    ("__range_s", "3600"),
];

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Run promtool; (success, stdout + stderr). Panics when promtool is not installed.
fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): it comes with Debian's `prometheus` package \
                 (`apt-get install -y prometheus`; `.ci/deps` installs it). The shipped dashboard \
                 and alerts are checked with it, so this test fails rather than skips."
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------------------------------------
// The shipped files
// ---------------------------------------------------------------------------------------------

/// A query of the dashboard or of an alert, and where it comes from (for messages).
#[derive(Debug, Clone)]
struct Query {
    origin: String,
    expr: String,
    /// Labels the result is printed with: Grafana `{{label}}` legends, `$labels.x` in alert
    /// annotations.
    printed: Vec<String>,
}

/// Every panel of the dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(nested) = p.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// `{{name}}` placeholders in a legend or `$labels.name` in an alert annotation.
fn printed_labels(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in text.split("{{").skip(1) {
        let inner = part.split("}}").next().unwrap_or("").trim();
        if let Some(label) = inner.strip_prefix("$labels.") {
            out.push(label.split([' ', '|']).next().unwrap_or("").to_owned());
        } else if !inner.starts_with('$') && !inner.contains(' ') {
            out.push(inner.to_owned());
        }
    }
    out
}

/// The dashboard's queries: panel targets and the query variables' queries (these are Grafana's
/// `label_values(...)`, not PromQL: `promql` false).
fn dashboard_queries(dashboard: &Value) -> Vec<(Query, bool)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default().to_owned();
            out.push((
                Query {
                    origin: format!(
                        "dashboard panel {} {title:?} target {}",
                        p["id"],
                        t["refId"].as_str().unwrap_or("?")
                    ),
                    expr,
                    printed: printed_labels(t["legendFormat"].as_str().unwrap_or("")),
                },
                true,
            ));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default();
        out.push((
            Query {
                origin: format!("dashboard variable {}", v["name"]),
                expr: q.to_owned(),
                printed: Vec::new(),
            },
            false,
        ));
    }
    out
}

/// The alert rules (name, the rule's YAML) of alerts.yml.
fn alert_rules() -> Vec<(String, serde_yaml::Value)> {
    let doc: serde_yaml::Value = serde_yaml::from_str(&read(ALERTS)).expect("alerts.yml is YAML");
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().expect("groups: a list") {
        for r in g["rules"].as_sequence().expect("rules: a list") {
            let name = r["alert"]
                .as_str()
                .or(r["record"].as_str())
                .unwrap_or("?")
                .to_owned();
            out.push((name, r.clone()));
        }
    }
    out
}

fn alert_queries() -> Vec<Query> {
    alert_rules()
        .into_iter()
        .map(|(name, r)| {
            let mut printed = Vec::new();
            for (_, text) in r["annotations"].as_mapping().into_iter().flatten() {
                printed.extend(printed_labels(text.as_str().unwrap_or("")));
            }
            Query {
                origin: format!("alert {name}"),
                expr: r["expr"].as_str().unwrap_or_default().to_owned(),
                printed,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A small PromQL reader: enough to find metric names, label matchers and grouping labels
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(String),
    Var(String),
    Punct(String),
}

fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&ch) = b.get(i) else {
                    return Err(format!("unterminated string in {expr:?}"));
                };
                i += 1;
                if ch as char == c {
                    break;
                }
                if ch == b'\\' && c != '`' {
                    if let Some(&n) = b.get(i) {
                        s.push(n as char);
                        i += 1;
                    }
                } else {
                    s.push(ch as char);
                }
            }
            out.push(Token::Str(s));
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            out.push(Token::Ident(expr[start..i].to_owned()));
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            out.push(Token::Num(expr[start..i].to_owned()));
        } else if c == '$' {
            i += 1;
            let braced = b.get(i) == Some(&b'{');
            if braced {
                i += 1;
            }
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let name = expr[start..i].to_owned();
            if braced {
                // ${name} or ${name:format}
                while i < b.len() && b[i] != b'}' {
                    i += 1;
                }
                i += 1;
            }
            out.push(Token::Var(name));
        } else {
            let two = expr.get(i..i + 2).unwrap_or("");
            if ["=~", "!~", "!=", "==", ">=", "<="].contains(&two) {
                out.push(Token::Punct(two.to_owned()));
                i += 2;
            } else {
                out.push(Token::Punct(c.to_string()));
                i += 1;
            }
        }
    }
    Ok(out)
}

const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

fn is_punct(t: Option<&Token>, p: &str) -> bool {
    matches!(t, Some(Token::Punct(x)) if x == p)
}

/// The index of the parenthesis matching the one at `open` (either direction).
fn matching(toks: &[Token], open: usize) -> Option<usize> {
    let (step, inc, dec): (isize, &str, &str) = if is_punct(toks.get(open), "(") {
        (1, "(", ")")
    } else if is_punct(toks.get(open), ")") {
        (-1, ")", "(")
    } else {
        return None;
    };
    let mut depth = 0;
    let mut i = open as isize;
    while i >= 0 && (i as usize) < toks.len() {
        let t = toks.get(i as usize);
        if is_punct(t, inc) {
            depth += 1;
        } else if is_punct(t, dec) {
            depth -= 1;
            if depth == 0 {
                return Some(i as usize);
            }
        }
        i += step;
    }
    None
}

/// The label list `( a, b )` starting at `open`: labels and the index of `)`.
fn label_list(toks: &[Token], open: usize) -> Option<(Vec<String>, usize)> {
    if !is_punct(toks.get(open), "(") {
        return None;
    }
    let close = matching(toks, open)?;
    let labels = toks[open + 1..close]
        .iter()
        .filter_map(|t| match t {
            Token::Ident(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    Some((labels, close))
}

/// One label matcher of a selector.
#[derive(Debug)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// What a query reads: its `tollgate_*` metrics with their matchers, and label constraints.
#[derive(Debug, Default)]
struct Reads {
    /// (metric, matchers) per selector.
    selectors: Vec<(String, Vec<Matcher>)>,
    /// (labels, metrics they must all be on, what for): `by`/`without`/`on`/`ignoring`.
    on_all: Vec<(Vec<String>, Vec<String>, String)>,
    /// Grafana variables used.
    vars: Vec<String>,
}

fn metrics_in(toks: &[Token]) -> Vec<String> {
    toks.iter()
        .enumerate()
        .filter_map(|(i, t)| match t {
            // a metric name, not a label name inside a matcher or a grouping list
            Token::Ident(s)
                if s.starts_with("tollgate_")
                    && !is_punct(toks.get(i + 1), "=")
                    && !is_punct(toks.get(i + 1), "!=")
                    && !is_punct(toks.get(i + 1), "=~")
                    && !is_punct(toks.get(i + 1), "!~") =>
            {
                Some(s.clone())
            }
            _ => None,
        })
        .collect()
}

/// Grafana variables (`$name`, `${name}`, `${name:format}`) anywhere in `expr`, strings too.
fn variables(expr: &str) -> Vec<String> {
    expr.split('$')
        .skip(1)
        .map(|rest| {
            rest.trim_start_matches('{')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .collect()
}

fn read_query(expr: &str) -> Result<Reads, String> {
    let toks = tokenize(expr)?;
    let mut reads = Reads {
        vars: variables(expr),
        ..Reads::default()
    };
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Token::Ident(name) if name.starts_with("tollgate_") => {
                let mut matchers = Vec::new();
                if is_punct(toks.get(i + 1), "{") {
                    let mut j = i + 2;
                    while j < toks.len() && !is_punct(toks.get(j), "}") {
                        match (&toks[j], toks.get(j + 1), toks.get(j + 2)) {
                            (Token::Ident(l), Some(Token::Punct(op)), Some(v)) => {
                                let value = match v {
                                    Token::Str(s) => s.clone(),
                                    _ => return Err(format!("matcher {l}{op} without a string")),
                                };
                                matchers.push(Matcher {
                                    label: l.clone(),
                                    op: op.clone(),
                                    value,
                                });
                                j += 3;
                            }
                            (Token::Punct(p), _, _) if p == "," => j += 1,
                            (t, _, _) => return Err(format!("unexpected {t:?} in a selector")),
                        }
                    }
                    i = j;
                }
                reads.selectors.push((name.clone(), matchers));
            }
            Token::Ident(kw) if matches!(kw.as_str(), "by" | "without") => {
                let (labels, close) =
                    label_list(&toks, i + 1).ok_or_else(|| format!("{kw} without a label list"))?;
                let arg = if matches!(toks.get(i.wrapping_sub(1)), Some(Token::Ident(a)) if AGGREGATIONS.contains(&a.as_str()))
                {
                    // sum by (x) (arg)
                    let end = matching(&toks, close + 1)
                        .ok_or_else(|| format!("no argument after {kw} (...)"))?;
                    &toks[close + 1..=end]
                } else if is_punct(toks.get(i.wrapping_sub(1)), ")") {
                    // sum (arg) by (x)
                    let start = matching(&toks, i - 1).ok_or("unbalanced parentheses")?;
                    &toks[start..i]
                } else {
                    return Err(format!("cannot tell what {kw} (...) applies to"));
                };
                reads
                    .on_all
                    .push((labels, metrics_in(arg), format!("{kw} (...)")));
                i = close;
            }
            Token::Ident(kw) if matches!(kw.as_str(), "on" | "ignoring") => {
                let (labels, close) =
                    label_list(&toks, i + 1).ok_or_else(|| format!("{kw} without a label list"))?;
                reads
                    .on_all
                    .push((labels, metrics_in(&toks), format!("{kw} (...)")));
                i = close;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(reads)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", ALERTS]);
    assert!(ok, "promtool check rules {ALERTS} failed:\n{out}");
    let (ok, out) = promtool(&["test", "rules", ALERT_TESTS]);
    assert!(ok, "promtool test rules {ALERT_TESTS} failed:\n{out}");

    let rules = alert_rules();
    assert!(rules.len() >= 7, "only {} rules in {ALERTS}", rules.len());
    let tests: serde_yaml::Value = serde_yaml::from_str(&read(ALERT_TESTS)).expect("YAML");
    let mut fired = BTreeSet::new();
    for t in tests["tests"].as_sequence().into_iter().flatten() {
        for a in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            if a["exp_alerts"].as_sequence().is_some_and(|e| !e.is_empty()) {
                fired.insert(a["alertname"].as_str().unwrap_or("").to_owned());
            }
        }
    }
    let mut problems = Vec::new();
    for (name, r) in &rules {
        if r["alert"].as_str().is_none() {
            problems.push(format!(
                "{name}: not an alert (alerts.yml holds alerts only)"
            ));
            continue;
        }
        if r["for"].as_str().is_none() {
            problems.push(format!("{name}: no `for:`"));
        }
        if !matches!(
            r["labels"]["severity"].as_str(),
            Some("critical" | "warning" | "info")
        ) {
            problems.push(format!("{name}: severity is not critical, warning or info"));
        }
        for a in ["summary", "description"] {
            if r["annotations"][a].as_str().is_none_or(|s| s.len() < 10) {
                problems.push(format!("{name}: no {a} annotation"));
            }
        }
        if !fired.contains(name) {
            problems.push(format!(
                "{name}: no test in {ALERT_TESTS} expects it to fire"
            ));
        }
    }
    assert!(problems.is_empty(), "{ALERTS}:\n{}", problems.join("\n"));
}

#[test]
fn dashboard_queries_parse_with_promtool() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard is JSON");
    let mut problems = Vec::new();
    let schema = dashboard["schemaVersion"].as_u64().unwrap_or(0);
    if schema < 36 {
        problems.push(format!(
            "schemaVersion {schema}: expected a current one (39)"
        ));
    }
    let vars: BTreeMap<String, String> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or("").to_owned(),
                v["type"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    if vars.get("datasource").map(String::as_str) != Some("datasource") {
        problems.push("no `datasource` variable of type datasource".into());
    }
    if vars.get("instance").map(String::as_str) != Some("query") {
        problems.push("no `instance` query variable".into());
    }
    let mut ids = BTreeSet::new();
    for p in panels(&dashboard) {
        let title = p["title"].as_str().unwrap_or("?");
        if !ids.insert(p["id"].as_u64().unwrap_or(0)) {
            problems.push(format!("panel {title:?}: id {} is not unique", p["id"]));
        }
        if p["type"] == "row" {
            continue;
        }
        if p["datasource"]["uid"] != "${datasource}" {
            problems.push(format!(
                "panel {title:?}: datasource is not ${{datasource}}"
            ));
        }
        let targets = p["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            problems.push(format!("panel {title:?}: no queries"));
        }
        for t in targets {
            if t["datasource"]["uid"] != "${datasource}" {
                problems.push(format!(
                    "panel {title:?} target {}: datasource is not ${{datasource}}",
                    t["refId"]
                ));
            }
        }
    }

    // Every panel query, its variables replaced, as a recording rule: promtool parses each.
    let mut checked = Vec::new();
    for (q, promql) in dashboard_queries(&dashboard) {
        if q.expr.trim().is_empty() {
            problems.push(format!("{}: empty query", q.origin));
            continue;
        }
        match read_query(&q.expr) {
            Ok(reads) => {
                for v in &reads.vars {
                    if !vars.contains_key(v) && !GRAFANA_BUILTINS.iter().any(|(b, _)| b == v) {
                        problems.push(format!("{}: variable ${v} is not defined", q.origin));
                    }
                }
                for (metric, matchers) in reads.selectors.iter().filter(|_| promql) {
                    if !matchers
                        .iter()
                        .any(|m| m.label == "instance" && m.op == "=~" && m.value == "$instance")
                    {
                        problems.push(format!(
                            "{}: {metric} is not filtered by instance=~\"$instance\"",
                            q.origin
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("{}: {e}: {}", q.origin, q.expr)),
        }
        if promql {
            let mut expr = q.expr.clone();
            for (b, value) in GRAFANA_BUILTINS {
                expr = expr
                    .replace(&format!("${{{b}}}"), value)
                    .replace(&format!("${b}"), value);
            }
            for v in vars.keys() {
                expr = expr
                    .replace(&format!("${{{v}}}"), ".*")
                    .replace(&format!("${v}"), ".*");
            }
            checked.push((q.origin, expr));
        }
    }
    assert!(
        checked.len() >= 20,
        "only {} panel queries in {DASHBOARD}",
        checked.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let check = |queries: &[(String, String)]| {
        let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
        for (i, (_, expr)) in queries.iter().enumerate() {
            rules.push_str(&format!(
                "      - record: dashboard:query_{i}\n        expr: {}\n",
                serde_json::to_string(expr).unwrap()
            ));
        }
        let file = dir.path().join("dashboard-queries.yml");
        std::fs::write(&file, &rules).unwrap();
        promtool(&["check", "rules", &file.to_string_lossy()])
    };
    if !check(&checked).0 {
        // promtool stops at the first bad rule: name each bad query
        for q in &checked {
            let (ok, out) = check(std::slice::from_ref(q));
            if !ok {
                problems.push(format!("{}: promtool rejects {:?}:\n{out}", q.0, q.1));
            }
        }
    }
    assert!(problems.is_empty(), "{DASHBOARD}:\n{}", problems.join("\n"));
}

/// Label values a node can produce, for labels whose whole set is known: from the scrape (series
/// the node exports from the start) and, for `tollgate_requests_total`, from the code.
fn known_values(scrape: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> KnownValues {
    use pingora_cache::{CachePhase, NoCacheReason};
    let mut fixed: BTreeMap<(&str, &str), BTreeSet<String>> = BTreeMap::new();
    let req = "tollgate_requests_total";
    fixed.insert(
        (req, "status_class"),
        (100..=599)
            .map(|s| tollgate::metrics::status_class(s).to_owned())
            .collect(),
    );
    fixed.insert(
        (req, "variant"),
        tollgate::cache::Variant::ALL
            .iter()
            .map(|v| v.as_str().to_owned())
            .collect(),
    );
    let phases = [
        CachePhase::Uninit,
        CachePhase::Disabled(NoCacheReason::NeverEnabled),
        CachePhase::CacheKey,
        CachePhase::Hit,
        CachePhase::Miss,
        CachePhase::Stale,
        CachePhase::StaleUpdating,
        CachePhase::Expired,
        CachePhase::Revalidated,
        CachePhase::RevalidatedNoCache(NoCacheReason::NeverEnabled),
        CachePhase::Bypass,
    ];
    let mut statuses: BTreeSet<String> = phases
        .iter()
        .flat_map(|p| {
            [(false, false), (false, true), (true, false), (true, true)].map(|(s, l)| {
                tollgate::proxy::respond::cache_status(*p, s, l)
                    .0
                    .to_owned()
            })
        })
        .collect();
    // the node's own answers (src/proxy.rs `logging`, src/proxy/finish.rs)
    statuses.insert("edge".into());
    fixed.insert((req, "cache_status"), statuses);
    // labels whose every value the node exports from the start
    let complete = [
        "result", "reason", "kind", "tier", "outcome", "origin", "peer",
    ];
    KnownValues {
        fixed: fixed
            .into_iter()
            .map(|((m, l), v)| ((m.to_owned(), l.to_owned()), v))
            .collect(),
        scrape: scrape.clone(),
        complete: complete.iter().map(|s| s.to_string()).collect(),
    }
}

struct KnownValues {
    fixed: BTreeMap<(String, String), BTreeSet<String>>,
    scrape: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    complete: BTreeSet<String>,
}

impl KnownValues {
    fn of(&self, metric: &str, label: &str) -> Option<BTreeSet<String>> {
        if let Some(v) = self.fixed.get(&(metric.to_owned(), label.to_owned())) {
            return Some(v.clone());
        }
        if self.complete.contains(label) {
            return self.scrape.get(metric)?.get(label).cloned();
        }
        None
    }
}

/// Start a node in a fleet (real NATS) with the shield on (peer `b` is down) and a disk tier,
/// send a few requests, and return its scrape.
async fn fleet_node_scrape() -> String {
    let nats = Nats::start();
    let origin = Origin::start();
    let key = support::tokens::es256("k1");
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("fleet.secret");
    std::fs::write(&secret_file, "a fleet secret of 32 bytes......\n").unwrap();
    let [port, admin_port, peer_port] = free_ports::<3>();
    let peers = format!(
        "peers:\n    - {{ id: a, addr: \"127.0.0.1:{port}\" }}\n    - {{ id: b, addr: \"127.0.0.1:{peer_port}\" }}"
    );
    let disk = dir.path().join("disk");
    let opts = EdgeOptions {
        cache: support::disk_cache("64MiB", &disk, "1GiB", "16MiB"),
        extra_yaml: fleet_yaml(
            &nats,
            "a",
            &[
                "replay_timeout: 2s",
                &format!("secret_file: {}", secret_file.display()),
                "shield: { enabled: true, hash: ketama }",
                &peers,
            ],
        ),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..EdgeOptions::default()
    };
    let edge = Edge::start_on(&origin, &[&key], opts, Some((port, admin_port)));
    let token = support::tokens::subscriber(&key, "reader");
    for (path, tok) in [
        ("/news/a", Tok::None),
        ("/news/a", Tok::None),
        ("/premium/p", Tok::Bearer(&token)),
        ("/nowhere", Tok::None),
    ] {
        get(&edge, path, tok).await;
    }
    edge.wait_metric("tollgate_requests_total", &[], 4.0).await;
    let text = edge.metrics().await;
    drop(edge);
    drop(nats);
    text
}

#[tokio::test]
async fn dashboard_and_alerts_read_only_metrics_and_labels_a_node_exports() {
    let text = fleet_node_scrape().await;
    let samples = support::parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // metric name → label → values seen
    let mut scrape: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for s in &samples {
        let labels = scrape.entry(s.name.clone()).or_default();
        for (k, v) in &s.labels {
            labels.entry(k.clone()).or_default().insert(v.clone());
        }
    }
    // the new gauge says what the config says
    let mib = 1024.0 * 1024.0;
    assert_eq!(
        support::metric(&text, "tollgate_cache_max_bytes", &[("tier", "memory")]),
        64.0 * mib
    );
    assert_eq!(
        support::metric(&text, "tollgate_cache_max_bytes", &[("tier", "disk")]),
        1024.0 * mib
    );
    let known = known_values(&scrape);

    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("dashboard is JSON");
    let mut queries: Vec<Query> = dashboard_queries(&dashboard)
        .into_iter()
        .map(|(q, _)| q)
        .collect();
    queries.extend(alert_queries());

    let mut problems = Vec::new();
    let mut read_metrics = BTreeSet::new();
    for q in &queries {
        let reads = match read_query(&q.expr) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{}: {e}", q.origin));
                continue;
            }
        };
        let has = |metric: &str, label: &str| {
            TARGET_LABELS.contains(&label)
                || scrape
                    .get(metric)
                    .is_some_and(|labels| labels.contains_key(label))
        };
        if reads.selectors.is_empty() {
            problems.push(format!("{}: reads no tollgate_* metric", q.origin));
        }
        let mut all_metrics = Vec::new();
        for (metric, matchers) in &reads.selectors {
            all_metrics.push(metric.clone());
            read_metrics.insert(metric.clone());
            if !scrape.contains_key(metric) {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| metric.strip_suffix(s))
                    .unwrap_or(metric);
                let similar: Vec<&String> = scrape
                    .keys()
                    .filter(|n| n.starts_with(&base[..base.len().min(16)]))
                    .collect();
                problems.push(format!(
                    "{}: {metric} is not exported by a node (fleet, shield, disk tier); \
                     similar names there: {similar:?}",
                    q.origin
                ));
                continue;
            }
            for m in matchers {
                if !has(metric, &m.label) {
                    problems.push(format!(
                        "{}: {metric} has no label {:?} (it has {:?})",
                        q.origin,
                        m.label,
                        scrape[metric].keys().collect::<Vec<_>>()
                    ));
                    continue;
                }
                let Some(values) = known.of(metric, &m.label) else {
                    continue;
                };
                let literal = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                let alternatives: Vec<&str> = if m.op.ends_with('~') {
                    m.value.split('|').collect()
                } else {
                    vec![m.value.as_str()]
                };
                if !alternatives.iter().all(|a| literal(a)) {
                    continue; // a real regular expression or a variable: not checked
                }
                for a in alternatives {
                    if !values.contains(a) {
                        problems.push(format!(
                            "{}: {metric}{{{}{}\"{}\"}}: {a:?} is not a value the node \
                             produces for {} (those are {values:?})",
                            q.origin, m.label, m.op, m.value, m.label
                        ));
                    }
                }
            }
        }
        for (labels, metrics, what) in &reads.on_all {
            for l in labels {
                for metric in metrics {
                    if scrape.contains_key(metric) && !has(metric, l) {
                        problems.push(format!(
                            "{}: {what} uses label {l:?}, which {metric} does not have",
                            q.origin
                        ));
                    }
                }
            }
        }
        for l in &q.printed {
            let all_known = all_metrics.iter().all(|m| scrape.contains_key(m));
            if all_known && !all_metrics.iter().any(|m| has(m, l)) {
                problems.push(format!(
                    "{}: prints label {l:?}, which none of {all_metrics:?} has",
                    q.origin
                ));
            }
        }
    }
    // the dashboard covers what the brief asks for
    for family in [
        "tollgate_requests_total",
        "tollgate_auth_decisions_total",
        "tollgate_request_duration_seconds_bucket",
        "tollgate_upstream_duration_seconds_bucket",
        "tollgate_cache_objects",
        "tollgate_cache_bytes",
        "tollgate_cache_evictions_total",
        "tollgate_cache_purged_total",
        "tollgate_revoked_sessions",
        "tollgate_auto_revocations_total",
        "tollgate_refused_requests_total",
        "tollgate_failed_auth_throttled_addresses",
        "tollgate_keys_loaded",
        "tollgate_fleet_connected",
        "tollgate_fleet_events_applied_total",
        "tollgate_fleet_apply_lag_seconds_bucket",
        "tollgate_fleet_last_applied_sequence",
        "tollgate_fleet_replay_complete",
        "tollgate_shield_requests_total",
    ] {
        if !read_metrics.contains(family) {
            problems.push(format!("nothing in {DASHBOARD} or {ALERTS} reads {family}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) in {DASHBOARD} / {ALERTS}:\n{}\n\nscrape:\n{text}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_promql_reader_finds_what_the_checks_rely_on() {
    let r = read_query(
        r#"histogram_quantile(0.99, sum by (le, origin) (rate(tollgate_upstream_duration_seconds_bucket{instance=~"$instance", result!~"a|b"}[$__rate_interval]))) / on (tier) group_left sum(tollgate_cache_bytes) without (tier)"#,
    )
    .unwrap();
    let sel: Vec<&str> = r.selectors.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        sel,
        [
            "tollgate_upstream_duration_seconds_bucket",
            "tollgate_cache_bytes"
        ]
    );
    let m = &r.selectors[0].1;
    assert_eq!(
        (m[1].label.as_str(), m[1].op.as_str(), m[1].value.as_str()),
        ("result", "!~", "a|b")
    );
    assert_eq!(r.vars, ["instance", "__rate_interval"]);
    let groups: Vec<(Vec<String>, Vec<String>)> = r
        .on_all
        .iter()
        .map(|(l, m, _)| (l.clone(), m.clone()))
        .collect();
    assert_eq!(
        groups,
        [
            (
                vec!["le".to_owned(), "origin".to_owned()],
                vec!["tollgate_upstream_duration_seconds_bucket".to_owned()]
            ),
            (
                vec!["tier".to_owned()],
                vec![
                    "tollgate_upstream_duration_seconds_bucket".to_owned(),
                    "tollgate_cache_bytes".to_owned()
                ]
            ),
            (
                vec!["tier".to_owned()],
                vec!["tollgate_cache_bytes".to_owned()]
            ),
        ]
    );
    assert_eq!(
        printed_labels("{{ $labels.instance }}: {{route}} {{ $value | humanize }}"),
        ["instance", "route"]
    );
}
