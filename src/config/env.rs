//! `${ENV_NAME}` references in configuration strings, replaced by the variable's value.

use serde_yaml::Value;

use super::Problem;

/// Replaces every `${NAME}` in the string scalars of `value`; `path` is the dotted path of
/// `value` (kept so a missing variable is reported where it is used).
pub(super) fn expand(value: &mut Value, path: &mut String) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    walk(value, path, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn walk(value: &mut Value, path: &mut String, problems: &mut Vec<Problem>) {
    match value {
        Value::String(text) if text.contains("${") => match substitute(text) {
            Ok(expanded) => *text = expanded,
            Err(message) => problems.push(Problem::new(path.clone(), message)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, problems);
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key.as_str().unwrap_or("?"));
                walk(item, path, problems);
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, problems),
        _ => {}
    }
}

fn substitute(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{...}} in {text:?}"))?;
        let name = &after[..end];
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("invalid environment variable name {name:?}"));
        }
        let value =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_set_variables_and_reports_missing_ones() {
        std::env::set_var("PORTCULLIS_TEST_TOKEN", "s3cret");
        let mut value: Value =
            serde_yaml::from_str("admin: {token: 'Bearer ${PORTCULLIS_TEST_TOKEN}'}")
                .expect("yaml");
        expand(&mut value, &mut String::new()).expect("expands");
        assert_eq!(value["admin"]["token"].as_str(), Some("Bearer s3cret"));

        let mut value: Value =
            serde_yaml::from_str("admin: {token: '${PORTCULLIS_TEST_UNSET}'}").expect("yaml");
        let problems = expand(&mut value, &mut String::new()).expect_err("missing");
        assert_eq!(problems[0].path, "admin.token");
    }
}
