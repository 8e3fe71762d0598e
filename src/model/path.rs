//! Request path canonicalisation: the one spelling of a path that routing, the cache key,
//! the access log and the upstream all see, so gateway and upstream can never disagree
//! about which resource is asked for.
//!
//! The canonical form (RFC 3986 §6.2.2 normalisation, §5.2.4 dot-segment removal):
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, every
//!   other percent-encoding is kept with upper-case hex digits;
//! - characters a path may not hold raw (space, `"`, `<`, `>`, `^`, `{`, `|`, `}`, non-ASCII,
//!   ...) are percent-encoded;
//! - `.` and `..` segments are removed (also when spelled `%2e`, `.%2E`, ...); a `..` that
//!   would climb above the root is refused rather than dropped;
//! - repeated slashes are merged when `merge_slashes` is on (nginx's default).
//!
//! Refused outright (hard): a malformed `%XY`, an encoded NUL (`%00`), percent-encoded
//! bytes that are not valid UTF-8 (over-long forms such as `%c0%ae` included), a dot
//! segment carrying parameters (`..;x`, Tomcat reads it as `..`), a `..` above the root.
//!
//! Ambiguous (refused unless the route forwards raw paths): an encoded slash (`%2F`), a
//! backslash (raw or `%5C`), a `;` (matrix parameters, which Java servers strip before
//! routing), and a double-encoded dot, slash, backslash or NUL (`%252e`, ...), which an
//! upstream that decodes twice would read as a separator or a dot segment. In the
//! canonical form these stay data (`%2F`, `%5C`, `;`, `%25`), so they never split a segment.

use std::borrow::Cow;

/// A canonical path, with the reason the original is ambiguous, if it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical<'a> {
    /// The canonical path: borrowed when the path already was canonical (no allocation).
    pub path: Cow<'a, str>,
    /// Why the path is unsafe to forward to an upstream that decodes paths itself; `None`
    /// for an unambiguous path.
    pub ambiguity: Option<&'static str>,
}

/// The canonical form of `path` (the path of a request target, without its query), or the
/// reason it is refused.
pub fn canonicalize(path: &str, merge_slashes: bool) -> Result<Canonical<'_>, &'static str> {
    if !path.starts_with('/') {
        return Err("the path must start with '/'");
    }
    if is_canonical(path, merge_slashes) {
        return Ok(Canonical {
            path: Cow::Borrowed(path),
            ambiguity: None,
        });
    }
    rebuild(path, merge_slashes)
}

/// The canonical form built afresh, segment by segment.
fn rebuild(path: &str, merge_slashes: bool) -> Result<Canonical<'_>, &'static str> {
    let mut out = String::with_capacity(path.len() + 8);
    let mut ambiguity = None;
    let mut segments = path[1..].split('/').peekable();
    while let Some(raw) = segments.next() {
        let last = segments.peek().is_none();
        let mark = out.len();
        out.push('/');
        normalize_segment(raw, &mut out, &mut ambiguity)?;
        let segment = &out[mark + 1..];
        let name = segment.split(';').next().unwrap_or(segment);
        if (name == "." || name == "..") && name.len() != segment.len() {
            return Err("a dot segment carries parameters");
        }
        match segment {
            "" if merge_slashes && !last => out.truncate(mark),
            "." => {
                out.truncate(mark);
                if last {
                    out.push('/');
                }
            }
            ".." => {
                out.truncate(mark);
                let Some(parent) = out.rfind('/') else {
                    return Err("a '..' segment climbs above the root");
                };
                out.truncate(parent);
                if last {
                    out.push('/');
                }
            }
            _ => {}
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    let path = if out == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(out)
    };
    Ok(Canonical { path, ambiguity })
}

/// The quick test for the common case: a path of plain characters and upper-case
/// encodings of reserved ASCII characters, without dot segments (or repeated slashes when
/// merging), is its own canonical form.
fn is_canonical(path: &str, merge_slashes: bool) -> bool {
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment == "." || segment == ".." {
            return false;
        }
        if merge_slashes && segment.is_empty() && segments.peek().is_some() {
            return false;
        }
        let bytes = segment.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' => match encoded(bytes, i) {
                    Some(byte) if is_upper_hex(bytes, i) && keeps_encoding(byte) => i += 3,
                    _ => return false,
                },
                byte if is_plain(byte) => i += 1,
                _ => return false,
            }
        }
    }
    true
}

/// Appends `raw`, one segment, in canonical form to `out`.
fn normalize_segment(
    raw: &str,
    out: &mut String,
    ambiguity: &mut Option<&'static str>,
) -> Result<(), &'static str> {
    let bytes = raw.as_bytes();
    let mut utf8 = Utf8Check::default();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let decoded = encoded(bytes, i).ok_or("malformed percent-encoding")?;
            utf8.feed(decoded)?;
            match decoded {
                0 => return Err("an encoded NUL"),
                b'/' => note(ambiguity, "an encoded slash (%2F)"),
                b'\\' => note(ambiguity, "an encoded backslash (%5C)"),
                b'%' if double_encoded(bytes, i + 3) => {
                    note(ambiguity, "a double-encoded dot, slash, backslash or NUL")
                }
                _ => {}
            }
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                push_encoded(out, decoded);
            }
            i += 3;
            continue;
        }
        utf8.feed(byte)?;
        if is_plain(byte) {
            out.push(char::from(byte));
        } else {
            match byte {
                b';' => {
                    note(ambiguity, "a path parameter (;)");
                    out.push(';');
                }
                b'\\' => {
                    note(ambiguity, "a backslash");
                    push_encoded(out, byte);
                }
                _ => push_encoded(out, byte),
            }
        }
        i += 1;
    }
    utf8.finish()
}

fn note(ambiguity: &mut Option<&'static str>, reason: &'static str) {
    ambiguity.get_or_insert(reason);
}

/// The byte `%XY` at `i` encodes, if it is well formed.
fn encoded(bytes: &[u8], i: usize) -> Option<u8> {
    hex_pair(bytes.get(i + 1..)?)
}

fn is_upper_hex(bytes: &[u8], i: usize) -> bool {
    !bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase)
}

/// Whether the `%25` that ends before `i` is followed by the hex digits of a dot, slash,
/// backslash or NUL.
fn double_encoded(bytes: &[u8], i: usize) -> bool {
    matches!(
        bytes.get(i..).and_then(hex_pair),
        Some(b'.' | b'/' | b'\\' | 0)
    )
}

/// The byte the two hex digits at the start of `rest` spell.
fn hex_pair(rest: &[u8]) -> Option<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let high = hex(*rest.first()?)?;
    let low = hex(*rest.get(1)?)?;
    u8::try_from(high * 16 + low).ok()
}

/// A decoded byte that the canonical form keeps percent-encoded, and that needs no
/// further look (ASCII, not unreserved, not a separator, not NUL, not `%`).
fn keeps_encoding(byte: u8) -> bool {
    byte.is_ascii() && !is_unreserved(byte) && !matches!(byte, 0 | b'/' | b'\\' | b'%')
}

/// RFC 3986 unreserved characters.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Characters a canonical path holds as they are: unreserved, sub-delims but `;`, `:`, `@`.
fn is_plain(byte: u8) -> bool {
    is_unreserved(byte)
        || matches!(
            byte,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

fn push_encoded(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0xf)]));
}

/// Checks that the bytes a segment decodes to are UTF-8, one character at a time (raw
/// and percent-encoded bytes of one character may be mixed).
#[derive(Default)]
struct Utf8Check {
    pending: [u8; 4],
    have: usize,
    need: usize,
}

impl Utf8Check {
    fn feed(&mut self, byte: u8) -> Result<(), &'static str> {
        const INVALID: &str = "the path does not decode to UTF-8";
        if self.need == 0 {
            self.need = match byte {
                0x00..=0x7f => return Ok(()),
                0xc2..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf4 => 4,
                _ => return Err(INVALID),
            };
            self.have = 0;
        }
        self.pending[self.have] = byte;
        self.have += 1;
        if self.have == self.need {
            self.need = 0;
            std::str::from_utf8(&self.pending[..self.have]).map_err(|_| INVALID)?;
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), &'static str> {
        if self.need == 0 {
            Ok(())
        } else {
            Err("the path does not decode to UTF-8")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(path: &str) -> Result<String, &'static str> {
        canonicalize(path, true).map(|c| c.path.into_owned())
    }

    #[test]
    fn a_canonical_path_is_borrowed() {
        for path in [
            "/",
            "/api/v1/orders",
            "/a/b/",
            "/files/my%20doc",
            "/x:y@z/a+b=c",
        ] {
            let result = canonicalize(path, true).expect("valid");
            assert!(matches!(result.path, Cow::Borrowed(_)), "{path}");
            assert_eq!(result.ambiguity, None);
        }
    }

    #[test]
    fn dot_segments_are_removed_in_every_spelling() {
        for (path, expected) in [
            ("/public/../admin/x", "/admin/x"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/a/./b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/x/y/../../admin", "/admin"),
            ("/a/%2e/b", "/a/b"),
        ] {
            assert_eq!(canonical(path).as_deref(), Ok(expected), "{path}");
        }
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for path in [
            "/..",
            "/../admin",
            "/a/../../admin",
            "/%2e%2e/x",
            "/a/b/../../..",
        ] {
            assert!(canonical(path).is_err(), "{path}");
        }
    }

    #[test]
    fn unreserved_characters_are_decoded_and_others_normalised() {
        assert_eq!(canonical("/%41%7e%2d").as_deref(), Ok("/A~-"));
        assert_eq!(canonical("/a%3fb%3Bc").as_deref(), Ok("/a%3Fb%3Bc"));
        assert_eq!(canonical("/a b\"<>").as_deref(), Ok("/a%20b%22%3C%3E"));
        assert_eq!(canonical("/café").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(canonical("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
    }

    #[test]
    fn slashes_merge_only_when_asked() {
        assert_eq!(canonical("//a///b//").as_deref(), Ok("/a/b/"));
        let kept = canonicalize("//a//b", false).expect("valid");
        assert_eq!(kept.path, "//a//b");
        assert_eq!(canonicalize("/a//../b", false).expect("valid").path, "/a/b");
    }

    #[test]
    fn malformed_and_dangerous_encodings_are_refused() {
        for path in [
            "/a%zz",
            "/a%2",
            "/a%00b",
            "/%c0%ae%c0%ae/admin",
            "/a%e0%80%ae",
            "/a%c3",
            "/a/..;/admin",
            "/a/.;x/b",
        ] {
            assert!(canonical(path).is_err(), "{path}");
        }
    }

    #[test]
    fn separators_in_disguise_are_ambiguous_and_stay_data() {
        for (path, expected) in [
            ("/public%2F..%2Fadmin", "/public%2F..%2Fadmin"),
            ("/a\\..\\admin", "/a%5C..%5Cadmin"),
            ("/a%5c/b", "/a%5C/b"),
            ("/admin;jsessionid=1", "/admin;jsessionid=1"),
            ("/a/%252e%252e/admin", "/a/%252e%252e/admin"),
        ] {
            let result = canonicalize(path, true).expect("canonical");
            assert_eq!(result.path, expected, "{path}");
            assert!(result.ambiguity.is_some(), "{path}");
        }
    }

    #[test]
    fn a_relative_path_is_refused() {
        assert!(canonical("admin").is_err());
        assert!(canonical("*").is_err());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Pieces of path segments, hostile and plain.
        const PIECES: &[&str] = &[
            "a", "b", "admin", "public", ".", "..", "%2e", "%2E", ".%2e", "%2f", "%2F", "%5c",
            "\\", "%41", "%3b", ";", "%25", "%252e", "%c3%a9", "\u{e9}", "%c0%ae", "~", "%zz",
            "%00", " ", "+", ":", "@", "%3A", "%7e", "",
        ];

        fn path() -> impl Strategy<Value = String> {
            let segment = prop::collection::vec(prop::sample::select(PIECES), 0..3)
                .prop_map(|pieces| pieces.concat());
            prop::collection::vec(segment, 0..6)
                .prop_map(|segments| format!("/{}", segments.join("/")))
        }

        /// What an upstream that percent-decodes everything and then resolves dot segments
        /// (and merges slashes) takes a path to name.
        fn resolved(path: &str) -> Vec<Vec<u8>> {
            let bytes = path.as_bytes();
            let mut decoded = Vec::new();
            let mut i = 0;
            while i < bytes.len() {
                match (bytes[i], encoded(bytes, i)) {
                    (b'%', Some(byte)) => {
                        decoded.push(byte);
                        i += 3;
                    }
                    (byte, _) => {
                        decoded.push(byte);
                        i += 1;
                    }
                }
            }
            let mut stack: Vec<Vec<u8>> = Vec::new();
            for segment in decoded.split(|&b| b == b'/') {
                match segment {
                    b"" | b"." => {}
                    b".." => {
                        stack.pop();
                    }
                    other => stack.push(other.to_vec()),
                }
            }
            stack
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn canonical_paths_are_stable_rooted_and_free_of_dots(raw in path()) {
                if let Ok(first) = canonicalize(&raw, true) {
                    let path = first.path.as_ref();
                    prop_assert!(path.starts_with('/'));
                    prop_assert!(!path.contains("//"), "{path}");
                    prop_assert!(path.split('/').all(|s| s != "." && s != ".."), "{path}");
                    let again = canonicalize(path, true).expect("a canonical path is valid");
                    prop_assert_eq!(again.path.as_ref(), path);
                    prop_assert!(matches!(again.path, Cow::Borrowed(_)) || again.ambiguity.is_some()
                        || path.contains('%'), "re-canonicalised {path} allocated");
                }
            }

            #[test]
            fn the_quick_test_agrees_with_the_rebuild(raw in path(), merge in any::<bool>()) {
                if is_canonical(&raw, merge) {
                    let rebuilt = rebuild(&raw, merge).expect("valid");
                    prop_assert_eq!(rebuilt.path.as_ref(), raw.as_str());
                    prop_assert_eq!(rebuilt.ambiguity, None);
                }
            }

            /// Gateway and upstream agree: an upstream that decodes the canonical path
            /// names the resource it would have named from the client's path, so a
            /// route's prefix matches the one exactly when it matches the other.
            #[test]
            fn a_decoding_upstream_sees_the_same_resource(raw in path()) {
                if let Ok(Canonical { path, ambiguity: None }) = canonicalize(&raw, true) {
                    prop_assert_eq!(resolved(&path), resolved(&raw), "{} -> {}", raw, path);
                    let admin = resolved(&raw).first().is_some_and(|s| s == b"admin");
                    let routed = path == "/admin" || path.starts_with("/admin/");
                    prop_assert_eq!(admin, routed, "{} -> {}", raw, path);
                }
            }
        }
    }
}
