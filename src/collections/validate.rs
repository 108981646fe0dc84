//! Checks and normalises submitted field values, with PocketBase's validation codes.

use serde_json::Value;

use super::record::zero_value;
use super::{Field, FieldKind};
use crate::domain::email::Email;

/// Why one field's value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn required() -> Self {
        Self::new("validation_required", "Cannot be blank.")
    }
}

/// The value to store for `field` given what was submitted (`Value::Null` when the
/// key was sent empty), or why it is invalid. Zero values count as missing for
/// required fields (a required bool must be true, a required number non-zero).
pub fn normalise(field: &Field, submitted: &Value) -> Result<Value, FieldError> {
    let value = if submitted.is_null() {
        zero_value(field)
    } else {
        convert(field, submitted)?
    };
    if field.required && is_zero(&value) {
        return Err(FieldError::required());
    }
    Ok(value)
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(items) => items.is_empty(),
        Value::Object(_) => false,
    }
}

fn convert(field: &Field, value: &Value) -> Result<Value, FieldError> {
    match &field.kind {
        FieldKind::Text {
            min, max, pattern, ..
        } => {
            let text = as_text(value)?;
            check_length(&text, *min, if *max == 0 { 5000 } else { *max })?;
            check_pattern(&text, pattern)?;
            Ok(Value::String(text))
        }
        FieldKind::Password { .. } => Err(FieldError::new(
            "validation_invalid_value",
            "Passwords are set through the password and passwordConfirm fields.",
        )),
        FieldKind::Editor { max_size } => {
            let text = as_text(value)?;
            let limit = if *max_size == 0 {
                5 * 1024 * 1024
            } else {
                *max_size
            };
            if text.len() as u64 > limit {
                return Err(FieldError::new(
                    "validation_content_size_limit",
                    format!("The maximum allowed content size is {limit} bytes."),
                ));
            }
            Ok(Value::String(text))
        }
        FieldKind::Number { min, max, only_int } => {
            let number = as_number(value)?;
            if *only_int && number.fract() != 0.0 {
                return Err(FieldError::new(
                    "validation_only_int_constraint",
                    "Decimal numbers are not allowed.",
                ));
            }
            if let Some(min) = min.filter(|min| number < *min) {
                return Err(FieldError::new(
                    "validation_min_number_constraint",
                    format!("Must be larger than {min}."),
                ));
            }
            if let Some(max) = max.filter(|max| number > *max) {
                return Err(FieldError::new(
                    "validation_max_number_constraint",
                    format!("Must be less than {max}."),
                ));
            }
            Ok(super::record::number(number))
        }
        FieldKind::Bool {} => match value {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::String(s) if s == "true" || s == "1" => Ok(Value::Bool(true)),
            Value::String(s) if s == "false" || s == "0" || s.is_empty() => Ok(Value::Bool(false)),
            Value::Number(n) if n.as_f64() == Some(1.0) => Ok(Value::Bool(true)),
            Value::Number(n) if n.as_f64() == Some(0.0) => Ok(Value::Bool(false)),
            _ => Err(FieldError::new(
                "validation_invalid_bool",
                "Must be a boolean.",
            )),
        },
        FieldKind::Email {
            only_domains,
            except_domains,
        } => {
            let text = as_text(value)?;
            if text.is_empty() {
                return Ok(Value::String(text));
            }
            let email = Email::parse(&text).ok_or_else(|| {
                FieldError::new("validation_is_email", "Must be a valid email address.")
            })?;
            check_domain(email.domain(), only_domains, except_domains)?;
            Ok(Value::String(email.as_str().to_string()))
        }
        FieldKind::Url {
            only_domains,
            except_domains,
        } => {
            let text = as_text(value)?;
            if text.is_empty() {
                return Ok(Value::String(text));
            }
            let url = url::Url::parse(&text)
                .ok()
                .filter(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
                .ok_or_else(|| FieldError::new("validation_is_url", "Must be a valid url."))?;
            check_domain(url.host_str().unwrap_or(""), only_domains, except_domains)?;
            Ok(Value::String(text))
        }
        FieldKind::Date { min, max } => {
            let text = as_text(value)?;
            if text.is_empty() {
                return Ok(Value::String(text));
            }
            let date = parse_date(&text).ok_or_else(|| {
                FieldError::new("validation_invalid_date", "Must be a valid date.")
            })?;
            if !min.is_empty() && date.as_str() < min.as_str() {
                return Err(FieldError::new(
                    "validation_min_date_constraint",
                    format!("Must be no earlier than {min}."),
                ));
            }
            if !max.is_empty() && date.as_str() > max.as_str() {
                return Err(FieldError::new(
                    "validation_max_date_constraint",
                    format!("Must be no later than {max}."),
                ));
            }
            Ok(Value::String(date))
        }
        FieldKind::Autodate { .. } => Ok(zero_value(field)),
        FieldKind::Select { values, max_select } => {
            let chosen = as_string_list(value)?;
            if let Some(bad) = chosen.iter().find(|v| !values.contains(v)) {
                return Err(FieldError::new(
                    "validation_invalid_value",
                    format!("Invalid value {bad}."),
                ));
            }
            list_value(field, chosen, *max_select)
        }
        FieldKind::Relation { max_select, .. } => {
            let ids = as_string_list(value)?;
            if let Some(bad) = ids.iter().find(|id| !is_record_id(id)) {
                return Err(FieldError::new(
                    "validation_invalid_value",
                    format!("Invalid record id {bad}."),
                ));
            }
            list_value(field, ids, *max_select)
        }
        FieldKind::Json { max_size } => {
            let limit = if *max_size == 0 {
                1024 * 1024
            } else {
                *max_size
            };
            if value.to_string().len() as u64 > limit {
                return Err(FieldError::new(
                    "validation_json_size_limit",
                    format!("The maximum allowed JSON size is {limit} bytes."),
                ));
            }
            Ok(value.clone())
        }
    }
}

/// A record id as PocketBase makes them: 15 characters of `[a-z0-9]`.
pub fn is_record_id(id: &str) -> bool {
    id.len() == 15
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn as_text(value: &Value) -> Result<String, FieldError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(FieldError::new(
            "validation_invalid_value",
            "Must be a string.",
        )),
    }
}

fn as_number(value: &Value) -> Result<f64, FieldError> {
    let number = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.trim().is_empty() => Some(0.0),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    number
        .filter(|n| n.is_finite())
        .ok_or_else(|| FieldError::new("validation_invalid_number", "Must be a valid number."))
}

fn as_string_list(value: &Value) -> Result<Vec<String>, FieldError> {
    let items: Vec<String> = match value {
        Value::String(s) if s.is_empty() => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                FieldError::new("validation_invalid_value", "Must be a list of strings.")
            })?,
        _ => {
            return Err(FieldError::new(
                "validation_invalid_value",
                "Must be a string or a list of strings.",
            ))
        }
    };
    let mut unique = Vec::with_capacity(items.len());
    for item in items {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    Ok(unique)
}

/// A single value as a string, several as an array, capped by `max_select`.
fn list_value(field: &Field, items: Vec<String>, max_select: u32) -> Result<Value, FieldError> {
    let max = max_select.max(1) as usize;
    if items.len() > max {
        return Err(FieldError::new(
            "validation_too_many_values",
            format!("Select no more than {max}."),
        ));
    }
    Ok(if field.kind.is_multiple() {
        Value::Array(items.into_iter().map(Value::String).collect())
    } else {
        Value::String(items.into_iter().next().unwrap_or_default())
    })
}

fn check_length(text: &str, min: u32, max: u32) -> Result<(), FieldError> {
    let length = text.chars().count() as u32;
    if length > 0 && length < min {
        return Err(FieldError::new(
            "validation_min_text_constraint",
            format!("Must be at least {min} character(s)."),
        ));
    }
    if length > max {
        return Err(FieldError::new(
            "validation_max_text_constraint",
            format!("Must be less than {max} character(s)."),
        ));
    }
    Ok(())
}

fn check_pattern(text: &str, pattern: &str) -> Result<(), FieldError> {
    if pattern.is_empty() || text.is_empty() {
        return Ok(());
    }
    let matches = regex::Regex::new(pattern).is_ok_and(|re| re.is_match(text));
    if matches {
        Ok(())
    } else {
        Err(FieldError::new(
            "validation_invalid_format",
            "Invalid value format.",
        ))
    }
}

fn check_domain(domain: &str, only: &[String], except: &[String]) -> Result<(), FieldError> {
    if !only.is_empty() && !only.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
        return Err(FieldError::new(
            "validation_domain_not_allowed",
            "Domain is not allowed.",
        ));
    }
    if except.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
        return Err(FieldError::new(
            "validation_domain_not_allowed",
            "Domain is not allowed.",
        ));
    }
    Ok(())
}

/// Accepts PocketBase's `YYYY-MM-DD HH:MM:SS.sssZ`, RFC 3339 and plain `YYYY-MM-DD`;
/// answers in PocketBase's format (UTC, milliseconds).
pub fn parse_date(text: &str) -> Option<String> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
    let text = text.trim();
    let parsed = DateTime::parse_from_rfc3339(text)
        .map(|dt| dt.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text.trim_end_matches('Z'), "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|naive| naive.and_utc())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|date| date.and_hms_opt(0, 0, 0))
                .map(|naive| naive.and_utc())
        })?;
    Some(crate::domain::ids::format_time(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(min: u32, max: u32, pattern: &str) -> Field {
        Field::new(
            "t",
            FieldKind::Text {
                min,
                max,
                pattern: pattern.into(),
                autogenerate_pattern: String::new(),
                primary_key: false,
            },
        )
    }

    #[test]
    fn text_length_and_pattern() {
        assert_eq!(normalise(&text(2, 4, ""), &json!("abc")).unwrap(), "abc");
        assert_eq!(
            normalise(&text(2, 4, ""), &json!("a")).unwrap_err().code,
            "validation_min_text_constraint"
        );
        assert_eq!(
            normalise(&text(2, 4, ""), &json!("abcde"))
                .unwrap_err()
                .code,
            "validation_max_text_constraint"
        );
        assert_eq!(
            normalise(&text(0, 0, "^[a-z]+$"), &json!("ABC"))
                .unwrap_err()
                .code,
            "validation_invalid_format"
        );
        assert_eq!(
            normalise(&text(0, 0, ""), &json!({"a": 1}))
                .unwrap_err()
                .code,
            "validation_invalid_value"
        );
    }

    #[test]
    fn required_means_not_the_zero_value() {
        let field = text(0, 0, "").required();
        assert_eq!(
            normalise(&field, &json!("")).unwrap_err().code,
            "validation_required"
        );
        assert_eq!(
            normalise(&field, &Value::Null).unwrap_err().code,
            "validation_required"
        );
        let flag = Field::new("b", FieldKind::Bool {}).required();
        assert!(normalise(&flag, &json!(false)).is_err());
        assert_eq!(normalise(&flag, &json!("true")).unwrap(), true);
    }

    #[test]
    fn numbers_respect_bounds_and_integers() {
        let field = Field::new(
            "n",
            FieldKind::Number {
                min: Some(1.0),
                max: Some(10.0),
                only_int: true,
            },
        );
        assert_eq!(normalise(&field, &json!("5")).unwrap(), json!(5));
        assert_eq!(
            normalise(&field, &json!(0.5)).unwrap_err().code,
            "validation_only_int_constraint"
        );
        assert_eq!(
            normalise(&field, &json!(11)).unwrap_err().code,
            "validation_max_number_constraint"
        );
        assert_eq!(
            normalise(&field, &json!("x")).unwrap_err().code,
            "validation_invalid_number"
        );
    }

    #[test]
    fn emails_are_checked_and_lowercased() {
        let field = Field::new(
            "e",
            FieldKind::Email {
                only_domains: vec![],
                except_domains: vec!["spam.io".into()],
            },
        );
        assert_eq!(normalise(&field, &json!("A@B.CO")).unwrap(), "a@b.co");
        assert_eq!(
            normalise(&field, &json!("nope")).unwrap_err().code,
            "validation_is_email"
        );
        assert_eq!(
            normalise(&field, &json!("x@spam.io")).unwrap_err().code,
            "validation_domain_not_allowed"
        );
    }

    #[test]
    fn selects_and_relations_follow_max_select() {
        let single = Field::new(
            "s",
            FieldKind::Select {
                values: vec!["a".into(), "b".into()],
                max_select: 1,
            },
        );
        assert_eq!(normalise(&single, &json!("a")).unwrap(), "a");
        assert_eq!(
            normalise(&single, &json!(["a", "b"])).unwrap_err().code,
            "validation_too_many_values"
        );
        assert_eq!(
            normalise(&single, &json!("c")).unwrap_err().code,
            "validation_invalid_value"
        );
        let multi = Field::new(
            "m",
            FieldKind::Select {
                values: vec!["a".into(), "b".into()],
                max_select: 2,
            },
        );
        assert_eq!(
            normalise(&multi, &json!(["a", "a", "b"])).unwrap(),
            json!(["a", "b"])
        );
        let relation = Field::new(
            "r",
            FieldKind::Relation {
                collection_id: "x".into(),
                cascade_delete: false,
                min_select: 0,
                max_select: 1,
            },
        );
        assert_eq!(
            normalise(&relation, &json!("abc")).unwrap_err().code,
            "validation_invalid_value"
        );
        assert_eq!(
            normalise(&relation, &json!("abcdefghij12345")).unwrap(),
            "abcdefghij12345"
        );
    }

    #[test]
    fn dates_are_normalised_to_pocketbase_format() {
        assert_eq!(
            parse_date("2024-05-01").unwrap(),
            "2024-05-01 00:00:00.000Z"
        );
        assert_eq!(
            parse_date("2024-05-01T10:20:30+02:00").unwrap(),
            "2024-05-01 08:20:30.000Z"
        );
        assert_eq!(
            parse_date("2024-05-01 10:20:30.123Z").unwrap(),
            "2024-05-01 10:20:30.123Z"
        );
        assert!(parse_date("yesterday").is_none());
    }
}
