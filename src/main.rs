//! The `tollgate` command: run the edge, check a config, run the demo, make keys and tokens.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollgate::app::RunFlags;
use tollgate::auth::{mint, Alg};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A CDN edge node that enforces a publisher's paywall at the edge",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// The configuration file. Without it (and without a command) the demo runs.
    #[arg(short = 'c', long = "conf")]
    conf: Option<PathBuf>,
    /// Run in the background (Pingora daemon mode).
    #[arg(short, long)]
    daemon: bool,
    /// Graceful upgrade: take over the listening sockets of the running instance.
    #[arg(short, long)]
    upgrade: bool,
    /// Test the configuration and exit.
    #[arg(short, long)]
    test: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration and its key files; print every problem; exit 1 on any.
    Check {
        /// The configuration file.
        #[arg(short = 'c', long = "conf")]
        conf: PathBuf,
    },
    /// The embedded default: a demo origin, generated keys and the edge on localhost.
    Demo(tollgate::demo::DemoArgs),
    /// Generate a signing key: `<out>/<kid>.pem` (private) and `<out>/jwks.json` (public).
    Keygen {
        /// ES256 or RS256.
        #[arg(long, default_value = "ES256")]
        alg: String,
        /// Key id.
        #[arg(long)]
        kid: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Mint a token with a private key (for testing and for token services to copy).
    Token(TokenArgs),
    /// Key sets of a fleet (SPEC §9).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Check a JWK Set and publish it to every node of the config's fleet (its NATS key bucket).
    Publish {
        /// The JWK Set file (public keys).
        #[arg(long)]
        jwks: PathBuf,
        /// The configuration file whose `fleet:` says how to reach NATS.
        #[arg(short = 'c', long = "conf")]
        conf: PathBuf,
    },
}

fn publish_keys(jwks: &Path, conf: &Path) -> anyhow::Result<()> {
    let config =
        tollgate::config::load(conf).map_err(|e| anyhow::anyhow!("{}: {e}", conf.display()))?;
    let fleet = config.fleet.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no fleet: section, so there is no fleet to publish to (a node alone reads \
             keys.jwks_file)",
            conf.display()
        )
    })?;
    let text =
        std::fs::read_to_string(jwks).with_context(|| format!("reading {}", jwks.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let revision = runtime
        .block_on(tollgate::fleet::publish_key_set(&fleet, &text))
        .map_err(|e| anyhow::anyhow!("{}: {e}", jwks.display()))?;
    println!(
        "{}: published as revision {revision} of bucket {}",
        jwks.display(),
        tollgate::fleet::Names::new(&fleet.subject_prefix).bucket
    );
    Ok(())
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Private key PEM (PKCS#8), e.g. made by `tollgate keygen`.
    #[arg(long)]
    key: PathBuf,
    /// Key id the edge knows the public key by.
    #[arg(long)]
    kid: String,
    /// Subject.
    #[arg(long)]
    sub: Option<String>,
    /// Subscriptions, comma-separated.
    #[arg(long)]
    subs: Option<String>,
    /// Lifetime, e.g. 90s, 15m, 1h, 1d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Issuer claim.
    #[arg(long)]
    iss: Option<String>,
    /// Audience claim.
    #[arg(long)]
    aud: Option<String>,
    /// Session id (revocable).
    #[arg(long)]
    sid: Option<String>,
    /// Allowed path prefixes, comma-separated.
    #[arg(long)]
    paths: Option<String>,
    /// Client IP or CIDR the token is bound to.
    #[arg(long)]
    ip: Option<String>,
    /// Mint this many distinct tokens (one per line, each with its own `jti`), e.g. for load tests.
    #[arg(long, default_value_t = 1)]
    count: u32,
}

fn parse_alg(s: &str) -> anyhow::Result<Alg> {
    match s.to_ascii_uppercase().as_str() {
        "ES256" => Ok(Alg::ES256),
        "RS256" => Ok(Alg::RS256),
        other => anyhow::bail!("unsupported --alg {other:?}: use ES256 or RS256"),
    }
}

fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let key = mint::SigningKey::load(&args.kid, &args.key)
        .with_context(|| format!("loading {}", args.key.display()))?;
    let ttl =
        tollgate::config::parse_duration(&args.ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    let now = tollgate::edge::unix_now();
    let mut claims = serde_json::json!({ "iat": now, "exp": now + ttl.as_secs() });
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect()
    };
    if let Some(v) = &args.sub {
        claims["sub"] = v.clone().into();
    }
    if let Some(v) = &args.subs {
        claims["subs"] = list(v).into();
    }
    if let Some(v) = &args.iss {
        claims["iss"] = v.clone().into();
    }
    if let Some(v) = &args.aud {
        claims["aud"] = v.clone().into();
    }
    if let Some(v) = &args.sid {
        claims["sid"] = v.clone().into();
    }
    if let Some(v) = &args.paths {
        claims["paths"] = list(v).into();
    }
    if let Some(v) = &args.ip {
        claims["ip"] = v.clone().into();
    }
    if args.count <= 1 {
        let token = key.sign(&claims)?;
        println!("{token}");
        if let Some(first) = args
            .paths
            .as_deref()
            .and_then(|p| list(p).into_iter().next())
        {
            // Path-token playback form: relative segment URLs in the manifest inherit the token.
            let prefix = args
                .sid
                .as_deref()
                .map(|s| format!("{s}."))
                .unwrap_or_default();
            let path = if first.ends_with('/') {
                format!("{first}index.m3u8")
            } else {
                first
            };
            eprintln!("playback URL form: https://EDGE/{prefix}{token}{path}");
        }
        return Ok(());
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in 0..args.count {
        claims["jti"] = format!("{now}-{i}").into();
        writeln!(out, "{}", key.sign(&claims)?)?;
    }
    out.flush()?;
    Ok(())
}

fn check(conf: &Path) -> ExitCode {
    match tollgate::config::load(conf) {
        Err(e) => {
            eprintln!("{}: {e}", conf.display());
            ExitCode::FAILURE
        }
        Ok(config) => {
            let key_problems = tollgate::edge::key_problems(&config);
            if !key_problems.is_empty() {
                eprintln!(
                    "{}: {} problem(s) with the keys:",
                    conf.display(),
                    key_problems.len()
                );
                for p in key_problems {
                    eprintln!("  - {p}");
                }
                return ExitCode::FAILURE;
            }
            check_edge(conf, config)
        }
    }
}

fn check_edge(conf: &Path, config: tollgate::config::Config) -> ExitCode {
    {
        match tollgate::edge::Edge::new(config) {
            Err(e) => {
                eprintln!("{}: {e}", conf.display());
                ExitCode::FAILURE
            }
            Ok(edge) => {
                println!(
                    "{}: OK ({} routes, {} origins, {} keys)",
                    conf.display(),
                    edge.config.routes.len(),
                    edge.config.origins.len(),
                    edge.keys.load().len()
                );
                ExitCode::SUCCESS
            }
        }
    }
}

fn run(conf: &Path, flags: RunFlags) -> anyhow::Result<()> {
    let config =
        tollgate::config::load(conf).map_err(|e| anyhow::anyhow!("{}: {e}", conf.display()))?;
    init_logger(&config.logging.level);
    let edge = tollgate::edge::Edge::new(config)?;
    let server = tollgate::app::build(edge, flags)?;
    if server.configuration.daemon {
        tollgate::app::exit_launcher_on_readiness_signal();
    }
    server.run_forever()
}

/// The log filter: `RUST_LOG` if set, else `level` (from `logging.level` when running a config).
/// Pingora's routine graceful-upgrade retries are logged at INFO, not ERROR/WARN (see
/// [`tollgate::logger`]: a normal upgrade logs nothing above INFO, a failed one still ERROR).
fn init_logger(level: &str) {
    tollgate::logger::init(level);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!((&cli.command, &cli.conf), (None, Some(_))) {
        init_logger(tollgate::config::raw::DEFAULT_LOG_LEVEL);
    }
    let flags = RunFlags {
        daemon: cli.daemon,
        upgrade: cli.upgrade,
        test: cli.test,
    };
    let result = match (&cli.command, &cli.conf) {
        (Some(Command::Check { conf }), _) => return check(conf),
        (Some(Command::Demo(args)), _) => tollgate::demo::run(args),
        (Some(Command::Keygen { alg, kid, out }), _) => parse_alg(alg).and_then(|alg| {
            let (pem, jwks) = mint::keygen_to_dir(alg, kid, out)?;
            println!(
                "private key: {}\npublic JWKS: {}",
                pem.display(),
                jwks.display()
            );
            Ok(())
        }),
        (Some(Command::Token(args)), _) => token(args),
        (Some(Command::Keys(KeysCommand::Publish { jwks, conf })), _) => publish_keys(jwks, conf),
        (None, Some(conf)) => run(conf, flags),
        (None, None) => tollgate::demo::run(&tollgate::demo::DemoArgs::default()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
