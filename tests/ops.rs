//! Running the node like infrastructure: the JSON access log (fields, no token, rotation on
//! SIGUSR1) and graceful shutdown (SIGTERM drains in-flight requests; an idle kept-alive
//! connection gets one more answer, with `Connection: close`, instead of being dropped).
//!
//! A graceful upgrade logs nothing above INFO, and a failed one still logs ERROR. `tollgate -d`
//! exits 0 when its daemon is ready, even if the daemon is ready first. The unit's system call
//! filter allows every call of a full run (`tests/ops/syscalls.sh`, under strace).
//!
//! The wrk-driven graceful-upgrade check and the real-Prometheus scrape are scripts
//! (`tests/upgrade.sh`, `tests/prometheus.sh`): they need `wrk` and `prometheus`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::tokens;
use support::{client, get, raw_get, send, Edge, EdgeOptions, Origin, Tok};

fn signal(pid: u32, sig: rustix::process::Signal) {
    support::send_signal(pid, sig);
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Poll until `files` hold `n` lines in total (5 s at most); return them.
fn wait_lines(files: &[&Path], n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let all: Vec<Value> = files.iter().flat_map(|f| read_lines(f)).collect();
        if all.len() >= n || Instant::now() > deadline {
            return all;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_options(log: &Path) -> EdgeOptions {
    let mut routes = support::default_routes();
    routes.push(r#"{ match: "/vod/*", origin: news, access: token }"#.into());
    EdgeOptions {
        routes,
        token_sources: vec![
            "path".into(),
            "query:token".into(),
            "bearer".into(),
            "cookie:token".into(),
        ],
        extra_yaml: format!(
            "logging: {{ access_log: {} }}\n",
            serde_json::to_string(&log.to_string_lossy()).unwrap()
        ),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..EdgeOptions::default()
    }
}

/// The request tag `n=<i>` of a rotation-test request.
fn tag(line: &Value) -> Option<u64> {
    line["query"]
        .as_str()?
        .split('&')
        .find_map(|p| p.strip_prefix("n="))?
        .parse()
        .ok()
}

#[tokio::test]
async fn access_log_has_one_line_per_request_with_every_field_and_never_a_token() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start_with(&origin, &[&key], log_options(&log));

    let sub = tokens::subscriber(&key, "alice");
    let media = tokens::media(&key, Some("s-42"), &["/vod/"], None, 600);
    let forged = tokens::forged(&key);
    let expired = tokens::expired(&key);
    let path_tok = format!("/s-42.{media}/vod/show/seg1.ts");
    let forged_path = format!("/{forged}/vod/show/seg2.ts");
    let cases: Vec<(String, Tok<'_>, u16)> = vec![
        ("/premium/a".into(), Tok::None, 200),
        ("/premium/a?x=y".into(), Tok::Query(&sub), 200),
        ("/premium/a?x=y".into(), Tok::Bearer(&sub), 200),
        ("/premium/a?x=y".into(), Tok::Cookie(&sub), 200),
        (path_tok, Tok::None, 200),
        (forged_path, Tok::None, 403),
        ("/vod/show/seg3.ts".into(), Tok::Query(&expired), 403),
        ("/nowhere".into(), Tok::None, 404),
        ("/news/a".into(), Tok::None, 200),
        ("/news/a".into(), Tok::None, 200),
    ];
    for (path, tok, want) in &cases {
        let r = get(&edge, path, *tok).await;
        assert_eq!(r.status, *want, "{path} {tok:?}: {r:?}");
    }
    // A target that does not normalize (400), with a token in the query.
    let bad = raw_get(edge.port, &format!("/a%2Fb?n=11&token={sub}"), &[]).unwrap();
    assert_eq!(bad.status, 400);

    let lines = wait_lines(&[&log], 11);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines.len(), 11, "one line per request:\n{text}");
    for secret in [&sub, &media, &forged, &expired] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(
            !text.contains(signature),
            "a token leaked into the log:\n{text}"
        );
    }
    assert!(
        !text.contains("eyJ"),
        "no JWT part may appear in the log:\n{text}"
    );
    assert!(!text.contains(&edge.secret), "the origin secret leaked");

    let keys = [
        "time",
        "client",
        "method",
        "host",
        "path",
        "status",
        "bytes",
        "duration",
        "cache",
        "tier",
        "variant",
        "auth",
        "route",
        "sid",
        "origin_time",
    ];
    for line in &lines {
        for k in keys {
            assert!(line.get(k).is_some(), "field {k} missing in {line}");
        }
        assert_eq!(line["client"], "127.0.0.1");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["host"], format!("127.0.0.1:{}", edge.port));
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
        assert!(line["duration"].as_f64().unwrap() > 0.0, "{line}");
    }
    // Lines of one path and query, in any order (a log line is written after its response).
    let of = |path: &str, query: Option<&str>| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| l["path"] == path && l["query"].as_str() == query)
            .collect()
    };
    let field = |ls: &[&Value], k: &str| -> Vec<String> {
        let mut v: Vec<String> = ls.iter().map(|l| l[k].to_string()).collect();
        v.sort();
        v
    };
    // anonymous reader: the teaser from the origin, stored
    let anon = of("/premium/a", None);
    assert_eq!(anon.len(), 1, "{text}");
    assert_eq!(
        (
            &anon[0]["status"],
            &anon[0]["cache"],
            &anon[0]["variant"],
            &anon[0]["auth"]
        ),
        (
            &200.into(),
            &"miss".into(),
            &"anonymous".into(),
            &"missing".into()
        )
    );
    assert_eq!(anon[0]["route"], "/premium/*");
    assert!(
        anon[0]["origin_time"].as_f64().unwrap() > 0.0,
        "a fill has an origin time"
    );
    assert!(anon[0]["bytes"].as_u64().unwrap() > 0);
    // one subscriber by query (token parameter gone, the rest kept), bearer and cookie: one
    // fill, then two memory hits without an origin time
    let subs = of("/premium/a", Some("x=y"));
    assert_eq!(field(&subs, "variant"), vec!["\"subscriber\""; 3]);
    assert_eq!(field(&subs, "auth"), vec!["\"valid\""; 3]);
    assert_eq!(
        field(&subs, "cache"),
        vec!["\"hit\"", "\"hit\"", "\"miss\""]
    );
    assert_eq!(
        field(&subs, "tier"),
        vec!["\"memory\"", "\"memory\"", "null"]
    );
    for l in subs.iter().filter(|l| l["cache"] == "hit") {
        assert!(l["origin_time"].is_null(), "{l}");
    }
    // path token with a session id: the token segment is not in the path, the sid is logged
    let seg1 = of("/vod/show/seg1.ts", None);
    assert_eq!(seg1.len(), 1, "{text}");
    assert_eq!(
        (&seg1[0]["sid"], &seg1[0]["auth"]),
        (&"s-42".into(), &"valid".into())
    );
    // refused at the edge: the path without the token, the reason, no variant
    let seg2 = of("/vod/show/seg2.ts", None);
    assert_eq!(seg2.len(), 1, "{text}");
    assert_eq!(
        (
            &seg2[0]["status"],
            &seg2[0]["auth"],
            &seg2[0]["variant"],
            &seg2[0]["cache"]
        ),
        (
            &403.into(),
            &"bad_signature".into(),
            &Value::Null,
            &"edge".into()
        )
    );
    let seg3 = of("/vod/show/seg3.ts", None);
    assert_eq!(seg3.len(), 1, "{text}");
    assert_eq!(
        (&seg3[0]["status"], &seg3[0]["auth"]),
        (&403.into(), &"expired".into())
    );
    let nowhere = of("/nowhere", None);
    assert_eq!(
        (&nowhere[0]["status"], &nowhere[0]["route"]),
        (&404.into(), &Value::Null)
    );
    let news = of("/news/a", None);
    assert_eq!(field(&news, "cache"), vec!["\"hit\"", "\"miss\""]);
    assert_eq!(field(&news, "auth"), vec!["null", "null"]);
    assert_eq!(field(&news, "variant"), vec!["\"public\""; 2]);
    let bad = of("/a%2Fb", Some("n=11"));
    assert_eq!(bad.len(), 1, "{text}");
    assert_eq!(bad[0]["status"], 400);
    assert_eq!(
        edge.metric("tollgate_access_log_dropped_total", &[]).await,
        0.0
    );
}

#[tokio::test]
async fn sigusr1_after_mv_starts_a_new_file_and_loses_no_line() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let rotated: PathBuf = logs.path().join("access.log.1");
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start_with(&origin, &[&key], log_options(&log));

    // Requests flow without pause while the file is moved and the edge told to reopen.
    const N: u64 = 300;
    let url = edge.url("/news/rotate");
    let traffic = tokio::spawn(async move {
        let c = support::pooled_client();
        for n in 0..N {
            let r = send(c.get(format!("{url}?n={n}"))).await;
            assert_eq!(r.status, 200);
        }
    });
    while read_lines(&log).len() < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    std::fs::rename(&log, &rotated).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    signal(edge.pid(), rustix::process::Signal::USR1);
    traffic.await.unwrap();

    let lines = wait_lines(&[&rotated, &log], N as usize);
    let (old, new) = (read_lines(&rotated).len(), read_lines(&log).len());
    assert!(old >= 50 && new > 0, "old file {old} lines, new file {new}");
    let mut tags: Vec<u64> = lines.iter().map(|l| tag(l).unwrap()).collect();
    tags.sort_unstable();
    assert_eq!(
        tags,
        (0..N).collect::<Vec<_>>(),
        "every request exactly once"
    );
    // and the process is still the same, healthy one
    edge.assert_running();
    assert_eq!(get(&edge, "/news/after", Tok::None).await.status, 200);
}

/// Read one HTTP/1.1 response with a `Content-Length` body from a kept-alive connection.
fn read_response(s: &mut TcpStream) -> (u16, Vec<(String, String)>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("read response head");
        assert_eq!(n, 1, "connection closed before a response: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("read body");
    (status, headers)
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_answers_idle_keepalive_once_more() {
    let origin = Origin::start();
    let mut opts = EdgeOptions {
        grace_period_seconds: Some(4),
        graceful_shutdown_timeout_seconds: Some(1),
        ..EdgeOptions::default()
    };
    opts.routes
        .push(r#"{ match: "/slow/*", origin: news, access: public }"#.into());
    let edge = Edge::start_with(&origin, &[], opts);

    // A kept-alive connection, idle between two requests when SIGTERM arrives.
    let mut idle = TcpStream::connect(("127.0.0.1", edge.port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let req = format!(
        "GET /news/k HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        edge.port
    );
    idle.write_all(req.as_bytes()).unwrap();
    assert_eq!(read_response(&mut idle).0, 200);

    // Slow requests in flight: the origin takes 2 s for each.
    origin.set_delay(Duration::from_secs(2));
    const SLOW: usize = 6;
    let mut inflight = Vec::new();
    for i in 0..SLOW {
        let url = edge.url(&format!("/slow/{i}"));
        inflight.push(tokio::spawn(async move {
            let r = send(client().get(url)).await;
            (r.status, r.body)
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.total() < 1 + SLOW {
        assert!(
            Instant::now() < deadline,
            "slow requests never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = Instant::now();
    signal(edge.pid(), rustix::process::Signal::TERM);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The idle connection gets its next request answered, and is told to close.
    idle.write_all(req.as_bytes()).unwrap();
    let (status, headers) = read_response(&mut idle);
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close")),
        "the last answer on a draining connection says Connection: close: {headers:?}"
    );

    for (i, task) in inflight.into_iter().enumerate() {
        let (status, body) = task.await.unwrap();
        assert_eq!(
            status, 200,
            "in-flight request {i} failed during the drain: {body}"
        );
        assert!(body.contains(&format!("/slow/{i}")), "request {i}: {body}");
    }
    // The process exits once the grace period (4 s) is over, and cleanly.
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = edge.exit_status() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the edge did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    // measured when the exit was seen: the grace period (4 s), then at most the shutdown
    // timeout (1 s) and the polling above
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(7),
        "exited {took:?} after SIGTERM; the grace period is 4 s (+1 s shutdown timeout)"
    );
}

#[tokio::test]
async fn every_spec_metric_has_help_and_type_and_durations_resolve_sub_millisecond() {
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[]);
    for path in ["/news/m", "/news/m", "/nowhere"] {
        get(&edge, path, Tok::None).await;
    }
    edge.wait_metric("tollgate_requests_total", &[], 3.0).await;
    let text = edge.metrics().await;
    support::parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // SPEC §7, plus the access log's own counter.
    let families = [
        ("tollgate_requests_total", "counter"),
        ("tollgate_auth_decisions_total", "counter"),
        ("tollgate_request_duration_seconds", "histogram"),
        ("tollgate_upstream_duration_seconds", "histogram"),
        ("tollgate_cache_objects", "gauge"),
        ("tollgate_cache_bytes", "gauge"),
        ("tollgate_cache_evictions_total", "counter"),
        ("tollgate_keys_loaded", "gauge"),
        ("tollgate_revoked_sessions", "gauge"),
        ("tollgate_access_log_dropped_total", "counter"),
    ];
    for (name, ty) in families {
        let help = format!("# HELP {name} ");
        let help_line = text.lines().find(|l| l.starts_with(&help));
        assert!(
            help_line.is_some_and(|l| l.len() > help.len() + 10),
            "{name}: no help text\n{text}"
        );
        let type_line = format!("# TYPE {name} {ty}");
        assert!(text.lines().any(|l| l == type_line), "{type_line} missing");
    }
    for name in [
        "tollgate_request_duration_seconds",
        "tollgate_upstream_duration_seconds",
    ] {
        let les: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.parse().ok())
            .collect();
        let sub_ms = les.iter().filter(|&&le| le < 0.001).count();
        assert!(
            les.contains(&0.00005) && sub_ms >= 4,
            "{name}: buckets {les:?} do not resolve sub-millisecond times"
        );
        assert!(
            les.contains(&10.0),
            "{name}: buckets {les:?} stop before 10 s"
        );
    }
}

/// The metric reader the tests rely on refuses what does not exist: a misspelt metric or label
/// name panics instead of reading as 0 (which would make `== 0.0` checks pass vacuously).
#[test]
fn the_metric_reader_refuses_unknown_names() {
    let text = "# HELP tollgate_x_total An example.\n# TYPE tollgate_x_total counter\n\
                tollgate_x_total{result=\"valid\"} 3\n\
                # HELP tollgate_empty_total Declared, no series yet.\n\
                # TYPE tollgate_empty_total counter\n";
    assert_eq!(
        support::metric(text, "tollgate_x_total", &[("result", "valid")]),
        3.0
    );
    assert_eq!(
        support::metric(text, "tollgate_x_total", &[("result", "missing")]),
        0.0
    );
    assert_eq!(support::metric(text, "tollgate_empty_total", &[]), 0.0);
    for (name, labels) in [
        ("tollgate_y_total", vec![]),
        ("tollgate_x_total", vec![("reslt", "valid")]),
    ] {
        let refused = std::panic::catch_unwind(|| support::metric(text, name, &labels));
        assert!(refused.is_err(), "{name} {labels:?} read as a value");
    }
}

/// Requests the connection loop refuses for their framing, or whose head never completes, are
/// logged like every other request: one line each, with the method and token-free target as far
/// as they parse, status, `cache: "edge"`, and a request-duration sample.
#[tokio::test]
async fn refused_http1_requests_are_logged_and_timed_too() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let origin = Origin::start();
    let mut opts = log_options(&log);
    opts.extra_yaml.push_str("limits: { header_timeout: 1s }\n");
    let edge = Edge::start_with(&origin, &[], opts);
    let port = edge.port;
    let durations = edge
        .metric("tollgate_request_duration_seconds_count", &[])
        .await;
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let exchange = |raw: &[u8]| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(raw).unwrap();
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            String::from_utf8_lossy(&answer).into_owned()
        };
        // a body on a GET, with a token in the target
        let a = exchange(
            b"GET /eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln/news/x?token=secret&a=1 HTTP/1.1\r\n\
              Host: Example.test\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert!(a.starts_with("HTTP/1.1 400"), "{a}");
        // a head that never completes
        let t = exchange(b"GET /news/slow HTTP/1.1\r\nHost: example.test\r\n");
        assert!(t.starts_with("HTTP/1.1 408"), "{t}");
    })
    .await
    .unwrap();
    let lines = wait_lines(&[&log], 2);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines.len(), 2, "one line per refused request:\n{text}");
    let (body, slow) = (&lines[0], &lines[1]);
    assert_eq!(body["status"], 400, "{body}");
    assert_eq!(body["method"], "GET", "{body}");
    assert_eq!(body["host"], "example.test", "{body}");
    assert_eq!(
        body["path"], "/news/x",
        "the path token is not logged: {body}"
    );
    assert_eq!(
        body["query"], "a=1",
        "the query token is not logged: {body}"
    );
    assert_eq!(body["cache"], "edge", "{body}");
    assert!(!text.contains("secret") && !text.contains("c2ln"), "{text}");
    assert_eq!(slow["status"], 408, "{slow}");
    assert_eq!(slow["path"], "/news/slow", "{slow}");
    assert!(
        slow["duration"].as_f64().unwrap_or(0.0) >= 0.9,
        "a timed-out head took its header timeout: {slow}"
    );
    let after = edge
        .wait_metric(
            "tollgate_request_duration_seconds_count",
            &[],
            durations + 2.0,
        )
        .await;
    assert_eq!(after, durations + 2.0, "both refusals timed");
}

/// The lines of an env_logger log (`[2026-05-04T09:12:03Z ERROR module] message`) at WARN or
/// ERROR.
fn warnings_and_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.strip_prefix('[')
                .and_then(|rest| rest.split_whitespace().nth(1))
                .is_some_and(|level| level == "ERROR" || level == "WARN")
        })
        .collect()
}

/// A `tollgate -u` process (the new side of a graceful upgrade), killed on drop.
struct Upgrader {
    child: Child,
    log: PathBuf,
}

impl Upgrader {
    /// `tollgate -u -c <the edge's config>`, its stderr in `log`, without `RUST_LOG`: as under
    /// the unit, the config's `logging.level` applies (default `info`).
    fn start(edge: &Edge, log: PathBuf) -> Upgrader {
        let _ = std::fs::remove_file(edge.dir().join("upgrade.sock"));
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("-u")
            .arg("-c")
            .arg(&edge.config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn tollgate -u");
        Upgrader { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (up to `within`) for the process to exit.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tollgate -u did not exit within {within:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Upgrader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll (every 20 ms, up to `within`) until `ok()`; false if it never held.
fn eventually(within: Duration, ok: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !ok() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A graceful upgrade as `systemctl reload` does it (a new process with `-u`, then SIGQUIT to
/// the old one once the new one waits for the listeners) logs nothing above INFO, in either
/// process: an operator's alerting fires on ERROR, and a reload is routine. Pingora logs the
/// new process's first, always empty, poll of the upgrade socket at ERROR ("No incoming socket
/// transfer"); `tollgate::logger` logs it at INFO.
#[tokio::test]
async fn a_graceful_upgrade_logs_nothing_above_info() {
    let cache_dir = tempfile::tempdir().unwrap();
    let origin = Origin::start();
    let edge = Edge::start_with(
        &origin,
        &[],
        support::disk_options("64MiB", cache_dir.path(), "1GiB", "16MiB"),
    );
    assert_eq!(get(&edge, "/news/before", Tok::None).await.status, 200);
    let old = edge.pid();

    let mut new = Upgrader::start(&edge, edge.dir().join("upgrade.log"));
    // The new process is up and waits on the upgrade socket for the old one's listeners; the
    // unit's `kill -QUIT $MAINPID` comes after that (when `tollgate -d -u` has returned).
    let sock = edge.dir().join("upgrade.sock");
    assert!(
        eventually(Duration::from_secs(20), || sock.exists()),
        "the new process never bound {}; its log:\n{}",
        sock.display(),
        new.log()
    );
    std::thread::sleep(Duration::from_millis(200));
    signal(old, rustix::process::Signal::QUIT);

    // The old process hands over, drains (grace 1 s) and exits cleanly; the new one serves.
    let status = loop {
        if let Some(st) = edge.exit_status() {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "the old process exited with {status}");
    let r = get(&edge, "/news/before", Tok::None).await;
    assert_eq!(r.status, 200, "after the upgrade: {r:?}\n{}", new.log());
    assert_eq!(
        r.headers.get("cache-status").and_then(|v| v.to_str().ok()),
        Some("tollgate; hit; detail=disk"),
        "the new process answers from the shared disk tier"
    );
    support::send_signal(new.child.id(), rustix::process::Signal::TERM);
    assert!(new.wait_exit(Duration::from_secs(20)).success());

    let new_log = new.log();
    assert!(
        new_log.contains("Bootstrap done") && new_log.contains("No incoming socket transfer"),
        "the new process logs at INFO, its wait for the listeners included:\n{new_log}"
    );
    let bad = warnings_and_errors(&new_log);
    assert!(
        bad.is_empty(),
        "a normal upgrade logged above INFO in the new process:\n{}",
        bad.join("\n")
    );
    let old_log = edge.stderr();
    let bad = warnings_and_errors(&old_log);
    assert!(
        bad.is_empty(),
        "a normal upgrade logged above INFO in the old process:\n{}",
        bad.join("\n")
    );
}

/// A real failure still logs ERROR: a new process whose old process never hands the listeners
/// over gives up after Pingora's retries (about 6 s) with ERROR lines and exit status 1; its
/// retries are there at INFO; the old process goes on serving.
#[tokio::test]
async fn a_failed_upgrade_still_logs_errors() {
    let origin = Origin::start();
    let edge = Edge::start_with(&origin, &[], EdgeOptions::default());
    let mut new = Upgrader::start(&edge, edge.dir().join("upgrade.log"));
    // no SIGQUIT: the old process never sends its listeners
    let status = new.wait_exit(Duration::from_secs(30));
    let log = new.log();
    assert!(
        !status.success(),
        "a failed upgrade exited with {status}:\n{log}"
    );
    let errors: Vec<&str> = warnings_and_errors(&log)
        .into_iter()
        .filter(|l| l.contains(" ERROR "))
        .collect();
    assert!(
        errors
            .iter()
            .any(|l| l.contains("Giving up reading socket"))
            && errors.iter().any(|l| l.contains("Bootstrap failed")),
        "the failure is logged at ERROR:\n{log}"
    );
    let retries = log
        .lines()
        .filter(|l| l.contains(" INFO ") && l.contains("No incoming socket transfer"))
        .count();
    assert!(retries >= 5, "each retry logged at INFO:\n{log}");
    edge.assert_running();
    assert_eq!(get(&edge, "/news/still", Tok::None).await.status, 200);
}

/// `tests/ops/syscalls.sh`: a full run (start, wrk over the memory and disk tiers and the
/// paywall, purge, key reload, log rotation, a graceful upgrade, SIGTERM) under `strace -f`,
/// every system call checked against `systemd/tollgate.service`'s SystemCallFilter= (and the
/// socket families against RestrictAddressFamilies=). Needs strace, wrk, systemd-analyze,
/// openssl and curl: `.ci/deps` installs them; without them this fails.
#[test]
fn the_unit_allows_every_syscall_the_binary_makes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let missing: Vec<&str> = [
        "strace",
        "wrk",
        "systemd-analyze",
        "openssl",
        "curl",
        "python3",
    ]
    .into_iter()
    .filter(|tool| {
        !Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .collect();
    assert!(
        missing.is_empty(),
        "{missing:?} not installed: run .ci/deps (Debian packages strace, wrk, systemd, openssl, \
         curl)"
    );
    let out = Command::new("timeout")
        .arg("180")
        .arg("bash")
        .arg(root.join("tests/ops/syscalls.sh"))
        .arg(root.join("systemd/tollgate.service"))
        .env("TOLLGATE_BIN", env!("CARGO_BIN_EXE_tollgate"))
        .stdin(Stdio::null())
        .output()
        .expect("run tests/ops/syscalls.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "tests/ops/syscalls.sh failed ({}):\n{text}",
        out.status
    );
    assert!(text.contains("\nPASS"), "{text}");
}

/// `tollgate -d` (the unit's ExecStart= and ExecReload=) exits 0 once its daemon is ready, even
/// when the daemon signals readiness before the launching process listens for it. strace holds
/// the launcher in its `fork` for 3 s (`-e inject=clone:delay_exit=`), so the daemon, which is
/// not held, is ready first: Pingora's launcher used to die of that SIGUSR1 (status 138), which
/// systemd takes for a failed start or reload. Needs strace (`.ci/deps`).
#[test]
fn the_daemon_launcher_exits_0_when_the_daemon_is_ready_first() {
    assert!(
        Command::new("sh")
            .args(["-c", "command -v strace"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "strace is not installed: run .ci/deps"
    );
    let dir = tempfile::tempdir().unwrap();
    let [port, admin] = support::free_ports::<2>();
    let pid_file = dir.path().join("tollgate.pid");
    let conf = dir.path().join("tollgate.yaml");
    std::fs::write(
        &conf,
        format!(
            "pingora: {{ threads: 1, pid_file: {pid}, upgrade_sock: {sock}, error_log: {log}, \
             grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }}\n\
             listeners: [ {{ addr: \"127.0.0.1:{port}\" }} ]\n\
             admin: {{ addr: \"127.0.0.1:{admin}\" }}\n\
             origins: {{ o: {{ url: \"http://127.0.0.1:9\" }} }}\n\
             routes: [ {{ match: \"/*\", origin: o, access: public }} ]\n",
            pid = pid_file.display(),
            sock = dir.path().join("upgrade.sock").display(),
            log = dir.path().join("error.log").display(),
        ),
    )
    .unwrap();
    struct Cleanup(Child, PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(pid) = std::fs::read_to_string(&self.1)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(pid as i32).unwrap(),
                    rustix::process::Signal::KILL,
                );
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let launcher = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=clone"])
        .args(["-e", "inject=clone:delay_exit=3000000", "--"])
        .arg(env!("CARGO_BIN_EXE_tollgate"))
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("launcher.log")).unwrap())
        .spawn()
        .expect("spawn strace");
    let mut guard = Cleanup(launcher, pid_file.clone());
    let up = eventually(Duration::from_secs(20), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|p| !p.trim().is_empty())
            && TcpStream::connect(("127.0.0.1", admin)).is_ok()
    });
    let launcher_log = || std::fs::read_to_string(dir.path().join("launcher.log")).unwrap();
    assert!(
        up,
        "the daemon never came up; launcher:\n{}",
        launcher_log()
    );
    // strace exits with the launcher's status once every process it follows is gone
    let daemon: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3)); // the held fork returns
    signal(daemon, rustix::process::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "tollgate -d exited with {status} (138 = killed by SIGUSR1: the daemon's readiness \
         signal came before the launcher listened); launcher:\n{}\nerror log:\n{}",
        launcher_log(),
        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
    );
}
