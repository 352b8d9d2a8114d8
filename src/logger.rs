//! The diagnostics logger: env_logger, with the few records Pingora logs above their weight on
//! a normal run demoted, so that WARN and ERROR mean something to alerting.
//!
//! A graceful upgrade (`tollgate -u`, then SIGQUIT to the old process) is routine: systemd's
//! `ExecReload=` does it for every config change and deploy. Pingora 0.9 logs its normal
//! course at ERROR and WARN:
//!
//! - the new process binds the upgrade socket and polls it once a second until the old process
//!   sends its listeners; each poll that finds nothing yet (EAGAIN) logs
//!   `ERROR No incoming socket transfer, sleep 1s and try again`. The old process only starts
//!   sending once it gets SIGQUIT, which comes after the new process is up, so the first poll
//!   always finds nothing: every upgrade logged an ERROR, and an operator's alert on ERROR fired
//!   on every deploy;
//! - the old process, if its SIGQUIT arrives before the new process has bound the socket, logs
//!   `WARN server not ready, will try again in 1s` and retries;
//! - the first cache-metadata serialization of every process logs
//!   `WARN no header compression dictionary loaded` (Tollgate uses none, by design).
//!
//! Why demote these exact messages rather than filter their modules: env_logger filters by
//! module and level only, and the same modules log the real failures — `Error accepting
//! socket transfer` (a non-EAGAIN accept error), `Giving up reading socket from ...` after the
//! last retry, `Max retry ... Giving up sending socket`, `Bootstrap failed`, `Unable to send
//! listener sockets to new process`. Turning `pingora_core::server::transfer_fd` down to `off`
//! or `error` would hide some of those; demoting only the retry messages keeps every failure
//! at ERROR. The retries are still logged, at INFO, so a slow hand-over remains visible. If a
//! Pingora upgrade rewords a message it simply stops matching and shows at its own level
//! again (tests/ops.rs catches that: a normal upgrade must log nothing above INFO).

use log::{Level, Log, Metadata, Record};

/// (target, message prefix, level it is logged at instead).
const DEMOTED: &[(&str, &str, Level)] = &[
    (
        "pingora_core::server::transfer_fd",
        "No incoming socket transfer",
        Level::Info,
    ),
    (
        "pingora_core::server::transfer_fd",
        "server not ready, will try again",
        Level::Info,
    ),
    (
        "pingora_cache::meta",
        "no header compression dictionary loaded",
        Level::Debug,
    ),
];

/// The level a record is logged at: its own, or the lower one [`DEMOTED`] gives it.
pub fn level_of(record: &Record<'_>) -> Level {
    let level = record.level();
    for (target, prefix, to) in DEMOTED {
        // `level < to`: more severe than the level it is demoted to (never raise a record)
        if level < *to && record.target() == *target && message_starts_with(record, prefix) {
            return *to;
        }
    }
    level
}

fn message_starts_with(record: &Record<'_>, prefix: &str) -> bool {
    match record.args().as_str() {
        Some(s) => s.starts_with(prefix),
        None => record.args().to_string().starts_with(prefix),
    }
}

/// A logger that hands every record to `inner`, the [`DEMOTED`] ones at their lower level (so
/// `inner`'s filter decides on that level).
pub struct Demote<L> {
    inner: L,
}

impl<L: Log> Demote<L> {
    /// Wrap `inner`.
    pub fn new(inner: L) -> Self {
        Demote { inner }
    }
}

impl<L: Log> Log for Demote<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        let level = level_of(record);
        if level == record.level() {
            return self.inner.log(record);
        }
        self.inner.log(
            &Record::builder()
                .args(*record.args())
                .level(level)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

/// Install the process's logger: env_logger with `RUST_LOG` if set, else `level` (from
/// `logging.level` when running a config); Pingora's cache-metadata chatter stays at error
/// unless asked for; and the [`DEMOTED`] records at their lower level. Does nothing if a logger
/// is already installed.
pub fn init(level: &str) {
    let logger = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(format!("{level},pingora_cache::meta=error")),
    )
    .build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Demote::new(logger))).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Capture(Mutex<Vec<(Level, String, String)>>);

    impl Log for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn log(&self, r: &Record<'_>) {
            let line = (r.level(), r.target().to_owned(), r.args().to_string());
            self.0.lock().unwrap().push(line);
        }
        fn flush(&self) {}
    }

    fn send(logger: &Demote<Capture>, level: Level, target: &str, args: std::fmt::Arguments<'_>) {
        logger.log(
            &Record::builder()
                .args(args)
                .level(level)
                .target(target)
                .build(),
        );
    }

    #[test]
    fn only_the_routine_upgrade_messages_are_demoted() {
        let logger = Demote::new(Capture::default());
        let fd = "pingora_core::server::transfer_fd";
        let interval = std::time::Duration::from_secs(1);
        let e = "EAGAIN";
        // Pingora's exact calls (pingora-core 0.9 src/server/transfer_fd/mod.rs)
        send(
            &logger,
            Level::Error,
            fd,
            format_args!("No incoming socket transfer, sleep {interval:?} and try again"),
        );
        send(
            &logger,
            Level::Warn,
            fd,
            format_args!("server not ready, will try again in {interval:?}"),
        );
        send(
            &logger,
            Level::Error,
            fd,
            format_args!("Error accepting socket transfer: {e}"),
        );
        send(
            &logger,
            Level::Error,
            fd,
            format_args!("Giving up reading socket from: /run/tollgate/upgrade.sock, error: {e}"),
        );
        send(
            &logger,
            Level::Warn,
            "pingora_cache::meta",
            format_args!("no header compression dictionary loaded - use set_compression_dict_content() or set_compression_dict_path() to set one"),
        );
        // the same words from another module are not Pingora's retry
        send(
            &logger,
            Level::Error,
            "tollgate::app",
            format_args!("No incoming socket transfer, sleep {interval:?} and try again"),
        );
        // never raised: a message already below the demoted level stays where it is
        send(
            &logger,
            Level::Trace,
            fd,
            format_args!("No incoming socket transfer (trace)"),
        );
        let got: Vec<(Level, String)> = logger
            .inner
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(l, t, m)| (*l, format!("{t}: {m}")))
            .collect();
        let want = [
            (
                Level::Info,
                format!("{fd}: No incoming socket transfer, sleep 1s and try again"),
            ),
            (
                Level::Info,
                format!("{fd}: server not ready, will try again in 1s"),
            ),
            (
                Level::Error,
                format!("{fd}: Error accepting socket transfer: EAGAIN"),
            ),
            (
                Level::Error,
                format!("{fd}: Giving up reading socket from: /run/tollgate/upgrade.sock, error: EAGAIN"),
            ),
            (
                Level::Debug,
                "pingora_cache::meta: no header compression dictionary loaded - use set_compression_dict_content() or set_compression_dict_path() to set one".into(),
            ),
            (
                Level::Error,
                "tollgate::app: No incoming socket transfer, sleep 1s and try again".into(),
            ),
            (
                Level::Trace,
                format!("{fd}: No incoming socket transfer (trace)"),
            ),
        ];
        assert_eq!(got, want);
    }
}
