//! Criterion benches for decoding what an HTTP/2 client sends on every request: a Huffman-coded
//! `:path` (nghttp2's clients — `h2load`, curl — never index `:path`), alone and inside a whole
//! header block with the rest indexed, as the HTTP/2 hit path (`app::h2`) decodes it.
//! Run: `cargo bench --bench hpack` (see benches/README.md, "HPACK").

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::http2::{hpack, huffman};

/// A CloudFront signed URL, as benches/peers' signed row requests it.
const SIGNED: &str = "/signed/file?Expires=1796169600&Signature=MEUCIQDx3mX0tZ8vJm9r-Hq5wV2yL7pN4sK1cB6dF0gE3aR8TwIgW5uY2xQ7oP1iL4kJ9hG6fD3sA0zX8cV5bN2mM7nQ4e_~&Key-Pair-Id=KBENCH&Hash-Algorithm=SHA256";

fn block(path: &str) -> Vec<u8> {
    // GET, https, :path (literal without indexing, name index 4, Huffman value),
    // :authority indexed as the client's first dynamic entry
    let mut out = BytesMut::new();
    out.extend_from_slice(&[0x82, 0x87]);
    let h = huffman::encode(path.as_bytes());
    out.extend_from_slice(&[0x04]);
    hpack::put_int(&mut out, 0x80, 7, h.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(&[0xbe]);
    out.to_vec()
}

/// `/premium/article?token=<JWT>` for `n` different ES256-shaped tokens (base64url: a 36-character
/// header, a 120-character payload, an 86-character signature), as the rotating-token row of
/// benches/peers sends them over HTTP/2: one distinct `:path` per request. Many, so that the
/// branch predictor cannot learn one string's codes.
fn token_paths(n: usize) -> Vec<String> {
    use rand::{Rng, SeedableRng};
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut part = |len: usize| -> String {
        (0..len)
            .map(|_| char::from(B64URL[rng.gen_range(0..64)]))
            .collect()
    };
    (0..n)
        .map(|_| {
            format!(
                "/premium/article?token={}.{}.{}",
                part(36),
                part(120),
                part(86)
            )
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let rotating: Vec<Vec<u8>> = token_paths(1000)
        .iter()
        .map(|p| huffman::encode(p.as_bytes()))
        .collect();
    let mut out = Vec::with_capacity(512);
    let mut next = 0;
    c.bench_function("huffman_rotating_token", |b| {
        b.iter(|| {
            out.clear();
            next = (next + 1) % rotating.len();
            huffman::decode(black_box(&rotating[next]), &mut out).expect("valid");
            out.len()
        })
    });
    for (name, path) in [("public", "/p1k"), ("signed", SIGNED)] {
        let encoded = huffman::encode(path.as_bytes());
        let mut out = Vec::with_capacity(256);
        c.bench_function(&format!("huffman_{name}"), |b| {
            b.iter(|| {
                out.clear();
                huffman::decode(black_box(&encoded), &mut out).expect("valid");
                out.len()
            })
        });
        let block = block(path);
        let mut d = hpack::Decoder::new(4096);
        // the first block of a connection puts :authority in the table
        let mut first = BytesMut::new();
        first.extend_from_slice(&[0x41, 0x0f]);
        first.extend_from_slice(b"127.0.0.1:18443");
        d.decode(&first, |_, _| {}).expect("valid");
        c.bench_function(&format!("block_{name}"), |b| {
            b.iter(|| {
                let mut n = 0;
                d.decode(black_box(&block), |k, v| n += k.len() + v.len())
                    .expect("valid");
                n
            })
        });
    }
}

criterion_group!(hpack_benches, benches);
criterion_main!(hpack_benches);
