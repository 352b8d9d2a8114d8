//! The fleet (SPEC §9), end to end: a real `nats-server -js` started by the test, three real
//! edge nodes on loopback, purges, revocations and key sets published on one node and applied
//! on every node; restarts of a node and of NATS; NATS down; fleet-wide auto-revocation.
//!
//! "Within 1 s" is measured from the admin call's answer, by polling (every 20 ms) until the
//! effect shows or the second is over.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::tokens;
use support::{fleet_yaml, get, send, Edge, EdgeOptions, Nats, Origin, Tok};
use tollgate::auth::mint::SigningKey;

const WITHIN: Duration = Duration::from_secs(1);

struct Fleet {
    nats: Nats,
    origin: Origin,
    nodes: Vec<Edge>,
}

fn node_options(nats: &Nats, id: &str, extra_yaml: &str) -> EdgeOptions {
    EdgeOptions {
        extra_yaml: format!(
            "{}{extra_yaml}",
            fleet_yaml(nats, id, &["replay_timeout: 2s"])
        ),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..EdgeOptions::default()
    }
}

impl Fleet {
    fn start(key: &SigningKey, extra_yaml: &str) -> Fleet {
        let nats = Nats::start();
        let origin = Origin::start();
        let nodes = ["a", "b", "c"]
            .iter()
            .map(|id| Edge::start_with(&origin, &[key], node_options(&nats, id, extra_yaml)))
            .collect();
        Fleet {
            nats,
            origin,
            nodes,
        }
    }
}

fn with_sid(key: &SigningKey, sub: &str, sid: &str) -> String {
    let mut c = tokens::claims(sub, &["premium"], 3600);
    c["sid"] = sid.into();
    tokens::sign(key, &c)
}

async fn admin_json(edge: &Edge, path: &str, body: Value) -> (u16, Value) {
    let (status, text) = edge.admin_post(path, body.to_string()).await;
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{path} answered {status} with non-JSON ({e}): {text}"));
    (status, v)
}

async fn fleet_status(edge: &Edge) -> Value {
    let r = support::client()
        .get(edge.admin_url("/admin/fleet"))
        .bearer_auth(&edge.admin_token)
        .send()
        .await
        .expect("GET /admin/fleet");
    assert_eq!(r.status().as_u16(), 200);
    serde_json::from_str(&r.text().await.expect("body")).expect("JSON")
}

/// Poll `check` every 20 ms until it holds or `limit` has passed since `since`; returns the
/// time it took, or panics with `what`.
async fn within<F, Fut>(since: Instant, limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if check().await {
            return since.elapsed();
        }
        assert!(
            since.elapsed() <= limit,
            "{what}: not within {limit:?} of the admin answer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_purge_on_one_node_is_a_miss_on_every_node_within_a_second() {
    let key = tokens::es256("k1");
    let fleet = Fleet::start(&key, "");
    let p = "/news/purged";
    for node in &fleet.nodes {
        get(node, p, Tok::None).await;
        assert!(get(node, p, Tok::None).await.is_hit(), "warm on every node");
    }
    assert!(get(&fleet.nodes[1], "/news/kept", Tok::None)
        .await
        .is_miss());
    assert_eq!(fleet.origin.hits(p), 3);

    let (status, answer) = admin_json(
        &fleet.nodes[0],
        "/admin/purge",
        serde_json::json!({ "paths": [p] }),
    )
    .await;
    let answered = Instant::now();
    assert_eq!(status, 200, "{answer}");
    assert!(answer["seq"].as_u64().unwrap() >= 1, "{answer}");
    assert_eq!(answer["applied_here"], true, "{answer}");
    assert_eq!(answer["purged"], 1, "{answer}");
    assert!(get(&fleet.nodes[0], p, Tok::None).await.is_miss());
    for node in &fleet.nodes[1..] {
        let took = within(answered, WITHIN, "purge on a → miss", || async {
            get(node, p, Tok::None).await.is_miss()
        })
        .await;
        eprintln!("purge visible after {took:?}");
    }
    assert_eq!(fleet.origin.hits(p), 6, "each node refetched once");
    assert!(
        get(&fleet.nodes[1], "/news/kept", Tok::None).await.is_hit(),
        "other objects untouched"
    );
    for node in &fleet.nodes {
        let s = fleet_status(node).await;
        assert_eq!(s["connected"], true, "{s}");
        assert_eq!(s["last_applied_sequence"], s["stream_last_sequence"], "{s}");
        assert_eq!(s["replay_complete"], true, "{s}");
        assert_eq!(
            node.metric("tollgate_fleet_events_applied_total", &[("kind", "purge")])
                .await,
            1.0
        );
    }
}

#[tokio::test]
async fn a_revocation_on_one_node_is_refused_on_every_node_within_a_second() {
    let key = tokens::es256("k1");
    let fleet = Fleet::start(&key, "");
    let shared = with_sid(&key, "mallory", "s-shared");
    let other = with_sid(&key, "alice", "s-alice");
    let p = "/premium/story";
    for node in &fleet.nodes {
        for tok in [&shared, &other] {
            assert!(get(node, p, Tok::Bearer(tok)).await.is_full());
        }
    }
    let (status, answer) = admin_json(
        &fleet.nodes[1],
        "/admin/revoke",
        serde_json::json!({ "sid": "s-shared", "ttl_seconds": 600 }),
    )
    .await;
    let answered = Instant::now();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["revoked"], "s-shared", "{answer}");
    assert!(answer["seq"].as_u64().is_some(), "{answer}");
    for node in [&fleet.nodes[0], &fleet.nodes[2]] {
        let took = within(answered, WITHIN, "revoke on b → teaser on a, c", || async {
            get(node, p, Tok::Bearer(&shared)).await.is_teaser()
        })
        .await;
        eprintln!("revocation visible after {took:?}");
    }
    for node in &fleet.nodes {
        assert!(get(node, p, Tok::Bearer(&shared)).await.is_teaser());
        assert!(
            get(node, p, Tok::Bearer(&other)).await.is_full(),
            "another session is unaffected"
        );
    }
    // lifting it is an event too
    let (status, answer) = admin_json(
        &fleet.nodes[2],
        "/admin/unrevoke",
        serde_json::json!({ "sid": "s-shared" }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["unrevoked"], true, "{answer}");
    let answered = Instant::now();
    for node in &fleet.nodes {
        within(answered, WITHIN, "unrevoke on c → full again", || async {
            get(node, p, Tok::Bearer(&shared)).await.is_full()
        })
        .await;
    }
}

#[tokio::test]
async fn a_stopped_node_replays_what_it_missed_before_it_serves() {
    let key = tokens::es256("k1");
    let mut fleet = Fleet::start(&key, "");
    let tok = with_sid(&key, "mallory", "s-replayed");
    let (p, q) = ("/premium/replayed", "/news/replayed");
    for node in &fleet.nodes {
        assert!(get(node, p, Tok::Bearer(&tok)).await.is_full());
        get(node, q, Tok::None).await;
    }
    assert!(get(&fleet.nodes[2], q, Tok::None).await.is_hit());
    fleet.nodes[2].stop();

    let (status, answer) = admin_json(
        &fleet.nodes[0],
        "/admin/revoke",
        serde_json::json!({ "sid": "s-replayed" }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = admin_json(
        &fleet.nodes[1],
        "/admin/purge",
        serde_json::json!({ "prefixes": ["/news/"] }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let last = answer["seq"].as_u64().unwrap();

    fleet.nodes[2].start_again();
    let c = &fleet.nodes[2];
    // the very first requests, as soon as the listener accepts
    let first = get(c, p, Tok::Bearer(&tok)).await;
    assert!(first.is_teaser(), "revoked while stopped: {first:?}");
    assert!(get(c, q, Tok::None).await.is_miss(), "purged while stopped");
    let s = fleet_status(c).await;
    assert_eq!(s["last_applied_sequence"], last, "{s}");
    assert_eq!(s["replay_complete"], true, "{s}");
    assert_eq!(
        c.metric("tollgate_fleet_replay_complete", &[]).await,
        1.0,
        "{}",
        c.stderr_tail(20)
    );
    // the restarted node resumed from its own record: nothing before it was applied again
    assert_eq!(
        c.metric("tollgate_fleet_events_applied_total", &[("kind", "revoke")])
            .await
            + c.metric("tollgate_fleet_events_applied_total", &[("kind", "purge")])
                .await,
        2.0
    );
}

#[tokio::test]
async fn nats_down_serving_goes_on_and_every_event_is_applied_once_it_is_back() {
    let key = tokens::es256("k1");
    let mut fleet = Fleet::start(&key, "");
    let tok = with_sid(&key, "eve", "s-before");
    let tok2 = with_sid(&key, "eve", "s-after");
    let p = "/premium/outage";
    for node in &fleet.nodes {
        assert!(get(node, p, Tok::Bearer(&tok)).await.is_full());
        assert!(get(node, "/news/outage", Tok::None).await.is_miss());
    }
    let (status, before) = admin_json(
        &fleet.nodes[0],
        "/admin/revoke",
        serde_json::json!({ "sid": "s-before" }),
    )
    .await;
    assert_eq!(status, 200, "{before}");

    fleet.nats.kill();
    for node in &fleet.nodes {
        node.expect_metric(
            "tollgate_fleet_connected",
            &[],
            Duration::from_secs(5),
            |v| v == 0.0,
        )
        .await;
        assert!(
            get(node, "/news/outage", Tok::None).await.is_hit(),
            "hits go on"
        );
        assert!(get(node, p, Tok::Bearer(&tok)).await.is_teaser());
        let (status, text) = node.purge(r#"{"paths": ["/news/outage"]}"#).await;
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("NATS is unreachable"), "{text}");
        assert!(
            get(node, "/news/outage", Tok::None).await.is_hit(),
            "not purged"
        );
    }
    // a node restarted while NATS is down serves after fleet.replay_timeout, with the
    // revocations it had
    fleet.nodes[2].stop();
    fleet.nodes[2].start_again();
    let c = &fleet.nodes[2];
    assert!(get(c, p, Tok::Bearer(&tok)).await.is_teaser());
    assert_eq!(c.metric("tollgate_fleet_replay_complete", &[]).await, 0.0);
    assert!(c.stderr().contains("serving without a complete replay"));

    fleet.nats.start_again();
    for node in &fleet.nodes {
        node.expect_metric(
            "tollgate_fleet_connected",
            &[],
            Duration::from_secs(10),
            |v| v == 1.0,
        )
        .await;
    }
    let (status, after) = admin_json(
        &fleet.nodes[1],
        "/admin/revoke",
        serde_json::json!({ "sid": "s-after" }),
    )
    .await;
    assert_eq!(status, 200, "{after}");
    assert!(
        after["seq"].as_u64() > before["seq"].as_u64(),
        "{before} {after}"
    );
    let answered = Instant::now();
    for node in &fleet.nodes {
        within(answered, WITHIN, "revocation after the outage", || async {
            get(node, p, Tok::Bearer(&tok2)).await.is_teaser()
        })
        .await;
        assert!(get(node, p, Tok::Bearer(&tok)).await.is_teaser());
        let s = fleet_status(node).await;
        assert_eq!(s["last_applied_sequence"], after["seq"], "{s}");
    }
    let purged = fleet.nodes[0]
        .purge_ok(r#"{"paths": ["/news/outage"]}"#)
        .await;
    assert_eq!(purged, 1);
    assert!(fleet.nodes.iter().all(|n| n.exit_status().is_none()));
    assert!(
        fleet.nodes.iter().all(|n| !n.stderr().contains("panicked")),
        "no worker panicked"
    );
}

#[tokio::test]
async fn a_session_shared_across_nodes_is_revoked_fleet_wide_and_two_addresses_never_are() {
    let key = tokens::es256("k1");
    let extra = "trusted_proxies: [127.0.0.1/32]\nrevocation:\n  auto: { max_ips: 5 }\n";
    let fleet = Fleet::start(&key, extra);
    let shared = with_sid(&key, "mallory", "s-leaked");
    let honest = with_sid(&key, "alice", "s-honest");
    let p = "/premium/shared";
    let from = |node: &Edge, tok: &str, addr: String| {
        send(
            support::client()
                .get(node.url(p))
                .bearer_auth(tok)
                .header("x-forwarded-for", addr),
        )
    };
    // the honest reader: two addresses (home and phone), on every node, many times
    for round in 0..3 {
        for node in &fleet.nodes {
            for addr in ["192.0.2.1", "2001:db8::7"] {
                assert!(
                    from(node, &honest, addr.into()).await.is_full(),
                    "round {round}: two addresses are never revoked"
                );
            }
        }
    }
    // the leaked session: two addresses per node (under every node's own limit of 5), six in all
    let mut n = 0;
    for node in &fleet.nodes[..2] {
        for _ in 0..2 {
            n += 1;
            assert!(from(node, &shared, format!("198.51.100.{n}"))
                .await
                .is_full());
        }
    }
    // node c has heard the pairs new to the fleet: the honest reader's 2 (from a; b had heard
    // them from a already, so it did not repeat them) and the leaked session's 2 + 2
    let c = &fleet.nodes[2];
    let (heard, all) = c
        .poll_metric(
            "tollgate_fleet_sightings_received_total",
            &[],
            Duration::from_secs(2),
            |v| v >= 6.0,
        )
        .await;
    assert!(all, "node c heard {heard} sightings");
    assert!(from(c, &shared, "198.51.100.5".into()).await.is_full());
    let r = from(c, &shared, "198.51.100.6".into()).await;
    let crossed = Instant::now();
    assert!(
        r.is_teaser(),
        "the sixth address crosses 5 on node c: {r:?}"
    );
    for node in &fleet.nodes {
        within(crossed, WITHIN, "auto-revocation on every node", || async {
            from(node, &shared, "198.51.100.1".into()).await.is_teaser()
        })
        .await;
        assert!(from(node, &honest, "192.0.2.1".into()).await.is_full());
    }
    // one revoke event in the stream, however many nodes saw the limit crossed
    let s = fleet_status(&fleet.nodes[0]).await;
    assert_eq!(s["stream_last_sequence"], 1, "{s}");
}

#[tokio::test]
async fn a_key_set_published_once_verifies_on_every_node_and_survives_a_restart_without_nats() {
    let old = tokens::es256("k-old");
    let new = tokens::es256("k-new");
    let mut fleet = Fleet::start(&old, "");
    let p = "/premium/keys";
    let tok_new = tokens::subscriber(&new, "bob");
    assert!(get(&fleet.nodes[0], p, Tok::Bearer(&tok_new))
        .await
        .is_teaser());

    let jwks = fleet.nodes[0].dir().join("fleet-jwks.json");
    std::fs::write(&jwks, tollgate::auth::mint::jwks_json(&[&new])).unwrap();
    let config = fleet.nodes[0].dir().join("tollgate.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["keys", "publish", "--jwks"])
        .arg(&jwks)
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keys publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let published = Instant::now();
    for node in &fleet.nodes {
        within(published, WITHIN, "new key on every node", || async {
            get(node, p, Tok::Bearer(&tok_new)).await.is_full()
        })
        .await;
        let tok_old = tokens::subscriber(&old, "carol");
        assert!(
            get(node, p, Tok::Bearer(&tok_old)).await.is_full(),
            "the configured key stays"
        );
    }
    // a broken set is refused by the CLI, and a broken value put into the bucket by anyone
    // keeps the previous set
    std::fs::write(&jwks, r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["keys", "publish", "--jwks"])
        .arg(&jwks)
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let client = async_nats::connect(fleet.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value("tollgate-keys").await.unwrap();
    kv.put("jwks", "{not a key set".into()).await.unwrap();
    for node in &fleet.nodes {
        node.expect_metric(
            "tollgate_fleet_events_rejected_total",
            &[],
            Duration::from_secs(2),
            |v| v >= 1.0,
        )
        .await;
        assert!(get(node, p, Tok::Bearer(&tok_new)).await.is_full());
    }
    // restart without NATS: the last good set was kept under state_dir
    fleet.nats.kill();
    fleet.nodes[1].stop();
    fleet.nodes[1].start_again();
    let b = &fleet.nodes[1];
    let fresh = tokens::subscriber(&new, "dave");
    let r = get(b, p, Tok::Bearer(&fresh)).await;
    assert!(r.is_full(), "{r:?}; stderr tail:\n{}", b.stderr_tail(20));
}

#[tokio::test]
async fn a_bad_control_event_is_skipped_and_counted_and_the_next_one_applies() {
    let key = tokens::es256("k1");
    let fleet = Fleet::start(&key, "");
    let client = async_nats::connect(fleet.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    for bad in [
        &b"{not json"[..],
        br#"{"kind":"purge","paths":["/a/../../etc"]}"#,
        br#"{"kind":"revoke","sid":"","expires_at":1,"reason":"admin"}"#,
    ] {
        js.publish("tollgate.control.purge", bad.to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let (status, answer) = admin_json(
        &fleet.nodes[0],
        "/admin/purge",
        serde_json::json!({ "paths": ["/news/x"] }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["seq"], 4, "{answer}");
    for node in &fleet.nodes {
        node.expect_metric(
            "tollgate_fleet_last_applied_sequence",
            &[],
            Duration::from_secs(2),
            |v| v == 4.0,
        )
        .await;
        assert_eq!(
            node.metric("tollgate_fleet_events_rejected_total", &[])
                .await,
            3.0
        );
        assert_eq!(
            node.metric("tollgate_fleet_events_applied_total", &[("kind", "purge")])
                .await,
            1.0
        );
        assert!(node.exit_status().is_none());
    }
}

#[tokio::test]
async fn check_reports_every_fleet_problem_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("t.yaml");
    std::fs::write(
        &conf,
        "listeners: [{ addr: \"127.0.0.1:0\" }]\n\
         origins: { o: { url: \"http://127.0.0.1:1\" } }\n\
         routes: [{ match: \"/*\", origin: o, access: public }]\n\
         fleet:\n  node_id: \"bad id\"\n  subject_prefix: \"a.b\"\n  \
         nats: { url: [\"http://x\"], token_file: missing.token }\n  \
         shield: { enabled: true, hash: rendezvous }\n  \
         peers: [{ id: x, addr: nope }, { id: y, addr: \"127.0.0.1:1\" }, \
         { id: y, addr: \"127.0.0.1:2\" }]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for key in [
        "fleet.node_id",
        "fleet.subject_prefix",
        "fleet.nats.url[0]",
        "fleet.nats.token_file",
        "Fix: set state_dir",
        "fleet.shield.hash",
        "fleet.peers[0].addr",
        "fleet.peers[2].id",
        "Fix: set fleet.secret_file",
        "is not in the list",
    ] {
        assert!(text.contains(key), "{key} missing from: {text}");
    }
}
