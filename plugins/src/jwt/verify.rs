//! Verifying a token against a key set: algorithm allow-list, key/algorithm binding,
//! signature, then `exp`/`nbf` (with leeway), `iss` and `aud`. Every refusal carries the
//! `reason` label of `portcullis_auth_failures_total`.

use std::collections::HashMap;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::keys::{Candidates, KeySet};

/// The `reason` of a token whose `kid` the key set lacks.
pub const UNKNOWN_KID: &str = "unknown_kid";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The metric reason (`malformed`, `bad_signature`, `expired`, ...).
    pub reason: &'static str,
    /// A message for the client; never contains the token.
    pub message: String,
}

impl Failure {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The claims checks of one `jwt` config, one [`Validation`] per allowed algorithm,
/// built at config load.
pub struct Verifier {
    validations: HashMap<Algorithm, Validation>,
}

/// What a [`Verifier`] checks besides the signature.
pub struct ClaimRules<'a> {
    /// Accepted `iss`, if checked.
    pub issuer: Option<&'a str>,
    /// Accepted `aud` values (one must match), if checked.
    pub audience: &'a [String],
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
}

impl Verifier {
    /// A verifier accepting only `algorithms`.
    pub fn new(algorithms: &[Algorithm], rules: &ClaimRules<'_>) -> Self {
        let validations = algorithms
            .iter()
            .map(|&alg| {
                let mut validation = Validation::new(alg);
                validation.leeway = rules.leeway;
                validation.validate_nbf = true;
                validation.validate_exp = true;
                validation.set_required_spec_claims(&["exp"]);
                if let Some(issuer) = rules.issuer {
                    validation.set_issuer(&[issuer]);
                }
                if rules.audience.is_empty() {
                    validation.validate_aud = false;
                } else {
                    validation.set_audience(rules.audience);
                }
                (alg, validation)
            })
            .collect();
        Self { validations }
    }

    /// The token's claims, when it is valid under `keys`.
    pub fn verify(&self, token: &str, keys: &KeySet) -> Result<Map<String, Value>, Failure> {
        let header = jsonwebtoken::decode_header(token)
            // `alg: none` lands here too: it is no algorithm this library (or we) know.
            .map_err(|_| Failure::new("malformed", "the token is not a well-formed JWT"))?;
        let Some(validation) = self.validations.get(&header.alg) else {
            return Err(Failure::new(
                "bad_signature",
                format!("algorithm {:?} is not accepted", header.alg),
            ));
        };
        let keys = match keys.candidates(header.kid.as_deref()) {
            Candidates::Keys(keys) => keys,
            Candidates::UnknownKid => {
                return Err(Failure::new(
                    UNKNOWN_KID,
                    "the token's signing key (kid) is unknown",
                ))
            }
        };
        let mut fitting = keys.iter().filter(|key| key.accepts(header.alg)).peekable();
        if fitting.peek().is_none() {
            return Err(Failure::new(
                "bad_signature",
                format!("no key of this issuer signs with {:?}", header.alg),
            ));
        }
        let mut last = Failure::new("bad_signature", "invalid signature");
        for key in fitting {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => {
                    last = failure_for(e.kind());
                    // Past the signature, another key would not change the answer.
                    if last.reason != "bad_signature" {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

fn failure_for(kind: &ErrorKind) -> Failure {
    match kind {
        ErrorKind::ExpiredSignature => Failure::new("expired", "the token has expired"),
        ErrorKind::ImmatureSignature => {
            Failure::new("not_yet_valid", "the token is not valid yet (nbf)")
        }
        ErrorKind::InvalidIssuer => {
            Failure::new("wrong_issuer", "the token's issuer is not accepted")
        }
        ErrorKind::InvalidAudience => {
            Failure::new("wrong_audience", "the token is not meant for this audience")
        }
        ErrorKind::MissingRequiredClaim(claim) => {
            Failure::new("malformed", format!("the token has no {claim} claim"))
        }
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
            Failure::new("bad_signature", "invalid signature")
        }
        _ => Failure::new("malformed", "the token is not a well-formed JWT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token(alg: Algorithm, claims: Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .expect("token")
    }

    fn verifier(leeway: u64) -> Verifier {
        Verifier::new(
            &[Algorithm::HS256],
            &ClaimRules {
                issuer: Some("https://id.example.com"),
                audience: &["orders".to_string()],
                leeway,
            },
        )
    }

    fn good_claims() -> Value {
        json!({"sub": "u1", "iss": "https://id.example.com", "aud": "orders", "exp": now() + 60})
    }

    fn reason(result: Result<Map<String, Value>, Failure>) -> &'static str {
        result
            .map(|_| "ok")
            .unwrap_or_else(|failure| failure.reason)
    }

    #[test]
    fn a_good_token_yields_its_claims() {
        let keys = KeySet::secret(SECRET);
        let claims = verifier(0)
            .verify(&token(Algorithm::HS256, good_claims()), &keys)
            .expect("valid");
        assert_eq!(claims["sub"], "u1");
    }

    #[test]
    fn each_failure_has_its_reason() {
        let keys = KeySet::secret(SECRET);
        let v = verifier(0);
        let with = |patch: Value| {
            let mut claims = good_claims();
            for (k, val) in patch.as_object().expect("object") {
                claims[k] = val.clone();
            }
            token(Algorithm::HS256, claims)
        };
        assert_eq!(reason(v.verify("nope", &keys)), "malformed");
        assert_eq!(
            reason(v.verify(&with(json!({"exp": now() - 120})), &keys)),
            "expired"
        );
        assert_eq!(
            reason(v.verify(&with(json!({"nbf": now() + 120})), &keys)),
            "not_yet_valid"
        );
        assert_eq!(
            reason(v.verify(&with(json!({"iss": "evil"})), &keys)),
            "wrong_issuer"
        );
        assert_eq!(
            reason(v.verify(&with(json!({"aud": "other"})), &keys)),
            "wrong_audience"
        );
        assert_eq!(
            reason(v.verify(&token(Algorithm::HS384, good_claims()), &keys)),
            "bad_signature",
            "HS384 is not in algorithms"
        );
        let other = KeySet::secret(b"another-secret-another-secret-xx");
        assert_eq!(
            reason(v.verify(&token(Algorithm::HS256, good_claims()), &other)),
            "bad_signature"
        );
        let no_exp = token(
            Algorithm::HS256,
            json!({"sub": "u1", "iss": "https://id.example.com", "aud": "orders"}),
        );
        assert_eq!(reason(v.verify(&no_exp, &keys)), "malformed");
    }

    #[test]
    fn leeway_accepts_small_clock_skew_only() {
        let keys = KeySet::secret(SECRET);
        let mut claims = good_claims();
        claims["exp"] = json!(now() - 20);
        let recent = token(Algorithm::HS256, claims);
        assert_eq!(reason(verifier(30).verify(&recent, &keys)), "ok");
        assert_eq!(reason(verifier(0).verify(&recent, &keys)), "expired");
    }

    #[test]
    fn alg_none_is_refused() {
        use base64::Engine;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let unsigned = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&good_claims())
        );
        assert_eq!(
            reason(verifier(0).verify(&unsigned, &KeySet::secret(SECRET))),
            "malformed"
        );
    }
}
