//! Subjects: validation, wildcard matching and Millwright's subject scheme.
//!
//! A subject is a `.`-separated list of non-empty tokens, as in NATS. Publish subjects are
//! literal; subscribe subjects may use `*` (exactly one token) and `>` (one or more trailing
//! tokens, last position only). Both backends validate with the same functions here, so a
//! subject the embedded bus accepts is one NATS accepts, and the other way round.
//!
//! [`SubjectScheme`] builds the subjects Millwright itself uses, under a configurable prefix
//! (default `mw`):
//!
//! | subject                         | carries                                   |
//! |---------------------------------|-------------------------------------------|
//! | `mw.ev.<connector>.<tag>`       | data events (an [`Envelope`] as JSON)     |
//! | `mw.state.<node>.<component>`   | lifecycle state changes of a component    |
//! | `mw.ctl.<node>.<verb>`          | control requests to a node (request/reply)|
//!
//! Names from configuration (`sims/press1`, `ns=2;s=Temp`) are not always valid tokens, so
//! every name goes through [`encode_token`]: an injective, reversible percent-encoding that
//! leaves `[A-Za-z0-9_-]` alone. `docs/subjects.md` documents the scheme for operators.
//!
//! [`Envelope`]: millwright_plugin_sdk::event::Envelope

use std::borrow::Cow;
use std::fmt::Write as _;

use super::BusError;

/// The default subject prefix.
pub const DEFAULT_PREFIX: &str = "mw";

/// The longest subject either backend accepts, in bytes (well inside NATS' 4 KiB control line).
pub const MAX_SUBJECT_LEN: usize = 1024;

fn invalid(subject: &str, reason: &'static str) -> BusError {
    BusError::InvalidSubject {
        subject: subject.to_owned(),
        reason,
    }
}

/// Whether a byte may appear in a subject token at all (NATS forbids whitespace; we also
/// refuse other control characters, which no tool displays sensibly).
fn is_token_byte(b: u8) -> bool {
    !(b.is_ascii_control() || b == b' ' || b == b'.')
}

fn check_common(subject: &str) -> Result<(), BusError> {
    if subject.is_empty() {
        return Err(invalid(subject, "subject is empty"));
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(invalid(subject, "subject is longer than 1024 bytes"));
    }
    Ok(())
}

fn check_token_bytes(subject: &str, token: &str) -> Result<(), BusError> {
    if token.is_empty() {
        return Err(invalid(
            subject,
            "subject has an empty token (leading, trailing or double dot)",
        ));
    }
    if !token.bytes().all(is_token_byte) {
        return Err(invalid(
            subject,
            "subject contains whitespace or a control character",
        ));
    }
    Ok(())
}

/// Checks a subject to publish on: non-empty tokens, no whitespace, no wildcards.
///
/// One pass over the bytes: this runs on every publish.
///
/// # Errors
/// [`BusError::InvalidSubject`] naming the subject and what is wrong with it.
pub fn validate_publish_subject(subject: &str) -> Result<(), BusError> {
    check_common(subject)?;
    let mut token_len = 0usize;
    for &b in subject.as_bytes() {
        match b {
            b'.' if token_len == 0 => break,
            b'.' => token_len = 0,
            b'*' | b'>' => {
                return Err(invalid(
                    subject,
                    "a publish subject cannot contain the wildcards '*' or '>'",
                ));
            }
            b if !is_token_byte(b) => {
                return Err(invalid(
                    subject,
                    "subject contains whitespace or a control character",
                ));
            }
            _ => token_len += 1,
        }
    }
    if token_len == 0 {
        return Err(invalid(
            subject,
            "subject has an empty token (leading, trailing or double dot)",
        ));
    }
    Ok(())
}

/// Checks a subject to subscribe to: like a publish subject, but a token may be the wildcard
/// `*`, and the last token may be `>`. A wildcard inside a token (`a*`) is refused.
///
/// # Errors
/// [`BusError::InvalidSubject`] naming the subject and what is wrong with it.
pub fn validate_subscribe_subject(subject: &str) -> Result<(), BusError> {
    check_common(subject)?;
    let mut tokens = subject.split('.').peekable();
    while let Some(token) = tokens.next() {
        check_token_bytes(subject, token)?;
        match token {
            "*" => {}
            ">" if tokens.peek().is_none() => {}
            ">" => {
                return Err(invalid(
                    subject,
                    "the wildcard '>' may only be the last token",
                ));
            }
            t if t.contains(['*', '>']) => {
                return Err(invalid(
                    subject,
                    "wildcards '*' and '>' must be whole tokens",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a queue group name: non-empty, no whitespace or control characters.
///
/// # Errors
/// [`BusError::InvalidQueueGroup`] naming the group and what is wrong with it.
pub fn validate_queue_group(group: &str) -> Result<(), BusError> {
    let reason = if group.is_empty() {
        "queue group is empty"
    } else if !group.bytes().all(|b| !(b.is_ascii_control() || b == b' ')) {
        "queue group contains whitespace or a control character"
    } else {
        return Ok(());
    };
    Err(BusError::InvalidQueueGroup {
        group: group.to_owned(),
        reason,
    })
}

/// A publish subject validated once and shared by reference count: publishing on it repeatedly
/// (one tag of a connector, a state subject) costs no validation and no allocation for the
/// subject. See [`Bus::publish_prepared`](super::Bus::publish_prepared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedSubject {
    inner: async_nats::Subject,
}

impl PreparedSubject {
    /// Validates `subject` as a publish subject.
    ///
    /// # Errors
    /// As [`validate_publish_subject`].
    pub fn new(subject: impl Into<String>) -> Result<Self, BusError> {
        let subject = subject.into();
        validate_publish_subject(&subject)?;
        let inner = async_nats::Subject::from(subject);
        // The first clone turns the buffer into a shared one; from then on a clone is one
        // atomic increment.
        drop(inner.clone());
        Ok(Self { inner })
    }

    /// The subject text.
    pub fn as_str(&self) -> &str {
        self.inner.as_str()
    }

    pub(crate) fn nats(&self) -> &async_nats::Subject {
        &self.inner
    }
}

impl std::hash::Hash for PreparedSubject {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::fmt::Display for PreparedSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated subscribe subject, split into tokens for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    tokens: Box<[PatternToken]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternToken {
    Literal(Box<str>),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more tokens (always last).
    Tail,
}

impl Pattern {
    /// Parses a subscribe subject.
    ///
    /// # Errors
    /// As [`validate_subscribe_subject`].
    pub(crate) fn parse(subject: &str) -> Result<Self, BusError> {
        validate_subscribe_subject(subject)?;
        let tokens = subject
            .split('.')
            .map(|t| match t {
                "*" => PatternToken::One,
                ">" => PatternToken::Tail,
                lit => PatternToken::Literal(lit.into()),
            })
            .collect();
        Ok(Self { tokens })
    }

    /// Whether the pattern has no wildcards (it then matches exactly its own text).
    pub(crate) fn is_literal(&self) -> bool {
        self.tokens
            .iter()
            .all(|t| matches!(t, PatternToken::Literal(_)))
    }

    /// Whether a (valid, literal) subject matches this pattern.
    pub(crate) fn matches(&self, subject: &str) -> bool {
        let mut parts = subject.split('.');
        for token in self.tokens.iter() {
            match token {
                PatternToken::Tail => return parts.next().is_some(),
                PatternToken::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                PatternToken::Literal(lit) => {
                    if parts.next() != Some(&**lit) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

/// Whether `b` passes through [`encode_token`] unchanged.
fn is_plain_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Maps any name to a valid subject token, injectively and reversibly.
///
/// Bytes in `[A-Za-z0-9_-]` stay as they are; every other byte (of the UTF-8 form) becomes
/// `%XX` (two upper-case hex digits), so `sims/press1` becomes `sims%2Fpress1` and
/// `a.b` becomes `a%2Eb`. The empty name becomes the lone token `%`, which no non-empty name
/// encodes to. Names that are already plain are borrowed, not copied.
pub fn encode_token(name: &str) -> Cow<'_, str> {
    if name.is_empty() {
        return Cow::Borrowed("%");
    }
    if name.bytes().all(is_plain_token_byte) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for b in name.bytes() {
        if is_plain_token_byte(b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    Cow::Owned(out)
}

/// Reverses [`encode_token`]. Returns `None` for a token that `encode_token` cannot produce.
pub fn decode_token(token: &str) -> Option<String> {
    if token == "%" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_plain_token_byte(b) {
            out.push(b);
            i += 1;
        } else if b == b'%' {
            let hex = token.get(i + 1..i + 3)?;
            if !hex
                .bytes()
                .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h))
            {
                return None;
            }
            let v = u8::from_str_radix(hex, 16).ok()?;
            if is_plain_token_byte(v) {
                // encode_token never escapes a plain byte.
                return None;
            }
            out.push(v);
            i += 3;
        } else {
            return None;
        }
    }
    if out.is_empty() {
        return None;
    }
    String::from_utf8(out).ok()
}

/// What a subject of the scheme addresses, as [`SubjectScheme::parse`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemeSubject {
    /// `<prefix>.ev.<connector>.<tag>`: a data event.
    Event {
        /// The connector instance name.
        connector: String,
        /// The tag (signal) name.
        tag: String,
    },
    /// `<prefix>.state.<node>.<component>`: a component's state.
    State {
        /// The node name.
        node: String,
        /// The component id, e.g. `sims/press1`.
        component: String,
    },
    /// `<prefix>.rpc.<connector>.<method>`: a request to a responder connector.
    Rpc {
        /// The connector instance name.
        connector: String,
        /// The method, e.g. `write`.
        method: String,
    },
    /// `<prefix>.ctl.<node>.<verb>`: a control request to a node.
    Control {
        /// The node name.
        node: String,
        /// The verb, e.g. `status` or `dlq.list` (carried encoded as `dlq%2Elist`).
        verb: String,
    },
}

/// The subjects Millwright publishes and subscribes to, under one prefix.
///
/// Every builder encodes its name arguments with [`encode_token`], so any string (a component
/// id such as `sims/press1`, an OPC-UA node id, a name with spaces) yields a valid subject with
/// exactly the documented number of tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectScheme {
    prefix: String,
}

impl Default for SubjectScheme {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

impl SubjectScheme {
    /// A scheme under `prefix`, which may have several tokens (`acme.site1`).
    ///
    /// # Errors
    /// [`BusError::InvalidSubject`] when the prefix is not a valid literal subject.
    pub fn new(prefix: impl Into<String>) -> Result<Self, BusError> {
        let prefix = prefix.into();
        validate_publish_subject(&prefix)?;
        Ok(Self { prefix })
    }

    /// The prefix, e.g. `mw`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn build(&self, kind: &str, a: &str, b: &str) -> String {
        let (a, b) = (encode_token(a), encode_token(b));
        let mut s = String::with_capacity(self.prefix.len() + kind.len() + a.len() + b.len() + 3);
        s.push_str(&self.prefix);
        s.push('.');
        s.push_str(kind);
        s.push('.');
        s.push_str(&a);
        s.push('.');
        s.push_str(&b);
        s
    }

    fn wildcard(&self, kind: &str, first: Option<&str>) -> String {
        match first {
            Some(a) => format!("{}.{kind}.{}.>", self.prefix, encode_token(a)),
            None => format!("{}.{kind}.>", self.prefix),
        }
    }

    /// `<prefix>.ev.<connector>.<tag>`: where a connector publishes a tag's data.
    pub fn event(&self, connector: &str, tag: &str) -> String {
        self.build("ev", connector, tag)
    }

    /// `<prefix>.ev.<connector>.>`: every tag of one connector.
    pub fn events_of(&self, connector: &str) -> String {
        self.wildcard("ev", Some(connector))
    }

    /// `<prefix>.ev.>`: every data event.
    pub fn all_events(&self) -> String {
        self.wildcard("ev", None)
    }

    /// `<prefix>.state.<node>.<component>`: a component's state changes.
    pub fn state(&self, node: &str, component: &str) -> String {
        self.build("state", node, component)
    }

    /// `<prefix>.state.<node>.>`: every component state of one node.
    pub fn states_of(&self, node: &str) -> String {
        self.wildcard("state", Some(node))
    }

    /// `<prefix>.state.>`: every component state in the cluster.
    pub fn all_states(&self) -> String {
        self.wildcard("state", None)
    }

    /// `<prefix>.ctl.<node>.<verb>`: a control request to one node.
    pub fn control(&self, node: &str, verb: &str) -> String {
        self.build("ctl", node, verb)
    }

    /// `<prefix>.ctl.<node>.>`: every control verb of one node (what a node subscribes to).
    pub fn controls_of(&self, node: &str) -> String {
        self.wildcard("ctl", Some(node))
    }

    /// `<prefix>.rpc.<connector>.<method>`: a request to a responder connector.
    pub fn rpc(&self, connector: &str, method: &str) -> String {
        self.build("rpc", connector, method)
    }

    /// `<prefix>.rpc.<connector>.*`: every method of one responder.
    pub fn rpcs_of(&self, connector: &str) -> String {
        format!("{}.rpc.{}.*", self.prefix, encode_token(connector))
    }

    /// `<prefix>.rpc.*.*`: every method of every responder (what a node's rpc bridge serves).
    pub fn all_rpcs(&self) -> String {
        format!("{}.rpc.*.*", self.prefix)
    }

    /// Recognises a subject of this scheme and decodes its names; `None` for anything else.
    pub fn parse(&self, subject: &str) -> Option<SchemeSubject> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let mut tokens = rest.split('.');
        let (kind, a, b) = (tokens.next()?, tokens.next()?, tokens.next()?);
        if tokens.next().is_some() {
            return None;
        }
        let (a, b) = (decode_token(a)?, decode_token(b)?);
        Some(match kind {
            "ev" => SchemeSubject::Event {
                connector: a,
                tag: b,
            },
            "rpc" => SchemeSubject::Rpc {
                connector: a,
                method: b,
            },
            "state" => SchemeSubject::State {
                node: a,
                component: b,
            },
            "ctl" => SchemeSubject::Control { node: a, verb: b },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_subjects_are_validated() {
        for ok in ["a", "a.b.c", "mw.ev.press1.temp", "a-b_c.%2F", "ünïcode.x"] {
            validate_publish_subject(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "", ".", "a.", ".a", "a..b", "a b", "a\tb", "a\r\nb", "a.*", "a.>", "a*", "x.>y",
        ] {
            assert!(
                matches!(
                    validate_publish_subject(bad),
                    Err(BusError::InvalidSubject { .. })
                ),
                "{bad:?} must be rejected"
            );
        }
        assert!(validate_publish_subject(&"a".repeat(MAX_SUBJECT_LEN + 1)).is_err());
    }

    #[test]
    fn subscribe_subjects_are_validated() {
        for ok in ["a", "*", ">", "a.*.c", "a.>", "*.*.>", "mw.ev.*.temp"] {
            validate_subscribe_subject(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "", "a..b", "a.>.b", ">.a", "a*", "a.b*", "a.>>", "a b", "a.",
        ] {
            assert!(
                validate_subscribe_subject(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn queue_groups_are_validated() {
        validate_queue_group("workers").unwrap();
        validate_queue_group("a.b").unwrap();
        assert!(validate_queue_group("").is_err());
        assert!(validate_queue_group("a b").is_err());
    }

    #[test]
    fn wildcards_match_like_nats() {
        let cases: &[(&str, &str, bool)] = &[
            ("a.b", "a.b", true),
            ("a.b", "a.c", false),
            ("a.b", "a.b.c", false),
            ("a.b.c", "a.b", false),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.*", "a.b.c", false),
            ("*.b", "a.b", true),
            ("*", "a", true),
            ("*", "a.b", false),
            ("a.>", "a.b", true),
            ("a.>", "a.b.c.d", true),
            ("a.>", "a", false),
            (">", "a", true),
            (">", "a.b.c", true),
            ("a.*.>", "a.b", false),
            ("a.*.>", "a.b.c", true),
            ("mw.ev.*.temp", "mw.ev.press1.temp", true),
            ("mw.ev.*.temp", "mw.ev.press1.pressure", false),
        ];
        for &(pattern, subject, expected) in cases {
            let p = Pattern::parse(pattern).unwrap();
            assert_eq!(p.matches(subject), expected, "{pattern} vs {subject}");
        }
    }

    #[test]
    fn tokens_encode_injectively_and_decode_back() {
        let names = [
            "press1",
            "sims/press1",
            "sims_press1",
            "sims%2Fpress1",
            "a.b",
            "*",
            ">",
            "",
            "%",
            "ns=2;s=Temperature",
            "with space",
            "ünï",
        ];
        let mut seen = std::collections::HashSet::new();
        for name in names {
            let token = encode_token(name);
            let subject = format!("mw.{token}");
            validate_publish_subject(&subject).unwrap_or_else(|e| panic!("{name:?}: {e}"));
            assert!(seen.insert(token.to_string()), "{name:?} collides");
            assert_eq!(decode_token(&token).as_deref(), Some(name), "{name:?}");
        }
        // The examples of docs/subjects.md.
        for (name, token) in [
            ("press1", "press1"),
            ("sims/press1", "sims%2Fpress1"),
            ("line.3", "line%2E3"),
            ("ns=2;s=Temp", "ns%3D2%3Bs%3DTemp"),
            ("Kühlung", "K%C3%BChlung"),
            ("", "%"),
        ] {
            assert_eq!(encode_token(name), token);
        }
        assert!(matches!(encode_token("press1"), Cow::Borrowed(_)));
        for bad in ["%2", "%zz", "%41", "a%", "a b", "%2f"] {
            assert_eq!(decode_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn scheme_builds_and_parses_subjects() {
        let s = SubjectScheme::default();
        assert_eq!(s.event("press1", "temp"), "mw.ev.press1.temp");
        assert_eq!(
            s.state("node-a", "sims/press1"),
            "mw.state.node-a.sims%2Fpress1"
        );
        assert_eq!(s.control("node-a", "dlq.list"), "mw.ctl.node-a.dlq%2Elist");
        assert_eq!(s.events_of("press1"), "mw.ev.press1.>");
        assert_eq!(s.all_events(), "mw.ev.>");
        assert_eq!(s.states_of("n"), "mw.state.n.>");
        assert_eq!(s.all_states(), "mw.state.>");
        assert_eq!(s.controls_of("n"), "mw.ctl.n.>");
        assert_eq!(
            s.parse("mw.state.node-a.sims%2Fpress1"),
            Some(SchemeSubject::State {
                node: "node-a".into(),
                component: "sims/press1".into()
            })
        );
        assert_eq!(
            s.parse(&s.event("a b", "x.y")),
            Some(SchemeSubject::Event {
                connector: "a b".into(),
                tag: "x.y".into()
            })
        );
        assert_eq!(s.parse("mw.other.a.b"), None);
        assert_eq!(s.parse("mw.ev.a"), None);
        assert_eq!(s.parse("mw.ev.a.b.c"), None);
        assert_eq!(s.parse("xx.ev.a.b"), None);

        let custom = SubjectScheme::new("acme.site1").unwrap();
        assert_eq!(custom.event("c", "t"), "acme.site1.ev.c.t");
        assert_eq!(
            custom.parse("acme.site1.ctl.n.stop"),
            Some(SchemeSubject::Control {
                node: "n".into(),
                verb: "stop".into()
            })
        );
        assert!(SubjectScheme::new("bad prefix").is_err());
        assert!(SubjectScheme::new("mw.*").is_err());
    }

    #[test]
    fn every_built_subject_is_valid_and_matched_by_its_wildcard() {
        let s = SubjectScheme::default();
        for name in ["x", "sims/press1", "", "a.b.c", "*", ">", "tab\there"] {
            let ev = s.event(name, name);
            validate_publish_subject(&ev).unwrap();
            assert!(Pattern::parse(&s.events_of(name)).unwrap().matches(&ev));
            assert!(Pattern::parse(&s.all_events()).unwrap().matches(&ev));
            let st = s.state(name, name);
            assert!(Pattern::parse(&s.states_of(name)).unwrap().matches(&st));
            let ctl = s.control(name, name);
            assert!(Pattern::parse(&s.controls_of(name)).unwrap().matches(&ctl));
            let rpc = s.rpc(name, name);
            validate_publish_subject(&rpc).unwrap();
            assert!(Pattern::parse(&s.rpcs_of(name)).unwrap().matches(&rpc));
            assert!(Pattern::parse(&s.all_rpcs()).unwrap().matches(&rpc));
            assert!(!Pattern::parse(&s.all_rpcs()).unwrap().matches(&ev));
        }
    }
}
