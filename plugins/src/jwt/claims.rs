//! Reading verified claims: granted scopes, the subject, and header values for
//! `claims_to_headers`.

use http::HeaderValue;
use serde_json::{Map, Value};

/// The scopes a token grants: `scope` (space separated, RFC 8693) and `scp` (an array,
/// or a space-separated string, as some issuers send it).
pub fn scopes(claims: &Map<String, Value>) -> impl Iterator<Item = &str> + Clone {
    fn spaced(value: Option<&Value>) -> impl Iterator<Item = &str> + Clone {
        value
            .and_then(Value::as_str)
            .into_iter()
            .flat_map(str::split_ascii_whitespace)
    }
    let listed = claims
        .get("scp")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    spaced(claims.get("scope"))
        .chain(spaced(claims.get("scp")))
        .chain(listed)
}

/// The `sub` claim, when it is a string.
pub fn subject(claims: &Map<String, Value>) -> Option<&str> {
    claims.get("sub").and_then(Value::as_str)
}

/// A claim as a header value: strings as they are, numbers and booleans as text, arrays
/// and objects as compact JSON. `None` for null or for text a header cannot carry.
pub fn header_value(claim: &Value) -> Option<HeaderValue> {
    match claim {
        Value::Null => None,
        Value::String(text) => HeaderValue::from_str(text).ok(),
        other => HeaderValue::from_str(&other.to_string()).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object")
    }

    #[test]
    fn scopes_come_from_scope_or_scp() {
        let spaced = map(json!({"scope": "orders:read  orders:write"}));
        assert_eq!(
            scopes(&spaced).collect::<Vec<_>>(),
            ["orders:read", "orders:write"]
        );
        let listed = map(json!({"scp": ["a", "b", 3]}));
        assert_eq!(scopes(&listed).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(scopes(&map(json!({}))).count(), 0);
    }

    #[test]
    fn claims_become_header_values_when_they_can() {
        assert_eq!(header_value(&json!("t-1")).expect("text"), "t-1");
        assert_eq!(header_value(&json!(42)).expect("number"), "42");
        assert_eq!(
            header_value(&json!(["a", "b"])).expect("array"),
            "[\"a\",\"b\"]"
        );
        assert!(header_value(&json!("line\nbreak")).is_none());
        assert!(header_value(&Value::Null).is_none());
    }
}
