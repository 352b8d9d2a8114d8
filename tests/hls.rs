//! A real player through the edge: `ffmpeg` plays an HLS stream (master playlist → relative
//! media playlist → relative MPEG-TS segments, all made by `ffmpeg` itself) with the token in
//! the first path segment, the way media players that drop cookies are given a playback URL.
//!
//! Needs `ffmpeg` and `ffprobe` on PATH (`.ci/deps` installs them). Without them each test
//! fails, saying so.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::tokens;
use support::{client, send, Edge, EdgeOptions, Origin, Recorded, AUDIENCE, ISSUER};

const AUTH: &str = "tollgate_auth_decisions_total";
const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:3\n\
                      #EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=160x120\n\
                      v0/prog.m3u8\n";
/// Seconds of test video, in 1 s segments.
const SECONDS: u32 = 6;

/// ffmpeg and ffprobe are required (`.ci/deps` installs them): without them these tests fail,
/// they never pass without having run.
fn require_ffmpeg() {
    let ok = |bin: &str| {
        Command::new(bin)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(
        ok("ffmpeg") && ok("ffprobe"),
        "ffmpeg/ffprobe are not on PATH: the HLS player tests cannot run. Install them \
         (.ci/deps does: apt-get install -y ffmpeg)"
    );
}

/// The stream as an origin would hold it: `prog.m3u8` and `seg0.ts`.. from ffmpeg's HLS muxer.
struct Stream {
    dir: tempfile::TempDir,
    segments: Vec<String>,
}

fn make_stream() -> Stream {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=duration={SECONDS}:size=160x120:rate=10"))
        .args([
            "-c:v",
            "mpeg2video",
            "-g",
            "10",
            "-f",
            "hls",
            "-hls_time",
            "1",
        ])
        .args([
            "-hls_list_size",
            "0",
            "-hls_playlist_type",
            "vod",
            "-hls_segment_filename",
        ])
        .arg(dir.path().join("seg%d.ts"))
        .arg(dir.path().join("prog.m3u8"))
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg could not make the test stream: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let playlist = std::fs::read_to_string(dir.path().join("prog.m3u8")).unwrap();
    let segments: Vec<String> = playlist
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert!(
        segments.len() >= 5
            && segments
                .iter()
                .all(|s| s.starts_with("seg") && !s.contains('/')),
        "expected ≥ 5 relative segment names in the playlist:\n{playlist}"
    );
    Stream { dir, segments }
}

/// An origin serving the stream at `/vod/show/master.m3u8` → `v0/prog.m3u8` → `v0/segN.ts`.
fn origin_for(stream: &Stream) -> Origin {
    let origin = Origin::start();
    origin.set_file(
        "/vod/show/master.m3u8",
        MASTER,
        "application/vnd.apple.mpegurl",
        Duration::ZERO,
    );
    let served = origin.serve_dir("/vod/show/v0/", stream.dir.path());
    assert!(
        served.contains(&"/vod/show/v0/prog.m3u8".to_string()),
        "{served:?}"
    );
    origin
}

fn edge_for(origin: &Origin, key: &tollgate::auth::mint::SigningKey) -> Edge {
    Edge::start_with(
        origin,
        &[key],
        EdgeOptions {
            routes: vec![r#"{ match: "/vod/*", origin: news, access: token }"#.into()],
            token_sources: vec![
                "path".into(),
                "query:token".into(),
                "bearer".into(),
                "cookie:token".into(),
            ],
            ..EdgeOptions::default()
        },
    )
}

/// `ffmpeg -i URL -c copy -f mpegts OUT` (a player that saves what it plays) and what it said.
struct Played {
    status: ExitStatus,
    stderr: String,
    out: PathBuf,
}

fn spawn_player(url: &str, out: &Path) -> std::process::Child {
    Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i", url])
        .args(["-c", "copy", "-f", "mpegts"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg")
}

/// Wait (polling, so the test's async runtime keeps running) for the player to finish.
async fn finish(mut child: std::process::Child, out: &Path) -> Played {
    let deadline = Instant::now() + Duration::from_secs(45);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ffmpeg still running after 45 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Played {
        status,
        stderr,
        out: out.to_path_buf(),
    }
}

/// The duration ffprobe reads from a file, if it can read one.
fn probe_duration(file: &Path) -> Option<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of"])
        .args(["default=noprint_wrappers=1:nokey=1"])
        .arg(file)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Every origin request was token-free.
fn assert_token_free(seen: &[Recorded], token: &str) {
    let sig = token.rsplit('.').next().unwrap();
    for r in seen {
        assert!(
            !r.mentions(token) && !r.mentions(sig) && !r.uri.contains("eyJ") && r.query.is_none(),
            "the origin saw a token: {r:?}"
        );
        assert!(
            r.header("authorization").is_none() && r.header("cookie").is_none(),
            "{r:?}"
        );
    }
}

/// Mint with the real CLI: `tollgate token ... --sid S --paths P`; returns the token and what
/// it printed on stderr.
fn cli_token(key: &tollgate::auth::mint::SigningKey, sid: &str, paths: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("k1.pem");
    std::fs::write(&pem, key.private_pem()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("token")
        .arg("--key")
        .arg(&pem)
        .args([
            "--kid", &key.kid, "--sid", sid, "--paths", paths, "--ttl", "1h",
        ])
        .args(["--iss", ISSUER, "--aud", AUDIENCE])
        .output()
        .expect("run tollgate token");
    assert!(
        out.status.success(),
        "tollgate token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(
        token.split('.').count(),
        3,
        "not a JWS on stdout: {token:?}"
    );
    (token, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn ffmpeg_plays_an_hls_stream_through_the_edge_with_a_path_token() {
    require_ffmpeg();
    let stream = make_stream();
    let key = tokens::es256("k1");
    let origin = origin_for(&stream);
    let edge = edge_for(&origin, &key);

    let (token, printed) = cli_token(&key, "s-hls", "/vod/show");
    assert_eq!(
        printed.trim(),
        format!("playback URL form: https://EDGE/s-hls.{token}/vod/show"),
        "tollgate token's playback URL form"
    );
    let url = edge.url(&format!("/s-hls.{token}/vod/show/master.m3u8"));
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("played.ts");
    let played = finish(spawn_player(&url, &out), &out).await;
    assert!(
        played.status.success(),
        "ffmpeg could not play {url}: {}\n{}\n--- edge ---\n{}",
        played.status,
        played.stderr,
        edge.stderr_tail(20)
    );
    let size = std::fs::metadata(&played.out).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "ffmpeg wrote only {size} bytes");
    let duration = probe_duration(&played.out).expect("ffprobe reads what ffmpeg played");
    assert!(
        duration >= f64::from(SECONDS) - 1.0,
        "played {duration} s of a {SECONDS} s stream"
    );

    // The origin got each object once, by its token-free path.
    let seen = origin.requests();
    assert_token_free(&seen, &token);
    let mut want: Vec<String> = vec![
        "/vod/show/master.m3u8".into(),
        "/vod/show/v0/prog.m3u8".into(),
    ];
    want.extend(stream.segments.iter().map(|s| format!("/vod/show/v0/{s}")));
    let mut got: Vec<String> = seen.iter().map(|r| r.path.clone()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "what the origin was asked for");
    // Segments are behind the token route: without the token the same URLs are refused, so the
    // player's segment requests carried the path token it inherited from the playlist URL.
    let seg0 = format!("/vod/show/v0/{}", stream.segments[0]);
    let bare = send(client().get(edge.url(&seg0))).await;
    assert_eq!(bare.status, 403, "{bare:?}");
    let valid = edge.metric(AUTH, &[("result", "valid")]).await;
    assert!(
        valid >= (2 + stream.segments.len()) as f64,
        "{valid} valid token decisions for {} player requests",
        2 + stream.segments.len()
    );
    let refused_while_playing = edge
        .metric("tollgate_requests_total", &[("status_class", "4xx")])
        .await;
    assert_eq!(
        refused_while_playing, 1.0,
        "only the bare request was refused"
    );
}

#[tokio::test]
async fn ffmpeg_fails_with_a_token_for_another_title() {
    require_ffmpeg();
    let stream = make_stream();
    let key = tokens::es256("k1");
    let origin = origin_for(&stream);
    let edge = edge_for(&origin, &key);
    let token = tokens::media(&key, Some("s-other"), &["/vod/other"], None, 3600);
    let url = edge.url(&format!("/s-other.{token}/vod/show/master.m3u8"));
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("played.ts");
    let played = finish(spawn_player(&url, &out), &out).await;
    assert!(
        !played.status.success(),
        "ffmpeg played a stream its token does not cover; stderr: {}",
        played.stderr
    );
    assert!(
        played.stderr.contains("403"),
        "ffmpeg's error: {}",
        played.stderr
    );
    assert_eq!(
        origin.total(),
        0,
        "the origin was asked: {:?}",
        origin.requests()
    );
    let wrong_path = edge.metric(AUTH, &[("result", "wrong_path")]).await;
    assert!(
        wrong_path >= 1.0,
        "{AUTH}{{result=wrong_path}} = {wrong_path}"
    );
    let refused = edge
        .metric("tollgate_requests_total", &[("status_class", "4xx")])
        .await;
    assert!(refused >= 1.0, "tollgate_requests_total 4xx = {refused}");
}

#[tokio::test]
async fn revoking_a_session_stops_ffmpeg_mid_stream() {
    require_ffmpeg();
    let stream = make_stream();
    let key = tokens::es256("k1");
    let origin = origin_for(&stream);
    // From the third segment on, each takes two seconds at the origin: time to revoke while the
    // third is on its way.
    for s in &stream.segments[2..] {
        let body = std::fs::read(stream.dir.path().join(s)).unwrap();
        origin.set_file(
            &format!("/vod/show/v0/{s}"),
            body,
            "video/mp2t",
            Duration::from_secs(2),
        );
    }
    let edge = edge_for(&origin, &key);
    let token = tokens::media(&key, Some("s-live"), &["/vod/show/"], None, 3600);
    let url = edge.url(&format!("/s-live.{token}/vod/show/master.m3u8"));
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("played.ts");
    let child = spawn_player(&url, &out);

    // Revoke while the third segment is on its way.
    let seg = |i: usize| format!("/vod/show/v0/{}", stream.segments[i]);
    let third = seg(2);
    let started = support::eventually(Duration::from_secs(20), || async {
        origin.hits(&third) >= 1
    })
    .await;
    assert!(
        started,
        "ffmpeg never asked for {third}; origin saw {:?}",
        origin.requests()
    );
    let revoked_before = edge.metric(AUTH, &[("result", "revoked")]).await;
    let (status, answer) = edge.revoke("s-live", None).await;
    assert_eq!(status, 200, "{answer}");
    let played = finish(child, &out).await;

    // Before the revocation: the first three segments reached the origin (and the player);
    // after it: none.
    for i in 0..3 {
        assert_eq!(origin.hits(&seg(i)), 1, "segment {i} before the revocation");
    }
    for i in 3..stream.segments.len() {
        assert_eq!(
            origin.hits(&seg(i)),
            0,
            "segment {i} after the revocation reached the origin"
        );
    }
    let revoked = edge.metric(AUTH, &[("result", "revoked")]).await - revoked_before;
    assert!(
        revoked >= 1.0,
        "no request was refused as revoked after the revocation; ffmpeg said: {}",
        played.stderr
    );
    let duration = probe_duration(&played.out);
    let truncated = duration.is_none_or(|d| d < f64::from(SECONDS) - 1.5);
    assert!(
        !played.status.success() || truncated,
        "ffmpeg played on regardless: exit {}, {duration:?} s of {SECONDS} s; stderr: {}",
        played.status,
        played.stderr
    );
    assert_token_free(&origin.requests(), &token);
    eprintln!(
        "revocation mid-stream: ffmpeg exit {}, played {duration:?} s of {SECONDS} s, {revoked} \
         requests refused as revoked",
        played.status
    );
}
