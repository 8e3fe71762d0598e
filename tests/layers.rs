//! The core crate's layers (issue #12): every module under `src/` imports only its own
//! layer or the ones below, and no module imports itself back through others.
//!
//! | layer | directory | what it holds |
//! |---|---|---|
//! | 0 | `config/` | the structs users write |
//! | 1 | `telemetry/` | metrics and the access log |
//! | 2 | `model/` | the compiled model: gateway, router, pools, caches, policies |
//! | 3 | `runtime/` | the state swap and the services around it |
//! | 4 | `proxy/` | the `ProxyHttp` phases |
//! | 5 | `server.rs`, `upgrade.rs`, `fleet.rs`, `main.rs` | the process and its command line |
//!
//! The check reads the source as text: every `crate::` path (in `use` trees and in code),
//! every `super::` path and every path through a child module is resolved to the file
//! that defines its module. A module may always use what its ancestors define (a child
//! is part of its parent); any other import is an edge, and the edges must go downward
//! and form no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of a top-level module, by its name.
fn layer(top: &str) -> Option<(u8, &'static str)> {
    Some(match top {
        "config" => (0, "config"),
        "telemetry" => (1, "telemetry"),
        "model" => (2, "model"),
        "runtime" => (3, "runtime"),
        "proxy" => (4, "proxy"),
        "server" | "upgrade" | "fleet" | "main" => (5, "server"),
        _ => return None,
    })
}

/// Source files by module path: (the file's path for reports, its text).
type Files = BTreeMap<Vec<String>, (String, String)>;

/// One import: `from` (a module) uses something of `to` (the module defining it).
#[derive(Debug, Clone)]
struct Edge {
    from: Vec<String>,
    to: Vec<String>,
    /// The path as written, for the report.
    written: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Semi,
    Comma,
    Star,
    Other,
}

/// The tokens of Rust source that matter for paths; comments and literals are dropped.
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && (at(i + 1) == '"' || (at(i + 1) == '#' && !is_ident(at(i + 2))))
            || (c == 'b' && at(i + 1) == 'r' && matches!(at(i + 2), '"' | '#'))
        {
            // A raw string: r"..." or r#"..."#.
            i += if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while at(i) == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push(Token::Other);
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(Token::Other);
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if at(i + 1) == '\\' {
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
                while is_ident(at(i)) {
                    i += 1;
                }
            }
            out.push(Token::Other);
        } else if is_ident(c) && !c.is_ascii_digit() {
            let start = i;
            while is_ident(at(i)) {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            out.push(match c {
                ':' if at(i + 1) == ':' => {
                    i += 1;
                    Token::PathSep
                }
                '{' => Token::Open,
                '}' => Token::Close,
                ';' => Token::Semi,
                ',' => Token::Comma,
                '*' => Token::Star,
                _ => Token::Other,
            });
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths a file names, each with the inline module (`mod tests { .. }`) it is
/// written in: `use` trees expanded, and `a::b::c` paths in code.
fn paths(tokens: &[Token]) -> Vec<(Vec<String>, Vec<String>)> {
    let mut found = Vec::new();
    // Inline modules open at a brace depth.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Open)) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    inline.push((name.clone(), depth));
                }
            }
            Token::Ident(word) if word == "use" => {
                let scope: Vec<String> = inline.iter().map(|(name, _)| name.clone()).collect();
                let mut j = i + 1;
                let mut trees = Vec::new();
                use_tree(tokens, &mut j, Vec::new(), &mut trees);
                found.extend(trees.into_iter().map(|path| (scope.clone(), path)));
                i = j;
                continue;
            }
            Token::Ident(first) if tokens.get(i + 1) == Some(&Token::PathSep) => {
                let preceded = i > 0 && tokens[i - 1] == Token::PathSep;
                if !preceded {
                    let mut path = vec![first.clone()];
                    let mut j = i + 1;
                    while tokens.get(j) == Some(&Token::PathSep) {
                        match tokens.get(j + 1) {
                            Some(Token::Ident(next)) => path.push(next.clone()),
                            _ => break,
                        }
                        j += 2;
                    }
                    let scope = inline.iter().map(|(name, _)| name.clone()).collect();
                    found.push((scope, path));
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Expands one `use` tree starting at `tokens[*i]` into full paths (a glob or a group's
/// `self` stands for its prefix).
fn use_tree(tokens: &[Token], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        match tokens.get(*i) {
            Some(Token::Ident(word)) if word == "self" && !path.is_empty() => *i += 1,
            Some(Token::Ident(word)) if word == "as" => {
                *i += 2;
            }
            Some(Token::Ident(word)) => {
                path.push(word.clone());
                *i += 1;
            }
            Some(Token::PathSep) => *i += 1,
            Some(Token::Star) => *i += 1,
            Some(Token::Open) => {
                *i += 1;
                loop {
                    use_tree(tokens, i, path.clone(), out);
                    match tokens.get(*i) {
                        Some(Token::Comma) => *i += 1,
                        _ => break,
                    }
                    if tokens.get(*i) == Some(&Token::Close) {
                        break;
                    }
                }
                *i += 1; // the closing brace
                return;
            }
            _ => break,
        }
    }
    if tokens.get(*i) == Some(&Token::Semi) {
        *i += 1;
    }
    out.push(path);
}

/// The module path of a source file (`src/model/upstream/mod.rs` → `model::upstream`);
/// the crate root is empty, `main.rs` is `main`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|last| last == "mod" || last == "lib")
    {
        parts.pop();
    }
    parts
}

/// Every import between modules of `files` (module path → source).
fn edges(files: &Files) -> Vec<Edge> {
    let known: BTreeSet<&Vec<String>> = files.keys().collect();
    // The longest prefix of `path` that is a module with a file.
    let defining = |path: &[String]| -> Vec<String> {
        (0..=path.len())
            .rev()
            .map(|len| path[..len].to_vec())
            .find(|prefix| known.contains(prefix))
            .unwrap_or_default()
    };
    let mut edges = Vec::new();
    for (module, (_, source)) in files {
        let crate_name = if module == &["main"] {
            "portcullis"
        } else {
            "crate"
        };
        for (scope, path) in paths(&tokens(source)) {
            // The module the path is written in: the file's, plus inline modules.
            let here: Vec<String> = module.iter().chain(&scope).cloned().collect();
            let Some(first) = path.first() else { continue };
            let absolute: Vec<String> = if first == crate_name {
                path[1..].to_vec()
            } else if first == "super" || first == "self" {
                let mut base = here.clone();
                let mut rest = &path[..];
                while let Some(step) = rest.first() {
                    match step.as_str() {
                        "super" => {
                            base.pop();
                        }
                        "self" => {}
                        _ => break,
                    }
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                base
            } else {
                let child: Vec<String> = here.iter().chain([first]).cloned().collect();
                if !known.contains(&child) {
                    continue; // std, an external crate, a type or a variant
                }
                here.iter().chain(&path).cloned().collect()
            };
            let to = defining(&absolute);
            // A module may use what its ancestors define (itself included).
            if module.starts_with(&to) {
                continue;
            }
            edges.push(Edge {
                from: module.clone(),
                to,
                written: path.join("::"),
            });
        }
    }
    edges
}

/// What is wrong with the layering of `files`, one line per offending import.
fn violations(files: &Files) -> Vec<String> {
    let file = |module: &Vec<String>| files.get(module).map_or("?", |(path, _)| path.as_str());
    let mut problems = Vec::new();
    let edges = edges(files);
    for module in files.keys().filter(|m| !m.is_empty()) {
        if layer(&module[0]).is_none() {
            problems.push(format!(
                "{}: not in any layer (add its top-level module to `layer` in tests/layers.rs)",
                file(module)
            ));
        }
    }
    for edge in &edges {
        let (Some(from), Some(to)) = (
            edge.from.first().and_then(|top| layer(top)),
            edge.to.first().and_then(|top| layer(top)),
        ) else {
            continue;
        };
        if to.0 > from.0 {
            problems.push(format!(
                "{} (layer {} {}) imports {} (layer {} {})",
                file(&edge.from),
                from.0,
                from.1,
                edge.written,
                to.0,
                to.1
            ));
        }
    }
    for cycle in cycles(&edges) {
        let steps: Vec<String> = cycle
            .iter()
            .map(|edge| format!("{} imports {}", file(&edge.from), edge.written))
            .collect();
        problems.push(format!("import cycle: {}", steps.join(" → ")));
    }
    problems
}

/// The cycles of the import graph: one per strongly connected component of two or
/// more modules, as the chain of imports that closes it.
fn cycles(edges: &[Edge]) -> Vec<Vec<Edge>> {
    let mut next: BTreeMap<&Vec<String>, Vec<&Edge>> = BTreeMap::new();
    for edge in edges {
        next.entry(&edge.from).or_default().push(edge);
    }
    let reaches = |from: &Vec<String>, to: &Vec<String>| -> Option<Vec<Edge>> {
        // Breadth-first, so the reported chain is a shortest one.
        let mut seen = BTreeSet::from([from.clone()]);
        let mut queue = std::collections::VecDeque::from([(from.clone(), Vec::<Edge>::new())]);
        while let Some((at, chain)) = queue.pop_front() {
            for edge in next.get(&at).into_iter().flatten() {
                let mut chain = chain.clone();
                chain.push((*edge).clone());
                if &edge.to == to {
                    return Some(chain);
                }
                if seen.insert(edge.to.clone()) {
                    queue.push_back((edge.to.clone(), chain));
                }
            }
        }
        None
    };
    // One cycle per module not yet in a reported one, so a knot is not listed N times.
    let mut covered: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut found = Vec::new();
    for module in next.keys() {
        if covered.contains(*module) {
            continue;
        }
        if let Some(cycle) = reaches(module, module) {
            covered.extend(cycle.iter().map(|edge| edge.from.clone()));
            found.push(cycle);
        }
    }
    found
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

fn src_tree() -> Files {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let relative = path.strip_prefix(&src).expect("under src").to_path_buf();
            let shown = format!("src/{}", relative.display());
            (module_of(&relative), (shown, text))
        })
        .collect()
}

#[test]
fn modules_import_only_their_layer_and_the_ones_below_and_form_no_cycle() {
    let files = src_tree();
    let problems = violations(&files);
    assert!(
        problems.is_empty(),
        "layering problems (see tests/layers.rs):\n{}",
        problems.join("\n")
    );
    // The check must see the imports it judges: a reader that found none would pass.
    let edges = edges(&files);
    let crosses = |from: &str, to: &str| {
        edges
            .iter()
            .any(|edge| edge.from.first().is_some_and(|f| f == from) && edge.to[0] == to)
    };
    for (from, to) in [
        ("proxy", "model"),
        ("proxy", "runtime"),
        ("model", "config"),
        ("runtime", "model"),
        ("server", "runtime"),
        ("main", "server"),
    ] {
        assert!(crosses(from, to), "no import from {from} to {to} was found");
    }
}

fn tree(files: &[(&str, &str)]) -> Files {
    files
        .iter()
        .map(|(path, text)| {
            let shown = format!("src/{path}");
            (module_of(Path::new(path)), (shown, text.to_string()))
        })
        .collect()
}

#[test]
fn an_import_of_an_upper_layer_is_reported_with_its_file_and_path() {
    let problems = violations(&tree(&[
        ("lib.rs", "pub mod config; pub mod model; pub mod runtime;"),
        ("config/mod.rs", "pub struct Config;"),
        ("runtime/mod.rs", "pub mod state;"),
        ("runtime/state.rs", "pub struct State;"),
        ("model/mod.rs", "pub mod gateway;"),
        (
            "model/gateway.rs",
            "use crate::config::Config;\nuse crate::{runtime::state::State};",
        ),
    ]));
    assert_eq!(
        problems,
        ["src/model/gateway.rs (layer 2 model) imports crate::runtime::state::State (layer 3 runtime)"]
    );
}

#[test]
fn a_cycle_through_siblings_is_reported_and_ancestors_comments_and_strings_are_not() {
    let problems = violations(&tree(&[
        ("lib.rs", "pub mod model; pub mod proxy; pub mod runtime;"),
        ("proxy/mod.rs", "pub struct X;"),
        ("runtime/mod.rs", "pub struct State;"),
        ("model/mod.rs", "pub mod a; pub mod b; pub mod c; pub use a::A;"),
        ("model/a.rs", "use super::b::B; pub struct A;"),
        (
            "model/b.rs",
            "pub struct B(crate::model::c::C);\n/// [`crate::runtime::State`]\nconst S: &str = \"crate::proxy::X\";",
        ),
        (
            "model/c.rs",
            "pub struct C;\nfn f() -> super::a::A { todo!() }\nfn g() -> super::A { todo!() }\n\
             #[cfg(test)]\nmod tests { use super::*; const Q: char = '\\''; }",
        ),
    ]));
    assert_eq!(
        problems,
        [
            "import cycle: src/model/a.rs imports super::b::B → src/model/b.rs imports \
          crate::model::c::C → src/model/c.rs imports super::a::A"
        ]
    );
}
