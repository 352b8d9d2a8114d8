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
//! Ports handed out here come from outside the ephemeral range instead (below it, or above it
//! where the range starts low), where the kernel never chooses one by itself, each at most once
//! per test process, starting at a point that differs between processes; each is checked free
//! by binding it. So only an explicit bind can take one, and no other test in this process binds
//! it. A machine whose ephemeral range leaves no room on either side gets the kernel's choice,
//! as before.

use std::net::TcpListener;
use std::ops::Range;
use std::sync::Mutex;

/// The lowest port handed out: above the usual services' ports (8080, 9090, NATS' 4222...).
const LOWEST: u16 = 10_000;
/// The fewest ports a range outside the ephemeral one must offer to be used.
const ENOUGH: u16 = 2_000;

/// The range ports come from and the next one to try, or `None` when there is no room outside
/// the ephemeral range.
type Sequence = Option<(Range<u16>, u16)>;

/// The [`Sequence`], from its first use.
static NEXT: Mutex<Option<Sequence>> = Mutex::new(None);

/// Ports outside `net.ipv4.ip_local_port_range` (32768-60999 when it cannot be read): below it
/// from [`LOWEST`], else above it, if either offers [`ENOUGH`].
fn outside_ephemeral() -> Option<Range<u16>> {
    let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999));
    if lo >= LOWEST.saturating_add(ENOUGH) {
        Some(LOWEST..lo)
    } else if u16::MAX - hi >= ENOUGH {
        Some(hi + 1..u16::MAX)
    } else {
        None
    }
}

/// A port that was free a moment ago, outside the ephemeral range and not handed out before by
/// this process (see the module).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct ports as [`free_port`] (all held at once while choosing).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let state = next.get_or_insert_with(|| {
        let range = outside_ephemeral()?;
        // a start that differs between processes, so that two test runs at once rarely meet
        let nanos = std::time::UNIX_EPOCH
            .elapsed()
            .map_or(0, |d| d.subsec_nanos());
        let mixed = (u64::from(std::process::id()) ^ u64::from(nanos))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            >> 32;
        let start = range.start + (mixed % u64::from(range.len() as u16)) as u16;
        Some((range, start))
    });
    let held: Vec<TcpListener> = match state {
        None => (0..N)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
            .collect(),
        Some((range, at)) => {
            let mut held = Vec::with_capacity(N);
            let mut tried = 0;
            while held.len() < N {
                assert!(
                    tried < range.len(),
                    "no free port left in {range:?} for the tests"
                );
                tried += 1;
                let port = *at;
                *at = if port + 1 >= range.end {
                    range.start
                } else {
                    port + 1
                };
                if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
                    held.push(listener);
                }
            }
            held
        }
    };
    std::array::from_fn(|i| held[i].local_addr().expect("local addr").port())
}
