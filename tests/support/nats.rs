//! A real `nats-server -js` (Debian's package), on a free loopback port with a temporary store,
//! stopped by its pid; restartable on the same port and store.

use super::*;

/// A running (or stopped) NATS server with JetStream.
pub struct Nats {
    /// Its client port on 127.0.0.1.
    pub port: u16,
    store: tempfile::TempDir,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Nats {
    /// Start `nats-server -js` on a free port; panics (naming the log) unless it accepts
    /// connections within 10 s.
    pub fn start() -> Nats {
        let store = tempfile::tempdir().expect("temp dir");
        let log_path = store.path().join("nats.log");
        let mut nats = Nats {
            port: free_port(),
            store,
            log_path,
            child: None,
        };
        nats.start_again();
        nats
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Start it again on the same port and store (after [`Nats::kill`]).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        // Debian installs it in /usr/sbin, which a non-root PATH may lack
        let program = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server");
        let child = Command::new(program)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.store.path().join("js"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server (Debian package nats-server; .ci/deps installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::fs::read_to_string(&self.log_path)
                .unwrap_or_default()
                .matches("Server is ready")
                .count()
                > 0
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("nats-server exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "nats-server not ready within 10 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill it (SIGKILL, by pid) and reap it; the store stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // the log accumulates: "Server is ready" must be counted afresh after a restart
        let _ = std::fs::rename(&self.log_path, self.log_path.with_extension("old.log"));
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `fleet:` section (and the `state_dir` it needs, under the edge's temp dir via a relative
/// path) for node `node_id` of the fleet on `nats`; `extra` lines go under `fleet:` (e.g.
/// `"replay_timeout: 2s"`).
pub fn fleet_yaml(nats: &Nats, node_id: &str, extra: &[&str]) -> String {
    let mut y = format!(
        "state_dir: state\nfleet:\n  node_id: {node_id}\n  nats:\n    url: [{}]\n",
        nats.url()
    );
    for line in extra {
        y.push_str(&format!("  {line}\n"));
    }
    y
}
