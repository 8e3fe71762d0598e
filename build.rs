//! Build facts for `portcullis version`: the git commit, the Pingora version and features,
//! and the compiler. Each falls back to "unknown" (a source tarball has no `.git`; a crate
//! built without its lockfile has no locked Pingora version).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PORTCULLIS_COMMIT");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let commit = std::env::var("PORTCULLIS_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PORTCULLIS_COMMIT={commit}");

    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let pingora = locked_version(&lock, "pingora").unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PORTCULLIS_PINGORA_VERSION={pingora}");

    let manifest = std::fs::read_to_string("Cargo.toml").unwrap_or_default();
    let features = dependency_features(&manifest, "pingora").unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PORTCULLIS_PINGORA_FEATURES={features}");

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let compiler = output(Command::new(rustc).arg("--version")).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PORTCULLIS_RUSTC={compiler}");
}

/// The short hash of `HEAD`, and a rebuild whenever it moves.
fn git_commit() -> Option<String> {
    let git_dir = output(Command::new("git").args(["rev-parse", "--git-dir"]))?;
    let common_dir = output(Command::new("git").args(["rev-parse", "--git-common-dir"]))?;
    // HEAD and the one branch it names (other branches move without changing the build).
    let branch = output(Command::new("git").args(["symbolic-ref", "-q", "HEAD"]));
    let mut watched = vec![
        Path::new(&git_dir).join("HEAD"),
        Path::new(&common_dir).join("packed-refs"),
    ];
    watched.extend(branch.map(|branch| Path::new(&common_dir).join(branch)));
    for watched in watched {
        if watched.exists() {
            println!("cargo:rerun-if-changed={}", watched.display());
        }
    }
    output(Command::new("git").args(["rev-parse", "--short=12", "HEAD"]))
}

fn output(command: &mut Command) -> Option<String> {
    let out = command.output().ok().filter(|out| out.status.success())?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// The version of `name` in a Cargo.lock.
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    lines.find(|line| line.trim() == wanted)?;
    let version = lines.next()?.trim().strip_prefix("version = ")?;
    Some(version.trim_matches('"').to_string())
}

/// The `features = [...]` of the dependency `name` in Cargo.toml, as `a, b, c`.
fn dependency_features(manifest: &str, name: &str) -> Option<String> {
    let line = manifest
        .lines()
        .find(|line| line.trim_start().starts_with(&format!("{name} = ")))?;
    let list = line.split("features = [").nth(1)?.split(']').next()?;
    let features: Vec<&str> = list
        .split(',')
        .map(|feature| feature.trim().trim_matches('"'))
        .filter(|feature| !feature.is_empty())
        .collect();
    Some(features.join(", "))
}
