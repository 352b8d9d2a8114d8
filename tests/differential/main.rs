//! Differential: the same requests to two edges on one origin whose configs differ only in
//! `cache.memory.fast_hits` (the connection-level hit path on, and off: the proxy alone). Every
//! access mode (public, paywall, token, signed, basic, AWS Secure Media Delivery) × protocol
//! (HTTP/1.1, HTTP/1.1 over TLS, HTTP/2 over TLS negotiated by ALPN; the edge offers no h2c:
//! its plain listeners speak HTTP/1 only), each on a fresh connection per request and on one
//! connection kept for all the cases (so that it moves between the hit path and the proxy) ×
//! credential state, every cacheable object warm on both edges. Each answer must be the same
//! on both — status, body, headers (but `Date`, `Age` and the test origin's per-response
//! `x-origin-seq`), the access-log record (but `time` and `duration`) and what the request
//! added to the counters — and a refused or non-subscriber credential never gets subscriber
//! content, and no hit reaches the origin.
//!
//! One hit path for every mode and protocol: on the edge with `fast_hits: true` every hit
//! (every `200` of these cases) is answered by the hit path and nothing else is
//! (`tollgate_fast_path_total{outcome="served"}` moves by exactly one per hit); with
//! `fast_hits: false` it answers none. The share per (mode, protocol) is printed
//! (`--nocapture`).
//!
//! Every difference found is collected and reported together, each naming its case
//! (`mode/protocol/state`).
//!
//! Layout: [`rig`] (protocols, clients, the pair of edges, cases), [`compare`] (counters,
//! access-log records, the run), [`credentials`] (tokens, CloudFront signatures, AWS SMD
//! tokens); the two tests and their cases here.

#[path = "../support/mod.rs"]
mod support;

mod compare;
mod credentials;
mod rig;

use serde_json::json;
use support::{tokens, Origin};

use compare::{run, warm};
use credentials::{basic, jwt, smd_token, CfKey, SMD_KID, SMD_SECRET};
use rig::{pair, serve_protected, Case};

const STORY: &str = "/premium/story";
const SEGMENT: &str = "/vod/show/seg1.ts";
const REPORT: &str = "/downloads/report.pdf";
const DRAFT: &str = "/drafts/story";

/// Public, paywall, token (JWT media tokens), signed (CloudFront) and basic routes.
///
/// Credential states, and those that do not apply:
/// - public: no credential is asked for; a token is ignored unverified, so "missing" (also
///   HEAD, and targets that normalize to the stored one: `%70`, `//`) and a forged token
///   ("ignored") are the only states.
/// - paywall: valid (bearer, cookie, query, HEAD, a `%73` target), expired, forged, malformed,
///   not entitled (subscriptions without `premium`), revoked (`sid` revoked at the admin API:
///   the teaser), missing (also a `//` target). Refusals are the teaser, never an error.
/// - token: valid (path token, query, HEAD), expired, forged, not entitled (`paths` elsewhere;
///   `ip` elsewhere — no `require` on the route, so every valid token is subscribed), revoked,
///   missing.
/// - signed: valid (URL, cookies, HEAD, a policy for exactly this path), expired policy, forged
///   signature (another key under the same Key-Pair-Id), not entitled (policy for another
///   resource; for another source IP; the exact-path policy on a `%72` target, which names the
///   same object once normalized but is checked as requested), missing. No revocation:
///   CloudFront signatures have none.
/// - basic: valid (HEAD too), wrong password, unknown user, malformed header, missing. No
///   expiry, no revocation, no entitlement beyond the realm's file.
///
/// And one request refused for its framing (a GET with a body: 400 before routing, counted in
/// `tollgate_refused_requests_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_protocol_and_credential_state_answers_alike_with_the_hit_path_on_and_off() {
    let origin = Origin::start();
    for path in [SEGMENT, REPORT, DRAFT] {
        serve_protected(&origin, path);
    }
    let key = tokens::es256("k1");
    let cf = CfKey::new("KDIFFRSA");
    let cf_forger = CfKey::new("KDIFFRSA");
    let files = tempfile::tempdir().unwrap();
    let cf_pem = files.path().join("cf.pem");
    std::fs::write(&cf_pem, cf.public_pem()).unwrap();
    let htpasswd = files.path().join("editors.htpasswd");
    // bcrypt at its lowest cost: debug builds stay fast
    let hash = bcrypt::hash("correct horse", 4).unwrap();
    std::fs::write(&htpasswd, format!("alice:{hash}\n")).unwrap();
    let mut routes = vec![
        r#"{ match: "/vod/*", origin: news, access: token }"#.to_string(),
        r#"{ match: "/downloads/*", origin: news, access: signed }"#.to_string(),
        r#"{ match: "/drafts/*", origin: news, access: basic, realm: editors }"#.to_string(),
    ];
    routes.extend(support::default_routes());
    let extra = format!(
        "signed_keys:\n  {}: {:?}\nbasic_auth:\n  editors: {:?}\n",
        cf.id,
        cf_pem.to_string_lossy(),
        htpasswd.to_string_lossy()
    );
    let pair = pair(&origin, &key, routes, &extra);

    let now = tokens::now();
    let sub = tokens::subscriber(&key, "alice");
    let media = jwt(&key, &[], Some("s-live"), &["/vod/show/"], 600);
    let signed_url = cf.url(REPORT, "http*://*/downloads/*", now + 3600, None);
    let alice = basic("alice", "correct horse");
    let fills = [
        Case::get("public", "fill", "/news/page"),
        Case::get("paywall", "fill", STORY),
        Case::get("paywall", "fill", STORY).bearer(&sub),
        Case::get("token", "fill", format!("/{media}{SEGMENT}")),
        Case::get("signed", "fill", signed_url.clone()),
        Case::get("basic", "fill", DRAFT).header("authorization", alice.clone()),
    ];
    warm(&origin, &pair, &fills).await;
    for side in [&pair.on, &pair.off] {
        let (code, _) = side.edge.revoke("s-revoked", Some(3600)).await;
        assert_eq!(code, 200, "revoke");
    }

    let forged_sub = tokens::forged(&key);
    let forger = tokens::es256("k1");
    let cases = vec![
        // public
        Case::get("public", "missing", "/news/page"),
        Case::get("public", "ignored", "/news/page").bearer(&forged_sub),
        Case::get("public", "missing", "/news/page").head(),
        // targets that normalize to the stored object's (the hit path and the proxy each
        // normalize them)
        Case::get("public", "missing, %-encoded", "/news/%70age"),
        Case::get("public", "missing, //", "/news//page"),
        // paywall
        Case::get("paywall", "valid", STORY)
            .bearer(&sub)
            .subscriber(),
        Case::get("paywall", "valid cookie", STORY)
            .header("cookie", format!("token={sub}"))
            .subscriber(),
        Case::get("paywall", "valid query", format!("{STORY}?token={sub}")).subscriber(),
        Case::get("paywall", "valid", STORY)
            .bearer(&sub)
            .head()
            .subscriber(),
        Case::get("paywall", "expired", STORY).bearer(&tokens::expired(&key)),
        Case::get("paywall", "forged", STORY).bearer(&forged_sub),
        Case::get("paywall", "malformed", STORY).bearer(&tokens::malformed()),
        Case::get("paywall", "not entitled", STORY).bearer(&tokens::valid(
            &key,
            "bob",
            &["basic"],
            3600,
        )),
        Case::get("paywall", "revoked", STORY).bearer(&jwt(
            &key,
            &["premium"],
            Some("s-revoked"),
            &[],
            3600,
        )),
        Case::get("paywall", "missing", STORY),
        Case::get("paywall", "valid, %-encoded", "/premium/%73tory")
            .bearer(&sub)
            .subscriber(),
        Case::get("paywall", "missing, //", "//premium/story"),
        // token
        Case::get("token", "valid", format!("/{media}{SEGMENT}")).subscriber(),
        Case::get("token", "valid query", format!("{SEGMENT}?token={media}")).subscriber(),
        Case::get("token", "valid", format!("/{media}{SEGMENT}"))
            .head()
            .subscriber(),
        Case::get(
            "token",
            "expired",
            format!(
                "/{}{SEGMENT}",
                jwt(&key, &[], Some("s-live"), &["/vod/show/"], -3600)
            ),
        )
        .refused(403),
        Case::get(
            "token",
            "forged",
            format!(
                "/{}{SEGMENT}",
                jwt(&forger, &[], Some("s-live"), &["/vod/show/"], 600)
            ),
        )
        .refused(403),
        Case::get(
            "token",
            "not entitled: path",
            format!(
                "/{}{SEGMENT}",
                jwt(&key, &[], Some("s-live"), &["/vod/other/"], 600)
            ),
        )
        .refused(403),
        Case::get(
            "token",
            "not entitled: ip",
            format!("/{}{SEGMENT}", {
                let mut c = tokens::claims("reader", &[], 600);
                c["paths"] = json!(["/vod/show/"]);
                c["ip"] = json!("203.0.113.0/24");
                tokens::sign(&key, &c)
            }),
        )
        .refused(403),
        Case::get(
            "token",
            "revoked",
            format!(
                "/{}{SEGMENT}",
                jwt(&key, &[], Some("s-revoked"), &["/vod/show/"], 600)
            ),
        )
        .refused(403),
        Case::get("token", "missing", SEGMENT).refused(403),
        // signed
        Case::get("signed", "valid", signed_url.clone()).subscriber(),
        Case::get("signed", "valid cookies", REPORT)
            .header("cookie", cf.cookies("http*://*/downloads/*", now + 3600))
            .subscriber(),
        Case::get("signed", "valid", signed_url.clone())
            .head()
            .subscriber(),
        Case::get(
            "signed",
            "expired",
            cf.url(REPORT, "http*://*/downloads/*", now - 3600, None),
        )
        .refused(403),
        Case::get(
            "signed",
            "forged",
            cf_forger.url(REPORT, "http*://*/downloads/*", now + 3600, None),
        )
        .refused(403),
        Case::get(
            "signed",
            "not entitled: resource",
            cf.url(REPORT, "http*://*/private/*", now + 3600, None),
        )
        .refused(403),
        Case::get(
            "signed",
            "not entitled: ip",
            cf.url(
                REPORT,
                "http*://*/downloads/*",
                now + 3600,
                Some("203.0.113.0/24"),
            ),
        )
        .refused(403),
        Case::get("signed", "missing", REPORT).refused(403),
        // a policy for this one path is checked against the URL as requested, not normalized
        Case::get(
            "signed",
            "valid, exact resource",
            cf.url(REPORT, &format!("http*://*{REPORT}"), now + 3600, None),
        )
        .subscriber(),
        Case::get(
            "signed",
            "not entitled: resource, %-encoded",
            cf.url(
                "/downloads/%72eport.pdf",
                &format!("http*://*{REPORT}"),
                now + 3600,
                None,
            ),
        )
        .refused(403),
        // basic
        Case::get("basic", "valid", DRAFT)
            .header("authorization", alice.clone())
            .subscriber(),
        Case::get("basic", "valid", DRAFT)
            .header("authorization", alice.clone())
            .head()
            .subscriber(),
        Case::get("basic", "wrong password", DRAFT)
            .header("authorization", basic("alice", "wrong"))
            .refused(401),
        Case::get("basic", "unknown user", DRAFT)
            .header("authorization", basic("mallory", "correct horse"))
            .refused(401),
        Case::get("basic", "malformed", DRAFT)
            .header("authorization", "Basic !!notbase64")
            .refused(401),
        Case::get("basic", "missing", DRAFT).refused(401),
        // refused for its framing before routing, whatever the route
        Case::get("framing", "GET with a body", STORY).with_body("x"),
    ];
    run(&origin, &pair, &cases).await;
}

/// AWS Secure Media Delivery tokens on a `token` route, and a paywall route on the same edge
/// (with SMD secrets configured, paywall decisions may consult them).
///
/// Credential states: valid (unbound, session-bound to this viewer, HEAD), expired, forged
/// (signed with another secret), not entitled (`paths` elsewhere; bound to another viewer
/// address), revoked (the bound session revoked at the admin API), missing. Paywall here: valid,
/// forged, not entitled, missing (the other states are covered by the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smd_tokens_answer_alike_with_the_hit_path_on_and_off() {
    let origin = Origin::start();
    serve_protected(&origin, SEGMENT);
    let key = tokens::es256("k1");
    let files = tempfile::tempdir().unwrap();
    let secrets = files.path().join("smd-secrets.json");
    std::fs::write(&secrets, json!({ SMD_KID: SMD_SECRET }).to_string()).unwrap();
    let mut routes = vec![r#"{ match: "/vod/*", origin: news, access: token }"#.to_string()];
    routes.extend(support::default_routes());
    let extra = format!("smd: {{ secrets_file: {:?} }}\n", secrets.to_string_lossy());
    let pair = pair(&origin, &key, routes, &extra);

    let sub = tokens::subscriber(&key, "alice");
    let smd = smd_token(SMD_SECRET, &["/vod/show/"], 600, None);
    let fills = [
        Case::get("paywall+smd", "fill", STORY),
        Case::get("paywall+smd", "fill", STORY).bearer(&sub),
        Case::get("smd", "fill", format!("/{smd}{SEGMENT}")),
    ];
    warm(&origin, &pair, &fills).await;
    for side in [&pair.on, &pair.off] {
        let (code, _) = side.edge.revoke("sess-revoked", Some(3600)).await;
        assert_eq!(code, 200, "revoke");
    }

    let seg = |token: String| format!("/{token}{SEGMENT}");
    let cases = vec![
        Case::get("smd", "valid", seg(smd.clone())).subscriber(),
        Case::get(
            "smd",
            "valid bound",
            seg(smd_token(
                SMD_SECRET,
                &["/vod/show/"],
                600,
                Some(("127.0.0.1", "sess-live")),
            )),
        )
        .subscriber(),
        Case::get("smd", "valid", seg(smd.clone()))
            .head()
            .subscriber(),
        Case::get(
            "smd",
            "expired",
            seg(smd_token(SMD_SECRET, &["/vod/show/"], -3600, None)),
        )
        .refused(403),
        Case::get(
            "smd",
            "forged",
            seg(smd_token("not-the-secret", &["/vod/show/"], 600, None)),
        )
        .refused(403),
        Case::get(
            "smd",
            "not entitled: path",
            seg(smd_token(SMD_SECRET, &["/vod/other/"], 600, None)),
        )
        .refused(403),
        Case::get(
            "smd",
            "not entitled: ip",
            seg(smd_token(
                SMD_SECRET,
                &["/vod/show/"],
                600,
                Some(("10.1.2.3", "sess-elsewhere")),
            )),
        )
        .refused(403),
        Case::get(
            "smd",
            "revoked",
            seg(smd_token(
                SMD_SECRET,
                &["/vod/show/"],
                600,
                Some(("127.0.0.1", "sess-revoked")),
            )),
        )
        .refused(403),
        Case::get("smd", "missing", SEGMENT).refused(403),
        Case::get("paywall+smd", "valid", STORY)
            .bearer(&sub)
            .subscriber(),
        Case::get("paywall+smd", "forged", STORY).bearer(&tokens::forged(&key)),
        Case::get("paywall+smd", "not entitled", STORY).bearer(&tokens::valid(
            &key,
            "bob",
            &["basic"],
            3600,
        )),
        Case::get("paywall+smd", "missing", STORY),
    ];
    run(&origin, &pair, &cases).await;
}
