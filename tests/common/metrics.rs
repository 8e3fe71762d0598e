//! Reading Prometheus text without depending on label order.

use std::collections::{BTreeMap, BTreeSet};

/// The sum of the samples of metric `name` whose labels include all of `labels`, or
/// `None` when no sample matches. Label order in the text does not matter.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter_map(parse_sample)
        .filter(|(sample_name, sample_labels, _)| {
            sample_name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample_labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|(_, _, value)| value)
        .reduce(|sum, value| sum + value)
}

/// Parses one sample line: `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inside) = rest.strip_prefix('{') {
        loop {
            inside = inside.trim_start_matches([',', ' ']);
            if let Some(after) = inside.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after_key) = inside.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after_key.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.trim().to_string(), value);
            inside = &after_key[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// The names of every sample in `text` (a histogram shows as its `_bucket`, `_sum` and
/// `_count` samples).
pub fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(parse_sample)
        .map(|(name, _, _)| name)
        .collect()
}
