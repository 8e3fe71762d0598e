//! The operator files in `conf/`: the Grafana dashboard and the Prometheus alert rules
//! name only metrics a real gateway exports, their PromQL parses, and the alert rules
//! pass their unit tests (`promtool test rules`).

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output};

use common::{
    eventually, extend_section, free_port, make_cert, sample_names, Gateway, TestDir, Upstream,
    BASE_CONFIG, EVENTUALLY,
};
use serde_json::Value;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/grafana/portcullis.json");
const RULES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/prometheus");
const RULES: &str = "portcullis-rules.yml";
const RULE_TESTS: &str = "portcullis-rules.test.yml";

/// A query and where it was found, for the failure message.
struct Query {
    place: String,
    expr: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn rules_path(file: &str) -> String {
    format!("{RULES_DIR}/{file}")
}

/// Every PromQL expression of the dashboard: panel targets (rows' panels included) and
/// annotations, by panel title.
fn dashboard_queries() -> Vec<Query> {
    let dashboard: Value =
        serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is valid JSON");
    let mut queries = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(Query {
                place: format!("panel {:?}", panel["title"].as_str().unwrap_or("?")),
                expr: target["expr"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            queries.push(Query {
                place: format!(
                    "annotation {:?}",
                    annotation["name"].as_str().unwrap_or("?")
                ),
                expr: expr.to_string(),
            });
        }
    }
    queries
}

/// The selectors of the dashboard's query variables: `label_values(SELECTOR, label)`.
fn dashboard_variable_selectors() -> Vec<Query> {
    let dashboard: Value =
        serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is valid JSON");
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|variable| variable["type"] == "query")
        .map(|variable| {
            let query = variable["query"]["query"]
                .as_str()
                .or(variable["query"].as_str())
                .unwrap_or_default();
            let selector = query
                .strip_prefix("label_values(")
                .and_then(|arguments| arguments.rsplit_once(','))
                .map_or("", |(selector, _label)| selector);
            Query {
                place: format!("variable {:?}", variable["name"].as_str().unwrap_or("?")),
                expr: selector.to_string(),
            }
        })
        .collect()
}

fn yaml(file: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(&rules_path(file))).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The expression of every rule, by alert (or record) name.
fn rule_queries() -> Vec<Query> {
    let rules = yaml(RULES);
    let groups = rules["groups"].as_sequence().cloned().unwrap_or_default();
    groups
        .iter()
        .flat_map(|group| group["rules"].as_sequence().cloned().unwrap_or_default())
        .map(|rule| Query {
            place: format!(
                "rule {}",
                rule["alert"]
                    .as_str()
                    .or(rule["record"].as_str())
                    .unwrap_or("?")
            ),
            expr: rule["expr"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// The input series of the rule unit tests: they must look like what a gateway exports.
fn rule_test_series() -> Vec<Query> {
    let tests = yaml(RULE_TESTS);
    let cases = tests["tests"].as_sequence().cloned().unwrap_or_default();
    cases
        .iter()
        .flat_map(|case| {
            case["input_series"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .map(|input| Query {
            place: "input series".into(),
            expr: input["series"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// PromQL words that are not metric names.
const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// Keywords followed by a parenthesised list of label names.
const GROUPINGS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Aggregation operators, which may put `by (...)` between their name and `(`.
const AGGREGATIONS: [&str; 12] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The metric names a PromQL expression selects: every identifier that is not a
/// function, an aggregation, a keyword, a grouping's label list, inside a label matcher
/// or a string, a number, a duration or a Grafana variable. A `__name__` matcher is
/// reported as the name `__name__`, since what it selects cannot be checked.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let past = |from: usize, close: char| {
        chars[from + 1..]
            .iter()
            .position(|&c| c == close)
            .map_or(chars.len(), |at| from + 1 + at + 1)
    };
    let word_end = |from: usize| {
        chars[from..]
            .iter()
            .position(|&c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(chars.len(), |at| from + at)
    };
    let mut names = BTreeSet::new();
    if expr.contains("__name__") {
        names.insert("__name__".to_string());
    }
    let mut i = 0;
    while i < chars.len() {
        i = match chars[i] {
            quote @ ('"' | '\'' | '`') => {
                let mut end = i + 1;
                while end < chars.len() && chars[end] != quote {
                    end += if chars[end] == '\\' { 2 } else { 1 };
                }
                end + 1
            }
            '{' => past(i, '}'),
            '[' => past(i, ']'),
            '#' => past(i, '\n'),
            '$' if chars.get(i + 1) == Some(&'{') => past(i + 1, '}'),
            '$' => word_end(i + 1),
            c if c.is_ascii_digit() || c == '.' => chars[i..]
                .iter()
                .position(|&c| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                .map_or(chars.len(), |at| i + at),
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let end = word_end(i);
                let word: String = chars[i..end].iter().collect();
                let next = chars[end..].iter().position(|c| !c.is_whitespace());
                let next_at = next.map_or(chars.len(), |at| end + at);
                let lower = word.to_ascii_lowercase();
                if GROUPINGS.contains(&lower.as_str()) && chars.get(next_at) == Some(&'(') {
                    past(next_at, ')')
                } else {
                    let is_call = chars.get(next_at) == Some(&'(');
                    let is_word = KEYWORDS.contains(&lower.as_str())
                        || AGGREGATIONS.contains(&lower.as_str())
                        || GROUPINGS.contains(&lower.as_str());
                    if !is_call && !is_word {
                        names.insert(word);
                    }
                    end
                }
            }
            _ => i + 1,
        };
    }
    names
}

/// Runs `promtool` in `conf/prometheus`; a missing promtool fails the test.
fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(RULES_DIR)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): apt-get install prometheus (scripts/setup-debian.sh)"
            )
        })
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A gateway that has used every feature with metrics of its own: a TLS listener, a
/// cached route, a key_auth route refusing a request, a rate limit refusing one and a
/// Redis backend failing open, a pool with health checks whose failing target was
/// retried and ejected, and a reload that passed and one that was refused.
fn gateway_using_every_feature() -> (Gateway, Upstream, Upstream, TestDir) {
    let certs = TestDir::new();
    make_cert(certs.path(), "edge", "edge.test");
    let (good, bad) = (Upstream::start("good"), Upstream::start("bad"));
    bad.set_status(503);
    let tls_listener = format!(
        "  - address: \"127.0.0.1:{}\"\n    tls:\n      certificates:\n        - {{ cert: \"{1}/edge.pem\", key: \"{1}/edge.key\" }}",
        free_port(),
        certs.path().display()
    );
    let config = extend_section(BASE_CONFIG, "listeners", &tls_listener)
        + &format!(
            r#"
redis: {{ url: "redis://127.0.0.1:{redis}", timeout: 100ms, on_error: allow }}
consumers:
  - id: acme
    api_keys: ["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
upstreams:
  app:
    targets: [{{ address: "{good}" }}, {{ address: "{bad}" }}]
    retries: {{ attempts: 2, on: [503] }}
    health_check: {{ type: http, path: /healthz, interval: 200ms, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
    outlier_detection: {{ consecutive_5xx: 2, base_ejection_time: 30s, max_ejection_percent: 50 }}
routes:
  - name: cached
    match: {{ path_prefix: /cached }}
    upstream: app
    cache: {{ enabled: true, default_ttl: 60s }}
  - name: auth
    match: {{ path_prefix: /auth }}
    upstream: app
    plugins: {{ key_auth: {{ header: X-Api-Key }} }}
  - name: limited
    match: {{ path_prefix: /limited }}
    upstream: app
    plugins:
      rate_limit:
        - {{ name: local, key: global, algorithm: sliding_window, limit: 1, window: 1m }}
        - {{ name: shared, key: global, algorithm: sliding_window, limit: 100, window: 1m, backend: redis }}
  - name: api
    match: {{ path_prefix: / }}
    upstream: app
"#,
            redis = free_port(),
            good = good.addr(),
            bad = bad.addr(),
        );
    let gateway = Gateway::start_raw(&config);

    eventually!(
        {
            gateway.get("/api");
            bad.requests() >= 2
        },
        "the failing target got no traffic"
    );
    assert_eq!(gateway.get("/cached").status, 200);
    assert_eq!(gateway.get("/cached").status, 200);
    assert_eq!(gateway.get("/auth").status, 401);
    assert_eq!(gateway.get("/limited").status, 200);
    assert_eq!(gateway.get("/limited").status, 429);
    gateway.reload();
    gateway.rewrite_config_raw(&format!("{config}\nnot_a_section: true\n"));
    assert_eq!(gateway.admin_post("/reload", &[], "").status, 400);
    (gateway, good, bad, certs)
}

#[test]
fn dashboard_and_alert_rules_name_only_metrics_the_gateway_exports() {
    let sources = [
        ("conf/grafana/portcullis.json", dashboard_queries()),
        (
            "conf/grafana/portcullis.json",
            dashboard_variable_selectors(),
        ),
        ("conf/prometheus/portcullis-rules.yml", rule_queries()),
        (
            "conf/prometheus/portcullis-rules.test.yml",
            rule_test_series(),
        ),
    ];
    for (file, queries) in &sources {
        assert!(
            !queries.is_empty() && queries.iter().all(|q| !metric_names(&q.expr).is_empty()),
            "{file}: a query selects no metric (or none was found)"
        );
    }
    let (gateway, _good, _bad, _certs) = gateway_using_every_feature();

    // Counters appear when a request finishes, which may be just after its answer.
    let unknown = || -> (Vec<String>, BTreeSet<String>) {
        let exported = sample_names(&gateway.metrics());
        let unknown = sources
            .iter()
            .flat_map(|(file, queries)| queries.iter().map(move |query| (file, query)))
            .flat_map(|(file, query)| {
                metric_names(&query.expr)
                    .into_iter()
                    .filter(|name| !exported.contains(name))
                    .map(move |name| format!("{file}: {}: {name}", query.place))
            })
            .collect();
        (unknown, exported)
    };
    eventually!(let found = unknown();
        found.0.is_empty(),
        "names no gateway exports (within {EVENTUALLY:?}):\n{}\n--- exported ---\n{:?}",
        found.0.join("\n"),
        found.1
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    assert_success(
        &promtool(&["check", "rules", RULES]),
        "promtool check rules",
    );
    assert_success(
        &promtool(&["test", "rules", RULE_TESTS]),
        "promtool test rules",
    );
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // Grafana's variables replaced as Grafana would: intervals by a duration, the
    // multi-value selectors by a regex matching everything.
    let rules: Vec<String> = dashboard_queries()
        .iter()
        .enumerate()
        .map(|(i, query)| {
            let expr = query
                .expr
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
                .replace("$route", ".*")
                .replace("$upstream", ".*");
            assert!(
                !expr.contains('$'),
                "{}: unknown variable in {expr}",
                query.place
            );
            let expr = serde_json::to_string(&expr).expect("a string is JSON");
            format!("      - record: dashboard:query_{i}\n        expr: {expr}\n")
        })
        .collect();
    let dir = TestDir::new();
    let file = dir.write(
        "dashboard-queries.yml",
        &format!(
            "groups:\n  - name: dashboard\n    rules:\n{}",
            rules.concat()
        ),
    );
    let file = file.to_str().expect("a UTF-8 temp path");
    assert_success(
        &promtool(&["check", "rules", file]),
        "promtool check rules on the dashboard's queries",
    );
}

#[test]
fn metric_names_skip_functions_labels_strings_and_durations() {
    let cases: [(&str, &[&str]); 7] = [
        (
            r#"sum by (route) (rate(portcullis_requests_total{status=~"5..", route="x_total"}[$__rate_interval]))"#,
            &["portcullis_requests_total"],
        ),
        (
            "histogram_quantile(0.99, sum without (target) (rate(a_bucket[5m] offset 1h)))",
            &["a_bucket"],
        ),
        (
            "time() - b > 14 * 86400 and c unless d or 1e3 > bool 2",
            &["b", "c", "d"],
        ),
        (
            r#"label_replace(x, "dst", "$1 \" y", "src", "(.*)") * on (a, b) group_left (c) info_metric"#,
            &["x", "info_metric"],
        ),
        ("max(${datasource_metric} + plain)", &["plain"]),
        (r#"{__name__=~"portcullis_.*"}"#, &["__name__"]),
        (
            "# a comment naming fake_metric\nreal_metric",
            &["real_metric"],
        ),
    ];
    for (expr, want) in cases {
        let want: BTreeSet<String> = want.iter().map(|name| name.to_string()).collect();
        assert_eq!(metric_names(expr), want, "{expr}");
    }
}

#[test]
fn metric_names_of_hostile_text_do_not_panic() {
    for expr in [
        "",
        "{",
        "[",
        "\"unterminated",
        "$",
        "${",
        "sum by (",
        "a{b=\"\\",
        "é_metric",
    ] {
        let _ = metric_names(expr);
    }
}
