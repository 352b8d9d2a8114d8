//! Credentials minted in the test: JWTs with sessions and paths, Basic credentials, CloudFront
//! custom-policy signatures (RSA-SHA1, as botocore signs), AWS Secure Media Delivery tokens.

use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use serde_json::json;
use tollgate::auth::mint::SigningKey;

use crate::support::tokens;

// ---------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------

/// A paywall or media token with `sid` (revocable) and `paths`, living `ttl` seconds.
pub fn jwt(key: &SigningKey, subs: &[&str], sid: Option<&str>, paths: &[&str], ttl: i64) -> String {
    let mut c = tokens::claims("reader", subs, ttl);
    if ttl < 0 {
        c["iat"] = json!(tokens::now() + ttl - 3600);
    }
    if let Some(sid) = sid {
        c["sid"] = json!(sid);
    }
    if !paths.is_empty() {
        c["paths"] = json!(paths);
    }
    tokens::sign(key, &c)
}

pub fn basic(user: &str, pass: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {b64}")
}

/// CloudFront's URL-safe base64 (`+` `=` `/` become `-` `_` `~`).
pub fn cf_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .replace('+', "-")
        .replace('=', "_")
        .replace('/', "~")
}

/// A CloudFront key pair: the RSA key signs, the edge holds the public half under `id`.
pub struct CfKey {
    pub id: &'static str,
    key: PKey<Private>,
}

impl CfKey {
    pub fn new(id: &'static str) -> CfKey {
        let rsa = Rsa::generate(2048).expect("RSA key");
        CfKey {
            id,
            key: PKey::from_rsa(rsa).expect("pkey"),
        }
    }

    pub fn public_pem(&self) -> Vec<u8> {
        self.key.public_key_to_pem().expect("public key PEM")
    }

    /// The signing parameters of a custom policy for `resource` (CloudFront wildcards), expiring
    /// at `expires`, optionally for source addresses `ip`: (policy, signature, key pair id).
    pub fn sign(&self, resource: &str, expires: i64, ip: Option<&str>) -> [String; 3] {
        let mut condition = json!({ "DateLessThan": { "AWS:EpochTime": expires } });
        if let Some(ip) = ip {
            condition["IpAddress"] = json!({ "AWS:SourceIp": ip });
        }
        let policy =
            json!({ "Statement": [{ "Resource": resource, "Condition": condition }] }).to_string();
        let mut signer =
            openssl::sign::Signer::new(MessageDigest::sha1(), &self.key).expect("signer");
        signer.update(policy.as_bytes()).expect("sign");
        let signature = signer.sign_to_vec().expect("signature");
        [
            cf_b64(policy.as_bytes()),
            cf_b64(&signature),
            self.id.to_string(),
        ]
    }

    pub fn url(&self, path: &str, resource: &str, expires: i64, ip: Option<&str>) -> String {
        let [p, s, k] = self.sign(resource, expires, ip);
        format!("{path}?Policy={p}&Signature={s}&Key-Pair-Id={k}")
    }

    pub fn cookies(&self, resource: &str, expires: i64) -> String {
        let [p, s, k] = self.sign(resource, expires, None);
        format!("CloudFront-Policy={p}; CloudFront-Signature={s}; CloudFront-Key-Pair-Id={k}")
    }
}

pub const SMD_KID: &str = "20240101_0123456789abcdef0123";
pub const SMD_SECRET: &str = "5f4dcc3b5aa765d61d8327deb882cf995f4dcc3b5aa765d61d8327deb882cf99";

/// An AWS Secure Media Delivery token under [`SMD_KID`] ([`tokens::smd`]).
pub fn smd_token(secret: &str, paths: &[&str], ttl: i64, bind: Option<(&str, &str)>) -> String {
    tokens::smd(SMD_KID, secret, paths, ttl, bind)
}
