//! What is compared: counters, access-log records, answers; and the run that sends every case
//! to both edges and collects every difference.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::rig::{send, Case, Pair, Proto, Side, Via, VIAS};
use crate::support::{self, Edge, Origin, SUBSCRIBER_MARK};

/// The hit path's answers.
pub const SERVED: &str = "tollgate_fast_path_total";
/// Sampled once per answered request, last of its counters (proxy `logging` and hit path alike).
pub const DURATION_COUNT: &str = "tollgate_request_duration_seconds_count";
/// Every answered request, whichever way it was answered.
pub const REQUESTS: &str = "tollgate_requests_total";
/// The counter families whose increments must match, request by request.
pub const COMPARED: [&str; 5] = [
    REQUESTS,
    "tollgate_auth_decisions_total",
    "tollgate_cache_lookups_total",
    "tollgate_refused_requests_total",
    DURATION_COUNT,
];

// ---------------------------------------------------------------------------------------------
// Counters and access-log records
// ---------------------------------------------------------------------------------------------

/// The compared counter series of a `/metrics` text, keyed `name{labels}`.
pub fn compared_series(metrics: &str) -> BTreeMap<String, f64> {
    let samples = support::parse_metrics(metrics).expect("metrics parse");
    samples
        .into_iter()
        .filter(|s| COMPARED.contains(&s.name.as_str()))
        .map(|s| {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            (format!("{}{{{}}}", s.name, labels.join(",")), s.value)
        })
        .collect()
}

/// What changed between two [`compared_series`] (series that moved, by how much).
pub fn increments(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<String> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d != 0.0).then(|| format!("{k} +{d}"))
        })
        .collect()
}

pub fn served(metrics: &str) -> f64 {
    support::metric(metrics, SERVED, &[("outcome", "served")])
}

/// The `/metrics` text once `name` (summed over its series) reaches `want` on `edge`, read again
/// after that so that every family is seen complete; `None` after 5 s. With
/// [`DURATION_COUNT`]: the last counter an answer bumps (but see [`Case::logged`]).
pub async fn metrics_after(edge: &Edge, name: &str, want: f64) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = edge.metrics().await;
        if support::metric(&m, name, &[]) >= want {
            return Some(edge.metrics().await);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The access log's lines once it holds `n` (5 s at most).
pub async fn log_after(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = log_lines(path);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A record without `time` and `duration`, its host's port (each edge has its own) written
/// `PORT`.
pub fn comparable_record(mut record: Value, side: &Side) -> Value {
    let obj = record.as_object_mut().expect("a record is an object");
    obj.remove("time");
    obj.remove("duration");
    if let Some(Value::String(host)) = obj.get_mut("host") {
        for port in side.ports() {
            if let Some(name) = host.strip_suffix(&format!(":{port}")) {
                *host = format!("{name}:PORT");
                break;
            }
        }
    }
    record
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// Where each side stands: counters, samples and log lines so far.
pub struct Seen {
    pub series: BTreeMap<String, f64>,
    pub requests: f64,
    pub durations: f64,
    pub lines: usize,
    pub served: f64,
}

pub async fn seen(side: &Side) -> Seen {
    let m = side.edge.metrics().await;
    Seen {
        series: compared_series(&m),
        requests: support::metric(&m, REQUESTS, &[]),
        durations: support::metric(&m, DURATION_COUNT, &[]),
        lines: log_lines(&side.log).len(),
        served: served(&m),
    }
}

/// The requests that fill the cache: each must be a miss on both edges, on the plain listener
/// and on the TLS one (the host, in the cache key, differs; HTTP/2 names the TLS one's).
pub async fn warm(origin: &Origin, pair: &Pair, fills: &[Case]) {
    for via in [Via::fresh(Proto::H1), Via::fresh(Proto::H1Tls)] {
        let client = via.client(&pair.ca);
        for case in fills {
            for side in [&pair.on, &pair.off] {
                let a = send(&client, side, via, case).await;
                assert_eq!(a.status, 200, "warm-up {}: {}", case.name(via), a.body);
                assert!(
                    a.header("cache-status").contains("fwd=miss"),
                    "warm-up {} is a miss: {:?}",
                    case.name(via),
                    a.headers
                );
            }
        }
    }
    let objects = (2 * fills.len()) as f64;
    for side in [&pair.on, &pair.off] {
        let (held, ok) = side
            .edge
            .poll_metric(
                "tollgate_cache_objects",
                &[("tier", "memory")],
                Duration::from_secs(5),
                |v| v >= objects,
            )
            .await;
        assert!(ok, "only {held} of {objects} warm-up objects stored");
        // every warm-up request counted and logged, so that none is taken for a case's
        assert!(
            metrics_after(&side.edge, DURATION_COUNT, objects)
                .await
                .is_some(),
            "warm-up requests never all sampled"
        );
        let lines = log_after(&side.log, 2 * fills.len()).await.len();
        assert_eq!(lines, 2 * fills.len(), "warm-up access-log lines");
    }
    assert_eq!(origin.total(), 2 * 2 * fills.len(), "one fill per object");
}

/// Run every case over every protocol against both edges; print the hit path's share per
/// (mode, protocol); panic with every difference found.
pub async fn run(origin: &Origin, pair: &Pair, cases: &[Case]) {
    let filled = origin.total();
    let mut failures: Vec<String> = Vec::new();
    // (mode, protocol) → (served by the hit path, requests)
    let mut table: BTreeMap<(&str, Via), (f64, usize)> = BTreeMap::new();
    let mut modes: Vec<&str> = Vec::new();
    let (mut on_seen, mut off_seen) = (seen(&pair.on).await, seen(&pair.off).await);
    // the connections (client ports) each edge saw, per way of sending
    let mut connections: BTreeMap<Via, [BTreeSet<Option<u16>>; 2]> = BTreeMap::new();
    for via in VIAS {
        let client = via.client(&pair.ca);
        let proto = via.proto;
        for case in cases {
            let name = case.name(via);
            let mut fail = |what: String| failures.push(format!("[{name}] {what}"));
            let on = send(&client, &pair.on, via, case).await;
            let off = send(&client, &pair.off, via, case).await;
            let seen_ports = connections.entry(via).or_default();
            seen_ports[0].insert(on.local_port);
            seen_ports[1].insert(off.local_port);

            // The test's own premises.
            for (side, a) in [("on", &on), ("off", &off)] {
                if a.version != proto.version() {
                    fail(format!("{side}: answered over {:?}", a.version));
                }
                if a.status != case.want {
                    fail(format!(
                        "{side}: status {} where the case expects {}: {}",
                        a.status, case.want, a.body
                    ));
                }
                if a.status == 200 && a.header("cache-status") != "tollgate; hit" {
                    fail(format!(
                        "{side}: not a hit: cache-status {:?}",
                        a.header("cache-status")
                    ));
                }
                // The security property: subscriber content only to an entitled credential.
                let got_mark = a.body.contains(SUBSCRIBER_MARK);
                if got_mark && !case.subscriber {
                    fail(format!(
                        "{side}: SUBSCRIBER CONTENT TO A REFUSED OR NON-SUBSCRIBER CREDENTIAL: {}",
                        a.body
                    ));
                }
                if !case.head && case.subscriber && !got_mark {
                    fail(format!("{side}: no subscriber content: {}", a.body));
                }
            }
            // The two answers.
            if on.status != off.status {
                fail(format!("status: on {} / off {}", on.status, off.status));
            }
            if on.body != off.body {
                fail(format!("body: on {:?} / off {:?}", on.body, off.body));
            }
            let (oh, fh) = (on.comparable_headers(), off.comparable_headers());
            if oh != fh {
                fail(format!("headers:\n  on  {oh:?}\n  off {fh:?}"));
            }
            for (side, a) in [("on", &on), ("off", &off)] {
                if !a.headers.contains_key("date") {
                    fail(format!("{side}: no Date"));
                }
            }
            if origin.total() != filled {
                fail(format!(
                    "the origin was asked: {} requests since the warm-up",
                    origin.total() - filled
                ));
            }

            // What each edge counted and logged for it.
            let mut records = Vec::new();
            let mut moved = Vec::new();
            for (label, side, before) in [
                ("on", &pair.on, &mut on_seen),
                ("off", &pair.off, &mut off_seen),
            ] {
                let logged = case.logged(proto);
                let settled = if logged {
                    metrics_after(&side.edge, DURATION_COUNT, before.durations + 1.0).await
                } else {
                    // counted before its answer was written: nothing more will come
                    metrics_after(&side.edge, REQUESTS, before.requests + 1.0).await
                };
                let Some(m) = settled else {
                    fail(format!("{label}: not counted within 5 s"));
                    *before = seen(side).await;
                    moved.push(Vec::new());
                    records.push(Value::Null);
                    continue;
                };
                let series = compared_series(&m);
                moved.push(increments(&before.series, &series));
                let (requests, durations) = (
                    support::metric(&m, REQUESTS, &[]),
                    support::metric(&m, DURATION_COUNT, &[]),
                );
                let recorded = u8::from(logged);
                if requests != before.requests + 1.0 {
                    fail(format!(
                        "{label}: counted {} times in {REQUESTS}",
                        requests - before.requests
                    ));
                }
                if durations != before.durations + f64::from(recorded) {
                    fail(format!(
                        "{label}: {} request-duration samples, expected {recorded}",
                        durations - before.durations
                    ));
                }
                let lines = if logged {
                    log_after(&side.log, before.lines + 1).await
                } else {
                    log_lines(&side.log)
                };
                if lines.len() != before.lines + usize::from(recorded) {
                    fail(format!(
                        "{label}: {} access-log lines, expected {recorded}",
                        lines.len() - before.lines
                    ));
                }
                records.push(
                    lines
                        .get(before.lines)
                        .cloned()
                        .map_or(Value::Null, |r| comparable_record(r, side)),
                );
                let now_served = served(&m);
                let delta = now_served - before.served;
                if label == "on" {
                    let row = table.entry((case.mode, via)).or_default();
                    row.0 += delta;
                    row.1 += 1;
                    // one hit path for every mode and protocol: each hit (every 200 here) is
                    // answered by it, and nothing else is
                    let want = if on.status == 200 { 1.0 } else { 0.0 };
                    if delta != want {
                        fail(format!(
                            "on: the hit path answered {delta} times for a {} (expected {want})",
                            on.status
                        ));
                    }
                } else if delta != 0.0 {
                    fail(format!("off: the hit path answered ({SERVED} +{delta})"));
                }
                *before = Seen {
                    series,
                    requests,
                    durations,
                    lines: lines.len(),
                    served: now_served,
                };
            }
            if moved[0] != moved[1] {
                fail(format!(
                    "counters:\n  on  {:?}\n  off {:?}",
                    moved[0], moved[1]
                ));
            }
            if records[0] != records[1] {
                fail(format!(
                    "access-log record:\n  on  {}\n  off {}",
                    records[0], records[1]
                ));
            }
            if !modes.contains(&case.mode) {
                modes.push(case.mode);
            }
        }
    }

    // The test's own premise: a fresh connection per request, or one kept for them all (a
    // refusal that closes it, e.g. for framing, opens another).
    for (via, sides) in &connections {
        for (label, ports) in ["on", "off"].iter().zip(sides) {
            let n = ports.len();
            let ok = if via.kept {
                n <= 1 + cases.iter().filter(|c| c.body.is_some()).count()
            } else {
                n == cases.len()
            };
            if !ok || ports.contains(&None) {
                failures.push(format!(
                    "[{}] {label}: {} requests went over {n} connections {ports:?}",
                    via.name(),
                    cases.len()
                ));
            }
        }
    }
    let used: Vec<String> = connections
        .iter()
        .map(|(via, [on, off])| format!("{} {}/{}", via.name(), on.len(), off.len()))
        .collect();
    println!("\nconnections used (on/off): {}", used.join(", "));

    // The whole run, warm-up included: the compared families as they stand.
    let (on_all, off_all) = (
        compared_series(&pair.on.edge.metrics().await),
        compared_series(&pair.off.edge.metrics().await),
    );
    if on_all != off_all {
        failures.push(format!(
            "[totals] counters differ:\n  on  {on_all:?}\n  off {off_all:?}"
        ));
    }
    let off_served = served(&pair.off.edge.metrics().await);
    if off_served != 0.0 {
        failures.push(format!(
            "[totals] the hit path answered {off_served} requests with fast_hits: false"
        ));
    }

    println!(
        "\nrequests the hit path answered (fast_hits: true), of the requests sent \
         (\"kept\": one connection for all the cases):"
    );
    let mut head = format!("{:<13}", "mode");
    for via in VIAS {
        head.push_str(&format!("{:>13}", via.name()));
    }
    println!("{head}");
    for mode in &modes {
        let mut row = format!("{mode:<13}");
        for via in VIAS {
            let (s, n) = table.get(&(*mode, via)).copied().unwrap_or_default();
            row.push_str(&format!("{:>13}", format!("{s}/{n}")));
        }
        println!("{row}");
    }
    println!();
    assert!(
        failures.is_empty(),
        "{} differences between the hit path on and off:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
