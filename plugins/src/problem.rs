//! One thing wrong with a configuration, located by its dotted field path: the one problem
//! type of the whole gateway, from the plugins' sections to the listeners.

use std::fmt;

/// One thing wrong with a configuration, located by its dotted field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `routes[0].match.path_regex`; empty for the file as a whole. Plugins report paths
    /// relative to their section (`request_size.max_body`); the caller places them with
    /// [`Problem::under`].
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same problem, with its path placed below `parent` (`plugins` + `jwt.issuer` →
    /// `plugins.jwt.issuer`; `rate_limit` + `[0].rate` → `rate_limit[0].rate`). An empty
    /// `parent` leaves the path as it is.
    pub fn under(mut self, parent: &str) -> Self {
        self.path = match (parent.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => parent.to_string(),
            (false, false) if self.path.starts_with('[') => format!("{parent}{}", self.path),
            (false, false) => format!("{parent}.{}", self.path),
        };
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_places_its_problems_below_itself() {
        let at = |path: &str, parent: &str| Problem::new(path, "m").under(parent).path;
        assert_eq!(at("jwt.issuer", "plugins"), "plugins.jwt.issuer");
        assert_eq!(at("[0].rate", "rate_limit"), "rate_limit[0].rate");
        assert_eq!(at("", "request_size"), "request_size");
        assert_eq!(at("allow[0]", ""), "allow[0]");
    }
}
