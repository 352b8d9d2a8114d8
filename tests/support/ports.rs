//! Ports the harness names in configs (edges, their admin and TLS listeners, NATS, shield peers).
//!
//! A port taken from the kernel with a bind to `127.0.0.1:0` comes from the ephemeral range
//! (`net.ipv4.ip_local_port_range`), which is also where every outgoing connection and every
//! other `bind(0)` in this process (origins, clients) takes its port. So a port chosen free could
//! be taken before the node bound it, and a node stopped to be started again on the same ports
//! could find them taken: CI met both, once as "is in use, will try again" until the start's
//! deadline, once as a restarted fleet node's checks answered by another test's node that had
//! been given its freed ports.
//!
//! Ports handed out here come from below the ephemeral range instead, where the kernel never
//! chooses one by itself, each at most once per test process, starting at a point that differs
//! between processes; each is checked free by binding it. So only an explicit bind can take one,
//! and no other test in this process binds it.

use std::net::TcpListener;
use std::sync::Mutex;

/// The lowest port handed out: above the usual services' ports (8080, 9090, NATS' 4222...).
const LOWEST: u16 = 10_000;

/// Where the sequence stands: `(next, end)`, the range being `LOWEST..end`; `None` until first
/// use.
static NEXT: Mutex<Option<(u16, u16)>> = Mutex::new(None);

/// The first port of the ephemeral range (32768 when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A port that was free a moment ago, below the ephemeral range and not handed out before by
/// this process.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct ports as [`free_port`] (all held at once while choosing).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let (mut at, end) = *next.get_or_insert_with(|| {
        let end = ephemeral_start();
        assert!(
            end > LOWEST + 2_000,
            "ip_local_port_range starts at {end}: no room below it for the tests' ports"
        );
        // a start that differs between processes, so that two test runs at once rarely meet
        let nanos = std::time::UNIX_EPOCH
            .elapsed()
            .map_or(0, |d| d.subsec_nanos());
        let mixed = (u64::from(std::process::id()) ^ u64::from(nanos))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            >> 32;
        let start = LOWEST + (mixed % u64::from(end - LOWEST)) as u16;
        (start, end)
    });
    let mut held = Vec::with_capacity(N);
    let mut tried = 0u32;
    while held.len() < N {
        assert!(
            tried < u32::from(end - LOWEST),
            "no free port left below {end} for the tests"
        );
        tried += 1;
        let port = at;
        at = if at + 1 >= end { LOWEST } else { at + 1 };
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    *next = Some((at, end));
    std::array::from_fn(|i| held[i].local_addr().expect("local addr").port())
}
