//! Load-test fixture for the "with jwt + key_auth" row of `loadtest/compare.sh`: makes an
//! RSA-2048 signing key, writes its JWKS to the given path and prints an RS256 token
//! (valid for a day) on stdout.
//!
//! ```text
//! cargo run --release --example auth_fixture -- /tmp/jwks.json
//! ```

#[allow(dead_code)]
#[path = "../tests/auth/signing.rs"]
mod signing;

use jsonwebtoken::Algorithm;
use serde_json::json;
use signing::{jwks, now, SigningKey};

fn main() -> std::process::ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: auth_fixture JWKS_PATH");
        return std::process::ExitCode::from(2);
    };
    let key = SigningKey::rsa("bench-1");
    if let Err(e) = std::fs::write(&path, jwks(&[&key])) {
        eprintln!("auth_fixture: cannot write {path}: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let claims = json!({"sub": "app-bench", "scope": "items:read", "exp": now() + 86_400});
    println!("{}", key.mint(Algorithm::RS256, &claims));
    std::process::ExitCode::SUCCESS
}
