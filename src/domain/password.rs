//! Passwords as users choose them: the length rule lives here, hashing in the auth module.

use std::fmt;

pub const MIN_LENGTH: usize = 8;
pub const MAX_LENGTH: usize = 256;

/// A password of acceptable length. Its `Debug` never shows the characters.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

/// Why a password was refused, with PocketBase's validation codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordError {
    Missing,
    TooShort,
    TooLong,
}

impl PasswordError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "validation_required",
            Self::TooShort => "validation_min_text_constraint",
            Self::TooLong => "validation_max_text_constraint",
        }
    }

    pub fn message(self) -> String {
        match self {
            Self::Missing => "Cannot be blank.".to_string(),
            Self::TooShort => format!("Must be at least {MIN_LENGTH} character(s)."),
            Self::TooLong => format!("Must be no more than {MAX_LENGTH} character(s)."),
        }
    }
}

impl Password {
    /// Length is counted in characters, as PocketBase does.
    pub fn parse(input: &str) -> Result<Self, PasswordError> {
        match input.chars().count() {
            0 => Err(PasswordError::Missing),
            n if n < MIN_LENGTH => Err(PasswordError::TooShort),
            n if n > MAX_LENGTH => Err(PasswordError::TooLong),
            _ => Ok(Self(input.to_string())),
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_bounds_are_inclusive() {
        assert_eq!(Password::parse(""), Err(PasswordError::Missing));
        assert_eq!(Password::parse("1234567"), Err(PasswordError::TooShort));
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"x".repeat(256)).is_ok());
        assert_eq!(
            Password::parse(&"x".repeat(257)),
            Err(PasswordError::TooLong)
        );
        // Characters, not bytes: eight two-byte characters are enough.
        assert!(Password::parse("éééééééé").is_ok());
    }

    #[test]
    fn debug_output_hides_the_password() {
        let password = Password::parse("correct horse").unwrap();
        assert!(!format!("{password:?}").contains("horse"));
    }
}
