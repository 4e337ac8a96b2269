//! Config errors that name the file, the key path, the line and a hint.
//!
//! Serde reports *what* went wrong (`invalid value: string "5 parsecs", expected a duration
//! such as "500ms" or "5s"`), `serde_path_to_error` reports *where* in the data
//! (`sims.press1.interval`) and toml's spans report *where* in the file (line 12). This module
//! joins the three into one [`Diagnostic`]:
//!
//! ```text
//! configs/plant.toml: sims.press1.interval: invalid value "5 parsecs" at line 12 (expected a duration such as "500ms" or "5s")
//! ```
//!
//! Unknown keys get a "did you mean" suggestion when a known key is close enough.

use std::fmt;
use std::io;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the config file: {source} (check the path and its permissions)")]
    Read {
        /// The file, as given.
        file: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
}

impl ConfigError {
    /// The diagnostic, when the config was read but is invalid.
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            ConfigError::Invalid(d) => Some(d),
            ConfigError::Read { .. } => None,
        }
    }
}

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as given on the command line.
    pub file: String,
    /// The dotted key path (`sims.press1.interval`); empty for the document itself.
    pub path: String,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong (`invalid value "5 parsecs"`).
    pub message: String,
    /// How to fix it (`expected a duration such as "500ms" or "5s"`).
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(line) = self.line {
            write!(f, " at line {line}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl Diagnostic {
    /// A diagnostic at the dotted key `path` of `file`, its line found in `text` (for a key
    /// that is absent, the line of its deepest present ancestor).
    pub(crate) fn located(
        file: &str,
        text: &str,
        path: &[String],
        message: String,
        hint: Option<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            path: path.join("."),
            line: locate(text, path).map(|span| line_of(text, span.start)),
            message,
            hint,
        }
    }
}

impl From<Diagnostic> for ConfigError {
    fn from(d: Diagnostic) -> Self {
        ConfigError::Invalid(Box::new(d))
    }
}

/// The 1-based line of byte offset `at` in `text`.
pub(crate) fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A diagnostic for a TOML syntax error (no key path is known yet).
pub(crate) fn from_syntax_error(file: &str, text: &str, err: &toml::de::Error) -> Diagnostic {
    let mut lines = err.message().lines();
    let message = lines.next().unwrap_or("invalid TOML").trim().to_owned();
    let rest: Vec<&str> = lines.map(str::trim).filter(|l| !l.is_empty()).collect();
    Diagnostic {
        file: file.to_owned(),
        path: String::new(),
        line: err.span().map(|s| line_of(text, s.start)),
        message: format!("invalid TOML: {message}"),
        hint: Some(if rest.is_empty() {
            "see https://toml.io for the syntax".to_owned()
        } else {
            rest.join("; ")
        }),
    }
}

/// A diagnostic for a serde error at `path`, rewording serde's message into a message and a
/// hint.
pub(crate) fn from_data_error(
    file: &str,
    text: &str,
    mut path: Vec<String>,
    err: &toml::de::Error,
) -> Diagnostic {
    let raw = err.message().trim();
    let (message, hint) = if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (field, expected) = split_backticked(rest);
        // serde_path_to_error may or may not have pushed the unknown key; make sure it is last.
        if path.last().map(String::as_str) != Some(field) {
            path.push(field.to_owned());
        }
        let known = backticked_words(expected);
        let hint = match suggest(field, &known) {
            Some(s) => format!("did you mean `{s}`?"),
            None if known.is_empty() => "this table takes no keys".to_owned(),
            None => format!("known keys: {}", known.join(", ")),
        };
        (format!("unknown key `{field}`"), Some(hint))
    } else if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (value, expected) = split_backticked(rest);
        let known = backticked_words(expected);
        let hint = match suggest(value, &known) {
            Some(s) => format!("did you mean \"{s}\"?"),
            None => format!("expected one of: {}", quote_all(&known)),
        };
        (format!("unknown value \"{value}\""), Some(hint))
    } else if let Some(rest) = raw.strip_prefix("missing field `") {
        let (field, _) = split_backticked(rest);
        let table = if path.is_empty() {
            "the top level".to_owned()
        } else {
            format!("[{}]", path.join("."))
        };
        let hint = if is_section(&path, field) {
            format!("add a [{field}] table")
        } else {
            format!("add `{field} = ...` to {table}")
        };
        path.push(field.to_owned());
        ("missing required key".to_owned(), Some(hint))
    } else if let Some(rest) = raw.strip_prefix("invalid type: ") {
        let (found, expected) = split_expected(rest);
        (
            format!("wrong type: found {}", describe_found(found)),
            expected.map(|e| format!("expected {}", describe_expected(e))),
        )
    } else if let Some(rest) = raw.strip_prefix("invalid value: ") {
        let (found, expected) = split_expected(rest);
        let found = found.strip_prefix("string ").unwrap_or(found);
        (
            format!("invalid value {found}"),
            expected.map(|e| format!("expected {}", describe_expected(e))),
        )
    } else if let Some(rest) = raw.strip_prefix("invalid length ") {
        let (found, expected) = split_expected(rest);
        (
            format!("wrong number of items: {found}"),
            expected.map(|e| format!("expected {e}")),
        )
    } else {
        (raw.to_owned(), None)
    };
    Diagnostic {
        file: file.to_owned(),
        path: path.join("."),
        line: err.span().map(|s| line_of(text, s.start)),
        message,
        hint,
    }
}

/// Top-level sections whose absence reads better as "add a [x] table".
fn is_section(path: &[String], field: &str) -> bool {
    path.is_empty() && field == "node"
}

/// `name`, rest` -> (`name`, `rest`).
fn split_backticked(s: &str) -> (&str, &str) {
    match s.find('`') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

/// `found, expected X` -> (`found`, Some(`X`)).
fn split_expected(s: &str) -> (&str, Option<&str>) {
    match s.rfind(", expected ") {
        Some(i) => (&s[..i], Some(&s[i + ", expected ".len()..])),
        None => (s, None),
    }
}

/// Every `word` in backticks in `s`.
fn backticked_words(s: &str) -> Vec<String> {
    s.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

fn quote_all(words: &[String]) -> String {
    words
        .iter()
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The closest known word, when it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(word: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (k, strsim::jaro_winkler(word, k)))
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k.as_str())
}

/// Serde's "found" side in TOML words.
fn describe_found(found: &str) -> String {
    match found {
        "map" => "a table".to_owned(),
        "sequence" => "an array".to_owned(),
        other => other.to_owned(),
    }
}

/// Serde's "expected" side in TOML words.
fn describe_expected(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a map" => "a table".to_owned(),
        e if e.starts_with("struct ") => "a table".to_owned(),
        e => e.to_owned(),
    }
}

/// Finds the byte span of the value at `path` (`["sims", "press1", "tags", "1"]`) in `text`;
/// for a path that is absent, the span of its deepest present ancestor.
pub(crate) fn locate(text: &str, path: &[String]) -> Option<Range<usize>> {
    let root = DeTable::parse(text).ok()?;
    let mut span = root.span();
    let mut value: Option<&DeValue<'_>> = None;
    let mut table = Some(root.get_ref());
    for seg in path {
        let next = match (table, value) {
            (Some(t), _) => t.get(seg.as_str()),
            (None, Some(DeValue::Array(a))) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        let Some(next) = next else { break };
        span = next.span();
        value = Some(next.get_ref());
        table = match next.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    Some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        let known = vec!["interval".to_owned(), "tags".to_owned()];
        assert_eq!(suggest("intervall", &known), Some("interval"));
        assert_eq!(suggest("colour", &known), None);
    }

    #[test]
    fn locate_finds_nested_values_and_array_items() {
        let text = "[node]\nname = \"a\"\n\n[sims.p1]\ntags = [\"x\",\n  \"y\"]\n";
        let at = |p: &[&str]| {
            let p: Vec<String> = p.iter().map(|s| (*s).to_owned()).collect();
            line_of(text, locate(text, &p).unwrap().start)
        };
        assert_eq!(at(&["node", "name"]), 2);
        assert_eq!(at(&["sims", "p1", "tags", "1"]), 6);
        assert_eq!(
            at(&["sims", "p1", "missing"]),
            4,
            "falls back to the table header"
        );
    }

    #[test]
    fn display_has_file_path_line_and_hint() {
        let d = Diagnostic {
            file: "configs/plant.toml".into(),
            path: "sims.press1.interval".into(),
            line: Some(12),
            message: "invalid value \"5 parsecs\"".into(),
            hint: Some("expected a duration such as \"500ms\" or \"5s\"".into()),
        };
        assert_eq!(
            d.to_string(),
            "configs/plant.toml: sims.press1.interval: invalid value \"5 parsecs\" at line 12 \
             (expected a duration such as \"500ms\" or \"5s\")"
        );
    }
}
