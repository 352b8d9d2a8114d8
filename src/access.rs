//! Access decisions (SPEC §2): pure functions from a route's mode and a verified token to an
//! entitlement [`Variant`]. Denials are values; the proxy maps them to responses in one place.

use std::sync::Arc;

use crate::auth::{Claims, Denial};
use crate::cache::Variant;

/// The outcome of the token check, as counted in `tollgate_auth_decisions_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    /// A valid, entitled token.
    Valid,
    /// No token in any configured source.
    Missing,
    /// A valid token whose subscriptions do not meet the route's `require`.
    NotEntitled,
    /// The token failed verification.
    Denied(Denial),
}

impl AuthResult {
    /// Every result label, so metrics can expose each series (at 0) from the start.
    pub fn all_labels() -> impl Iterator<Item = &'static str> {
        [
            AuthResult::Valid,
            AuthResult::Missing,
            AuthResult::NotEntitled,
        ]
        .into_iter()
        .chain(Denial::ALL.into_iter().map(AuthResult::Denied))
        .map(AuthResult::as_str)
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Valid => "valid",
            AuthResult::Missing => "missing",
            AuthResult::NotEntitled => "not_entitled",
            AuthResult::Denied(d) => d.as_str(),
        }
    }
}

/// What the edge decided for a request.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The variant to serve (and to key the cache with).
    pub variant: Variant,
    /// The token check, if the route checks tokens.
    pub result: Option<AuthResult>,
    /// The verified claims, when a token verified.
    pub claims: Option<Arc<Claims>>,
}

/// Public routes: everyone gets the public variant; tokens are not even verified.
pub fn public() -> Decision {
    Decision {
        variant: Variant::Public,
        result: None,
        claims: None,
    }
}

/// Paywall routes (seed 001): entitled readers get `subscriber`, everyone else `anonymous` (the
/// origin renders the teaser). `verified` is `None` when the request carried no token.
pub fn paywall(require: &[String], verified: Option<Result<Arc<Claims>, Denial>>) -> Decision {
    match verified {
        None => Decision {
            variant: Variant::Anonymous,
            result: Some(AuthResult::Missing),
            claims: None,
        },
        Some(Err(d)) => Decision {
            variant: Variant::Anonymous,
            result: Some(AuthResult::Denied(d)),
            claims: None,
        },
        Some(Ok(claims)) if claims.entitled(require) => Decision {
            variant: Variant::Subscriber,
            result: Some(AuthResult::Valid),
            claims: Some(claims),
        },
        Some(Ok(claims)) => Decision {
            variant: Variant::Anonymous,
            result: Some(AuthResult::NotEntitled),
            claims: Some(claims),
        },
    }
}
