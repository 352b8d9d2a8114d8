//! The access log: one JSON line per request, written off the request path.
//!
//! The proxy's `logging` phase builds a [`Record`] (fields moved out of the request context, no
//! formatting) and hands it to [`AccessLog::log`], a `try_send` into a bounded channel. A
//! dedicated writer thread formats each record as one JSON line and appends batches of whole
//! lines, writing whenever the channel runs empty (so a quiet node's log is current) or a batch
//! reaches [`BATCH_BYTES`]. A full channel drops the record and counts it in
//! `tollgate_access_log_dropped_total{reason="queue_full"}` rather than making a worker wait.
//!
//! Rotation: `mv access.log access.log.1 && kill -USR1 <pid>`. On `SIGUSR1` the writer writes out
//! its batch and reopens the path; lines before the reopen land in the moved file, lines after
//! it in the new one, none is lost (`conf/tollgate.logrotate`). Every `write(2)` holds whole lines
//! and the file is opened `O_APPEND`, so the old and new process of a graceful upgrade can share
//! one file without tearing lines.
//!
//! Tokens never reach a record: the path and query are the token-stripped forms the cache and
//! origin see, and no header is logged.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::IntCounter;
use serde::Serialize;

use crate::auth::Claims;
use crate::config::{AccessLogTarget, Config};
use crate::metrics::Metrics;

/// Records the channel holds before new ones are dropped (a few MiB at most).
pub const QUEUE_RECORDS: usize = 16 * 1024;
/// A batch is written once it holds this many bytes, even if more records are waiting.
pub const BATCH_BYTES: usize = 64 * 1024;
/// How often an idle writer checks for a pending reopen.
const REOPEN_POLL: Duration = Duration::from_millis(100);

/// One request, as the proxy saw it. Formatting happens on the writer thread.
#[derive(Debug)]
pub struct Record {
    /// When the response ended.
    pub time: SystemTime,
    /// The client's address.
    pub client: Option<IpAddr>,
    /// Request method.
    pub method: http::Method,
    /// `Host`, lower-cased.
    pub host: String,
    /// The normalized path, without a path token.
    pub path: String,
    /// The query without token parameters.
    pub query: String,
    /// Status sent (0: none, the client went away first).
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Time from request start to the end of the response.
    pub duration: Duration,
    /// The `tollgate_requests_total{cache_status}` label.
    pub cache: &'static str,
    /// `memory` or `disk` for hits.
    pub tier: Option<&'static str>,
    /// The entitlement variant, for admitted requests.
    pub variant: Option<&'static str>,
    /// The `tollgate_auth_decisions_total{result}` label, on routes that check tokens.
    pub auth: Option<&'static str>,
    /// Index of the matched route in the config.
    pub route: Option<usize>,
    /// Verified claims (the session id is logged), if a token verified.
    pub claims: Option<Arc<Claims>>,
    /// Time from choosing the origin to its response header, on a fill.
    pub origin_time: Option<Duration>,
}

/// The JSON line. Field names are part of the log format operators parse: extend, don't rename.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    client: Option<IpAddr>,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    query: &'a str,
    status: u16,
    bytes: u64,
    /// Seconds.
    duration: f64,
    cache: &'a str,
    tier: Option<&'a str>,
    variant: Option<&'a str>,
    auth: Option<&'a str>,
    route: Option<&'a str>,
    sid: Option<&'a str>,
    /// Seconds.
    origin_time: Option<f64>,
}

impl Record {
    /// Append this record as one JSON line to `out`.
    pub fn write_json(&self, routes: &[String], out: &mut Vec<u8>) {
        let time = chrono::DateTime::<chrono::Utc>::from(self.time)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let line = Line {
            time,
            client: self.client,
            method: self.method.as_str(),
            host: &self.host,
            path: &self.path,
            query: &self.query,
            status: self.status,
            bytes: self.bytes,
            duration: self.duration.as_secs_f64(),
            cache: self.cache,
            tier: self.tier,
            variant: self.variant,
            auth: self.auth,
            route: self.route.and_then(|i| routes.get(i)).map(String::as_str),
            sid: self.claims.as_ref().and_then(|c| c.sid.as_deref()),
            origin_time: self.origin_time.map(|d| d.as_secs_f64()),
        };
        // Serializing plain strings and numbers into a Vec cannot fail.
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            out.push(b'\n');
        }
    }
}

/// The proxy's handle: queue a record without waiting.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<Record>,
    dropped_full: IntCounter,
}

impl AccessLog {
    /// Queue `record` for the writer; if the queue is full, drop it and count it.
    pub fn log(&self, record: Record) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(record)
        {
            self.dropped_full.inc();
        }
    }
}

/// Where lines go.
enum Sink {
    Stdout,
    File { path: PathBuf, file: File },
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::File { file, .. } => file.write_all(bytes),
        }
    }

    fn reopen(&mut self) {
        if let Sink::File { path, file } = self {
            match open_append(path) {
                Ok(f) => *file = f,
                Err(e) => log::error!(
                    "access log: cannot reopen {}: {e}; still writing to the old file",
                    path.display()
                ),
            }
        }
    }
}

/// The writer, run as a Pingora background service (so its thread starts after daemonizing).
pub struct AccessLogWriter {
    state: Mutex<Option<(Receiver<Record>, Sink)>>,
    routes: Vec<String>,
    dropped_write: IntCounter,
}

/// Open the access log the config asks for: `None` when it is off. The file is opened now, so a
/// path that cannot be written fails the start-up instead of losing lines later.
pub fn open(
    config: &Config,
    metrics: &Metrics,
) -> io::Result<Option<(AccessLog, AccessLogWriter)>> {
    let sink = match &config.logging.access_log {
        AccessLogTarget::Off => return Ok(None),
        AccessLogTarget::Stdout => Sink::Stdout,
        AccessLogTarget::File(path) => Sink::File {
            path: path.clone(),
            file: open_append(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("logging.access_log: cannot open {}: {e}", path.display()),
                )
            })?,
        },
    };
    let (tx, rx) = mpsc::sync_channel(QUEUE_RECORDS);
    let dropped = |reason: &str| {
        metrics
            .access_log_dropped
            .with_label_values(&[reason])
            .clone()
    };
    let log = AccessLog {
        tx,
        dropped_full: dropped("queue_full"),
    };
    let writer = AccessLogWriter {
        state: Mutex::new(Some((rx, sink))),
        routes: config.routes.iter().map(|r| r.pattern.clone()).collect(),
        dropped_write: dropped("write_error"),
    };
    Ok(Some((log, writer)))
}

/// The writer thread: drain the channel into batches of whole lines; reopen when asked.
fn run(
    rx: Receiver<Record>,
    mut sink: Sink,
    routes: Vec<String>,
    reopen: Arc<AtomicBool>,
    dropped_write: IntCounter,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(BATCH_BYTES + 4096);
    let mut lines = 0u64;
    let mut last_error: Option<Instant> = None;
    let mut write_out = |sink: &mut Sink, batch: &mut Vec<u8>, lines: &mut u64| {
        if batch.is_empty() {
            return;
        }
        if let Err(e) = sink.write(batch) {
            dropped_write.inc_by(*lines);
            // One message per minute at most while the problem lasts.
            if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                log::error!("access log: write failed, {lines} line(s) lost: {e}");
                last_error = Some(Instant::now());
            }
        }
        batch.clear();
        *lines = 0;
    };
    loop {
        match rx.recv_timeout(REOPEN_POLL) {
            Ok(record) => {
                record.write_json(&routes, &mut batch);
                lines += 1;
                // Take whatever else is queued; write when the queue is empty or the batch full.
                while batch.len() < BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(record) => {
                            record.write_json(&routes, &mut batch);
                            lines += 1;
                        }
                        Err(_) => break,
                    }
                }
                write_out(&mut sink, &mut batch, &mut lines);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if reopen.swap(false, Ordering::AcqRel) {
            sink.reopen();
        }
    }
}

#[async_trait]
impl BackgroundService for AccessLogWriter {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some((rx, sink)) = self.state.lock().take() else {
            return;
        };
        let reopen = Arc::new(AtomicBool::new(false));
        let (routes, flag, dropped) = (
            self.routes.clone(),
            reopen.clone(),
            self.dropped_write.clone(),
        );
        if let Err(e) = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run(rx, sink, routes, flag, dropped))
        {
            log::error!("access log: cannot start the writer thread: {e}");
            return;
        }
        // Listen for SIGUSR1 for as long as the process runs, through a graceful shutdown too:
        // its requests are still logged.
        let mut usr1 =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
                Ok(s) => s,
                Err(e) => {
                    log::error!("access log: cannot listen for SIGUSR1, no reopening: {e}");
                    return;
                }
            };
        while usr1.recv().await.is_some() {
            log::info!("SIGUSR1: reopening the access log");
            reopen.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            client: Some("192.0.2.7".parse().unwrap()),
            method: http::Method::GET,
            host: "news.example".into(),
            path: "/premium/a \"quoted\"".into(),
            query: String::new(),
            status: 200,
            bytes: 1234,
            duration: Duration::from_micros(250),
            cache: "hit",
            tier: Some("memory"),
            variant: Some("subscriber"),
            auth: Some("valid"),
            route: Some(1),
            claims: None,
            origin_time: None,
        }
    }

    #[test]
    fn one_json_line_with_every_field() {
        let mut out = Vec::new();
        record().write_json(&["/*".into(), "/premium/*".into()], &mut out);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123000Z");
        assert_eq!(v["client"], "192.0.2.7");
        assert_eq!(v["path"], "/premium/a \"quoted\"");
        assert_eq!(v["route"], "/premium/*");
        assert_eq!(v["duration"], 0.00025);
        assert!(v.get("query").is_none(), "an empty query is left out");
        for key in ["sid", "origin_time"] {
            assert!(v[key].is_null(), "{key} is null when absent");
        }
    }

    #[test]
    fn reopen_after_rename_loses_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let (tx, rx) = mpsc::sync_channel(16);
        let reopen = Arc::new(AtomicBool::new(false));
        let sink = Sink::File {
            path: path.clone(),
            file: open_append(&path).unwrap(),
        };
        let flag = reopen.clone();
        let dropped = IntCounter::new("d", "d").unwrap();
        let writer = std::thread::spawn(move || run(rx, sink, Vec::new(), flag, dropped));
        let lines = |p: &Path| {
            std::fs::read_to_string(p)
                .map(|s| s.lines().count())
                .unwrap_or(0)
        };
        let wait = |cond: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !cond() {
                assert!(Instant::now() < deadline, "timed out");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        for _ in 0..3 {
            tx.send(record()).unwrap();
        }
        wait(&|| lines(&path) == 3);
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        tx.send(record()).unwrap(); // written to the moved file: nothing reopened yet
        wait(&|| lines(&rotated) == 4);
        reopen.store(true, Ordering::Release);
        wait(&|| path.exists());
        for _ in 0..2 {
            tx.send(record()).unwrap();
        }
        wait(&|| lines(&path) == 2);
        drop(tx);
        writer.join().unwrap();
        assert_eq!((lines(&rotated), lines(&path)), (4, 2));
    }
}
