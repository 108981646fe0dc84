//! The syntax tree of a parsed filter.

/// A boolean expression: comparisons joined by `&&` / `||`.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// True when any part is true (`a || b`).
    Or(Vec<Expr>),
    /// True when every part is true (`a && b`).
    And(Vec<Expr>),
    /// One `left op right` comparison.
    Compare(Comparison),
}

/// `left op right`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub left: Operand,
    pub op: Op,
    pub right: Operand,
}

/// A comparison side with the byte range it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Operand {
    pub value: Value,
    pub start: usize,
    pub end: usize,
}

/// What a comparison side is, as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A field path, `@request.*`, `@collection.*`, a macro, or `true`/`false`/`null`
    /// (which are literals only when no field of that name exists, as in PocketBase).
    Identifier(String),
    /// A quoted text, unescaped.
    Text(String),
    /// A number literal.
    Number(f64),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// The comparison itself.
    pub base: BaseOp,
    /// `?`-prefixed: any item of a multi-valued operand may match, instead of all.
    pub any: bool,
}

/// The comparison an operator performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseOp {
    Eq,
    Neq,
    Like,
    NotLike,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl Op {
    /// The operator written as `symbol`, if it is one.
    pub fn from_symbol(symbol: &str) -> Option<Op> {
        let (any, rest) = match symbol.strip_prefix('?') {
            Some(rest) => (true, rest),
            None => (false, symbol),
        };
        let base = match rest {
            "=" => BaseOp::Eq,
            "!=" => BaseOp::Neq,
            "~" => BaseOp::Like,
            "!~" => BaseOp::NotLike,
            "<" => BaseOp::Lt,
            "<=" => BaseOp::Lte,
            ">" => BaseOp::Gt,
            ">=" => BaseOp::Gte,
            _ => return None,
        };
        Some(Op { base, any })
    }

    /// The operator as written in a filter.
    pub fn symbol(&self) -> String {
        let base = match self.base {
            BaseOp::Eq => "=",
            BaseOp::Neq => "!=",
            BaseOp::Like => "~",
            BaseOp::NotLike => "!~",
            BaseOp::Lt => "<",
            BaseOp::Lte => "<=",
            BaseOp::Gt => ">",
            BaseOp::Gte => ">=",
        };
        if self.any {
            format!("?{base}")
        } else {
            base.to_string()
        }
    }
}

impl Expr {
    /// Every comparison in the expression, left to right.
    pub fn comparisons(&self) -> Vec<&Comparison> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(expr) = stack.pop() {
            match expr {
                Expr::Compare(c) => out.push(c),
                Expr::Or(parts) | Expr::And(parts) => stack.extend(parts.iter().rev()),
            }
        }
        out
    }
}
