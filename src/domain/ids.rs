//! Record ids and timestamps in PocketBase's formats.

use rand::distributions::Alphanumeric;
use rand::Rng;

/// A new record id: 15 characters of `[a-z0-9]`.
pub fn new_record_id() -> String {
    random_lowercase(15)
}

/// `n` random characters of `[a-z0-9]` from the OS-seeded thread RNG.
pub fn random_lowercase(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .map(|b| char::from(b).to_ascii_lowercase())
        .take(n)
        .collect()
}

/// `n` random characters of `[A-Za-z0-9]`.
pub fn random_alphanumeric(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .map(char::from)
        .take(n)
        .collect()
}

/// The current time as `YYYY-MM-DD HH:MM:SS.sssZ` (UTC), PocketBase's date format.
pub fn now() -> String {
    format_time(chrono::Utc::now())
}

pub fn format_time(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_have_pocketbases_shape() {
        let id = new_record_id();
        assert_eq!(id.len(), 15);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_ne!(new_record_id(), id);
    }

    #[test]
    fn timestamps_have_millisecond_precision_and_a_z() {
        let time = chrono::DateTime::parse_from_rfc3339("2024-05-01T10:20:30.123456Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(format_time(time), "2024-05-01 10:20:30.123Z");
    }
}
