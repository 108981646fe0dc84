//! `?fields=a,b.c,*,body:excerpt(200,true)`: which keys of a JSON response to keep,
//! as PocketBase's `tools/picker` does. Unknown names simply match nothing.

use serde_json::{Map, Value};

use super::error::{ErrorKind, FilterError};
use super::MAX_LENGTH;

/// A parsed fields expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    picks: Vec<FieldPick>,
}

/// One picked path, optionally shortened to a plain-text excerpt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPick {
    /// Dot-separated path; `*` keeps every key of its level.
    pub path: String,
    /// `:excerpt(max, withEllipsis)`.
    pub excerpt: Option<Excerpt>,
}

/// The `:excerpt(max, withEllipsis?)` modifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Excerpt {
    pub max: usize,
    pub ellipsis: bool,
}

/// Splits on `sep` outside quotes and parentheses, trimming each part.
fn split_top_level(input: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0usize, None::<char>, 0);
    for (i, c) in input.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth = depth.saturating_sub(1),
            (None, c) if c == sep && depth == 0 => {
                parts.push(input[start..i].trim());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(input[start..].trim());
    parts
}

fn invalid(position: usize, reason: String) -> FilterError {
    FilterError::new(position, ErrorKind::Invalid(reason))
}

impl Fields {
    /// Parses a comma separated list of paths with optional modifiers.
    pub fn parse(input: &str) -> Result<Fields, FilterError> {
        if input.len() > MAX_LENGTH {
            return Err(FilterError::new(0, ErrorKind::TooLong { max: MAX_LENGTH }));
        }
        let mut picks = Vec::new();
        for part in split_top_level(input, ',') {
            if part.is_empty() {
                continue;
            }
            let (path, modifier) = match part.split_once(':') {
                Some((path, modifier)) => (path.trim(), Some(modifier.trim())),
                None => (part, None),
            };
            let excerpt = modifier.map(parse_excerpt).transpose()?;
            picks.push(FieldPick {
                path: path.to_string(),
                excerpt,
            });
        }
        Ok(Fields { picks })
    }

    /// The picked paths in order.
    pub fn picks(&self) -> &[FieldPick] {
        &self.picks
    }

    /// Keeps only the picked keys of `value` (a record or a list of records; for
    /// a list response pass its `items`).
    pub fn apply(&self, value: &mut Value) {
        let picks: Vec<(String, Option<Excerpt>)> = self
            .picks
            .iter()
            .map(|p| (p.path.clone(), p.excerpt))
            .collect();
        pick_value(value, &picks);
    }
}

fn parse_excerpt(modifier: &str) -> Result<Excerpt, FilterError> {
    let tokens: Vec<&str> = modifier
        .split(['(', ')', ',', ' '])
        .filter(|t| !t.is_empty())
        .collect();
    match tokens.split_first() {
        Some((&"excerpt", args)) => {
            if args.is_empty() {
                return Err(invalid(
                    0,
                    "max argument is required - expected (max, withEllipsis?)".into(),
                ));
            }
            if args.len() > 2 {
                return Err(invalid(
                    0,
                    "too many arguments - expected (max, withEllipsis?)".into(),
                ));
            }
            let max = args[0].parse::<usize>().unwrap_or(0);
            if max == 0 {
                return Err(invalid(0, "max argument must be > 0".into()));
            }
            let ellipsis = args
                .get(1)
                .is_some_and(|a| matches!(*a, "1" | "t" | "T" | "true" | "TRUE" | "True"));
            Ok(Excerpt { max, ellipsis })
        }
        Some((name, _)) => Err(invalid(0, format!("missing or invalid modifier {name:?}"))),
        None => Err(invalid(
            0,
            format!("invalid or empty modifier expression {modifier:?}"),
        )),
    }
}

fn pick_value(value: &mut Value, picks: &[(String, Option<Excerpt>)]) {
    match value {
        Value::Object(map) => pick_map(map, picks),
        Value::Array(items) => {
            for item in items {
                if let Value::Object(map) = item {
                    pick_map(map, picks);
                }
            }
        }
        _ => {}
    }
}

fn pick_map(map: &mut Map<String, Value>, picks: &[(String, Option<Excerpt>)]) {
    if picks.is_empty() {
        return;
    }
    let matches = |field: &str, key: &str| format!("{field}.").starts_with(&format!("{key}."));
    let mut picks = picks.to_vec();
    if let Some(star) = picks.iter().find(|(f, _)| f == "*").map(|(_, m)| *m) {
        for key in map.keys() {
            if !picks.iter().any(|(f, _)| matches(f, key)) {
                picks.push((key.clone(), star));
            }
        }
    }
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let matching: Vec<&(String, Option<Excerpt>)> =
            picks.iter().filter(|(f, _)| matches(f, &key)).collect();
        if matching.is_empty() {
            map.remove(&key);
            continue;
        }
        let mut nested = Vec::new();
        let mut whole = None;
        for (field, modifier) in matching {
            let rest = format!("{field}.")
                .strip_prefix(&format!("{key}."))
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_string();
            if rest.is_empty() {
                whole = Some(*modifier);
                break;
            }
            nested.push((rest, *modifier));
        }
        let Some(value) = map.get_mut(&key) else {
            continue;
        };
        match whole {
            Some(Some(excerpt)) => {
                if let Value::String(text) = value {
                    *text = excerpt_text(text, excerpt);
                }
            }
            Some(None) => {}
            None => pick_value(value, &nested),
        }
    }
}

const EXCLUDED_TAGS: [&str; 18] = [
    "head", "style", "script", "iframe", "embed", "applet", "object", "svg", "img", "picture",
    "dialog", "template", "button", "form", "textarea", "input", "select", "option",
];

const INLINE_TAGS: [&str; 21] = [
    "a", "abbr", "acronym", "b", "bdo", "big", "br", "button", "cite", "code", "em", "i", "label",
    "q", "small", "span", "strong", "strike", "sub", "sup", "time",
];

/// Plain text of an HTML fragment, whitespace collapsed, cut to `max` bytes (on a
/// character boundary) with an optional `...`.
pub fn excerpt_text(html: &str, excerpt: Excerpt) -> String {
    let mut out = String::new();
    let mut prev_space = false;
    let mut rest = html;
    let push_space = |out: &mut String, prev_space: &mut bool| {
        if !*prev_space {
            out.push(' ');
            *prev_space = true;
        }
    };
    while !rest.is_empty() && out.len() <= excerpt.max + 2 {
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        if rest.starts_with('<') {
            let end = rest.find('>').map_or(rest.len(), |e| e + 1);
            let tag = &rest[1..end.saturating_sub(1).max(1)];
            rest = &rest[end..];
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            if !closing && EXCLUDED_TAGS.contains(&name.as_str()) && !tag.ends_with('/') {
                let close = format!("</{name}");
                let lower = rest.to_ascii_lowercase();
                rest = match lower.find(&close) {
                    Some(at) => {
                        let after = &rest[at..];
                        after.find('>').map_or("", |e| &after[e + 1..])
                    }
                    None => "",
                };
                continue;
            }
            if !INLINE_TAGS.contains(&name.as_str()) {
                push_space(&mut out, &mut prev_space);
            }
            continue;
        }
        let end = rest.find('<').unwrap_or(rest.len());
        let text = decode_entities(&rest[..end]);
        rest = &rest[end..];
        for c in text.chars() {
            if c.is_ascii_whitespace() {
                push_space(&mut out, &mut prev_space);
            } else {
                out.push(c);
                prev_space = false;
            }
        }
    }
    let mut result = out.trim().to_string();
    if result.len() > excerpt.max {
        let mut cut = excerpt.max;
        while !result.is_char_boundary(cut) {
            cut -= 1;
        }
        result = result[..cut].trim().to_string();
        if excerpt.ellipsis {
            result.push_str("...");
        }
    }
    result
}

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest.find(';').filter(|end| *end <= 10).and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
