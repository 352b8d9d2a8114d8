//! Pages rendered from `x-tollgate-variant` the way [`Origin`](super::Origin) renders them, for
//! the [`NaiveOrigin`](super::naive_origin::NaiveOrigin) (its `NaiveOptions::render` hook): an
//! origin that frames requests naively (GET bodies ignored) *and* trusts the edge's variant.
//!
//! - `/premium/*`: [`premium_body`](super::premium_body) of the request target (path and query),
//!   the full article (with [`SUBSCRIBER_MARK`]) for `subscriber`, the teaser for any other
//!   variant, padded; `Cache-Control: public, max-age=300`; `x-page: full` or `teaser`.
//! - `/vod/*` (a media origin behind `access: token` routes): [`media_body`] for `subscriber`
//!   (`x-page: media`), `403` for anything else.
//! - Anything else: `None` (the naive origin's default answer).
//!
//! The bodies depend on the target only, so a test can compare every response byte for byte
//! with [`Pages::expected`] (precomputed, shared, no allocation per request).

use std::collections::HashMap;
use std::sync::Arc;

use super::naive_origin::{NaiveAnswer, NaiveRequest, RenderHook};
use super::{premium_body, SUBSCRIBER_MARK, VARIANT_HEADER};

/// What an origin page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Page {
    /// The full article (subscriber variant of `/premium/*`).
    Full,
    /// The teaser (any other variant of `/premium/*`).
    Teaser,
    /// A media object (subscriber variant of `/vod/*`).
    Media,
}

impl Page {
    /// The `x-page` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Page::Full => "full",
            Page::Teaser => "teaser",
            Page::Media => "media",
        }
    }
}

/// The body of a media object: `MEDIA:<target>:` [`SUBSCRIBER_MARK`], padded with `#` up to
/// `pad_to` bytes.
pub fn media_body(target: &str, pad_to: usize) -> String {
    let mut body = format!("MEDIA:{target}:{SUBSCRIBER_MARK}\n");
    if body.len() < pad_to {
        body.push_str(&"#".repeat(pad_to - body.len()));
    }
    body
}

/// Every page a test will ask for, rendered once: (target, page) → body.
pub struct Pages {
    bodies: HashMap<(String, Page), Arc<[u8]>>,
    pads: Vec<(String, usize)>,
}

impl Pages {
    /// Pages for these exact paths (`/premium/...` or `/vod/...`) with their padding, each with
    /// each query of `queries` (`""` for none).
    pub fn new(paths: &[(&str, usize)], queries: &[&str]) -> Pages {
        let mut bodies = HashMap::new();
        for (path, pad) in paths {
            for q in queries {
                let target = if q.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}?{q}")
                };
                let pages: &[Page] = if path.starts_with("/vod/") {
                    &[Page::Media]
                } else {
                    &[Page::Full, Page::Teaser]
                };
                for page in pages {
                    bodies.insert(
                        (target.clone(), *page),
                        render(&target, *page, *pad).into_bytes().into(),
                    );
                }
            }
        }
        Pages {
            bodies,
            pads: paths.iter().map(|(p, n)| (p.to_string(), *n)).collect(),
        }
    }

    /// The body of `page` for `target`, if it is one of the pages rendered up front.
    pub fn expected(&self, target: &str, page: Page) -> Option<&[u8]> {
        self.bodies.get(&(target.to_owned(), page)).map(|b| &b[..])
    }

    /// The padding of `path` (0 for a path not given to [`Pages::new`]).
    pub fn pad(&self, path: &str) -> usize {
        self.pads
            .iter()
            .find(|(p, _)| p == path)
            .map_or(0, |(_, n)| *n)
    }

    /// The answer to a parsed request, by its path and its (first) variant header.
    pub fn answer(&self, req: &NaiveRequest) -> Option<NaiveAnswer> {
        let path = req.path();
        let variant = req.header(VARIANT_HEADER).unwrap_or_default();
        let page = if path.starts_with("/premium/") {
            if variant == "subscriber" {
                Page::Full
            } else {
                Page::Teaser
            }
        } else if path.starts_with("/vod/") {
            if variant != "subscriber" {
                return Some(NaiveAnswer {
                    status: 403,
                    headers: vec![("Content-Type".into(), "text/plain".into())],
                    body: b"media needs the subscriber variant\n".to_vec(),
                });
            }
            Page::Media
        } else {
            return None;
        };
        let body = match self.expected(&req.target, page) {
            Some(b) => b.to_vec(),
            None => render(&req.target, page, self.pad(path)).into_bytes(),
        };
        Some(NaiveAnswer {
            status: 200,
            headers: vec![
                (
                    "Content-Type".into(),
                    "text/plain; charset=utf-8".to_string(),
                ),
                ("Cache-Control".into(), "public, max-age=300".into()),
                ("x-page".into(), page.as_str().into()),
            ],
            body,
        })
    }

    /// [`Pages::answer`] as a `NaiveOptions::render` hook.
    pub fn render_hook(self: &Arc<Self>) -> RenderHook {
        let pages = self.clone();
        Arc::new(move |req: &NaiveRequest| pages.answer(req))
    }
}

fn render(target: &str, page: Page, pad: usize) -> String {
    match page {
        Page::Full => premium_body(target, true, pad),
        Page::Teaser => premium_body(target, false, pad),
        Page::Media => media_body(target, pad),
    }
}
