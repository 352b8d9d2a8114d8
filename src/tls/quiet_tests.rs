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
    b.build()
}

/// A TLS connection accepted as a listener accepts one, and its client (blocking, on its own
/// thread): `(server stream, client)`.
async fn connection() -> (
    Box<Tls>,
    std::thread::JoinHandle<openssl::ssl::SslStream<StdTcp>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut c = SslConnector::builder(SslMethod::tls()).unwrap();
        c.set_verify(SslVerifyMode::NONE);
        let tcp = StdTcp::connect(addr).unwrap();
        c.build().connect("localhost", tcp).unwrap()
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let tls = pingora_core::protocols::tls::server::handshake(&acceptor(), L4Stream::from(tcp))
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
    let (mut tls, client) = connection().await;
    let mut client = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    let mut byte = [0u8; 16];

    // What the sweep is for: the `tokio-openssl` stream itself, with an error left behind,
    // takes "nothing to read yet" for a failure.
    leave_an_error();
    let r = poll_once(|cx| Pin::new(&mut **tls).poll_read(cx, &mut ReadBuf::new(&mut byte)));
    assert!(matches!(r, Poll::Ready(Err(_))), "{r:?}");
    assert!(openssl::error::ErrorStack::get().errors().is_empty());

    // The quiet stream: still only "not yet".
    let mut stream = quiet(tls);
    leave_an_error();
    let r = poll_once(|cx| Pin::new(&mut stream).poll_read(cx, &mut ReadBuf::new(&mut byte)));
    assert!(r.is_pending(), "{r:?}");
    assert!(openssl::error::ErrorStack::get().errors().is_empty());

    // ... and the bytes when they come, and a write with an error left behind.
    client.write_all(b"ping").unwrap();
    let n = stream.read(&mut byte).await.unwrap();
    assert_eq!(&byte[..n], b"ping");
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
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    let r = stream.read(&mut byte).await;
    assert!(matches!(r, Err(_) | Ok(0)), "{r:?}");
}
