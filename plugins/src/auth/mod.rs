//! What the auth plugins (`jwt`, `key_auth`) share: where credentials are read from, how a
//! refusal looks (RFC 6750 challenges), scope checks, and the per-client-IP limit on
//! failed attempts.

pub mod credentials;
pub mod failures;

use http::header::WWW_AUTHENTICATE;
use http::HeaderValue;

use crate::{ErrorCode, Rejection};

/// `realm` of every challenge the gateway sends.
const REALM: &str = "portcullis";

/// The `reason` label for a request without the plugin's credential.
pub const MISSING: &str = "missing";

/// 401 for a bearer-token plugin. With no token at all RFC 6750 §3.1 says the challenge
/// carries no error code; a bad token gets `error="invalid_token"`.
pub fn bearer_refusal(reason: &'static str, message: impl Into<String>) -> Rejection {
    let challenge = if reason == MISSING {
        format!("Bearer realm=\"{REALM}\"")
    } else {
        format!("Bearer realm=\"{REALM}\", error=\"invalid_token\"")
    };
    challenge_refusal(ErrorCode::Unauthorized, challenge, reason, message)
}

/// 403 for valid credentials without the route's scopes (RFC 6750 `insufficient_scope`).
pub fn scope_refusal(required: &[String], scheme: &str) -> Rejection {
    let challenge = format!(
        "{scheme} realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{}\"",
        required.join(" ")
    );
    challenge_refusal(
        ErrorCode::Forbidden,
        challenge,
        "insufficient_scope",
        "the credentials lack a required scope",
    )
}

/// 401 for an API-key plugin (`Key` scheme, as Kong answers).
pub fn key_refusal(reason: &'static str, message: impl Into<String>) -> Rejection {
    challenge_refusal(
        ErrorCode::Unauthorized,
        format!("Key realm=\"{REALM}\""),
        reason,
        message,
    )
}

fn challenge_refusal(
    code: ErrorCode,
    challenge: String,
    reason: &'static str,
    message: impl Into<String>,
) -> Rejection {
    let rejection = Rejection::new(code, message).auth_failure(reason);
    match HeaderValue::try_from(challenge) {
        Ok(value) => rejection.with_header(WWW_AUTHENTICATE, value),
        // Only reachable with a scope containing bytes a header cannot carry.
        Err(_) => rejection,
    }
}

/// Whether every required scope is among `granted`.
pub fn has_scopes<'a>(required: &[String], granted: impl Iterator<Item = &'a str> + Clone) -> bool {
    required
        .iter()
        .all(|scope| granted.clone().any(|have| have == scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(rejection: &Rejection) -> &str {
        rejection
            .headers
            .iter()
            .find(|(name, _)| name == WWW_AUTHENTICATE)
            .and_then(|(_, value)| value.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let missing = bearer_refusal(MISSING, "no token");
        assert_eq!(challenge(&missing), "Bearer realm=\"portcullis\"");
        assert_eq!(missing.code, ErrorCode::Unauthorized);
        let expired = bearer_refusal("expired", "token expired");
        assert_eq!(
            challenge(&expired),
            "Bearer realm=\"portcullis\", error=\"invalid_token\""
        );
        let scope = scope_refusal(&["a".into(), "b".into()], "Bearer");
        assert_eq!(scope.code, ErrorCode::Forbidden);
        assert!(challenge(&scope).contains("error=\"insufficient_scope\", scope=\"a b\""));
        assert_eq!(scope.auth_reason, Some("insufficient_scope"));
    }

    #[test]
    fn scopes_must_all_be_granted() {
        let required = vec!["a".to_string(), "b".to_string()];
        assert!(has_scopes(&required, ["b", "c", "a"].into_iter()));
        assert!(!has_scopes(&required, ["a"].into_iter()));
        assert!(has_scopes(&[], std::iter::empty()));
    }
}
