//! Reading the configuration file: YAML → `${ENV}` expansion → typed [`Config`], with every
//! problem reported as `path.to.field: message`.

mod env;
pub mod schema;

use std::fmt;
use std::path::Path;

pub use portcullis_plugins::Problem;
pub use schema::Config;

/// Every problem of one configuration file, printed one per line as `FILE: path: message`.
#[derive(Debug, Clone)]
pub struct Problems {
    /// The file the problems are in.
    pub file: String,
    /// The problems, in the order found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {problem}", self.file)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// A configuration file read and parsed, with the raw text kept for hashing.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The parsed configuration.
    pub config: Config,
    /// The file's bytes exactly as read.
    pub source: String,
}

/// Reads and parses `path`. Types, unknown fields and `${ENV}` references are checked here;
/// cross-references and values are checked when the configuration is compiled.
pub fn load(path: &Path) -> Result<LoadedConfig, Problems> {
    let fail = |problems| Problems {
        file: path.display().to_string(),
        problems,
    };
    let source = std::fs::read_to_string(path)
        .map_err(|e| fail(vec![Problem::new("", format!("cannot read file: {e}"))]))?;
    let config = parse(&source).map_err(fail)?;
    Ok(LoadedConfig { config, source })
}

/// Parses configuration text (used by [`load`] and by tests).
pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        let location = e
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        vec![Problem::new("", format!("invalid YAML{location}: {e}"))]
    })?;
    env::expand(&mut value, &mut String::new())?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![Problem::new(path, e.into_inner().to_string())]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "listeners: [{address: '127.0.0.1:8080'}]\n";

    #[test]
    fn unknown_fields_are_reported_with_their_path() {
        let text = format!("{MINIMAL}routes: [{{name: a, match: {{pathprefix: /x}}}}]");
        let problems = parse(&text).expect_err("unknown field");
        assert!(
            problems[0].path.starts_with("routes[0].match"),
            "{problems:?}"
        );
        assert!(problems[0].message.contains("pathprefix"), "{problems:?}");
    }

    #[test]
    fn bad_durations_are_reported_with_their_path() {
        let text = format!(
            "{MINIMAL}upstreams: {{app: {{targets: [{{address: '127.0.0.1:1'}}], timeouts: {{connect: soon}}}}}}"
        );
        let problems = parse(&text).expect_err("bad duration");
        assert_eq!(problems[0].path, "upstreams.app.timeouts.connect");
    }
}
