//! Config text for test gateways: the sections every gateway shares, and the shape most
//! tests need, one upstream with one route to it.

use std::path::Path;

use super::upstream::Upstream;

/// The sections every test gateway shares: one listener, the admin endpoint and a JSON
/// access log, all inside the test's own directory. [`super::Gateway::start`] puts it
/// before the test's own sections.
pub const BASE_CONFIG: &str = r#"server:
  threads: 2
  pid_file: "{dir}/portcullis.pid"
  upgrade_sock: "{dir}/upgrade.sock"
listeners:
  - address: "127.0.0.1:{listen}"
admin:
  address: "127.0.0.1:{admin}"
access_log:
  target: "{access_log}"
  format: json
"#;

/// A `respond` route answering `/ping` with `pong`, as an item of `routes:`.
pub const PING_ROUTE: &str = r#"  - name: ping
    match: { path: /ping }
    respond: { status: 200, body: pong }
"#;

/// Replaces the placeholders `{dir}`, `{listen}`, `{admin}` and `{access_log}` in a
/// configuration template.
pub fn render_config(template: &str, dir: &Path, listen: u16, admin: u16) -> String {
    let dir = dir.display().to_string();
    template
        .replace("{access_log}", &format!("{dir}/access.log"))
        .replace("{dir}", &dir)
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &admin.to_string())
}

/// `config` with `lines` (indented as they belong) added at the end of its top-level
/// `section`: `extend_section(BASE_CONFIG, "admin", "  token: secret")`.
pub fn extend_section(config: &str, section: &str, lines: &str) -> String {
    let mut all: Vec<&str> = config.lines().collect();
    let header = format!("{section}:");
    let start = all
        .iter()
        .position(|line| *line == header)
        .unwrap_or_else(|| panic!("no top-level {section:?} in:\n{config}"));
    let end = all[start + 1..]
        .iter()
        .position(|line| !line.starts_with(' '))
        .map_or(all.len(), |i| start + 1 + i);
    all.splice(end..end, lines.lines());
    all.join("\n") + "\n"
}

/// The sections of the most common test config: upstream `app` over some targets and one
/// route to it, by default `all` matching every path. Each method adds YAML written as if
/// it stood alone; [`OneRoute::yaml`] indents it into place.
///
/// ```ignore
/// let gateway = Gateway::start(
///     &OneRoute::to(&[&app]).named("edge").route("cache: { enabled: true }").yaml(),
/// );
/// ```
pub struct OneRoute {
    targets: Vec<(String, Option<u32>)>,
    upstream: String,
    sections: String,
    name: String,
    matching: String,
    route: String,
    routes_before: String,
    routes_after: String,
}

impl OneRoute {
    /// Upstream `app` over these servers, with equal weights.
    pub fn to(targets: &[&Upstream]) -> OneRoute {
        let addresses: Vec<String> = targets.iter().map(|target| target.addr()).collect();
        OneRoute::to_addresses(&addresses)
    }

    /// Upstream `app` over these addresses (where nothing need listen).
    pub fn to_addresses(addresses: &[String]) -> OneRoute {
        OneRoute {
            targets: addresses.iter().map(|a| (a.clone(), None)).collect(),
            upstream: String::new(),
            sections: String::new(),
            name: "all".into(),
            matching: "{ path_prefix: / }".into(),
            route: String::new(),
            routes_before: String::new(),
            routes_after: String::new(),
        }
    }

    /// The targets' weights, in order.
    pub fn weights(mut self, weights: &[u32]) -> OneRoute {
        assert_eq!(weights.len(), self.targets.len(), "one weight per target");
        for ((_, weight), &given) in self.targets.iter_mut().zip(weights) {
            *weight = Some(given);
        }
        self
    }

    /// More fields of `upstreams.app`, e.g. `retries: { attempts: 1 }`.
    pub fn upstream(mut self, yaml: &str) -> OneRoute {
        self.upstream += &indented(yaml, 4);
        self
    }

    /// A top-level section, e.g. `plugins:` or `consumers:`.
    pub fn section(mut self, yaml: &str) -> OneRoute {
        self.sections += &indented(yaml, 0);
        self
    }

    /// The route's name.
    pub fn named(mut self, name: &str) -> OneRoute {
        self.name = name.into();
        self
    }

    /// The route's `match`, a flow mapping such as `{ path_prefix: /api }`.
    pub fn matching(mut self, condition: &str) -> OneRoute {
        self.matching = condition.into();
        self
    }

    /// More fields of the route, e.g. `cache: { enabled: true }`.
    pub fn route(mut self, yaml: &str) -> OneRoute {
        self.route += &indented(yaml, 4);
        self
    }

    /// Other routes (items of `routes:`, like [`PING_ROUTE`]) listed before this one.
    pub fn routes_before(mut self, items: &str) -> OneRoute {
        self.routes_before += &indented(items, 0);
        self
    }

    /// Other routes (items of `routes:`, like [`PING_ROUTE`]) listed after this one.
    pub fn routes_after(mut self, items: &str) -> OneRoute {
        self.routes_after += &indented(items, 0);
        self
    }

    /// The sections, to follow [`BASE_CONFIG`].
    pub fn yaml(&self) -> String {
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|(address, weight)| match weight {
                Some(weight) => format!("{{ address: \"{address}\", weight: {weight} }}"),
                None => format!("{{ address: \"{address}\" }}"),
            })
            .collect();
        format!(
            "\nupstreams:\n  app:\n    targets: [{}]\n{}{}routes:\n{}  - name: {}\n    match: {}\n    upstream: app\n{}{}",
            targets.join(", "),
            self.upstream,
            self.sections,
            self.routes_before,
            self.name,
            self.matching,
            self.route,
            self.routes_after,
        )
    }
}

/// Every line of `yaml` moved right by `by` spaces, each ending in a newline.
fn indented(yaml: &str, by: usize) -> String {
    yaml.lines()
        .map(|line| format!("{:by$}{line}\n", ""))
        .collect()
}
