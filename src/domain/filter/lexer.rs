//! Tokens of the filter language, scanned the way fexpr's `scanner.go` does.
//!
//! Differences from fexpr are deliberate and only about structure: parentheses are
//! single tokens here (fexpr scans a whole group and re-parses its text), so a `)`
//! inside a `//` comment inside a group does not close the group.

use super::ast::Op;
use super::error::{ErrorKind, FilterError};

/// One token with the byte range it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub kind: TokenKind,
    pub start: usize,
    pub end: usize,
}

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenKind {
    Identifier(String),
    Number(f64),
    Text(String),
    Sign(Op),
    And,
    Or,
    Open,
    Close,
}

/// Splits `input` into tokens, skipping whitespace and comments. Errors carry byte
/// offsets; [`super::Filter::parse`] turns them into character positions.
pub fn tokenize(input: &str) -> Result<Vec<Token>, FilterError> {
    let mut scanner = Scanner {
        input,
        bytes: input.as_bytes(),
        pos: 0,
    };
    let mut tokens = Vec::new();
    while let Some(token) = scanner.next_token()? {
        tokens.push(token);
    }
    Ok(tokens)
}

struct Scanner<'a> {
    input: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

// fexpr's whitespace: no '\r'.
fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n')
}

fn is_identifier_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || matches!(b, b'@' | b'_' | b'#')
}

fn is_identifier_part(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':')
}

fn is_sign(b: u8) -> bool {
    matches!(b, b'=' | b'?' | b'!' | b'>' | b'<' | b'~')
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn error(&self, at: usize, kind: ErrorKind) -> FilterError {
        FilterError::new(at, kind)
    }

    fn next_token(&mut self) -> Result<Option<Token>, FilterError> {
        loop {
            let Some(b) = self.peek() else {
                return Ok(None);
            };
            let start = self.pos;
            let kind = if is_whitespace(b) {
                self.pos += 1;
                continue;
            } else if b == b'/' {
                self.skip_comment()?;
                continue;
            } else if b == b'(' {
                self.pos += 1;
                TokenKind::Open
            } else if b == b')' {
                self.pos += 1;
                TokenKind::Close
            } else if is_identifier_start(b) {
                self.identifier()?
            } else if b == b'-' || b.is_ascii_digit() {
                self.number()?
            } else if b == b'\'' || b == b'"' {
                self.text()?
            } else if is_sign(b) {
                self.sign()?
            } else if b == b'&' || b == b'|' {
                self.join()?
            } else {
                let c = self.input[start..].chars().next().unwrap_or('\u{fffd}');
                return Err(self.error(start, ErrorKind::UnexpectedChar(c)));
            };
            return Ok(Some(Token {
                kind,
                start,
                end: self.pos,
            }));
        }
    }

    fn skip_comment(&mut self) -> Result<(), FilterError> {
        let start = self.pos;
        if self.bytes.get(start + 1) != Some(&b'/') {
            return Err(self.error(start, ErrorKind::InvalidComment));
        }
        while let Some(b) = self.peek() {
            self.pos += 1;
            if b == b'\n' {
                break;
            }
        }
        Ok(())
    }

    fn identifier(&mut self) -> Result<TokenKind, FilterError> {
        let start = self.pos;
        self.pos += 1;
        while self.peek().is_some_and(is_identifier_part) {
            self.pos += 1;
        }
        let literal = &self.input[start..self.pos];
        let bytes = literal.as_bytes();
        let only_special = bytes.len() == 1 && !bytes[0].is_ascii_alphabetic();
        let ends_with_combine = matches!(bytes[bytes.len() - 1], b'.' | b':');
        if only_special || ends_with_combine {
            return Err(self.error(start, ErrorKind::InvalidIdentifier(literal.into())));
        }
        Ok(TokenKind::Identifier(literal.into()))
    }

    fn number(&mut self) -> Result<TokenKind, FilterError> {
        let start = self.pos;
        let mut had_dot = false;
        while let Some(b) = self.peek() {
            let first = self.pos == start;
            let accept = b.is_ascii_digit() || (b == b'-' && first) || (b == b'.' && !had_dot);
            if !accept {
                break;
            }
            had_dot |= b == b'.';
            self.pos += 1;
        }
        let literal = &self.input[start..self.pos];
        let invalid = literal == "-" || literal.starts_with('.') || literal.ends_with('.');
        match literal.parse::<f64>() {
            Ok(value) if !invalid => Ok(TokenKind::Number(value)),
            _ => Err(self.error(start, ErrorKind::InvalidNumber(literal.into()))),
        }
    }

    fn text(&mut self) -> Result<TokenKind, FilterError> {
        let start = self.pos;
        let quote = self.bytes[start];
        self.pos += 1;
        let mut prev = 0u8;
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error(start, ErrorKind::UnterminatedText));
            };
            self.pos += 1;
            // As fexpr: a quote ends the text unless the byte before it is a
            // backslash, and only `\<quote>` is unescaped; other backslashes stay.
            if b == quote && prev != b'\\' {
                break;
            }
            prev = b;
        }
        let inner = &self.input[start + 1..self.pos - 1];
        let q = quote as char;
        Ok(TokenKind::Text(
            inner.replace(&format!("\\{q}"), &q.to_string()),
        ))
    }

    fn sign(&mut self) -> Result<TokenKind, FilterError> {
        let start = self.pos;
        while self.peek().is_some_and(is_sign) {
            self.pos += 1;
        }
        let literal = &self.input[start..self.pos];
        Op::from_symbol(literal)
            .map(TokenKind::Sign)
            .ok_or_else(|| self.error(start, ErrorKind::InvalidOperator(literal.into())))
    }

    fn join(&mut self) -> Result<TokenKind, FilterError> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b == b'&' || b == b'|') {
            self.pos += 1;
        }
        match &self.input[start..self.pos] {
            "&&" => Ok(TokenKind::And),
            "||" => Ok(TokenKind::Or),
            other => Err(self.error(start, ErrorKind::InvalidJoin(other.into()))),
        }
    }
}
