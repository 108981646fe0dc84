//! The one error type of the filter language: where it went wrong and why.

use std::fmt;

/// A filter, sort or fields expression that cannot be used, with the character
/// position (0-based, in characters of the input) the problem was found at.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterError {
    pub position: usize,
    pub kind: ErrorKind,
}

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorKind {
    /// The input is longer than the accepted maximum (in bytes).
    TooLong { max: usize },
    /// Parentheses nest deeper than the accepted maximum.
    TooDeep { max: usize },
    /// Nothing but whitespace and comments.
    Empty,
    /// A character that starts no token.
    UnexpectedChar(char),
    /// A malformed number such as `-`, `1.` or `.5`.
    InvalidNumber(String),
    /// A quoted text without its closing quote.
    UnterminatedText,
    /// An identifier that is only `@`/`_`/`#` or ends with `.` or `:`.
    InvalidIdentifier(String),
    /// A run of operator characters that is no operator, such as `=!`.
    InvalidOperator(String),
    /// A run of `&`/`|` that is neither `&&` nor `||`.
    InvalidJoin(String),
    /// A single `/` that does not start a `//` comment.
    InvalidComment,
    /// A `(` without its `)`.
    UnclosedGroup,
    /// A `)` without its `(`.
    UnexpectedClose,
    /// Something else than what the grammar allows at this point.
    Expected {
        expected: &'static str,
        found: String,
    },
    /// A field the collection does not have (or a path that cannot be followed).
    UnknownField(String),
    /// A field that is hidden from non-superusers.
    HiddenField(String),
    /// A path step through a field that is not a relation.
    NotARelation(String),
    /// A path that follows more relations than allowed.
    TooManyRelations { max: usize },
    /// A collection named in the expression that does not exist.
    UnknownCollection(String),
    /// A related collection whose list rule lets only superusers see its records.
    RestrictedCollection(String),
    /// A `:modifier` that does not exist or does not apply to this operand.
    InvalidModifier(String),
    /// A sort or fields expression that is malformed, with the reason.
    Invalid(String),
}

impl FilterError {
    /// A new error at a character position.
    pub fn new(position: usize, kind: ErrorKind) -> Self {
        Self { position, kind }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::TooLong { max } => write!(f, "expression longer than {max} bytes"),
            ErrorKind::TooDeep { max } => {
                write!(f, "parentheses nested deeper than {max} levels")
            }
            ErrorKind::Empty => write!(f, "empty filter expression"),
            ErrorKind::UnexpectedChar(c) => write!(f, "unexpected character {c:?}"),
            ErrorKind::InvalidNumber(n) => write!(f, "invalid number {n:?}"),
            ErrorKind::UnterminatedText => write!(f, "quoted text without its closing quote"),
            ErrorKind::InvalidIdentifier(i) => write!(f, "invalid identifier {i:?}"),
            ErrorKind::InvalidOperator(o) => write!(f, "invalid sign operator {o:?}"),
            ErrorKind::InvalidJoin(j) => write!(f, "invalid join operator {j:?}"),
            ErrorKind::InvalidComment => write!(f, "invalid comment, expected //"),
            ErrorKind::UnclosedGroup => write!(f, "missing closing parenthesis"),
            ErrorKind::UnexpectedClose => write!(f, "unexpected closing parenthesis"),
            ErrorKind::Expected { expected, found } => {
                write!(f, "expected {expected}, got {found}")
            }
            ErrorKind::UnknownField(name) => write!(f, "unknown field {name:?}"),
            ErrorKind::HiddenField(name) => write!(f, "non-filterable field {name:?}"),
            ErrorKind::NotARelation(name) => write!(f, "field {name:?} is not a relation"),
            ErrorKind::TooManyRelations { max } => {
                write!(f, "more than {max} nested relations")
            }
            ErrorKind::UnknownCollection(name) => write!(f, "unknown collection {name:?}"),
            ErrorKind::RestrictedCollection(name) => {
                write!(f, "only superusers can filter through collection {name:?}")
            }
            ErrorKind::InvalidModifier(m) => write!(f, "invalid modifier {m:?}"),
            ErrorKind::Invalid(reason) => write!(f, "{reason}"),
        }
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.kind, self.position)
    }
}

impl std::error::Error for FilterError {}
