//! The real `tollgate` binary: config, keys and secrets in a temp dir, started on free ports, stopped, killed, restarted.

use super::*;

/// The issuer every default token and config uses.
pub const ISSUER: &str = "https://id.example.com";
/// The audience every default token and config uses.
pub const AUDIENCE: &str = "news-edge";

/// The default routes: a paywall, two public areas, no catch-all (so unmatched paths 404).
pub fn default_routes() -> Vec<String> {
    vec![
        r#"{ match: "/premium/*", origin: news, access: paywall, require: [premium], cache: { default_ttl: 5m, min_ttl: 0s, max_ttl: 1d } }"#.into(),
        r#"{ match: "/news/*", origin: news, access: public }"#.into(),
        r#"{ match: "/leak", origin: news, access: public }"#.into(),
        r#"{ match: "/static/*", origin: news, access: public }"#.into(),
    ]
}

/// What a test may change in the edge's config.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// `auth.issuer` (None: not checked).
    pub issuer: Option<String>,
    /// `auth.audience` (None: not checked).
    pub audience: Option<String>,
    /// `routes:` entries, YAML flow mappings, first match wins.
    pub routes: Vec<String>,
    /// The `cache:` value, a YAML flow mapping.
    pub cache: String,
    /// `auth.token_sources`.
    pub token_sources: Vec<String>,
    /// `keys.reload_interval_seconds`.
    pub reload_interval_seconds: u64,
    /// `pingora.threads`.
    pub threads: usize,
    /// `pingora.grace_period_seconds` (None: not written, Pingora's default of 5 minutes).
    /// Tests that stop the edge with SIGTERM ([`Edge::stop`]) set it low.
    pub grace_period_seconds: Option<u64>,
    /// `pingora.graceful_shutdown_timeout_seconds` (None: not written).
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    /// More listener addresses besides `127.0.0.1:<port>`, e.g. `"[::1]:8081"`.
    pub extra_listeners: Vec<String>,
    /// Top-level YAML appended to the config as is (e.g. `state_dir:`, `revocation:`).
    pub extra_yaml: String,
    /// Replaces the `news` origin's `url` (default `http://<test origin>`).
    pub origin_url: Option<String>,
    /// More `key: value` lines under `origins.news` (e.g. `ca_file: ca.pem`).
    pub origin_extra: Vec<String>,
    /// `cache.memory.fast_hits`: `Some` pins the connection-level hit path on or off; `None`
    /// leaves it to [`FAST_HITS_ENV`] (and, when that is unset, to the edge's default: on).
    /// A `fast_hits` written in [`EdgeOptions::cache`] pins it too (never both).
    pub fast_hits: Option<bool>,
}

/// `TOLLGATE_TEST_FAST_HITS=off` starts every [`Edge`] whose test does not choose
/// [`EdgeOptions::fast_hits`] with the hit path off (`cache.memory.fast_hits: false`), so the
/// whole suite checks the answers of the proxy alone; `on` (or unset) leaves the edge's default.
pub const FAST_HITS_ENV: &str = "TOLLGATE_TEST_FAST_HITS";

/// What [`FAST_HITS_ENV`] asks for: `Some(false)` for `off`, `Some(true)` for `on`, `None` when
/// unset or empty. Any other value panics: a misspelt switch must not run the suite unswitched.
pub fn fast_hits_from_env() -> Option<bool> {
    let value = std::env::var(FAST_HITS_ENV).unwrap_or_default();
    match value.trim() {
        "" => None,
        "off" => Some(false),
        "on" => Some(true),
        other => panic!("{FAST_HITS_ENV}={other:?}: expected off or on"),
    }
}

/// The `cache:` value of `opts` with `memory.fast_hits` set as [`EdgeOptions::fast_hits`] or
/// [`FAST_HITS_ENV`] ask, unless the test wrote it into the cache value itself.
pub(super) fn cache_yaml(opts: &EdgeOptions) -> String {
    let written = opts.cache.contains("fast_hits");
    let want = match (opts.fast_hits, written) {
        (Some(_), true) => panic!(
            "EdgeOptions: fast_hits is set both in the field and in cache: {}",
            opts.cache
        ),
        (Some(on), false) => Some(on),
        (None, true) => None,
        (None, false) => fast_hits_from_env(),
    };
    let Some(on) = want else {
        return opts.cache.clone();
    };
    let mut cache: serde_yaml::Value = serde_yaml::from_str(&opts.cache)
        .unwrap_or_else(|e| panic!("EdgeOptions::cache is not YAML ({e}): {}", opts.cache));
    let map = cache
        .as_mapping_mut()
        .unwrap_or_else(|| panic!("EdgeOptions::cache is not a mapping: {}", opts.cache));
    let memory = map
        .entry("memory".into())
        .or_insert_with(|| serde_yaml::Mapping::new().into());
    memory
        .as_mapping_mut()
        .unwrap_or_else(|| panic!("cache.memory is not a mapping: {}", opts.cache))
        .insert("fast_hits".into(), on.into());
    // JSON is YAML: one line, fit for the flow position after `cache: `
    serde_json::to_string(&cache).expect("cache value to JSON")
}

impl Default for EdgeOptions {
    fn default() -> Self {
        EdgeOptions {
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            routes: default_routes(),
            cache: "{ memory: { max_size: 64MiB } }".into(),
            token_sources: vec!["query:token".into(), "bearer".into(), "cookie:token".into()],
            reload_interval_seconds: 1,
            threads: 2,
            grace_period_seconds: None,
            graceful_shutdown_timeout_seconds: None,
            extra_listeners: Vec::new(),
            extra_yaml: String::new(),
            origin_url: None,
            origin_extra: Vec::new(),
            fast_hits: None,
        }
    }
}

/// A running `tollgate` process. Killed on drop.
pub struct Edge {
    /// Proxy port.
    pub port: u16,
    /// Admin port.
    pub admin_port: u16,
    /// The origin secret the edge sends.
    pub secret: String,
    /// The admin token.
    pub admin_token: String,
    /// The config file.
    pub config_path: PathBuf,
    pub(super) stderr_path: PathBuf,
    pub(super) child: Mutex<Child>,
    pub(super) dir: tempfile::TempDir,
    pub(super) origin_addr: SocketAddr,
    pub(super) opts: EdgeOptions,
    /// Processes started so far on this config dir (1 + restarts).
    pub(super) starts: u32,
}

/// Send `sig` to process `pid` (the system call: tests need no `kill` binary).
pub fn send_signal(pid: u32, sig: rustix::process::Signal) {
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .unwrap_or_else(|| panic!("not a process id: {pid}"));
    rustix::process::kill_process(target, sig)
        .unwrap_or_else(|e| panic!("kill({pid}, {sig:?}) failed: {e}"));
}

pub(super) fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Write `text` to `path` atomically (temp file + rename), as a deploy tool would.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension(format!("tmp-{}", random_hex(4)));
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

pub(super) fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string to JSON")
}

pub(super) fn config_yaml(
    dir: &Path,
    port: u16,
    admin_port: u16,
    origin: SocketAddr,
    opts: &EdgeOptions,
) -> String {
    let mut auth = String::new();
    if let Some(i) = &opts.issuer {
        auth.push_str(&format!("  issuer: {}\n", yaml_str(i)));
    }
    if let Some(a) = &opts.audience {
        auth.push_str(&format!("  audience: {}\n", yaml_str(a)));
    }
    let sources: Vec<String> = opts.token_sources.iter().map(|s| yaml_str(s)).collect();
    let routes: String = opts.routes.iter().map(|r| format!("  - {r}\n")).collect();
    let mut pingora_extra = String::new();
    if let Some(g) = opts.grace_period_seconds {
        pingora_extra.push_str(&format!("  grace_period_seconds: {g}\n"));
    }
    if let Some(g) = opts.graceful_shutdown_timeout_seconds {
        pingora_extra.push_str(&format!("  graceful_shutdown_timeout_seconds: {g}\n"));
    }
    let extra_listeners: String = opts
        .extra_listeners
        .iter()
        .map(|a| {
            if a.starts_with('{') {
                format!("  - {a}\n") // a whole listener mapping, e.g. with tls:
            } else {
                format!("  - addr: {}\n", yaml_str(a))
            }
        })
        .collect();
    let origin_url = opts
        .origin_url
        .clone()
        .unwrap_or_else(|| format!("http://{origin}"));
    let origin_extra: String = opts
        .origin_extra
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect();
    let mut extra_yaml = opts.extra_yaml.clone();
    if !extra_yaml.is_empty() && !extra_yaml.ends_with('\n') {
        extra_yaml.push('\n');
    }
    format!(
        "listeners:\n  - addr: 127.0.0.1:{port}\n{extra_listeners}\
         admin:\n  addr: 127.0.0.1:{admin_port}\n  token_file: admin.token\n\
         origins:\n  news:\n    url: {origin_url}\n    secret_header: {SECRET_HEADER}\n    secret_file: origin.secret\n{origin_extra}\
         keys:\n  jwks_file: jwks.json\n  reload_interval_seconds: {reload}\n\
         auth:\n{auth}  leeway_seconds: 30\n  subscriptions_claim: subs\n  token_sources: [{sources}]\n\
         routes:\n{routes}\
         cache: {cache}\n\
         pingora:\n  threads: {threads}\n  pid_file: {pid}\n  upgrade_sock: {sock}\n{pingora_extra}{extra_yaml}",
        reload = opts.reload_interval_seconds,
        sources = sources.join(", "),
        cache = cache_yaml(opts),
        threads = opts.threads,
        pid = yaml_str(&dir.join("tollgate.pid").to_string_lossy()),
        sock = yaml_str(&dir.join("upgrade.sock").to_string_lossy()),
    )
}

/// A raw HTTP/1.1 GET over a fresh connection; returns true on a 200.
pub(super) fn probe_200(port: u16, path: &str) -> bool {
    raw_get(port, path, &[])
        .map(|r| r.status == 200)
        .unwrap_or(false)
}

/// Write the config and start `tollgate -c` until `/healthz` answers. With `ports: None`, on two
/// fresh ports (three attempts, in case another process grabbed a port in between); with
/// `Some((proxy, admin))`, on exactly those (three attempts, for a port still being released).
pub(super) fn spawn_edge(
    dir: &Path,
    config_path: &Path,
    stderr_path: &Path,
    origin: SocketAddr,
    opts: &EdgeOptions,
    ports: Option<(u16, u16)>,
) -> (u16, u16, Child) {
    let mut last_err = String::new();
    for attempt in 0..3 {
        let (port, admin_port) = match ports {
            Some(p) => {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(500));
                }
                p
            }
            None => {
                let [port, admin_port] = free_ports::<2>();
                (port, admin_port)
            }
        };
        let config = config_yaml(dir, port, admin_port, origin, opts);
        std::fs::write(config_path, &config).unwrap();
        // every address the config names on loopback (listeners, TLS and PROXY listeners
        // included; the origin's too, which is already up): ready when all accept
        // (not the fleet's NATS server: a node starts, and serves, without it)
        // (nor the other nodes of a shield ring: `{ id: .., addr: .. }` lines)
        let awaited: String = config
            .lines()
            .filter(|l| !l.contains("{ id:"))
            .collect::<Vec<_>>()
            .join("\n");
        let addrs: Vec<u16> = awaited
            .replace("nats://127.0.0.1:", "nats://")
            .split("127.0.0.1:")
            .skip(1)
            .filter_map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .collect();
        let stderr = std::fs::File::create(stderr_path).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("-c")
            .arg(config_path)
            .env(
                "RUST_LOG",
                std::env::var("TOLLGATE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn tollgate");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last_err = format!(
                    "tollgate exited with {status} before it was ready; stderr:\n{}",
                    std::fs::read_to_string(stderr_path).unwrap_or_default()
                );
                break; // maybe a port race: retry with fresh ports
            }
            // Pingora retries a taken port for as long as it runs: a port chosen free and taken
            // meanwhile by another process on the machine ([`super::ports`] keeps the kernel and
            // this process's other tests off it) would hold this start up to the deadline, so
            // stop at the first such warning and retry with fresh ports (given ports are waited
            // for, as before: they may still be being released)
            let log = match ports {
                None => std::fs::read_to_string(stderr_path).unwrap_or_default(),
                Some(_) => String::new(),
            };
            if log.contains("is in use, will try again") {
                let _ = child.kill();
                let _ = child.wait();
                last_err = format!("a port was taken; stderr:\n{log}");
                break;
            }
            if probe_200(admin_port, "/healthz")
                && addrs
                    .iter()
                    .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
            {
                return (port, admin_port, child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tollgate did not answer /healthz on 127.0.0.1:{admin_port} within 20 s; \
                     stderr:\n{}",
                    std::fs::read_to_string(stderr_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("tollgate failed to start three times; last: {last_err}");
}

impl Edge {
    /// Start an edge in front of `origin` with the default options and `keys` in jwks.json.
    pub fn start(origin: &Origin, keys: &[&SigningKey]) -> Edge {
        Edge::start_with(origin, keys, EdgeOptions::default())
    }

    /// Start an edge with custom options.
    pub fn start_with(origin: &Origin, keys: &[&SigningKey], opts: EdgeOptions) -> Edge {
        Edge::start_on(origin, keys, opts, None)
    }

    /// Start an edge on the given (proxy, admin) ports (e.g. chosen beforehand with
    /// [`free_ports`], when other nodes' configs must name them), or on free ones.
    pub fn start_on(
        origin: &Origin,
        keys: &[&SigningKey],
        opts: EdgeOptions,
        ports: Option<(u16, u16)>,
    ) -> Edge {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = format!("origin-secret-{}", random_hex(12));
        let admin_token = format!("admin-{}", random_hex(16));
        std::fs::write(dir.path().join("origin.secret"), format!("{secret}\n")).unwrap();
        std::fs::write(dir.path().join("admin.token"), format!("{admin_token}\n")).unwrap();
        std::fs::write(dir.path().join("jwks.json"), mint::jwks_json(keys)).unwrap();
        let config_path = dir.path().join("tollgate.yaml");
        let stderr_path = dir.path().join("stderr.log");
        let (port, admin_port, child) = spawn_edge(
            dir.path(),
            &config_path,
            &stderr_path,
            origin.addr,
            &opts,
            ports,
        );
        Edge {
            port,
            admin_port,
            secret,
            admin_token,
            config_path,
            stderr_path,
            child: Mutex::new(child),
            dir,
            origin_addr: origin.addr,
            opts,
            starts: 1,
        }
    }

    /// Whether this edge runs with the connection-level hit path (`cache.memory.fast_hits`),
    /// as its options and [`FAST_HITS_ENV`] decided.
    pub fn fast_hits(&self) -> bool {
        let written: Option<serde_yaml::Value> = serde_yaml::from_str(&cache_yaml(&self.opts))
            .ok()
            .and_then(|c: serde_yaml::Value| c.get("memory")?.get("fast_hits").cloned());
        written.and_then(|v| v.as_bool()).unwrap_or(true)
    }

    /// `http://127.0.0.1:<port><path>` on the proxy listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// `http://127.0.0.1:<admin_port><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    /// The temp dir holding the config, keys and secrets.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the edge wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The last `n` lines the edge wrote to stderr.
    pub fn stderr_tail(&self, n: usize) -> String {
        let all = self.stderr();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The edge's exit status, if it is no longer running.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.try_wait().ok().flatten()
    }

    /// Panic with the edge's panics and the tail of its stderr if the process has died.
    pub fn assert_running(&self) {
        if let Some(status) = self.exit_status() {
            let all = self.stderr();
            let panics: Vec<&str> = all
                .lines()
                .filter(|l| {
                    l.contains("panicked at") || l.contains("attempt to") || l.contains("abort")
                })
                .take(20)
                .collect();
            panic!(
                "the edge process died ({status}); its panics:\n{}\n--- stderr tail ---\n{}",
                panics.join("\n"),
                self.stderr_tail(40)
            );
        }
    }

    /// Replace jwks.json (atomically) with these keys' public halves.
    pub fn rewrite_jwks(&self, keys: &[&SigningKey]) {
        write_atomic(&self.dir.path().join("jwks.json"), &mint::jwks_json(keys));
    }

    /// `GET /metrics` text.
    pub async fn metrics(&self) -> String {
        let r = client().get(self.admin_url("/metrics")).send().await;
        let r = r.unwrap_or_else(|e| {
            // a dead edge explains itself (its panics, its stderr) before the error does
            self.assert_running();
            panic!("GET /metrics: {e}")
        });
        assert_eq!(r.status().as_u16(), 200, "GET /metrics status");
        r.text().await.expect("metrics body")
    }

    /// The value of one metric series (sum over series matching `labels`; 0 if absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.metrics().await, name, labels)
    }

    /// Poll `/metrics` until the series reaches `at_least` (the request counter is bumped in the
    /// logging phase, after the client already has its response). Returns the last value.
    /// A family that is not exported yet (label-vector families appear with their first series)
    /// reads as not there yet until the deadline, then fails as [`metric`] does.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
        let ok = |v: f64| v >= at_least;
        self.poll_metric(name, labels, Duration::from_secs(5), ok)
            .await
            .0
    }

    /// `POST` a JSON body to an admin path with the admin token: (status, body text).
    pub async fn admin_post(&self, path: &str, body: String) -> (u16, String) {
        let r = client()
            .post(self.admin_url(path))
            .bearer_auth(&self.admin_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// `POST /admin/purge` with the admin token and the given JSON body.
    pub async fn purge(&self, body: &str) -> (u16, String) {
        self.admin_post("/admin/purge", body.to_owned()).await
    }

    /// Purge and return the `purged` count; panics unless the answer is 200 JSON.
    pub async fn purge_ok(&self, body: &str) -> u64 {
        let (status, text) = self.purge(body).await;
        assert_eq!(status, 200, "purge {body} answered {status}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("purge answer is not JSON ({e}): {text}"));
        v["purged"]
            .as_u64()
            .unwrap_or_else(|| panic!("purge answer has no numeric \"purged\": {text}"))
    }
}

/// Peak and current resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub struct Rss {
    /// `VmRSS`: resident now, bytes.
    pub now: u64,
    /// `VmHWM`: the peak resident size since the process started, bytes.
    pub peak: u64,
}

/// `VmRSS` and `VmHWM` of process `pid`.
pub fn rss_of(pid: u32) -> Rss {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let field = |name: &str| -> u64 {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("/proc/{pid}/status has no {name}"));
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad {name} line {line:?}"));
        kib * 1024
    };
    Rss {
        now: field("VmRSS:"),
        peak: field("VmHWM:"),
    }
}

/// A `cache:` value (YAML flow mapping) with a disk tier at `disk_dir`, e.g.
/// `disk_cache("64MiB", dir, "1GiB", "256MiB")`. The directory belongs to the test (a
/// `TempDir` it holds), so it outlives any one edge process.
pub fn disk_cache(memory_max: &str, disk_dir: &Path, disk_max: &str, max_object: &str) -> String {
    format!(
        "{{ memory: {{ max_size: {memory_max} }}, disk: {{ path: {}, max_size: {disk_max} }}, \
         max_object_size: {max_object} }}",
        yaml_str(&disk_dir.to_string_lossy())
    )
}

/// Default options with a disk tier at `disk_dir` and a short SIGTERM grace period, so that
/// [`Edge::stop`] and [`Edge::restart`] take a second or two.
pub fn disk_options(
    memory_max: &str,
    disk_dir: &Path,
    disk_max: &str,
    max_object: &str,
) -> EdgeOptions {
    EdgeOptions {
        cache: disk_cache(memory_max, disk_dir, disk_max, max_object),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(2),
        ..EdgeOptions::default()
    }
}

/// Regular files under `dir` (recursively), sorted; empty if `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The disk tier's object files: `<disk_dir>/objects/<2 hex>/<32 hex>.tgc`.
pub fn object_files(disk_dir: &Path) -> Vec<PathBuf> {
    files_under(&disk_dir.join("objects"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tgc"))
        .collect()
}

/// The object file whose bytes contain `needle` (a slice of one object's body); panics unless
/// exactly one does.
pub fn object_file_containing(disk_dir: &Path, needle: &[u8]) -> (PathBuf, usize) {
    let mut found = Vec::new();
    for f in object_files(disk_dir) {
        let data = std::fs::read(&f).unwrap_or_default();
        if let Some(at) = data.windows(needle.len()).position(|w| w == needle) {
            found.push((f, at));
        }
    }
    assert_eq!(
        found.len(),
        1,
        "expected exactly one object file under {}/objects holding the given body bytes \
         (bodies are incompressible and stored as is), found {found:?}",
        disk_dir.display()
    );
    found.pop().unwrap()
}

impl Edge {
    /// The process id of the running edge.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// `VmRSS` / `VmHWM` of the running edge.
    pub fn rss(&self) -> Rss {
        self.assert_running();
        rss_of(self.pid())
    }

    /// How many processes have been started on this config dir (1 + restarts).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Stop the edge the way systemd does (SIGTERM) and wait for it to exit (30 s at most, or
    /// panic). Set [`EdgeOptions::grace_period_seconds`] low, or this takes Pingora's 5 minutes.
    pub fn stop(&mut self) {
        self.assert_running();
        let pid = self.pid();
        send_signal(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.exit_status() {
                assert!(
                    status.success(),
                    "the edge exited with {status} on SIGTERM; stderr tail:\n{}",
                    self.stderr_tail(40)
                );
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the edge did not exit within 30 s of SIGTERM; stderr tail:\n{}",
                    self.stderr_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` the edge (no chance to flush or clean up) and reap it.
    pub fn kill_hard(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        child.kill().expect("SIGKILL the edge");
        let _ = child.wait();
    }

    /// Start a new process on the same config dir (keys, secrets, admin token), the same options
    /// and the same ports, after [`Edge::stop`] or [`Edge::kill_hard`]. Same ports because the
    /// client's `Host` (`127.0.0.1:<port>`) is part of the cache key: on another port nothing
    /// stored before would be found. The previous process's stderr is kept as
    /// `stderr.<n>.log` in [`Edge::dir`].
    pub fn start_again(&mut self) {
        assert!(
            self.exit_status().is_some(),
            "start_again: the previous edge is still running"
        );
        let _ = std::fs::rename(
            &self.stderr_path,
            self.dir.path().join(format!("stderr.{}.log", self.starts)),
        );
        let (port, admin_port, child) = spawn_edge(
            self.dir.path(),
            &self.config_path,
            &self.stderr_path,
            self.origin_addr,
            &self.opts,
            Some((self.port, self.admin_port)),
        );
        self.port = port;
        self.admin_port = admin_port;
        *self.child.get_mut().unwrap_or_else(|e| e.into_inner()) = child;
        self.starts += 1;
    }

    /// [`Edge::stop`] (SIGTERM) then [`Edge::start_again`].
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// [`Edge::restart`] without the memory tier's hot set (removed from `disk_dir` between
    /// the two processes): the new process starts with a cold memory tier, so what follows
    /// exercises the disk tier itself.
    pub fn restart_cold(&mut self, disk_dir: &Path) {
        self.stop();
        let _ = std::fs::remove_file(disk_dir.join("hot-set"));
        self.start_again();
    }

    /// [`Edge::poll_metric`] for a series that must come to satisfy `ok` within `timeout`:
    /// panics with the last value (and the node's log tail) when it does not.
    pub async fn expect_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        timeout: Duration,
        ok: impl Fn(f64) -> bool,
    ) {
        let (v, held) = self.poll_metric(name, labels, timeout, ok).await;
        assert!(
            held,
            "{name}{labels:?} = {v} after {timeout:?}; stderr tail:\n{}",
            self.stderr_tail(20)
        );
    }

    /// Poll `/metrics` (every 50 ms, up to `timeout`) until `ok(value)` holds for the series;
    /// returns the last value and whether it held. A family not exported yet is waited for as
    /// in [`Edge::wait_metric`].
    pub async fn poll_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        timeout: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> (f64, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.metrics().await;
            let late = Instant::now() > deadline;
            if exported(&text, name) || late {
                let v = metric(&text, name, labels);
                if ok(v) {
                    return (v, true);
                }
                if late {
                    return (v, false);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            eprintln!("--- tollgate stderr (tail) ---\n{}", self.stderr_tail(60));
        }
    }
}

/// An edge with one more listener, TLS for `a.test` (its certificate from a fresh test CA),
/// in front of a fresh origin, with the default ES256 key `k1`.
pub struct TlsEdge {
    _dir: tempfile::TempDir,
    /// The CA to trust.
    pub ca: std::path::PathBuf,
    pub origin: Origin,
    pub edge: Edge,
    /// The TLS listener's port.
    pub port: u16,
}

impl TlsEdge {
    /// `listener` is put in the listener's mapping before `tls` (e.g. `proxy_protocol: true,`);
    /// `opts` as for [`Edge::start_with`].
    pub fn start(listener: &str, mut opts: EdgeOptions) -> TlsEdge {
        let dir = tempfile::tempdir().unwrap();
        let ca = super::certs::Ca::new(dir.path(), "Tollgate Test CA", "ca.pem");
        let (crt, key) = ca.leaf(dir.path(), "a", &["a.test"]);
        let origin = Origin::start();
        let port = free_port();
        opts.extra_listeners.push(format!(
            "{{ addr: \"127.0.0.1:{port}\", {listener} tls: {{ cert: {:?}, key: {:?} }} }}",
            crt.to_string_lossy(),
            key.to_string_lossy(),
        ));
        let k = super::tokens::es256("k1");
        let edge = Edge::start_with(&origin, &[&k], opts);
        TlsEdge {
            ca: ca.pem.clone(),
            _dir: dir,
            origin,
            edge,
            port,
        }
    }
}
