//! The documentation against the code: every configuration field, every metric and every
//! error code appears in exactly one row of the reference tables in `docs/`, and every
//! link in the README and `docs/` leads to a file (and heading) of this repository.
//!
//! Configuration fields come from the structs themselves, without a list to keep in step:
//! `docs/reference.yaml` sets every field, and each of its mappings is probed with an
//! unknown key, whose error (`deny_unknown_fields`) names every field the struct has. So a
//! field added to a struct fails this test until it is documented and in the reference.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use portcullis::telemetry::metrics::Metrics;
use portcullis_plugins::ErrorCode;
use serde_yaml::{Mapping, Value};

/// Sections that take the same fields as a top-level one; they are documented there.
const SAME_AS: [(&str, &str); 2] = [
    ("routes[].plugins.", "plugins."),
    ("routes[].compression.", "compression."),
];

/// The key added to a mapping to learn what fields its struct has.
const PROBE: &str = "__probe__";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The markdown files the documentation is made of: the README and `docs/*.md`.
fn pages() -> Vec<(PathBuf, String)> {
    let mut paths = vec![repo().join("README.md")];
    let docs = std::fs::read_dir(repo().join("docs")).expect("docs/ exists");
    let mut more: Vec<PathBuf> = docs
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    more.sort();
    paths.extend(more);
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable page");
            (path, text)
        })
        .collect()
}

/// The names in the first column of every table whose first header is `kind` (`field`,
/// `metric`, `code`): each backquoted name of the cell, with where it was found.
fn table_entries(kind: &str) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    for (path, text) in pages() {
        let name = path
            .strip_prefix(repo())
            .unwrap_or(&path)
            .display()
            .to_string();
        let mut header: Option<String> = None;
        for (number, line) in text.lines().enumerate() {
            let Some(row) = line.trim().strip_prefix('|') else {
                header = None;
                continue;
            };
            let first = first_cell(row);
            match &header {
                None => header = Some(first.trim().to_string()),
                Some(current) if current == kind && !first.trim_start().starts_with("---") => {
                    for token in first.split('`').skip(1).step_by(2) {
                        entries.push((token.to_string(), format!("{name}:{}", number + 1)));
                    }
                }
                Some(_) => {}
            }
        }
    }
    entries
}

/// The text of a table row's first cell (`\|` does not end it).
fn first_cell(row: &str) -> &str {
    let bytes = row.as_bytes();
    let end = (0..bytes.len())
        .find(|&i| bytes[i] == b'|' && (i == 0 || bytes[i - 1] != b'\\'))
        .unwrap_or(row.len());
    &row[..end]
}

/// Asserts that the reference tables of `kind` name each of `expected` exactly once and
/// nothing else.
fn assert_documented_once(kind: &str, expected: &BTreeSet<String>) {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, place) in table_entries(kind) {
        seen.entry(name).or_default().push(place);
    }
    let mut wrong = Vec::new();
    for name in expected {
        match seen.get(name).map(Vec::len) {
            None => wrong.push(format!("{name}: not in any `| {kind} |` table of docs/")),
            Some(1) => {}
            Some(_) => wrong.push(format!(
                "{name}: documented more than once: {:?}",
                seen[name]
            )),
        }
    }
    for (name, places) in &seen {
        if !expected.contains(name) {
            wrong.push(format!(
                "{name}: documented at {places:?} but not in the code"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn canonical(path: String) -> String {
    for (alias, canonical) in SAME_AS {
        if let Some(rest) = path.strip_prefix(alias) {
            return format!("{canonical}{rest}");
        }
    }
    path
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

/// One step from the document's root to a node: a mapping key or a list index.
#[derive(Clone)]
enum Step {
    Key(Value),
    Index(usize),
}

fn node_mut<'a>(mut value: &'a mut Value, steps: &[Step]) -> &'a mut Value {
    for step in steps {
        value = match step {
            Step::Key(key) => value
                .as_mapping_mut()
                .and_then(|map| map.get_mut(key))
                .expect("the key is there"),
            Step::Index(i) => value
                .as_sequence_mut()
                .and_then(|items| items.get_mut(*i))
                .expect("the item is there"),
        };
    }
    value
}

/// The fields of the struct the mapping at `steps` is parsed into, or `None` when that
/// mapping is a map of names the user chooses (`upstreams`, `tiers`, header maps).
fn struct_fields(root: &Value, steps: &[Step]) -> Option<Vec<String>> {
    let mut probed = root.clone();
    node_mut(&mut probed, steps)
        .as_mapping_mut()
        .expect("a mapping")
        .insert(Value::from(PROBE), Value::Mapping(Mapping::new()));
    let text = serde_yaml::to_string(&probed).expect("serializable");
    let problems = portcullis::config::parse(&text).err()?;
    let unknown = format!("unknown field `{PROBE}`");
    let message = &problems
        .iter()
        .find(|problem| problem.message.contains(&unknown))?
        .message;
    let expected = message.split_once("expected").map_or("", |(_, rest)| rest);
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect(),
    )
}

/// The configuration's fields as the code defines them (`code`) and as the reference
/// file sets them (`set`), as documented paths (`upstreams.NAME.targets[].weight`).
#[derive(Default)]
struct Fields {
    code: BTreeSet<String>,
    set: BTreeSet<String>,
}

impl Fields {
    fn walk(&mut self, root: &Value, steps: &mut Vec<Step>, path: &str) {
        match node_mut(&mut root.clone(), steps).clone() {
            Value::Mapping(map) => {
                let fields = struct_fields(root, steps);
                if let Some(fields) = &fields {
                    for field in fields {
                        self.code.insert(canonical(join(path, field)));
                    }
                }
                for (key, value) in map {
                    let name = key.as_str().expect("string keys").to_string();
                    let child = match fields {
                        Some(_) => {
                            let child = join(path, &name);
                            self.set.insert(canonical(child.clone()));
                            child
                        }
                        None => join(path, "NAME"),
                    };
                    if value.is_mapping() || value.is_sequence() {
                        steps.push(Step::Key(key));
                        self.walk(root, steps, &child);
                        steps.pop();
                    }
                }
            }
            Value::Sequence(items) => {
                for i in 0..items.len() {
                    steps.push(Step::Index(i));
                    self.walk(root, steps, &format!("{path}[]"));
                    steps.pop();
                }
            }
            _ => {}
        }
    }
}

#[test]
fn every_configuration_field_is_documented_once() {
    let path = repo().join("docs/reference.yaml");
    let text = std::fs::read_to_string(&path).expect("docs/reference.yaml");
    if let Err(problems) = portcullis::config::parse(&text) {
        panic!("docs/reference.yaml does not parse: {problems:?}");
    }
    let root: Value = serde_yaml::from_str(&text).expect("YAML");
    let mut fields = Fields::default();
    fields.walk(&root, &mut Vec::new(), "");
    assert!(
        fields.code.len() > 100,
        "too few fields found: {:?}",
        fields.code
    );

    let unset: Vec<_> = fields.code.difference(&fields.set).collect();
    assert!(
        unset.is_empty(),
        "docs/reference.yaml must set every field; it lacks {unset:?}"
    );
    assert_documented_once("field", &fields.code);
}

#[test]
fn every_metric_is_documented_once() {
    let metrics = Metrics::new();
    let names: BTreeSet<String> = metrics.names().iter().map(|n| n.to_string()).collect();
    assert!(names.contains("portcullis_requests_total"), "{names:?}");
    assert_documented_once("metric", &names);
}

#[test]
fn every_error_code_is_documented_once() {
    let codes: BTreeSet<String> = ErrorCode::all().map(|c| c.as_str().to_string()).collect();
    assert!(codes.contains("ROUTE_NOT_FOUND"), "{codes:?}");
    assert_documented_once("code", &codes);
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// `path` without `.` and `..` components, or `None` when it climbs above its start.
fn normalized(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

#[test]
fn links_stay_in_the_repository_and_resolve() {
    let mut wrong = Vec::new();
    for (page, text) in pages() {
        let relative_page = page
            .strip_prefix(repo())
            .expect("in the repo")
            .to_path_buf();
        for link in text.split("](").skip(1).filter_map(|s| s.split(')').next()) {
            if link.starts_with("https://") || link.starts_with("http://") {
                continue;
            }
            let (file, fragment) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() {
                Some(relative_page.clone())
            } else {
                normalized(&relative_page.parent().unwrap_or(Path::new("")).join(file))
            };
            let Some(target) = target else {
                wrong.push(format!("{}: {link} leaves the repository", page.display()));
                continue;
            };
            if !repo().join(&target).exists() {
                wrong.push(format!("{}: {link}: no such file", page.display()));
                continue;
            }
            if fragment.is_empty() {
                continue;
            }
            let content = std::fs::read_to_string(repo().join(&target)).unwrap_or_default();
            let headings: BTreeSet<String> = content
                .lines()
                .filter_map(|line| line.strip_prefix('#'))
                .map(|heading| anchor(heading.trim_start_matches('#')))
                .collect();
            if !headings.contains(fragment) {
                wrong.push(format!("{}: {link}: no such heading", page.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
