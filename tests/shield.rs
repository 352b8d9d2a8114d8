//! The shield tier (SPEC §9), end to end: three real nodes in one ring (ketama over the cache
//! key, `fleet.peers`), one origin, all on loopback. Every node is asked for every object; the
//! origin must see each (object, variant) once. Readers keep their variant; a client cannot
//! claim one; the owner going away costs no request.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::seq::SliceRandom;
use support::tokens;
use support::{fleet_yaml, free_ports, send, Edge, EdgeOptions, Nats, Origin, Resp};
use tollgate::auth::mint::SigningKey;

const HOST: &str = "news.example";
const IDS: [&str; 3] = ["a", "b", "c"];

/// One ring at a time: four rings of three nodes (and four NATS servers) at once on two cores
/// starve each other, and a node whose health checks or peer connections run late sends misses
/// to the origin. Each test holds this while its ring runs.
static ONE_RING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Ring {
    _nats: Nats,
    origin: Origin,
    nodes: Vec<Edge>,
    _secret: tempfile::TempDir,
}

fn start_ring(key: &SigningKey) -> Ring {
    let nats = Nats::start();
    let origin = Origin::start();
    let secret = tempfile::tempdir().unwrap();
    let secret_file = secret.path().join("fleet.secret");
    std::fs::write(&secret_file, "a fleet secret of 32 bytes......\n").unwrap();
    let ports = free_ports::<6>();
    let mut peers = String::from("peers:\n");
    for (i, id) in IDS.iter().enumerate() {
        peers.push_str(&format!(
            "    - {{ id: {id}, addr: \"127.0.0.1:{}\" }}\n",
            ports[2 * i]
        ));
    }
    let nodes = IDS
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let opts = EdgeOptions {
                extra_yaml: fleet_yaml(
                    &nats,
                    id,
                    &[
                        "replay_timeout: 2s",
                        &format!("secret_file: {}", secret_file.display()),
                        "shield: { enabled: true, hash: ketama }",
                        peers.trim_end(),
                    ],
                ),
                grace_period_seconds: Some(0),
                graceful_shutdown_timeout_seconds: Some(1),
                ..EdgeOptions::default()
            };
            Edge::start_on(
                &origin,
                &[key],
                opts,
                Some((ports[2 * i], ports[2 * i + 1])),
            )
        })
        .collect();
    Ring {
        _nats: nats,
        origin,
        nodes,
        _secret: secret,
    }
}

impl Ring {
    /// Each node's log lines after start-up, by node: peers found down or unreachable, and
    /// Pingora's cache-lock warnings (a dangling lock, a retry limit), any of which can send a
    /// second request for one object to the origin.
    fn node_log(&self) -> Vec<String> {
        self.nodes
            .iter()
            .zip(IDS)
            .flat_map(|(n, id)| {
                n.stderr()
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("shield"))
                    .map(|l| format!("{id}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Wait until every node's health checks count every peer as up: a node started before
    /// its peers listen finds them down for a while (its misses then go to the origin).
    async fn ready(&self) {
        for (node, me) in self.nodes.iter().zip(IDS) {
            for peer in IDS.iter().filter(|&&p| p != me) {
                node.expect_metric(
                    "tollgate_shield_peer_up",
                    &[("peer", peer)],
                    Duration::from_secs(10),
                    |v| v == 1.0,
                )
                .await;
            }
        }
    }
}

async fn get(node: &Edge, path: &str, token: Option<&str>) -> Resp {
    let mut rb = support::client().get(node.url(path)).header("host", HOST);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    send(rb).await
}

async fn shield_requests(node: &Edge, peer: &str, outcome: &str) -> f64 {
    node.metric(
        "tollgate_shield_requests_total",
        &[("peer", peer), ("outcome", outcome)],
    )
    .await
}

#[tokio::test]
async fn every_object_is_fetched_from_the_origin_once_for_the_whole_ring() {
    let key = tokens::es256("k1");
    let _one = ONE_RING.lock().await;
    let ring = start_ring(&key);
    ring.ready().await;
    let mut asks: Vec<(usize, usize)> =
        (0..100).flat_map(|o| (0..3).map(move |n| (n, o))).collect();
    asks.shuffle(&mut rand::thread_rng());
    let answers: Vec<(usize, usize, Resp)> = futures::stream::iter(asks)
        .map(|(n, o)| {
            let node = &ring.nodes[n];
            async move { (n, o, get(node, &format!("/news/obj-{o}"), None).await) }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    for (n, o, r) in &answers {
        assert_eq!(r.status, 200, "node {n} object {o}: {r:?}");
        assert!(
            r.body.contains(&format!("/news/obj-{o}")),
            "node {n} object {o}: {}",
            r.body
        );
    }
    for o in 0..100 {
        let path = format!("/news/obj-{o}");
        assert_eq!(
            ring.origin.hits(&path),
            1,
            "object {o} reached the origin more than once; the origin's requests: {:?}; its \
             answers: {:?}; the nodes' warnings, errors and shield lines: {:?}",
            ring.origin
                .requests_for(&path)
                .iter()
                .map(|r| &r.headers)
                .collect::<Vec<_>>(),
            answers
                .iter()
                .filter(|(_, ob, _)| *ob == o)
                .map(|(n, _, r)| (IDS[*n], r.cache_status()))
                .collect::<Vec<_>>(),
            ring.node_log()
        );
    }
    assert_eq!(
        ring.origin.total(),
        100,
        "three nodes, 100 objects, 100 origin requests"
    );
    // misses went through owners: each node forwarded to both others
    let mut forwarded = 0.0;
    for (i, node) in ring.nodes.iter().enumerate() {
        for peer in IDS.iter().filter(|p| **p != IDS[i]) {
            let n = shield_requests(node, peer, "hit").await
                + shield_requests(node, peer, "miss").await;
            assert!(n > 0.0, "node {} sent nothing to {peer}", IDS[i]);
            forwarded += n;
        }
    }
    assert!(
        forwarded >= 100.0,
        "about two thirds of 300 asks go to an owner: {forwarded}"
    );
    let via_peer = answers
        .iter()
        .filter(|(_, _, r)| r.cache_status().contains("fwd-peer="))
        .count();
    assert!(
        via_peer > 0,
        "Cache-Status names the hop on misses filled by a peer"
    );
    // and now every node has every object
    for node in &ring.nodes {
        for o in [0, 37, 99] {
            assert!(get(node, &format!("/news/obj-{o}"), None).await.is_hit());
        }
    }
}

#[tokio::test]
async fn each_paywall_variant_is_fetched_once_and_reaches_only_its_readers() {
    let key = tokens::es256("k1");
    let _one = ONE_RING.lock().await;
    let ring = start_ring(&key);
    ring.ready().await;
    let sub = tokens::subscriber(&key, "alice");
    let mut asks: Vec<(usize, usize, bool)> = (0..30)
        .flat_map(|o| (0..3).flat_map(move |n| [(n, o, false), (n, o, true)]))
        .collect();
    asks.shuffle(&mut rand::thread_rng());
    let answers: Vec<(usize, usize, bool, Resp)> = futures::stream::iter(asks)
        .map(|(n, o, s)| {
            let (node, sub) = (&ring.nodes[n], &sub);
            async move {
                let r = get(node, &format!("/premium/p-{o}"), s.then_some(sub.as_str())).await;
                (n, o, s, r)
            }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    for (n, o, s, r) in &answers {
        assert_eq!(r.status, 200);
        if *s {
            assert!(
                r.is_full(),
                "node {n} object {o}: the subscriber gets the article"
            );
            assert_eq!(r.header("cache-control"), Some("private"), "{r:?}");
        } else {
            assert!(
                r.is_teaser(),
                "node {n} object {o}: an anonymous reader gets the teaser"
            );
        }
    }
    for o in 0..30 {
        let seen: Vec<String> = ring
            .origin
            .requests_for(&format!("/premium/p-{o}"))
            .iter()
            .map(|r| r.header("x-tollgate-variant").unwrap_or_default())
            .collect();
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            ["anonymous", "subscriber"],
            "object {o}: {seen:?}; the nodes' warnings, errors and shield lines: {:?}",
            ring.node_log()
        );
    }
    // nothing but edges decide variants: no shield signature ever reaches the origin
    assert!(ring
        .origin
        .requests()
        .iter()
        .all(|r| !r.mentions("x-tollgate-shield")));
}

#[tokio::test]
async fn a_client_cannot_claim_a_variant_with_the_peer_headers() {
    let key = tokens::es256("k1");
    let _one = ONE_RING.lock().await;
    let ring = start_ring(&key);
    ring.ready().await;
    let now = tokens::now();
    for (i, node) in ring.nodes.iter().enumerate() {
        let path = format!("/premium/forged-{i}");
        let r = send(
            support::client()
                .get(node.url(&path))
                .header("host", HOST)
                .header("x-tollgate-variant", "subscriber")
                .header("x-tollgate-shield", format!("v1 b {now} c2lnbmF0dXJl")),
        )
        .await;
        assert!(r.is_teaser(), "node {}: {r:?}", IDS[i]);
        let seen = ring.origin.requests_for(&path);
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].header("x-tollgate-variant").as_deref(),
            Some("anonymous")
        );
        assert!(!seen[0].mentions("c2lnbmF0dXJl"));
    }
}

#[tokio::test]
async fn the_owner_going_away_costs_no_request_and_it_takes_its_share_back() {
    let key = tokens::es256("k1");
    let _one = ONE_RING.lock().await;
    let mut ring = start_ring(&key);
    ring.ready().await;
    // warm the connections between nodes
    for o in 0..30 {
        assert_eq!(
            get(&ring.nodes[0], &format!("/news/w-{o}"), None)
                .await
                .status,
            200
        );
    }
    let before = shield_requests(&ring.nodes[0], "c", "miss").await;
    assert!(before > 0.0, "node a sent some misses to c");
    ring.nodes[2].kill_hard();
    let killed = Instant::now();
    for o in 0..30 {
        for (node, id) in ring.nodes[..2].iter().zip(IDS) {
            let r = get(node, &format!("/news/k-{o}"), None).await;
            assert_eq!(r.status, 200, "node {id} object {o} with c down: {r:?}");
        }
    }
    let errors = shield_requests(&ring.nodes[0], "c", "error").await
        + shield_requests(&ring.nodes[1], "c", "error").await;
    eprintln!(
        "{errors} misses found c down ({:?} after the kill)",
        killed.elapsed()
    );
    assert!(
        errors > 0.0,
        "the metric shows the misses that found c down"
    );
    for o in 0..30 {
        assert_eq!(ring.origin.hits(&format!("/news/k-{o}")), 1, "k-{o}");
    }
    ring.nodes[2].start_again();
    // c is checked every second; new objects it owns go to it again
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut o = 0;
    loop {
        assert_eq!(
            get(&ring.nodes[0], &format!("/news/back-{o}"), None)
                .await
                .status,
            200
        );
        o += 1;
        if shield_requests(&ring.nodes[0], "c", "miss").await > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "c did not take its share back within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
