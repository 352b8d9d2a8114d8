//! What a token that passed the token cache lets the edge check: its claims, or, for a
//! returning reader whose token restricts nothing but its subscriptions, those subscriptions
//! alone, as the token cache's front holds them ([`super::cache`]). Everything the
//! access decision and the access log read of a token goes through here, so a restriction a
//! token may carry is one method, answered by both forms.

use std::sync::Arc;

use super::jwt::{entitled_by, Claims, PackedNames};

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Its claims, as verified (or as the cache's map holds them).
    Claims(Arc<Claims>),
    /// A token without `sid`, `paths` or `ip`, answered by the token cache's front: its subscriptions.
    Plain(PackedNames),
}

impl Verified {
    /// Whether a token with these claims may be answered as [`Verified::Plain`]: it carries
    /// no session id, path scope or address binding, and its subscriptions fit the slot.
    pub fn plain_enough(claims: &Claims) -> bool {
        claims.sid.is_none()
            && claims.paths.is_empty()
            && claims.ip.is_none()
            && claims.subs_packed.fits()
    }

    /// The session id (the revocation key), if any.
    pub fn sid(&self) -> Option<&str> {
        match self {
            Verified::Claims(c) => c.sid.as_deref(),
            Verified::Plain(_) => None,
        }
    }

    /// The allowed path prefixes; empty when the token has none.
    pub fn paths(&self) -> &[String] {
        match self {
            Verified::Claims(c) => &c.paths,
            Verified::Plain(_) => &[],
        }
    }

    /// The address or network the token is bound to, if any.
    pub fn ip(&self) -> Option<&str> {
        match self {
            Verified::Claims(c) => c.ip.as_deref(),
            Verified::Plain(_) => None,
        }
    }

    /// Entitled iff `require` is empty or shares a name with the subscriptions
    /// ([`Claims::entitled`]).
    pub fn entitled(&self, require: &[String]) -> bool {
        match self {
            Verified::Claims(c) => c.entitled(require),
            Verified::Plain(names) => entitled_by(require, |r| names.contains(r) == Some(true)),
        }
    }

    /// The claims, when this is not the front's answer.
    pub fn into_claims(self) -> Option<Arc<Claims>> {
        match self {
            Verified::Claims(c) => Some(c),
            Verified::Plain(_) => None,
        }
    }
}
