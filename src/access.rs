//! Access decisions (SPEC §2): pure functions from a route's mode and a verified token to an
//! entitlement [`Variant`]. Denials are values; the proxy maps them to responses in one place.

pub mod media;

use std::net::IpAddr;
use std::sync::Arc;

use crate::auth::cloudfront::SignedDenial;
use crate::auth::htpasswd::BasicDenial;
use crate::auth::{Claims, Denial, Verified};
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
    /// The token's `paths` do not cover the request.
    OutOfScope,
    /// The client address is not the token's `ip`.
    WrongIp,
    /// The session was revoked.
    Revoked,
    /// Refused by another mode's check (Basic credentials, CloudFront signature), with its label.
    Refused(&'static str),
}

impl AuthResult {
    /// Every result label, so metrics can expose each series (at 0) from the start.
    pub fn all_labels() -> impl Iterator<Item = &'static str> {
        [
            AuthResult::Valid,
            AuthResult::Missing,
            AuthResult::NotEntitled,
            AuthResult::OutOfScope,
            AuthResult::WrongIp,
            AuthResult::Revoked,
        ]
        .into_iter()
        .chain(Denial::ALL.into_iter().map(AuthResult::Denied))
        .map(AuthResult::as_str)
        // The other modes' refusals (labels shared with the token ones appear twice; harmless).
        .chain(SignedDenial::ALL.iter().map(SignedDenial::as_str))
        .chain([BasicDenial::BadCredentials.as_str()])
    }

    /// Whether the address's failed-credential budget was spent, so the credential was not
    /// checked: answered 429, never a variant.
    pub fn throttled(self) -> bool {
        matches!(
            self,
            AuthResult::Denied(Denial::Throttled) | AuthResult::Refused("throttled")
        )
    }

    /// Whether this is a credential that failed its check, which spends the client address's
    /// budget (`limits.failed_auth`, [`crate::budget`]). Valid credentials — also those of a
    /// session that is revoked, out of scope or not entitled — and missing ones never do, nor
    /// does a check the budget already refused.
    pub fn failed_credential(self) -> bool {
        match self {
            AuthResult::Denied(d) => d != Denial::Throttled,
            AuthResult::Refused(label) => !matches!(label, "missing" | "throttled"),
            AuthResult::Valid
            | AuthResult::Missing
            | AuthResult::NotEntitled
            | AuthResult::OutOfScope
            | AuthResult::WrongIp
            | AuthResult::Revoked => false,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Valid => "valid",
            AuthResult::Missing => "missing",
            AuthResult::NotEntitled => "not_entitled",
            AuthResult::Denied(d) => d.as_str(),
            AuthResult::OutOfScope => "wrong_path",
            AuthResult::WrongIp => "wrong_ip",
            AuthResult::Revoked => "revoked",
            AuthResult::Refused(label) => label,
        }
    }
}

/// What the edge decided for a request.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The variant to serve (and to key the cache with); `None`: refuse with 403.
    pub variant: Option<Variant>,
    /// The token check, if the route checks tokens.
    pub result: Option<AuthResult>,
    /// The verified claims, when a token verified and the cache answered with them (its
    /// front answers a token without a session id with its subscriptions only:
    /// [`Verified::Plain`]).
    pub claims: Option<Arc<Claims>>,
}

/// Public routes: everyone gets the public variant; tokens are not even verified.
pub fn public() -> Decision {
    Decision {
        variant: Some(Variant::Public),
        result: None,
        claims: None,
    }
}

/// A miss forwarded by another node of the shield ring, which decided the variant (and signed
/// it with the fleet secret, [`crate::shield`]): served as decided, nothing checked again.
pub fn decided_by_peer(variant: Variant) -> Decision {
    Decision {
        variant: Some(variant),
        result: None,
        claims: None,
    }
}

/// A mode that checked something other than a JWT (Basic credentials, a CloudFront signature)
/// and let the request in: the entitled variant.
pub fn granted() -> Decision {
    Decision {
        variant: Some(Variant::Subscriber),
        result: Some(AuthResult::Valid),
        claims: None,
    }
}

/// A token that verified, and the request facts its claims are checked against.
pub struct Presented<'a> {
    /// The verification outcome.
    pub verified: Result<Verified, Denial>,
    /// Whether the token's `sid` is revoked.
    pub revoked: bool,
    /// The normalized request path (for `paths`).
    pub path: &'a str,
    /// The client address (for `ip`).
    pub client: Option<IpAddr>,
}

/// Check a presented token against the route's `require` and the token's own restrictions.
fn check(require: &[String], p: Presented<'_>) -> Result<Verified, (AuthResult, Option<Verified>)> {
    let claims = p.verified.map_err(|d| (AuthResult::Denied(d), None))?;
    if p.revoked {
        return Err((AuthResult::Revoked, Some(claims)));
    }
    if !media::paths_allow(claims.paths(), p.path) {
        return Err((AuthResult::OutOfScope, Some(claims)));
    }
    if let Some(bound) = claims.ip() {
        if !media::ip_allows(bound, p.client) {
            return Err((AuthResult::WrongIp, Some(claims)));
        }
    }
    if !claims.entitled(require) {
        return Err((AuthResult::NotEntitled, Some(claims)));
    }
    Ok(claims)
}

/// Paywall routes (seed 001): entitled readers get `subscriber`, everyone else `anonymous` (the
/// origin renders the teaser). `presented` is `None` when the request carried no token.
pub fn paywall(require: &[String], presented: Option<Presented<'_>>) -> Decision {
    let Some(p) = presented else {
        return Decision {
            variant: Some(Variant::Anonymous),
            result: Some(AuthResult::Missing),
            claims: None,
        };
    };
    match check(require, p) {
        Ok(claims) => Decision {
            variant: Some(Variant::Subscriber),
            result: Some(AuthResult::Valid),
            claims: claims.into_claims(),
        },
        Err((result, claims)) => Decision {
            // a throttled reader is refused (429), not shown the teaser
            variant: (!result.throttled()).then_some(Variant::Anonymous),
            result: Some(result),
            claims: claims.and_then(Verified::into_claims),
        },
    }
}

/// Token routes (seed 002, media): a valid, entitled, in-scope, unrevoked token gets
/// `subscriber`; anything else is refused at the edge and the origin is never asked.
pub fn token(require: &[String], presented: Option<Presented<'_>>) -> Decision {
    let Some(p) = presented else {
        return Decision {
            variant: None,
            result: Some(AuthResult::Missing),
            claims: None,
        };
    };
    match check(require, p) {
        Ok(claims) => Decision {
            variant: Some(Variant::Subscriber),
            result: Some(AuthResult::Valid),
            claims: claims.into_claims(),
        },
        Err((result, claims)) => Decision {
            variant: None,
            result: Some(result),
            claims: claims.and_then(Verified::into_claims),
        },
    }
}
