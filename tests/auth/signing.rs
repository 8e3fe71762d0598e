//! Signing keys made at test time (openssl), tokens minted with jsonwebtoken, and the
//! JWKS documents that publish the keys.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use serde_json::{json, Value};

/// A private key with its kid, and its public half as a JWK.
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    pub jwk: Value,
    /// The public key in PEM (for the alg-confusion attack).
    pub public_pem: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// A fresh RSA-2048 key (RS* and PS*).
    pub fn rsa(kid: &str) -> SigningKey {
        let rsa = Rsa::generate(2048).expect("RSA key");
        let jwk = json!({"kty": "RSA", "kid": kid, "use": "sig",
            "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())});
        SigningKey {
            kid: kid.into(),
            encoding: EncodingKey::from_rsa_pem(&rsa.private_key_to_pem().expect("pem"))
                .expect("encoding key"),
            jwk,
            public_pem: rsa.public_key_to_pem().expect("public pem"),
        }
    }

    /// A fresh P-256 (ES256) or P-384 (ES384) key.
    pub fn ec(kid: &str, alg: Algorithm) -> SigningKey {
        let (nid, crv, size) = match alg {
            Algorithm::ES256 => (Nid::X9_62_PRIME256V1, "P-256", 32),
            _ => (Nid::SECP384R1, "P-384", 48),
        };
        let group = EcGroup::from_curve_name(nid).expect("curve");
        let ec = EcKey::generate(&group).expect("EC key");
        let (mut x, mut y) = (
            openssl::bn::BigNum::new().expect("bn"),
            openssl::bn::BigNum::new().expect("bn"),
        );
        ec.public_key()
            .affine_coordinates(
                &group,
                &mut x,
                &mut y,
                &mut BigNumContext::new().expect("ctx"),
            )
            .expect("coordinates");
        let jwk = json!({"kty": "EC", "kid": kid, "crv": crv,
            "x": b64(&x.to_vec_padded(size).expect("x")), "y": b64(&y.to_vec_padded(size).expect("y"))});
        let pkey = PKey::from_ec_key(ec).expect("pkey");
        SigningKey {
            kid: kid.into(),
            encoding: EncodingKey::from_ec_pem(&pkey.private_key_to_pem_pkcs8().expect("pem"))
                .expect("encoding key"),
            jwk,
            public_pem: pkey.public_key_to_pem().expect("public pem"),
        }
    }

    /// A fresh Ed25519 key (EdDSA).
    pub fn ed25519(kid: &str) -> SigningKey {
        let pkey = PKey::generate_ed25519().expect("Ed25519 key");
        let jwk = json!({"kty": "OKP", "kid": kid, "crv": "Ed25519",
            "x": b64(&pkey.raw_public_key().expect("raw"))});
        SigningKey {
            kid: kid.into(),
            encoding: EncodingKey::from_ed_pem(&pkey.private_key_to_pem_pkcs8().expect("pem"))
                .expect("encoding key"),
            jwk,
            public_pem: pkey.public_key_to_pem().expect("public pem"),
        }
    }

    /// A token signed with this key under `alg`, naming this key's kid.
    pub fn mint(&self, alg: Algorithm, claims: &Value) -> String {
        self.mint_as(&self.kid, alg, claims)
    }

    /// A token signed with this key but naming another `kid`.
    pub fn mint_as(&self, kid: &str, alg: Algorithm, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_string());
        encode(&header, claims, &self.encoding).expect("sign the token")
    }
}

/// A token signed with an HMAC secret.
pub fn mint_hmac(secret: &[u8], alg: Algorithm, claims: &Value) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("sign")
}

/// The JWKS publishing `keys`.
pub fn jwks(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|key| key.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Claims valid for five minutes with `sub`.
pub fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 300})
}

/// A token with `alg: none` and no signature.
pub fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}
