//! Header names the gateway inserts on every request or response, made once as insert keys
//! for vendored pingora-http: the parsed name and how it is written (its lower-case
//! spelling), so an insert neither parses the name again nor copies it for the case map.

use bytes::Bytes;
use http::HeaderName;

/// A header name with its spelling; `key()` is the `(HeaderName, Bytes)` insert key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderKey {
    name: HeaderName,
    spelled: Bytes,
}

impl HeaderKey {
    /// A key for a lower-case name known at compile time.
    pub const fn from_static(lower_case: &'static str) -> Self {
        Self {
            name: HeaderName::from_static(lower_case),
            spelled: Bytes::from_static(lower_case.as_bytes()),
        }
    }

    /// A key for a name read from the configuration, spelled as parsed (lower case).
    pub fn new(name: HeaderName) -> Self {
        let spelled = Bytes::copy_from_slice(name.as_str().as_bytes());
        Self { name, spelled }
    }

    /// The parsed name, for look-ups.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The insert key: both parts shared, neither copied.
    pub fn key(&self) -> (HeaderName, Bytes) {
        (self.name.clone(), self.spelled.clone())
    }
}
