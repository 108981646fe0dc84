//! Recursive-descent parser over the tokens: `||` binds looser than `&&`, as in
//! PocketBase, which joins fexpr's flat list with SQL `AND`/`OR`.
//!
//! Grammar:
//! ```text
//! expr     := and ( "||" and )*
//! and      := primary ( "&&" primary )*
//! primary  := "(" expr ")" | operand SIGN operand
//! operand  := IDENTIFIER | TEXT | NUMBER
//! ```

use super::ast::{Comparison, Expr, Operand, Value};
use super::error::{ErrorKind, FilterError};
use super::lexer::{Token, TokenKind};

/// The deepest parenthesis nesting accepted; deeper input is refused rather than
/// risking the stack.
pub const MAX_DEPTH: usize = 32;

/// Parses tokens into an expression. `input_len` is where "end of input" errors point.
pub fn parse(tokens: &[Token], input_len: usize) -> Result<Expr, FilterError> {
    if tokens.is_empty() {
        return Err(FilterError::new(0, ErrorKind::Empty));
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        input_len,
    };
    let expr = parser.or(0)?;
    match parser.tokens.get(parser.pos) {
        None => Ok(expr),
        Some(token) if token.kind == TokenKind::Close => {
            Err(FilterError::new(token.start, ErrorKind::UnexpectedClose))
        }
        Some(token) => Err(parser.expected("&& or ||", token)),
    }
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    input_len: usize,
}

fn describe(kind: &TokenKind) -> String {
    match kind {
        TokenKind::Identifier(name) => format!("identifier {name:?}"),
        TokenKind::Number(n) => format!("number {n}"),
        TokenKind::Text(t) => format!("text {t:?}"),
        TokenKind::Sign(op) => format!("operator {:?}", op.symbol()),
        TokenKind::And => "&&".into(),
        TokenKind::Or => "||".into(),
        TokenKind::Open => "(".into(),
        TokenKind::Close => ")".into(),
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn expected(&self, expected: &'static str, token: &Token) -> FilterError {
        FilterError::new(
            token.start,
            ErrorKind::Expected {
                expected,
                found: describe(&token.kind),
            },
        )
    }

    fn end_of_input(&self, expected: &'static str) -> FilterError {
        FilterError::new(
            self.input_len,
            ErrorKind::Expected {
                expected,
                found: "end of input".into(),
            },
        )
    }

    fn or(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut parts = vec![self.and(depth)?];
        while self.peek().is_some_and(|t| t.kind == TokenKind::Or) {
            self.pos += 1;
            parts.push(self.and(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut parts = vec![self.primary(depth)?];
        while self.peek().is_some_and(|t| t.kind == TokenKind::And) {
            self.pos += 1;
            parts.push(self.primary(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let Some(token) = self.peek() else {
            return Err(self.end_of_input("left operand (identifier, text or number)"));
        };
        if token.kind == TokenKind::Open {
            if depth >= MAX_DEPTH {
                return Err(FilterError::new(
                    token.start,
                    ErrorKind::TooDeep { max: MAX_DEPTH },
                ));
            }
            let open = token.start;
            self.pos += 1;
            if self.peek().is_some_and(|t| t.kind == TokenKind::Close) {
                return Err(FilterError::new(open, ErrorKind::Empty));
            }
            let inner = self.or(depth + 1)?;
            return match self.peek() {
                Some(t) if t.kind == TokenKind::Close => {
                    self.pos += 1;
                    Ok(inner)
                }
                Some(t) => Err(self.expected("&&, || or )", t)),
                None => Err(FilterError::new(open, ErrorKind::UnclosedGroup)),
            };
        }
        let left = self.operand("left operand (identifier, text or number)")?;
        let op = match self.peek() {
            Some(Token {
                kind: TokenKind::Sign(op),
                ..
            }) => *op,
            Some(t) => return Err(self.expected("a sign operator", t)),
            None => return Err(self.end_of_input("a sign operator")),
        };
        self.pos += 1;
        let right = self.operand("right operand (identifier, text or number)")?;
        Ok(Expr::Compare(Comparison { left, op, right }))
    }

    fn operand(&mut self, expected: &'static str) -> Result<Operand, FilterError> {
        let Some(token) = self.peek() else {
            return Err(self.end_of_input(expected));
        };
        let value = match &token.kind {
            TokenKind::Identifier(name) => Value::Identifier(name.clone()),
            TokenKind::Text(text) => Value::Text(text.clone()),
            TokenKind::Number(n) => Value::Number(*n),
            _ => return Err(self.expected(expected, token)),
        };
        let operand = Operand {
            value,
            start: token.start,
            end: token.end,
        };
        self.pos += 1;
        Ok(operand)
    }
}
