//! The tables behind collections: DDL for creating, changing and dropping them, the
//! same on SQLite and PostgreSQL, built with sea-query from checked definitions.

use sea_orm::sea_query::{
    Alias, ColumnDef, ConditionalStatement, Expr, Index, IndexCreateStatement, IndexDropStatement,
    Table, TableAlterStatement, TableCreateStatement, TableDropStatement, TableRenameStatement,
};

use super::{Collection, Field, Storage};

/// The column a field is stored in (see the storage contract in `domain::filter`).
pub fn column_def(field: &Field) -> ColumnDef {
    let mut column = ColumnDef::new(Alias::new(&field.name));
    if field.name == "id" {
        column.text().not_null().primary_key();
        return column;
    }
    match field.kind.storage() {
        Storage::Text => column.text().not_null().default(""),
        Storage::Number => column.double().not_null().default(0.0),
        Storage::Bool => column.boolean().not_null().default(false),
        Storage::Json => column.json_binary().null(),
        Storage::StringArray => column.json_binary().not_null().default("[]"),
    };
    column
}

pub fn create_table(collection: &Collection) -> TableCreateStatement {
    let mut table = Table::create();
    table.table(Alias::new(&collection.name));
    for field in &collection.fields {
        table.col(column_def(field));
    }
    table.to_owned()
}

pub fn drop_table(name: &str) -> TableDropStatement {
    Table::drop().table(Alias::new(name)).to_owned()
}

pub fn rename_table(from: &str, to: &str) -> TableRenameStatement {
    Table::rename()
        .table(Alias::new(from), Alias::new(to))
        .to_owned()
}

pub fn add_column(table: &str, field: &Field) -> TableAlterStatement {
    Table::alter()
        .table(Alias::new(table))
        .add_column(column_def(field))
        .to_owned()
}

pub fn drop_column(table: &str, column: &str) -> TableAlterStatement {
    Table::alter()
        .table(Alias::new(table))
        .drop_column(Alias::new(column))
        .to_owned()
}

pub fn rename_column(table: &str, from: &str, to: &str) -> TableAlterStatement {
    Table::alter()
        .table(Alias::new(table))
        .rename_column(Alias::new(from), Alias::new(to))
        .to_owned()
}

/// An index of a collection: `CREATE [UNIQUE] INDEX name ON table (columns…)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: String,
    pub unique: bool,
    pub columns: Vec<String>,
    /// `WHERE <column> != ''`: the index holds only rows where that column is set
    /// (so an optional unique field may be empty on many rows).
    pub where_not_empty: Option<String>,
}

impl IndexSpec {
    /// Reads the PocketBase-style definition kept in a collection's `indexes`. Only
    /// plain column lists are accepted; the SQL run is always regenerated from the
    /// parts, never taken from the text.
    pub fn parse(sql: &str) -> Result<Self, String> {
        let tokens = tokenize(sql)?;
        let mut at = 0;
        let expect = |word: &str, at: &mut usize| -> Result<(), String> {
            match tokens.get(*at) {
                Some(Token::Word(w)) if w.eq_ignore_ascii_case(word) => {
                    *at += 1;
                    Ok(())
                }
                _ => Err(format!("expected {word}")),
            }
        };
        expect("CREATE", &mut at)?;
        let unique =
            matches!(tokens.get(at), Some(Token::Word(w)) if w.eq_ignore_ascii_case("UNIQUE"));
        if unique {
            at += 1;
        }
        expect("INDEX", &mut at)?;
        if matches!(tokens.get(at), Some(Token::Word(w)) if w.eq_ignore_ascii_case("IF")) {
            expect("IF", &mut at)?;
            expect("NOT", &mut at)?;
            expect("EXISTS", &mut at)?;
        }
        let name = identifier(tokens.get(at)).ok_or("expected an index name")?;
        at += 1;
        expect("ON", &mut at)?;
        identifier(tokens.get(at)).ok_or("expected a table name")?;
        at += 1;
        if tokens.get(at) != Some(&Token::Open) {
            return Err("expected a column list in parentheses".into());
        }
        at += 1;
        let mut columns = Vec::new();
        loop {
            let column = identifier(tokens.get(at)).ok_or("expected a column name")?;
            columns.push(column);
            at += 1;
            match tokens.get(at) {
                Some(Token::Comma) => at += 1,
                Some(Token::Close) => {
                    at += 1;
                    break;
                }
                _ => return Err("expected , or ) in the column list".into()),
            }
        }
        let mut where_not_empty = None;
        if matches!(tokens.get(at), Some(Token::Word(w)) if w.eq_ignore_ascii_case("WHERE")) {
            let column = identifier(tokens.get(at + 1)).ok_or("expected a column after WHERE")?;
            let condition = (tokens.get(at + 2), tokens.get(at + 3));
            if !matches!(condition, (Some(Token::NotEqual), Some(Token::Text(text))) if text.is_empty())
            {
                return Err("the only WHERE supported is `<column> != ''`".into());
            }
            where_not_empty = Some(column);
            at += 4;
        }
        if at != tokens.len() {
            return Err("only plain column indexes are supported (no expressions)".into());
        }
        if !is_identifier(&name) {
            return Err(format!("invalid index name {name:?}"));
        }
        Ok(Self {
            name,
            unique,
            columns,
            where_not_empty,
        })
    }

    /// The definition as PocketBase writes it.
    pub fn to_sql(&self, table: &str) -> String {
        let columns: Vec<String> = self.columns.iter().map(|c| format!("`{c}`")).collect();
        let condition = self
            .where_not_empty
            .as_ref()
            .map(|column| format!(" WHERE `{column}` != ''"))
            .unwrap_or_default();
        format!(
            "CREATE {}INDEX `{}` ON `{table}` ({}){condition}",
            if self.unique { "UNIQUE " } else { "" },
            self.name,
            columns.join(", ")
        )
    }

    pub fn create(&self, table: &str) -> IndexCreateStatement {
        let mut index = Index::create();
        index.name(&self.name).table(Alias::new(table));
        for column in &self.columns {
            index.col(Alias::new(column));
        }
        if self.unique {
            index.unique();
        }
        if let Some(column) = &self.where_not_empty {
            index.and_where(Expr::col(Alias::new(column)).ne(""));
        }
        index.to_owned()
    }

    pub fn drop(&self, table: &str) -> IndexDropStatement {
        Index::drop()
            .name(&self.name)
            .table(Alias::new(table))
            .to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Text(String),
    NotEqual,
    Open,
    Close,
    Comma,
}

fn tokenize(sql: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Comma,
                });
            }
            '!' | '<' => {
                chars.next();
                let next = chars.next();
                if (c == '!' && next == Some('=')) || (c == '<' && next == Some('>')) {
                    tokens.push(Token::NotEqual);
                } else {
                    return Err(format!("unexpected {c:?}"));
                }
            }
            '\'' => {
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => text.push(ch),
                        None => return Err("unterminated text".into()),
                    }
                }
                tokens.push(Token::Text(text));
            }
            '`' | '"' | '[' => {
                chars.next();
                let close = if c == '[' { ']' } else { c };
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some(ch) if ch == close => break,
                        Some(ch) => text.push(ch),
                        None => return Err("unterminated quoted name".into()),
                    }
                }
                tokens.push(Token::Quoted(text));
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut word = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_ascii_alphanumeric() || ch == '_' {
                        word.push(ch);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Word(word));
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    Ok(tokens)
}

fn identifier(token: Option<&Token>) -> Option<String> {
    match token {
        Some(Token::Word(w)) | Some(Token::Quoted(w)) => Some(w.clone()),
        _ => None,
    }
}

/// Names of collections, fields and indexes: a letter or `_`, then letters, digits, `_`.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 255
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pocketbase_index_definitions_are_parsed() {
        let spec = IndexSpec::parse("CREATE UNIQUE INDEX `idx_slug` ON `posts` (`slug`)").unwrap();
        assert_eq!(
            spec,
            IndexSpec {
                name: "idx_slug".into(),
                unique: true,
                columns: vec!["slug".into()],
                where_not_empty: None,
            }
        );
        let partial = IndexSpec::parse(
            "CREATE UNIQUE INDEX \"idx_email\" ON \"users\" (\"email\") WHERE \"email\" != ''",
        )
        .unwrap();
        assert_eq!(partial.where_not_empty.as_deref(), Some("email"));
        assert_eq!(
            partial.to_sql("users"),
            "CREATE UNIQUE INDEX `idx_email` ON `users` (`email`) WHERE `email` != ''"
        );
        let multi =
            IndexSpec::parse("create index if not exists \"idx_ab\" on posts (a, [b])").unwrap();
        assert!(!multi.unique);
        assert_eq!(multi.columns, vec!["a", "b"]);
        assert_eq!(
            multi.to_sql("posts"),
            "CREATE INDEX `idx_ab` ON `posts` (`a`, `b`)"
        );
    }

    #[test]
    fn anything_but_plain_column_indexes_is_refused() {
        for bad in [
            "CREATE INDEX idx ON posts (a) WHERE a > 1",
            "CREATE INDEX idx ON posts (a) WHERE a != 'x'",
            "CREATE INDEX idx ON posts (lower(a))",
            "CREATE INDEX idx ON posts (a); DROP TABLE posts",
            "DROP INDEX idx",
            "CREATE INDEX `idx` ON posts (`a` COLLATE NOCASE)",
            "CREATE INDEX `i-x` ON posts (a)",
        ] {
            assert!(IndexSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identifiers_are_plain() {
        assert!(is_identifier("posts_2024"));
        assert!(is_identifier("_superusers"));
        assert!(!is_identifier("2posts"));
        assert!(!is_identifier("po-sts"));
        assert!(!is_identifier("posts\"; --"));
        assert!(!is_identifier(""));
    }
}
