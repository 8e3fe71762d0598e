//! From YAML text to a typed [`Config`], reporting every problem rather than the first.
//!
//! serde stops at the first error, so the document is parsed again after each one with
//! the offending part taken out: an unknown or badly typed field is removed, and a struct
//! that lacks a required field is removed from its parent. Each round finds the next
//! problem, until the rest parses. Paths are reported as written in the file: removing a
//! list item shifts the items after it, so the indices of later problems are mapped back.

use serde_path_to_error::Segment;
use serde_yaml::Value;

use super::{env, Config, Problem};

/// More rounds than any file has problems worth reading; bounds a pathological input.
const MAX_PROBLEMS: usize = 200;

/// One step into the document: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Parses configuration text: YAML, `${ENV}` expansion, then the typed structs.
pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let mut value: Value = serde_yaml::from_str(text).map_err(|e| {
        let location = e
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        vec![Problem::new("", format!("invalid YAML{location}: {e}"))]
    })?;
    let mut problems = env::expand(&mut value, &mut String::new())
        .err()
        .unwrap_or_default();
    let mut document = Document {
        value,
        removed: Vec::new(),
        dropped_items: Vec::new(),
    };
    loop {
        let error = match serde_path_to_error::deserialize::<_, Config>(document.value.clone()) {
            Ok(config) if problems.is_empty() => return Ok(config),
            Ok(_) => return Err(problems),
            Err(error) => error,
        };
        let at: Vec<Step> = error.path().iter().map_while(step).collect();
        let message = error.into_inner().to_string();
        let original = document.original(&at);
        // A required field this loop removed is reported already, as what was wrong with it.
        let removed_by_us = missing_field(&message)
            .is_some_and(|field| document.removed.contains(&child(&original, field)));
        if !removed_by_us {
            problems.push(Problem::new(render(&original), message));
        }
        if problems.len() >= MAX_PROBLEMS || !document.remove(&at) {
            return Err(problems);
        }
    }
}

/// The document being parsed, and what was taken out of it so far.
struct Document {
    value: Value,
    /// Paths (as in the file) of the parts removed.
    removed: Vec<Vec<Step>>,
    /// For each list an item was removed from: its path as in the file, and the indices
    /// (as in the file) of its removed items.
    dropped_items: Vec<(Vec<Step>, Vec<usize>)>,
}

impl Document {
    /// `path` in the current value, as it was written in the file.
    fn original(&self, path: &[Step]) -> Vec<Step> {
        let mut out = Vec::with_capacity(path.len());
        for step in path {
            let step = match step {
                Step::Index(index) => Step::Index(self.original_index(&out, *index)),
                key => key.clone(),
            };
            out.push(step);
        }
        out
    }

    fn original_index(&self, list: &[Step], index: usize) -> usize {
        let mut dropped: Vec<usize> = self
            .dropped_items
            .iter()
            .filter(|(path, _)| path == list)
            .flat_map(|(_, items)| items.iter().copied())
            .collect();
        dropped.sort_unstable();
        dropped
            .into_iter()
            .fold(index, |at, gone| if gone <= at { at + 1 } else { at })
    }

    /// Removes the part at `path` (current indices) from its parent; false when the path
    /// is the whole document or no longer leads anywhere.
    fn remove(&mut self, path: &[Step]) -> bool {
        let Some((last, parent)) = path.split_last() else {
            return false;
        };
        let original = self.original(path);
        let Some(container) = node_mut(&mut self.value, parent) else {
            return false;
        };
        let removed = match (last, container) {
            (Step::Key(key), Value::Mapping(map)) => map.remove(key.as_str()).is_some(),
            (Step::Index(index), Value::Sequence(items)) if *index < items.len() => {
                items.remove(*index);
                true
            }
            _ => false,
        };
        if removed {
            if let Some(Step::Index(at)) = original.last() {
                let list = original[..original.len() - 1].to_vec();
                match self
                    .dropped_items
                    .iter_mut()
                    .find(|(path, _)| *path == list)
                {
                    Some((_, items)) => items.push(*at),
                    None => self.dropped_items.push((list, vec![*at])),
                }
            }
            self.removed.push(original);
        }
        removed
    }
}

fn node_mut<'a>(mut value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    for step in path {
        value = match (step, value) {
            (Step::Key(key), Value::Mapping(map)) => map.get_mut(key.as_str())?,
            (Step::Index(index), Value::Sequence(items)) => items.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(value)
}

fn step(segment: &Segment) -> Option<Step> {
    match segment {
        Segment::Seq { index } => Some(Step::Index(*index)),
        Segment::Map { key } => Some(Step::Key(key.clone())),
        Segment::Enum { .. } | Segment::Unknown => None,
    }
}

/// The field named by serde's "missing field `name`" message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

fn child(path: &[Step], key: &str) -> Vec<Step> {
    let mut out = path.to_vec();
    out.push(Step::Key(key.to_string()));
    out
}

/// `routes[0].match.path`, as problems are reported.
fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "listeners: [{address: '127.0.0.1:8080'}]\n";

    fn problems(text: &str) -> Vec<String> {
        parse(text)
            .expect_err("problems")
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn unknown_fields_are_reported_with_their_path() {
        let text = format!("{MINIMAL}routes: [{{name: a, match: {{pathprefix: /x}}}}]");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("routes[0].match.pathprefix: unknown field `pathprefix`"),
            "{found:?}"
        );
    }

    #[test]
    fn bad_durations_are_reported_with_their_path() {
        let text = format!(
            "{MINIMAL}upstreams: {{app: {{targets: [{{address: '127.0.0.1:1'}}], timeouts: {{connect: soon}}}}}}"
        );
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("upstreams.app.timeouts.connect: "),
            "{found:?}"
        );
    }

    #[test]
    fn every_parse_problem_of_every_section_is_reported() {
        let text = "\
server: { threads: many, colour: blue }
listeners: [{address: '127.0.0.1:8080', tls: {http2: maybe}}]
upstreams:
  a: { targets: [{address: '127.0.0.1:1', weight: heavy}], timeouts: {connect: soon} }
  b: { targets: [{address: '127.0.0.1:2'}], load_balancing: fastest }
routes:
  - { name: one, match: { pathprefix: /x } }
  - { match: { path: /y } }
  - { name: three, strip_prefix: sometimes, plugins: { jwt: { secret: s, leeway: long } } }
unknown_section: {}
";
        let found = problems(text);
        let paths: Vec<&str> = found
            .iter()
            .map(|p| p.split(": ").next().unwrap_or(""))
            .collect();
        for expected in [
            "server.threads",
            "server.colour",
            "listeners[0].tls.http2",
            "listeners[0].tls",
            "upstreams.a.targets[0].weight",
            "upstreams.a.timeouts.connect",
            "upstreams.b.load_balancing",
            "routes[0].match.pathprefix",
            "routes[1]",
            "routes[2].strip_prefix",
            "routes[2].plugins.jwt.leeway",
            "unknown_section",
        ] {
            assert!(paths.contains(&expected), "{expected} not in {found:#?}");
        }
        // A removed bad value is not reported again as missing.
        assert!(
            !found.iter().any(|p| p.contains("missing field `weight`")),
            "{found:#?}"
        );
    }

    #[test]
    fn indices_after_a_removed_item_are_as_written() {
        let text = format!("{MINIMAL}routes: [{{match: {{}}}}, {{name: b, bogus: 1}}, {{name: c, strip_prefix: 2}}]");
        let found = problems(&text);
        assert!(
            found[0].starts_with("routes[0]: missing field `name`"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("routes[1].bogus: unknown field"),
            "{found:?}"
        );
        assert!(
            found[2].starts_with("routes[2].strip_prefix: "),
            "{found:?}"
        );
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn a_missing_environment_variable_does_not_hide_parse_problems() {
        let text =
            format!("{MINIMAL}admin: {{address: '${{PORTCULLIS_TEST_SURELY_UNSET}}', tokn: x}}");
        let found = problems(&text);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("admin.address: environment variable")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("admin.tokn: unknown field")),
            "{found:?}"
        );
    }
}
