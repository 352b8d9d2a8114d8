//! PROXY protocol (v1 text, v2 binary; the `ppp` crate parses) on listeners with
//! `proxy_protocol: true` (SPEC §10).
//!
//! Every connection on such a listener must start with a PROXY header, read within
//! `limits.header_timeout`; one that does not is closed without an answer (it speaks a
//! different protocol than the listener, and there is no peer to answer). The header's source
//! address becomes the connection's peer — what [`crate::viewer`] starts from and what Pingora's
//! `client_addr()` reports — only when the load balancer that sent it is in `trusted_proxies`;
//! from any other peer it is read and ignored. Plain listeners read it in the connection loop
//! ([`super::front`]); TLS listeners before the handshake, through Pingora's pre-TLS callback
//! ([`PreTls`]).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_error::{Error, ErrorType, Result};
use ppp::{HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::edge::Edge;
use crate::http1::Refusal;

/// The longest PROXY header read (v1 is at most 107 bytes; v2 carries TLVs after the addresses).
pub const MAX_HEADER: usize = 4096;

/// What the start of a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Not a complete header yet.
    Partial,
    /// A header of `len` bytes; `source` is the client it names (`None` for `LOCAL` /
    /// `UNKNOWN`, where the connection's own peer stands).
    Header {
        /// Bytes of the header.
        len: usize,
        /// The client's address, if the header names one.
        source: Option<SocketAddr>,
    },
    /// Not a PROXY header.
    Invalid,
}

/// The longest v1 (text) header, CRLF included.
const MAX_V1: usize = 107;

/// Parse a PROXY header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    // A v1 line is judged whole, up to its first LF, which must end a CRLF: cut at a space,
    // `ppp` takes a partial line for a bad one, and given more than the line it looks for the
    // first CR wherever it is (fuzzing found a line ending in a bare LF accepted, then read
    // differently once the request behind it arrived).
    let v1_prefix = b"PROXY ";
    let n = buf.len().min(v1_prefix.len());
    if buf[..n] == v1_prefix[..n] {
        let Some(lf) = buf[..buf.len().min(MAX_V1)]
            .iter()
            .position(|&b| b == b'\n')
        else {
            return if buf.len() >= MAX_V1 {
                Parsed::Invalid
            } else {
                Parsed::Partial
            };
        };
        if lf == 0 || buf[lf - 1] != b'\r' {
            return Parsed::Invalid;
        }
        return match parse_with_ppp(&buf[..=lf]) {
            Parsed::Header { len, source } if len == lf + 1 => Parsed::Header { len, source },
            _ => Parsed::Invalid,
        };
    }
    parse_with_ppp(buf)
}

/// `ppp`'s reading of `buf` (v2, or a complete v1 line).
fn parse_with_ppp(buf: &[u8]) -> Parsed {
    let parsed = HeaderResult::parse(buf);
    if parsed.is_incomplete() {
        return if buf.len() >= MAX_HEADER {
            Parsed::Invalid
        } else {
            Parsed::Partial
        };
    }
    match parsed {
        HeaderResult::V1(Ok(h)) => Parsed::Header {
            len: h.header.len(),
            source: match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                ppp::v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(h)) => Parsed::Header {
            len: h.header.len(),
            source: match (h.command, h.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (_, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                (_, ppp::v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                _ => None,
            },
        },
        _ => Parsed::Invalid,
    }
}

/// Read a PROXY header from the start of `stream` into `buf` (bytes after it stay in `buf`)
/// within `timeout`. Returns the source it names.
pub async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<Option<SocketAddr>, Refusal> {
    let read = async {
        loop {
            match parse(buf) {
                Parsed::Header { len, source } => {
                    buf.advance(len);
                    return Ok(source);
                }
                Parsed::Invalid => return Err(Refusal::ProxyProtocol),
                Parsed::Partial => {}
            }
            buf.reserve(512);
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => return Err(Refusal::ProxyProtocol),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(Refusal::ProxyProtocol))
}

/// The socket's own peer address.
fn socket_peer(stream: &dyn GetSocketDigest) -> Option<IpAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
}

/// Make `source` the peer of the connection whose socket is `fd`, if the socket's own peer
/// is a trusted proxy. Returns whether it was believed.
pub fn believe(
    edge: &Edge,
    stream: &mut dyn GetSocketDigest,
    fd: i32,
    source: Option<SocketAddr>,
) -> bool {
    let (Some(source), Some(peer)) = (source, socket_peer(stream)) else {
        return false;
    };
    if !edge.trusted_proxies.trusts(peer) {
        log::debug!("PROXY header from untrusted peer {peer} ignored");
        return false;
    }
    let digest = SocketDigest::from_raw_fd(fd);
    let _ = digest
        .peer_addr
        .set(Some(pingora_core::protocols::l4::socket::SocketAddr::Inet(
            source,
        )));
    stream.set_socket_digest(digest);
    true
}

/// The PROXY header of TLS listeners, read before the handshake.
pub struct PreTls {
    edge: Arc<Edge>,
}

impl PreTls {
    /// For the TLS listeners of `edge` that have `proxy_protocol`.
    pub fn new(edge: Arc<Edge>) -> PreTls {
        PreTls { edge }
    }
}

#[async_trait]
impl PreTlsProcess for PreTls {
    async fn process(&self, stream: &mut L4Stream) -> Result<()> {
        let mut buf = BytesMut::with_capacity(512);
        let timeout = self.edge.config.limits.header_timeout;
        match read(stream, &mut buf, timeout).await {
            Ok(source) => {
                // what followed the header is the TLS handshake: give it back to the stream
                stream.rewind(&buf);
                let fd = stream.as_raw_fd();
                believe(&self.edge, stream, fd, source);
                Ok(())
            }
            Err(refusal) => {
                self.edge.count_refusal(refusal);
                Error::e_explain(ErrorType::ReadError, "no valid PROXY header")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend(((addresses.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend(addresses);
        h.extend(tlvs);
        h
    }

    #[test]
    fn v1_and_v2_name_the_client() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(v1),
            Parsed::Header {
                len: 41,
                source: Some("203.0.113.7:5555".parse().expect("addr"))
            }
        );
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 5555 443\r\n";
        assert!(
            matches!(parse(v6), Parsed::Header { source: Some(s), .. } if s.ip() == "2001:db8::7".parse::<IpAddr>().expect("ip"))
        );
        let addrs = [203, 0, 113, 8, 10, 0, 0, 1, 0x15, 0xb3, 0, 80];
        let bin = v2(1, 0x11, &addrs, &[0x04, 0, 1, 0x42]);
        let mut with_rest = bin.clone();
        with_rest.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse(&with_rest),
            Parsed::Header {
                len: bin.len(),
                source: Some("203.0.113.8:5555".parse().expect("addr"))
            }
        );
        // LOCAL (health checks) and UNKNOWN name nobody
        assert!(matches!(
            parse(&v2(0, 0x11, &addrs, &[])),
            Parsed::Header { source: None, .. }
        ));
        assert!(matches!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                source: None,
                len: 15
            }
        ));
    }

    #[test]
    fn partial_and_invalid_headers() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n";
        for cut in 1..v1.len() {
            assert_eq!(parse(&v1[..cut]), Parsed::Partial, "cut at {cut}");
        }
        let addrs = [203, 0, 113, 8, 10, 0, 0, 1, 0x15, 0xb3, 0, 80];
        let bin = v2(1, 0x11, &addrs, &[]);
        for cut in 1..bin.len() {
            assert_eq!(parse(&bin[..cut]), Parsed::Partial, "v2 cut at {cut}");
        }
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"PROXY TCP6 2001:db8::7 2:db8::1 55 55442 \n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\n\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 5555\r\n",
            b"PROXY TCP4 999.0.113.7 10.0.0.1 5555 80\r\n",
            b"PROXY TCP9 203.0.113.7 10.0.0.1 5555 80\r\n",
            b"\x16\x03\x01\x02\x00",
        ] {
            assert_eq!(parse(bad), Parsed::Invalid, "{bad:?}");
        }
    }
}
