//! Origins whose addresses change (`resolver:`): the edge looks an origin's name up again when
//! its record expires, and keeps the last good address when the name server fails. The name
//! server is the test's own (UDP, answering `A` records it is told to).

mod support;

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{get, tokens, Edge, EdgeOptions, Origin, Tok};

/// What the name server answers for every `A` question: an address and TTL, or SERVFAIL.
type Answer = Arc<Mutex<Option<(Ipv4Addr, u32)>>>;

/// A name server on 127.0.0.1 (UDP; a TCP listener holds the same port so the test harness,
/// which waits for every loopback address of the config to accept, sees it up). Answers every
/// `A` question with the current [`Answer`] and every other type with no records.
fn name_server(answer: Answer) -> u16 {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let udp = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        let _hold = tcp;
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf) else {
                return;
            };
            if n < 12 {
                continue;
            }
            // the question: labels up to a zero byte, then type and class
            let mut end = 12;
            while end < n && buf[end] != 0 {
                end += 1 + buf[end] as usize;
            }
            let question_end = end + 5;
            if question_end > n {
                continue;
            }
            let qtype = u16::from_be_bytes([buf[end + 1], buf[end + 2]]);
            let current = *answer.lock().unwrap();
            let mut out = Vec::with_capacity(64);
            out.extend_from_slice(&buf[..2]); // id
            let rcode = if current.is_none() { 2 } else { 0 }; // SERVFAIL / NOERROR
            out.extend_from_slice(&[0x81, 0x80 | rcode]);
            let answers = u16::from(current.is_some() && qtype == 1);
            out.extend_from_slice(&[0, 1]);
            out.extend_from_slice(&answers.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.extend_from_slice(&buf[12..question_end]);
            if let (Some((ip, ttl)), 1) = (current, answers) {
                out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&[0, 4]);
                out.extend_from_slice(&ip.octets());
            }
            let _ = udp.send_to(&out, from);
        }
    });
    port
}

#[tokio::test]
async fn a_moved_origin_is_followed_and_a_failing_name_server_keeps_the_last_address() {
    let key = tokens::es256("k1");
    // two origins on one port, at 127.0.0.1 and 127.0.0.2: a port free on the first address
    // may be taken on the second (by another test), so a few are tried
    let (first, moved) = (0..20)
        .find_map(|_| {
            let first = Origin::start();
            let port = first.addr.port();
            let moved = Origin::try_start_at(&format!("127.0.0.2:{port}")).ok()?;
            Some((first, moved))
        })
        .expect("a port free on both 127.0.0.1 and 127.0.0.2");
    let port = first.addr.port();
    let answer: Answer = Arc::new(Mutex::new(Some((Ipv4Addr::new(127, 0, 0, 1), 1))));
    let dns = name_server(answer.clone());
    let edge = Edge::start_with(
        &first,
        &[&key],
        EdgeOptions {
            origin_url: Some(format!("http://origin.test:{port}")),
            extra_yaml: format!(
                "resolver: {{ servers: [\"127.0.0.1:{dns}\"], min_ttl: 1s, max_ttl: 2s }}\n"
            ),
            ..EdgeOptions::default()
        },
    );
    assert_eq!(get(&edge, "/news/before", Tok::None).await.status, 200);
    assert_eq!(
        first.hits("/news/before"),
        1,
        "the name resolved to the first origin"
    );

    // the name moves to 127.0.0.2: followed once its 1 s record expires
    *answer.lock().unwrap() = Some((Ipv4Addr::new(127, 0, 0, 2), 1));
    let moved_at = Instant::now();
    let mut i = 0;
    while moved.total() == 0 {
        assert!(
            moved_at.elapsed() < Duration::from_secs(6),
            "still asking the old address 6 s after the record changed; stderr:\n{}",
            edge.stderr_tail(20)
        );
        assert_eq!(
            get(&edge, &format!("/news/moving-{i}"), Tok::None)
                .await
                .status,
            200
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("followed the move after {:?}", moved_at.elapsed());

    // the name server fails: the last good address stays in use
    *answer.lock().unwrap() = None;
    let (errors, failed) = edge
        .poll_metric(
            "tollgate_origin_resolve_errors_total",
            &[("origin", "news")],
            Duration::from_secs(8),
            |v| v >= 2.0,
        )
        .await;
    assert!(failed, "two failed lookups expected, saw {errors}");
    let before = moved.total();
    for j in 0..5 {
        assert_eq!(
            get(&edge, &format!("/news/failing-{j}"), Tok::None)
                .await
                .status,
            200
        );
    }
    assert_eq!(
        moved.total(),
        before + 5,
        "every miss still reached the moved origin"
    );
    assert!(
        edge.stderr().contains("keeping 127.0.0.2"),
        "{}",
        edge.stderr_tail(20)
    );
}
