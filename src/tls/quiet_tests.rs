use std::io::{Read, Write};
use std::net::TcpStream as StdTcp;
use std::task::Waker;

use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// An acceptor with a fresh self-signed P-256 certificate.
fn acceptor() -> SslAcceptor {
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let mut cert = X509::builder().unwrap();
    cert.set_version(2).unwrap();
    cert.set_pubkey(&key).unwrap();
    cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    cert.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = cert.build();
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_private_key(&key).unwrap();
    b.set_certificate(&cert).unwrap();
    b.set_read_ahead(true); // as our listeners
    b.build()
}

/// The client's socket: what the client writes is held back while `hold` is set, so that a
/// test decides how its TLS records reach the server.
#[derive(Debug)]
struct Held {
    tcp: StdTcp,
    hold: bool,
    held: Vec<u8>,
}

impl Held {
    /// Send what is held, in one write.
    fn release(&mut self) {
        self.tcp.write_all(&std::mem::take(&mut self.held)).unwrap();
    }
}

impl Read for Held {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.read(buf)
    }
}

impl Write for Held {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.hold {
            self.held.extend_from_slice(buf);
            return Ok(buf.len());
        }
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

type Client = openssl::ssl::SslStream<Held>;

/// A TLS connection accepted as a listener accepts one, and its client (blocking):
/// `(server stream, client)`.
async fn connection() -> (Box<Tls>, Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut c = SslConnector::builder(SslMethod::tls()).unwrap();
        c.set_verify(SslVerifyMode::NONE);
        let tcp = StdTcp::connect(addr).unwrap();
        let held = Held {
            tcp,
            hold: false,
            held: Vec::new(),
        };
        c.build().connect("localhost", held).unwrap()
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let tls = pingora_core::protocols::tls::server::handshake(&acceptor(), L4Stream::from(tcp))
        .await
        .unwrap();
    let client = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    (Box::new(tls), client)
}

/// Leave an error on this thread's OpenSSL error queue, as code that did not clean up would.
fn leave_an_error() {
    let e = X509::from_pem(b"not a certificate").unwrap_err();
    e.errors()[0].put();
}

fn poll_once<T>(f: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
    f(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test]
async fn tls_connections_are_made_quiet_and_others_left_as_they_were() {
    let (tls, _client) = connection().await;
    assert!(quiet(tls).as_any().is::<Quiet>());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _c = StdTcp::connect(listener.local_addr().unwrap()).unwrap();
    let plain: Stream = Box::new(L4Stream::from(listener.accept().await.unwrap().0));
    assert!(quiet(plain).as_any().is::<L4Stream>());
}

#[tokio::test]
async fn an_error_left_on_the_queue_fails_neither_a_read_nor_a_write() {
    let (mut tls, mut client) = connection().await;
    let mut byte = [0u8; 16];

    // What the sweep is for: the `tokio-openssl` stream itself, with an error left behind,
    // takes "nothing to read yet" for a failure.
    leave_an_error();
    let r = poll_once(|cx| Pin::new(&mut **tls).poll_read(cx, &mut ReadBuf::new(&mut byte)));
    assert!(matches!(r, Poll::Ready(Err(_))), "{r:?}");
    assert!(openssl::error::ErrorStack::get().errors().is_empty());

    // The retry: a read with nothing to read and an error left behind is still "not yet", and
    // the queue is left empty.
    leave_an_error();
    let r = poll_once(|cx| quietly(&mut tls, |t| t.poll_read(cx, &mut ReadBuf::new(&mut byte))));
    assert!(r.is_pending(), "{r:?}");
    assert!(openssl::error::ErrorStack::get().errors().is_empty());

    // The quiet stream: "not yet" too, learnt from the socket without asking OpenSSL, so the
    // error is left where it was.
    let mut stream = quiet(tls);
    leave_an_error();
    let r = poll_once(|cx| Pin::new(&mut stream).poll_read(cx, &mut ReadBuf::new(&mut byte)));
    assert!(r.is_pending(), "{r:?}");
    assert_eq!(openssl::error::ErrorStack::get().errors().len(), 1);

    // ... and the bytes when they come, with an error left behind.
    leave_an_error();
    client.write_all(b"ping").unwrap();
    let n = stream.read(&mut byte).await.unwrap();
    assert_eq!(&byte[..n], b"ping");
    // (a read that succeeds leaves the queue alone: empty it for the write below)
    let _ = openssl::error::ErrorStack::get();

    // A write with an error left behind.
    leave_an_error();
    stream.write_all(b"pong").await.unwrap();
    stream.flush().await.unwrap();
    let mut got = [0u8; 4];
    let mut client = tokio::task::spawn_blocking(move || {
        client.read_exact(&mut got).unwrap();
        (client, got)
    })
    .await
    .unwrap();
    assert_eq!(&client.1, b"pong");

    // A real failure still fails: bytes that are no TLS record end the connection.
    client
        .0
        .get_mut()
        .tcp
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    let r = stream.read(&mut byte).await;
    assert!(matches!(r, Err(_) | Ok(0)), "{r:?}");
}

/// Wait, with a deadline, until `stream` has something to read; then read it once.
async fn read_some(stream: &mut Stream, buf: &mut [u8]) -> std::io::Result<usize> {
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(buf))
        .await
        .expect("nothing to read within 10 s")
}

#[tokio::test]
async fn records_read_ahead_are_read_without_new_bytes_from_the_socket() {
    // Two records in one segment: OpenSSL reads both at once (read-ahead) and hands out one
    // per read, so the second is read with the socket empty.
    let (tls, mut client) = connection().await;
    let mut stream = quiet(tls);
    client.get_mut().hold = true;
    client.write_all(b"first").unwrap();
    client.write_all(b"second").unwrap();
    client.get_mut().release();
    let mut buf = [0u8; 64];
    let n = read_some(&mut stream, &mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"first");
    let r = poll_once(|cx| Pin::new(&mut stream).poll_read(cx, &mut ReadBuf::new(&mut buf)));
    assert!(matches!(r, Poll::Ready(Ok(()))), "{r:?}");
    assert!(buf.starts_with(b"second"), "{:?}", &buf[..6]);
    // ... and then nothing is left: only new bytes can make progress.
    let r = poll_once(|cx| Pin::new(&mut stream).poll_read(cx, &mut ReadBuf::new(&mut buf)));
    assert!(r.is_pending(), "{r:?}");
}

#[tokio::test]
async fn after_the_peers_close_notify_a_read_ends_at_once() {
    // The client closes the TLS session and keeps the TCP connection open.
    let (tls, mut client) = connection().await;
    let mut stream = quiet(tls);
    client.write_all(b"last").unwrap();
    let mut buf = [0u8; 64];
    let n = read_some(&mut stream, &mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"last");
    client.shutdown().unwrap();
    assert_eq!(read_some(&mut stream, &mut buf).await.unwrap(), 0);
    let r = poll_once(|cx| Pin::new(&mut stream).poll_read(cx, &mut ReadBuf::new(&mut buf)));
    assert!(matches!(r, Poll::Ready(Ok(()))), "{r:?}");
    drop(client);
}
