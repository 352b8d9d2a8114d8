//! Media: files on the origin, clients from other loopback addresses, the revocation API.

use super::*;

impl Origin {
    /// Serve `path` (exact, without query) with `body` as `content_type`: 200,
    /// `Cache-Control: public, max-age=3600`, `Content-Length`, after waiting `delay` (a slow
    /// segment).
    pub fn set_file(
        &self,
        path: &str,
        body: impl Into<Bytes>,
        content_type: &str,
        delay: Duration,
    ) {
        self.state.lock().unwrap().files.insert(
            path.to_owned(),
            Served {
                body: body.into(),
                content_type: content_type.to_owned(),
                delay,
            },
        );
    }

    /// Serve every regular file directly inside `dir` at `url_dir` + its name (`url_dir` ends
    /// with `/`), typed by extension: `.m3u8` as `application/vnd.apple.mpegurl`, `.ts` as
    /// `video/mp2t`, anything else as `application/octet-stream`. Returns the URL paths, sorted.
    pub fn serve_dir(&self, url_dir: &str, dir: &Path) -> Vec<String> {
        let mut served = Vec::new();
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let e = e.expect("directory entry");
            if !e.file_type().expect("file type").is_file() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let content_type = match name.rsplit_once('.').map(|(_, ext)| ext) {
                Some("m3u8") => "application/vnd.apple.mpegurl",
                Some("ts") => "video/mp2t",
                _ => "application/octet-stream",
            };
            let path = format!("{url_dir}{name}");
            let body = std::fs::read(e.path()).expect("read served file");
            self.set_file(&path, body, content_type, Duration::ZERO);
            served.push(path);
        }
        served.sort();
        served
    }
}

/// Like [`client`], but every connection comes from `local` (on Linux any 127.0.0.0/8 address
/// is loopback), so the edge sees that client address.
pub fn client_from(local: std::net::IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .local_address(local)
        .build()
        .expect("reqwest client")
}

impl Edge {
    /// `POST /admin/revoke` with the admin token: `{"sid": sid, "ttl_seconds": ttl}` (no
    /// `ttl_seconds` when `None`). Returns the status and the JSON answer.
    pub async fn revoke(&self, sid: &str, ttl_seconds: Option<u64>) -> (u16, serde_json::Value) {
        let mut body = serde_json::json!({ "sid": sid });
        if let Some(ttl) = ttl_seconds {
            body["ttl_seconds"] = ttl.into();
        }
        let (status, text) = self.admin_post("/admin/revoke", body.to_string()).await;
        let v = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("/admin/revoke answered {status} with non-JSON ({e}): {text}")
        });
        (status, v)
    }

    /// `GET /admin/revocations` with the admin token: the `revocations` array; panics unless
    /// the answer is 200 JSON of that shape.
    pub async fn revocations(&self) -> Vec<serde_json::Value> {
        let r = client()
            .get(self.admin_url("/admin/revocations"))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("GET /admin/revocations");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(
            status, 200,
            "GET /admin/revocations answered {status}: {text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("/admin/revocations is not JSON ({e}): {text}"));
        v["revocations"]
            .as_array()
            .unwrap_or_else(|| panic!("/admin/revocations has no \"revocations\" array: {text}"))
            .clone()
    }

    /// The jwks.json the edge reloads its keys from.
    pub fn jwks_path(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }
}
