//! Verification keys: a JWKS document (or an HMAC secret) parsed once into keys indexed by
//! `kid`, each bound to the algorithms its key type allows.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// What a key is, which decides the algorithms it may verify. A token whose `alg` does
/// not fit the key is refused before any cryptography (no HS-with-a-public-key confusion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// An HMAC secret: HS256/384/512.
    Hmac,
    /// An RSA public key: RS256/384/512 and PS256/384/512.
    Rsa,
    /// A P-256 public key: ES256.
    P256,
    /// A P-384 public key: ES384.
    P384,
    /// An Ed25519 public key: EdDSA.
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind verifies `alg`.
    pub fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Hmac => matches!(alg, HS256 | HS384 | HS512),
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::P256 => alg == ES256,
            Self::P384 => alg == ES384,
            Self::Ed25519 => alg == EdDSA,
        }
    }
}

/// One verification key.
pub struct VerifyingKey {
    /// The key, ready for `jsonwebtoken::decode`.
    pub key: DecodingKey,
    /// Its kind.
    pub kind: KeyKind,
    /// The JWK's own `alg`, when it names one: then only that algorithm is accepted.
    pub alg: Option<Algorithm>,
}

impl VerifyingKey {
    /// Whether this key may verify a token signed with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|own| own == alg)
    }
}

/// The keys of one JWKS load (or the one secret), ready for the request path.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Vec<Arc<VerifyingKey>>>,
    all: Vec<Arc<VerifyingKey>>,
    /// A secret answers for every `kid`; a JWKS only for the kids it lists.
    any_kid: bool,
}

/// Which keys a token may be verified with.
pub enum Candidates<'a> {
    /// These keys (already filtered by kid, not yet by algorithm).
    Keys(&'a [Arc<VerifyingKey>]),
    /// The token's `kid` is not in the set.
    UnknownKid,
}

impl KeySet {
    /// The single key of `secret:`.
    pub fn secret(secret: &[u8]) -> Self {
        Self {
            by_kid: HashMap::new(),
            all: vec![Arc::new(VerifyingKey {
                key: DecodingKey::from_secret(secret),
                kind: KeyKind::Hmac,
                alg: None,
            })],
            any_kid: true,
        }
    }

    /// Parses a JWKS document. Keys that cannot verify signatures here (encryption keys,
    /// unsupported curves or types, symmetric keys, which have no place in a published
    /// set) are skipped and named in the second element; a set with no usable key is
    /// an error.
    pub fn from_jwks(json: &[u8]) -> Result<(Self, Vec<String>), String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut set = Self::default();
        let mut skipped = Vec::new();
        for (i, value) in document.keys.into_iter().enumerate() {
            match parse_key(value) {
                Ok((kid, key)) => {
                    let key = Arc::new(key);
                    if let Some(kid) = kid {
                        set.by_kid.entry(kid).or_default().push(Arc::clone(&key));
                    }
                    set.all.push(key);
                }
                Err(why) => skipped.push(format!("keys[{i}]: {why}")),
            }
        }
        if set.all.is_empty() {
            return Err(format!(
                "no usable signing key in the JWKS ({})",
                skipped.join("; ")
            ));
        }
        Ok((set, skipped))
    }

    /// The keys for a token's `kid`: with no kid, every key.
    pub fn candidates(&self, kid: Option<&str>) -> Candidates<'_> {
        match kid {
            Some(kid) if !self.any_kid => match self.by_kid.get(kid) {
                Some(keys) => Candidates::Keys(keys),
                None => Candidates::UnknownKid,
            },
            _ => Candidates::Keys(&self.all),
        }
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

fn parse_key(value: serde_json::Value) -> Result<(Option<String>, VerifyingKey), String> {
    let kid_hint = value
        .get("kid")
        .and_then(|kid| kid.as_str())
        .map(str::to_string);
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("unreadable JWK: {e}"))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use: enc)".into());
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => KeyKind::P256,
            EllipticCurve::P384 => KeyKind::P384,
            _ => return Err("unsupported elliptic curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => KeyKind::Ed25519,
            _ => return Err("unsupported OKP curve".into()),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric key (use secret: for HMAC)".into())
        }
    };
    let alg = match jwk.common.key_algorithm {
        Some(alg) => Some(
            alg.to_string()
                .parse::<Algorithm>()
                .map_err(|_| format!("alg {alg} is not a signature algorithm"))?,
        ),
        None => None,
    };
    if alg.is_some_and(|alg| !kind.fits(alg)) {
        return Err("its alg does not fit its key type".into());
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok((
        jwk.common.key_id.or(kid_hint),
        VerifyingKey { key, kind, alg },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_JWK: &str = r#"{"kty":"RSA","kid":"r1","alg":"RS256","use":"sig","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;

    fn jwks(keys: &[&str]) -> Vec<u8> {
        format!("{{\"keys\":[{}]}}", keys.join(",")).into_bytes()
    }

    #[test]
    fn keys_are_found_by_kid_and_bound_to_their_algorithm() {
        let (set, skipped) = KeySet::from_jwks(&jwks(&[
            RSA_JWK,
            r#"{"kty":"oct","kid":"s","k":"c2VjcmV0"}"#,
            r#"{"kty":"RSA","kid":"e","use":"enc","n":"AQAB","e":"AQAB"}"#,
        ]))
        .expect("one usable key");
        assert_eq!(set.len(), 1);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        let Candidates::Keys(keys) = set.candidates(Some("r1")) else {
            panic!("r1 is known");
        };
        assert!(keys[0].accepts(Algorithm::RS256));
        assert!(!keys[0].accepts(Algorithm::PS256), "the JWK pins RS256");
        assert!(!keys[0].accepts(Algorithm::HS256));
        assert!(matches!(
            set.candidates(Some("other")),
            Candidates::UnknownKid
        ));
        assert!(matches!(set.candidates(None), Candidates::Keys(k) if k.len() == 1));
    }

    #[test]
    fn a_set_without_usable_keys_or_json_is_an_error() {
        assert!(KeySet::from_jwks(b"{\"keys\":[]}").is_err());
        assert!(KeySet::from_jwks(b"nope").is_err());
    }

    #[test]
    fn a_secret_answers_for_any_kid_and_only_hmac() {
        let set = KeySet::secret(b"0123456789abcdef0123456789abcdef");
        let Candidates::Keys(keys) = set.candidates(Some("whatever")) else {
            panic!("secrets ignore kid");
        };
        assert!(keys[0].accepts(Algorithm::HS512));
        assert!(!keys[0].accepts(Algorithm::RS256));
    }
}
