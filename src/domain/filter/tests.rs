//! Syntax, errors, sort and fields without a database; arbitrary input never panics.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn ident(name: &str) -> Value {
    Value::Identifier(name.into())
}

/// `left op right` of a comparison, ignoring positions.
fn cmp(expr: &Expr) -> (Value, String, Value) {
    match expr {
        Expr::Compare(c) => (c.left.value.clone(), c.op.symbol(), c.right.value.clone()),
        other => panic!("not a comparison: {other:?}"),
    }
}

/// The expression without positions: `((a = 1) || (b = 2))`.
fn show(expr: &Expr) -> String {
    let join = |parts: &[Expr], sep: &str| {
        let parts: Vec<String> = parts.iter().map(show).collect();
        format!("({})", parts.join(sep))
    };
    match expr {
        Expr::Or(parts) => join(parts, " || "),
        Expr::And(parts) => join(parts, " && "),
        Expr::Compare(c) => format!("({:?} {} {:?})", c.left.value, c.op.symbol(), c.right.value),
    }
}

fn same(a: &str, b: &str) {
    assert_eq!(show(&parse(a)), show(&parse(b)), "{a:?} vs {b:?}");
}

fn parse(input: &str) -> Expr {
    Filter::parse(input)
        .unwrap_or_else(|e| panic!("{input:?}: {e}"))
        .expr()
        .clone()
}

fn error(input: &str) -> FilterError {
    Filter::parse(input).expect_err(input)
}

#[test]
fn every_operator() {
    for op in [
        "=", "!=", ">", ">=", "<", "<=", "~", "!~", "?=", "?!=", "?>", "?>=", "?<", "?<=", "?~",
        "?!~",
    ] {
        let (left, symbol, right) = cmp(&parse(&format!("a {op} 1")));
        assert_eq!(
            (left, symbol.as_str(), right),
            (ident("a"), op, Value::Number(1.0))
        );
        let (_, tight, _) = cmp(&parse(&format!("a{op}'x'")));
        assert_eq!(tight, op);
    }
}

#[test]
fn or_binds_looser_than_and() {
    let expr = parse("a = 1 || b = 2 && c = 3");
    let Expr::Or(parts) = expr else {
        panic!("{expr:?}")
    };
    assert_eq!(cmp(&parts[0]).0, ident("a"));
    let Expr::And(inner) = &parts[1] else {
        panic!("{parts:?}")
    };
    assert_eq!(cmp(&inner[0]).0, ident("b"));
    assert_eq!(cmp(&inner[1]).0, ident("c"));
}

#[test]
fn parentheses_group() {
    let expr = parse("(a = 1 || b = 2) && c = 3");
    let Expr::And(parts) = expr else {
        panic!("{expr:?}")
    };
    assert!(matches!(parts[0], Expr::Or(_)));
    assert_eq!(cmp(&parts[1]).0, ident("c"));
    same("((a = 1))", "a = 1");
    assert!(matches!(parse("a = 1 && b = 2 && c = 3"), Expr::And(p) if p.len() == 3));
}

#[test]
fn comments_and_whitespace() {
    same("a = 1 // trailing", "a = 1");
    same("a = // between\n1", "a = 1");
    same("\ta\n=\n1  ", "a = 1");
    same("a = 1 &&\n// b = 2\nc = 3", "a = 1 && c = 3");
    assert_eq!(parse("a = '//not a comment'").clone(), {
        Expr::Compare(Comparison {
            left: Operand {
                value: ident("a"),
                start: 0,
                end: 1,
            },
            op: Op::from_symbol("=").unwrap(),
            right: Operand {
                value: Value::Text("//not a comment".into()),
                start: 4,
                end: 21,
            },
        })
    });
}

#[test]
fn literals_and_escapes_follow_fexpr() {
    let text = |input: &str| cmp(&parse(&format!("a = {input}"))).2;
    assert_eq!(text(r"'te\'st'"), Value::Text("te'st".into()));
    assert_eq!(text(r#""te\"st""#), Value::Text("te\"st".into()));
    // only the enclosing quote is escapable; other backslashes stay
    assert_eq!(text(r#""te\'st""#), Value::Text(r"te\'st".into()));
    assert_eq!(text(r"'a\\b'"), Value::Text(r"a\\b".into()));
    assert_eq!(
        text(r#"'mixed "quotes"'"#),
        Value::Text("mixed \"quotes\"".into())
    );
    assert_eq!(text("''"), Value::Text(String::new()));
    assert_eq!(text("'АБЦ ✓'"), Value::Text("АБЦ ✓".into()));
    assert_eq!(text("-14"), Value::Number(-14.0));
    assert_eq!(text("10.50"), Value::Number(10.5));
    assert_eq!(text("true"), ident("true"));
    assert_eq!(text("null"), ident("null"));
    for id in [
        "@request.auth.id",
        "a.b:lower",
        "_x",
        "#x1",
        "@collection.c:alias.f",
    ] {
        assert_eq!(text(id), ident(id));
    }
}

#[test]
fn every_error_with_its_position() {
    let cases: Vec<(&str, usize, ErrorKind)> = vec![
        ("", 0, ErrorKind::Empty),
        ("  // only a comment", 0, ErrorKind::Empty),
        ("a = 1 $", 6, ErrorKind::UnexpectedChar('$')),
        ("a = `x`", 4, ErrorKind::UnexpectedChar('`')),
        ("a = 1.", 4, ErrorKind::InvalidNumber("1.".into())),
        ("a = -", 4, ErrorKind::InvalidNumber("-".into())),
        ("a = - 1", 4, ErrorKind::InvalidNumber("-".into())),
        ("a = .5", 4, ErrorKind::UnexpectedChar('.')),
        ("a = 'x", 4, ErrorKind::UnterminatedText),
        (r"a = 'x\'", 4, ErrorKind::UnterminatedText),
        ("a. = 1", 0, ErrorKind::InvalidIdentifier("a.".into())),
        ("a: = 1", 0, ErrorKind::InvalidIdentifier("a:".into())),
        ("@ = 1", 0, ErrorKind::InvalidIdentifier("@".into())),
        ("a =! 1", 2, ErrorKind::InvalidOperator("=!".into())),
        ("a == 1", 2, ErrorKind::InvalidOperator("==".into())),
        ("a ! 1", 2, ErrorKind::InvalidOperator("!".into())),
        ("a = 1 & b = 2", 6, ErrorKind::InvalidJoin("&".into())),
        ("a = 1 &&|| b = 2", 6, ErrorKind::InvalidJoin("&&||".into())),
        ("a = 1 / b", 6, ErrorKind::InvalidComment),
        ("(a = 1", 0, ErrorKind::UnclosedGroup),
        ("a = 1)", 5, ErrorKind::UnexpectedClose),
        ("()", 0, ErrorKind::Empty),
    ];
    for (input, position, kind) in cases {
        assert_eq!(error(input), FilterError::new(position, kind), "{input:?}");
    }
    let expected = |input: &str, position: usize, what: &str| {
        let err = error(input);
        assert_eq!(err.position, position, "{input:?}: {err}");
        assert!(
            matches!(&err.kind, ErrorKind::Expected { expected, .. } if expected.contains(what)),
            "{input:?}: {err}"
        );
    };
    expected("> 1", 0, "left operand");
    expected("a >", 3, "right operand");
    expected("a > >", 4, "right operand");
    expected("a 1", 2, "sign operator");
    expected("a = 1 b = 2", 6, "&& or ||");
    expected("a = 1 &&", 8, "left operand");
    expected("|| a = 1", 0, "left operand");
    expected("a = (b = 1)", 4, "right operand");
    expected("(a = 1 b)", 7, "&&, || or )");
}

#[test]
fn positions_count_characters() {
    let err = error("title = 'éé' && x $");
    assert_eq!(err.position, 18);
    assert_eq!(err.kind, ErrorKind::UnexpectedChar('$'));
    assert!(err.to_string().contains("at character 18"), "{err}");
}

#[test]
fn limits_refuse_pathological_input() {
    let deep = format!("{}a = 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(Filter::parse(&deep).is_ok());
    let too_deep = format!(
        "{}a = 1{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert_eq!(error(&too_deep).kind, ErrorKind::TooDeep { max: MAX_DEPTH });
    // no stack overflow however deep the input tries to go
    let hostile = "(".repeat(MAX_LENGTH);
    assert_eq!(error(&hostile).kind, ErrorKind::TooDeep { max: MAX_DEPTH });
    let long = format!("a = '{}'", "x".repeat(MAX_LENGTH));
    assert_eq!(error(&long).kind, ErrorKind::TooLong { max: MAX_LENGTH });
}

#[test]
fn superuser_only_identifiers() {
    let f = Filter::parse("title = '@request.x' && @request.auth.id != ''").unwrap();
    assert_eq!(f.superuser_only_identifier(), Some("@request.auth.id"));
    let f = Filter::parse("@collection.posts.id ?= id").unwrap();
    assert_eq!(f.superuser_only_identifier(), Some("@collection.posts.id"));
    let f = Filter::parse("title = '@request.x' && @now > created").unwrap();
    assert_eq!(f.superuser_only_identifier(), None);
}

#[test]
fn sort_parsing() {
    let sort = Sort::parse("-created, +title,author.name,@random").unwrap();
    let fields: Vec<(&str, bool)> = sort
        .fields()
        .iter()
        .map(|f| (f.name.as_str(), f.descending))
        .collect();
    assert_eq!(
        fields,
        [
            ("created", true),
            ("title", false),
            ("author.name", false),
            ("@random", false)
        ]
    );
    assert_eq!(
        Sort::parse("-@request.auth.id")
            .unwrap()
            .superuser_only_identifier(),
        Some("@request.auth.id")
    );
    for bad in ["", "a,,b", "-", "a b", "a;b", "a.", "'a'", "a)"] {
        assert!(Sort::parse(bad).is_err(), "{bad:?}");
    }
    let err = Sort::parse("a, -b c").unwrap_err();
    assert_eq!(err.position, 4);
}

#[test]
fn fields_pick_like_pocketbase() {
    let fields = Fields::parse("id, expand.author.name, title:excerpt(5,true)").unwrap();
    let mut record = json!({
        "id": "p1", "title": "<p>Hello <b>big</b> world</p>", "views": 3,
        "expand": {"author": {"id": "u1", "name": "Alice"}, "tags": []}
    });
    fields.apply(&mut record);
    assert_eq!(
        record,
        json!({"id": "p1", "title": "Hello...", "expand": {"author": {"name": "Alice"}}})
    );
    let mut list = json!([{"a": 1, "b": {"c": 2, "d": 3}}, {"a": 4, "e": 5}]);
    Fields::parse("*,b.c").unwrap().apply(&mut list);
    assert_eq!(list, json!([{"a": 1, "b": {"c": 2}}, {"a": 4, "e": 5}]));
    let mut record = json!({"a": "<script>x()</script><div>one</div><div>two &amp; three</div>"});
    Fields::parse("a:excerpt(100)").unwrap().apply(&mut record);
    assert_eq!(record, json!({"a": "one two & three"}));
    for bad in ["a:excerpt", "a:excerpt(0)", "a:excerpt(1,2,3)", "a:nope(1)"] {
        assert!(Fields::parse(bad).is_err(), "{bad:?}");
    }
    let excerpt = Excerpt {
        max: 3,
        ellipsis: false,
    };
    assert_eq!(excerpt_text("ééé", excerpt), "é");
}

struct OnlyPosts(Arc<CollectionSchema>);

impl SchemaLookup for OnlyPosts {
    fn collection(&self, name_or_id: &str) -> Option<Arc<CollectionSchema>> {
        (name_or_id == self.0.name || name_or_id == self.0.id).then(|| self.0.clone())
    }
}

fn posts() -> OnlyPosts {
    OnlyPosts(Arc::new(CollectionSchema {
        id: "pbc_posts".into(),
        name: "posts".into(),
        auth: false,
        list_rule: Some(String::new()),
        fields: vec![
            FieldSchema::new("id", FieldKind::Text),
            FieldSchema::new("title", FieldKind::Text),
            FieldSchema::new("n", FieldKind::Number),
            FieldSchema::new("tags", FieldKind::Select).multiple(),
            FieldSchema::relation("parent", "pbc_posts"),
            FieldSchema::new("data", FieldKind::Json),
            FieldSchema::new("secret", FieldKind::Text).hidden(),
        ],
    }))
}

#[test]
fn compile_errors_point_at_the_operand() {
    let registry = posts();
    let request = RequestContext::guest(chrono::Utc::now());
    let compiler = Compiler::new(&registry, &registry.0, &request, Dialect::Sqlite);
    let compile = |input: &str| compiler.filter(&Filter::parse(input).unwrap());
    let cases = [
        (
            "title = 1 && nope = 2",
            13,
            ErrorKind::UnknownField("nope".into()),
        ),
        ("title.x = 1", 0, ErrorKind::NotARelation("title".into())),
        ("secret = 1", 0, ErrorKind::HiddenField("secret".into())),
        (
            "parent.secret = 1",
            0,
            ErrorKind::HiddenField("secret".into()),
        ),
        (
            "title:length = 1",
            0,
            ErrorKind::InvalidModifier("title:length".into()),
        ),
        (
            "title:what = 1",
            0,
            ErrorKind::InvalidModifier("title:what".into()),
        ),
        (
            "@collection.nope.id = 1",
            0,
            ErrorKind::UnknownCollection("nope".into()),
        ),
        (
            "@request.nope = 1",
            0,
            ErrorKind::UnknownField("@request.nope".into()),
        ),
        (
            "@request.auth = 1",
            0,
            ErrorKind::UnknownField("@request.auth".into()),
        ),
        ("#x = 1", 0, ErrorKind::UnknownField("#x".into())),
        (
            "parent.parent.parent.parent.parent.parent.parent.id = 1",
            0,
            ErrorKind::TooManyRelations {
                max: MAX_NESTED_RELATIONS,
            },
        ),
    ];
    for (input, position, kind) in cases {
        assert_eq!(
            compile(input).unwrap_err(),
            FilterError::new(position, kind),
            "{input:?}"
        );
    }
    assert!(compile("parent.parent.parent.parent.parent.parent.id = 1").is_ok());
    let superuser = RequestContext {
        superuser: true,
        ..request.clone()
    };
    let as_superuser = Compiler::new(&registry, &registry.0, &superuser, Dialect::Sqlite);
    assert!(as_superuser
        .filter(&Filter::parse("secret = 1").unwrap())
        .is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_input_never_panics(input in "\\PC{0,200}") {
        let _ = Filter::parse(&input);
        let _ = Sort::parse(&input);
        let _ = Fields::parse(&input);
    }

    #[test]
    fn filter_like_input_compiles_or_errors_without_panicking(
        input in proptest::string::string_regex(
            "([(]{0,2}(title|n|tags:each|tags:length|parent\\.title|parent\\.parent\\.n|data\\.a\\.0|@request\\.auth\\.id|@request\\.body\\.n:isset|@request\\.body\\.tags:each|@collection\\.posts\\.n|posts_via_parent\\.n|@now|@year|true|null|'x%_\\\\'|\"q\\\\\"\"|-?[0-9]{1,3}(\\.[0-9])?|[a-z@#_.:]{1,8}) ?(\\?)?(=|!=|~|!~|<|<=|>|>=) ?(title|n|tags:each|parent\\.n|'y'|[0-9]|@request\\.query\\.q|false)[)]{0,2} ?(&&|\\|\\|)? ?){1,4}"
        ).unwrap()
    ) {
        let registry = posts();
        let request = RequestContext::guest(chrono::Utc::now());
        if let Ok(filter) = Filter::parse(&input) {
            for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                let compiler = Compiler::new(&registry, &registry.0, &request, dialect);
                if let Ok(condition) = compiler.filter(&filter) {
                    use sea_orm::sea_query::{Alias, PostgresQueryBuilder, Query, SqliteQueryBuilder};
                    let select = Query::select()
                        .column(Alias::new("id"))
                        .from(Alias::new("posts"))
                        .and_where(condition)
                        .to_owned();
                    let (sql, _) = match dialect {
                        Dialect::Sqlite => select.build(SqliteQueryBuilder),
                        Dialect::Postgres => select.build(PostgresQueryBuilder),
                    };
                    // values are never spliced into the SQL text
                    prop_assert!(!sql.contains("'x%"), "{}", sql);
                    prop_assert!(!sql.contains("'y'"), "{}", sql);
                }
            }
        }
    }
}
