//! Test certificates, made by the project's own script with the real openssl CLI.

use std::path::Path;
use std::process::Command;

/// Makes a test CA (once per directory) and `DIR/FILE.{pem,key}` for the DNS `names`
/// (comma-separated) signed by it.
pub fn make_cert(dir: &Path, file: &str, names: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/make-test-certs.sh");
    let output = Command::new(script)
        .arg(dir)
        .arg(file)
        .arg(names)
        .output()
        .expect("run conf/make-test-certs.sh (needs bash and openssl)");
    assert!(
        output.status.success(),
        "make-test-certs.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
