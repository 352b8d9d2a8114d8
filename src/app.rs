//! Builds the Pingora server from a validated config: the proxy on every listener, the admin
//! listener, and the background services (key reload, token-cache sweep).

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod drain;
mod front;
mod h2;
pub mod proxy_protocol;
mod waits;

use anyhow::Context;
use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::Config;
use crate::edge::{unix_now, Edge};
use crate::proxy::TollgateProxy;

/// Seconds a stopping process keeps serving before it begins shutting down its listeners.
pub const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 5;
/// Seconds then allowed for in-flight requests to finish.
pub const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS: u64 = 5;

/// How long `tollgate -d` waits for its daemon to be ready before failing.
pub const DAEMON_READY_TIMEOUT_SECONDS: u64 = 60;

/// Pingora process flags (SPEC §4: `-d`, `-u`, `-t`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFlags {
    /// Daemonize.
    pub daemon: bool,
    /// Graceful upgrade: take the listening sockets from the running process.
    pub upgrade: bool,
    /// Test the configuration and exit.
    pub test: bool,
}

fn server_conf(config: &Config, flags: RunFlags) -> ServerConf {
    let p = &config.pingora;
    // Per-node defaults so that several nodes (tests, demo) never share a pid file or socket.
    let tag = config
        .listeners
        .first()
        .map(|l| l.addr.port().to_string())
        .unwrap_or_else(|| "0".into());
    let tmp = std::env::temp_dir();
    // Under systemd (RuntimeDirectory=tollgate) the pid file and upgrade socket default to
    // /run/tollgate/, where the unit's PIDFile= looks.
    let runtime_dir = std::env::var_os("RUNTIME_DIRECTORY").and_then(|v| {
        v.to_str()
            .and_then(|s| s.split(':').next())
            .map(PathBuf::from)
    });
    let (default_pid, default_sock) = match &runtime_dir {
        Some(dir) => (dir.join("tollgate.pid"), dir.join("upgrade.sock")),
        None => (
            tmp.join(format!("tollgate-{tag}.pid")),
            tmp.join(format!("tollgate-{tag}-upgrade.sock")),
        ),
    };
    let mut conf = ServerConf {
        daemon: flags.daemon || p.daemon,
        pid_file: p
            .pid_file
            .clone()
            .unwrap_or(default_pid)
            .to_string_lossy()
            .into_owned(),
        upgrade_sock: p
            .upgrade_sock
            .clone()
            .unwrap_or(default_sock)
            .to_string_lossy()
            .into_owned(),
        error_log: p
            .error_log
            .as_ref()
            .map(|e| e.to_string_lossy().into_owned()),
        threads: p
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        // Pingora's own defaults keep a stopping process around for minutes; operators of
        // nginx/HAProxy expect SIGTERM to drain in seconds.
        grace_period_seconds: Some(
            p.grace_period_seconds
                .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS),
        ),
        graceful_shutdown_timeout_seconds: Some(
            p.graceful_shutdown_timeout_seconds
                .unwrap_or(DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT_SECONDS),
        ),
        ..ServerConf::default()
    };
    conf.work_stealing = true;
    // With -d, the launching process exits only once the daemon has written its pid file and is
    // about to take over the listeners (or failed): systemd's ExecReload then signals the old
    // process, and reads the new main PID from PIDFile= (see systemd/tollgate.service).
    conf.daemon_wait_for_ready = true;
    conf.daemon_ready_timeout_seconds = NonZeroU64::new(DAEMON_READY_TIMEOUT_SECONDS);
    conf
}

/// With `-d`, make the launching process exit 0 on the daemon's readiness `SIGUSR1` whenever it
/// comes. Call before `run_forever` (which forks).
///
/// Pingora 0.9's `daemonize` starts listening for that signal in the launching process only
/// after the fork, once it has waited for the intermediate child and built a runtime; a daemon
/// that is ready first (a loaded machine, a quick start) signals a process that still has
/// SIGUSR1's default action, and the launcher dies of it (exit status 138). systemd then sees
/// `ExecStart=` or `ExecReload=` fail (`status=10/USR1`): a failed start with the daemon
/// running, or a reload that stops before `kill -QUIT`, so the new process gives up on the
/// listeners. This handler, installed before the fork, gives the early signal the meaning
/// Pingora gives it ("ready": exit 0). Pingora's own listener, when it comes, keeps it as its
/// previous handler and runs it first, so the launcher exits 0 either way. In the daemon (any
/// other pid) the handler does nothing, and Tollgate's own SIGUSR1 use (reopening the access
/// log) chains to it the same way.
pub fn exit_launcher_on_readiness_signal() {
    use std::sync::atomic::{AtomicI32, Ordering};
    static LAUNCHER: AtomicI32 = AtomicI32::new(0);
    extern "C" fn on_sigusr1(_: libc::c_int) {
        // async-signal-safe calls only
        if unsafe { libc::getpid() } == LAUNCHER.load(Ordering::Relaxed) {
            unsafe { libc::_exit(0) }
        }
    }
    LAUNCHER.store(std::process::id() as i32, Ordering::Relaxed);
    // SAFETY: a plain sigaction with a handler that only calls getpid and _exit.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigusr1 as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()) != 0 {
            log::warn!(
                "cannot install the SIGUSR1 handler for -d: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Build the server with every service; `run_forever` it to serve.
pub fn build(edge: Arc<Edge>, flags: RunFlags) -> anyhow::Result<Server> {
    let config = edge.config.clone();
    let opt = Opt {
        upgrade: flags.upgrade,
        daemon: flags.daemon,
        test: flags.test,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config, flags));
    // Bootstrap (taking the listeners over from the old process on -u) runs as a service, after
    // daemonizing, so that the daemon can tell the launching process when it is ready.
    let bootstrap = server.bootstrap_as_a_service();

    let access_log = crate::access_log::open(&config, &edge.metrics)?.map(|(log, writer)| {
        server.add_service(background_service("access log", writer));
        log
    });
    let grace = Duration::from_secs(server.configuration.grace_period_seconds.unwrap_or(0));
    // A fleet node's listeners open once it has replayed the control events it missed.
    let fleet = crate::fleet::Fleet::new(edge.clone())?;
    let fleet_service = fleet.as_ref().map(|f| {
        server.add_service(background_service(
            "fleet",
            crate::fleet::FleetService(f.clone()),
        ))
    });
    if let Some(errors) = crate::origins::dns::errors_metric(&edge.origins, &edge.metrics)? {
        server.add_service(background_service(
            "origin dns",
            OriginDns {
                edge: edge.clone(),
                errors,
            },
        ));
    }
    if let Some(shield) = &edge.shield {
        // health checks of the shield ring's peers (a peer found down is skipped)
        server.add_service(
            pingora_core::services::background::GenBackgroundService::new(
                "shield health checks".to_string(),
                shield.ring(),
            ),
        );
    }
    // Housekeeping reports ready once the memory tier holds the previous process's hot set
    // (bounded by WARM_WAIT): the listeners open after it, with a warm memory tier.
    let warmed = server.add_service(background_service(
        "housekeeping",
        Housekeeping {
            edge: edge.clone(),
            interval: Duration::from_secs(config.keys.reload_interval_seconds.max(1)),
        },
    ));
    let proxy_logic = TollgateProxy::new(edge.clone()).with_access_log(access_log);
    let linger = drain::IDLE_LINGER.min(grace);
    let server_conf = server.configuration.clone();
    let front = |proxy_protocol: bool| {
        front::Front::new(
            drain::Draining::new(
                pingora_proxy::http_proxy(&server_conf, proxy_logic.clone()),
                linger,
            ),
            proxy_logic.clone(),
            linger,
        )
        .with_proxy_protocol(proxy_protocol)
    };
    // Listeners behind a load balancer speaking the PROXY protocol get a service of their own:
    // its plain connections start with the header, its TLS ones yield it before the handshake.
    // (Each service has its own proxy and origin connection pool; one is built only if used.)
    for proxy_protocol in [false, true] {
        let listeners: Vec<_> = config
            .listeners
            .iter()
            .filter(|l| l.proxy_protocol == proxy_protocol)
            .collect();
        if listeners.is_empty() {
            continue;
        }
        let name = if proxy_protocol {
            "tollgate edge (PROXY protocol)"
        } else {
            "tollgate edge"
        };
        let mut svc = Service::new(name.to_string(), front(proxy_protocol));
        if proxy_protocol {
            svc.endpoints()
                .set_pre_tls_callback(Arc::new(proxy_protocol::PreTls::new(edge.clone())));
        }
        for l in listeners {
            match &l.tls {
                None => svc.add_tcp(&l.addr.to_string()),
                Some(tls) => {
                    let settings = crate::tls::settings(tls)
                        .with_context(|| format!("TLS listener {}", l.addr))?;
                    svc.add_tls_with_settings(&l.addr.to_string(), None, settings);
                }
            }
        }
        let handle = server.add_service(svc);
        handle.add_dependency(&bootstrap);
        handle.add_dependency(&warmed);
        if let Some(replayed) = &fleet_service {
            handle.add_dependency(replayed);
        }
    }

    if let Some(admin) = &config.admin {
        let mut svc = Service::new(
            "tollgate admin".to_string(),
            AdminApp::new(edge.clone(), fleet.clone()),
        );
        svc.add_tcp(&admin.addr.to_string());
        server.add_service(svc).add_dependency(&bootstrap);
    }

    Ok(server)
}

/// Work off the request path: index the disk tier at start, then periodically reload keys when
/// their files change and drop expired tokens from the token cache.
struct Housekeeping {
    edge: Arc<Edge>,
    interval: Duration,
}

/// Looks origin names up again as their records expire ([`crate::origins::dns`]).
struct OriginDns {
    edge: Arc<Edge>,
    errors: prometheus::IntCounterVec,
}

#[async_trait]
impl BackgroundService for OriginDns {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let edge = &self.edge;
        crate::origins::dns::keep_fresh(
            &edge.origins,
            &edge.config.resolver,
            &self.errors,
            &mut shutdown,
        )
        .await;
    }
}

/// A cheap fingerprint of files: modification times and sizes.
fn files_stamp<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// How long a starting process waits for its memory tier to load the hot set before its
/// listeners open anyway (the load goes on behind them).
pub const WARM_WAIT: Duration = Duration::from_secs(3);
/// How often the memory tier's hot set is written beside the disk tier.
pub const HOT_SET_EVERY: Duration = Duration::from_secs(5);

fn save_hot_set(store: &'static crate::cache::TieredStore) {
    if let Err(e) = store.save_hot_set() {
        log::warn!("writing the memory tier's hot set: {e}");
    }
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready: pingora_core::services::ServiceReadyNotifier,
    ) {
        if let Some(disk) = self.edge.store.disk() {
            // Index the disk tier in the background: lookups open files by name meanwhile.
            tokio::task::spawn_blocking(move || disk.scan());
            let store = self.edge.store;
            let warm = tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                (store.warm_from_hot_set(), started.elapsed())
            });
            match tokio::time::timeout(WARM_WAIT, warm).await {
                Ok(Ok((0, _))) => {}
                Ok(Ok((n, took))) => log::info!(
                    "memory tier warmed with {n} objects of the previous process's hot set in \
                     {took:?}"
                ),
                Ok(Err(e)) => log::error!("warming the memory tier: {e}"),
                Err(_) => log::warn!(
                    "warming the memory tier takes longer than {WARM_WAIT:?}; serving meanwhile"
                ),
            }
        }
        ready.notify_ready();
        self.start(shutdown).await;
    }

    async fn start(&self, mut shutdown: ShutdownWatch) {
        if self.edge.config.logging.access_log == crate::config::AccessLogTarget::Off {
            // SIGUSR1 means "reopen logs" to operators (logrotate); with no access log there is
            // nothing to reopen, but the signal must not kill the node (its default action).
            if let Ok(mut usr1) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            {
                tokio::spawn(async move {
                    while usr1.recv().await.is_some() {
                        log::info!("SIGUSR1: no access log configured, nothing to reopen");
                    }
                });
            }
        }
        let key_files = || {
            let (jwks, pem) = &self.edge.key_sources;
            files_stamp(jwks.iter().chain(pem.iter().map(|p| &p.path)))
        };
        let config = &self.edge.config;
        let sigv4_files = crate::origins::sigv4_files(&config.origins);
        let credential_files = || {
            files_stamp(
                config
                    .signed_keys
                    .values()
                    .chain(config.basic_auth.values())
                    .chain(sigv4_files.iter()),
            )
        };
        let mut stamp = key_files();
        let mut credential_stamp = credential_files();
        let mut ticker = tokio::time::interval(self.interval);
        let mut hot_set = tokio::time::interval(HOT_SET_EVERY);
        let store = self.edge.store;
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    // the next process (an upgrade) loads this to start warm
                    let _ = tokio::task::spawn_blocking(move || save_hot_set(store)).await;
                    return;
                }
                _ = hot_set.tick() => {
                    let _ = tokio::task::spawn_blocking(move || save_hot_set(store)).await;
                    continue;
                }
                _ = ticker.tick() => {}
            }
            let now_credentials = credential_files();
            if now_credentials != credential_stamp {
                credential_stamp = now_credentials;
                let mut problems = self.edge.reload_credentials();
                problems.extend(crate::origins::reload_sigv4(
                    &config.origins,
                    &self.edge.origins,
                ));
                if problems.is_empty() {
                    log::info!("signed_keys, basic_auth and sigv4 secret files reloaded");
                }
                for p in problems {
                    log::error!("reload failed, keeping the previous one: {p}");
                    self.edge.metrics.key_reload_errors.inc();
                }
            }
            let now_stamp = key_files();
            if now_stamp != stamp {
                stamp = now_stamp;
                match self.edge.reload_keys() {
                    Ok(n) => log::info!("key set reloaded: {n} keys"),
                    Err(e) => log::error!("key set reload failed, keeping the previous keys: {e}"),
                }
            }
            let now = unix_now();
            self.edge.revocations.sweep(now);
            if let Some(auto) = &self.edge.auto_revoker {
                auto.sweep(now);
            }
            self.edge
                .metrics
                .revoked_sessions
                .set(self.edge.revocations.len() as i64);
            if let Some(budget) = &self.edge.budget {
                self.edge
                    .metrics
                    .failed_auth_throttled
                    .set(budget.exhausted_slots() as i64);
            }
            let swept = self.edge.tokens.sweep_step(now);
            if swept > 0 {
                log::debug!("token cache: {swept} expired entries dropped");
            }
            self.edge
                .metrics
                .token_cache_entries
                .set(self.edge.tokens.len() as i64);
        }
    }
}
