//! Signatures as the Standard Webhooks specification defines them, and GitHub's.
//!
//! Standard Webhooks: the secret is `whsec_<base64 key>`; a message is signed as
//! `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` and sent with the headers
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature` (one or
//! more signatures separated by spaces). GitHub: `X-Hub-Signature-256:
//! sha256=<hex HMAC-SHA256(secret, body)>`, the secret's bytes used as they are.
//! Every comparison of a signature is constant-time.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new random secret, `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The HMAC key of a `whsec_…` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| format!("a secret must start with {SECRET_PREFIX}"))?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|err| format!("the part after {SECRET_PREFIX} is not base64: {err}"))?;
    if key.len() < 16 {
        return Err("the key must be at least 16 bytes".into());
    }
    Ok(key)
}

fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// The `webhook-signature` value of a message: `v1,<base64>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = mac(key);
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Why an inbound signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("the webhook-timestamp header is not a number of seconds")]
    BadTimestamp,
    #[error("the timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// Checks a Standard Webhooks message: `signatures` is the `webhook-signature` header
/// (any `v1` entry may match), `timestamp` must lie within `tolerance` seconds of `now`.
pub fn verify_standard(
    key: &[u8],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), SignatureError> {
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if now.abs_diff(timestamp) > tolerance.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let expected = sign(key, id, timestamp, body);
    let expected = expected.as_bytes();
    let mut matched = subtle::Choice::from(0);
    for candidate in signatures.split_whitespace() {
        if candidate.len() == expected.len() {
            matched |= candidate.as_bytes().ct_eq(expected);
        }
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Checks GitHub's `X-Hub-Signature-256: sha256=<hex>` over `body`.
pub fn verify_github(secret: &[u8], header: &str, body: &[u8]) -> Result<(), SignatureError> {
    let given = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or(SignatureError::Mismatch)?;
    let mut mac = mac(secret);
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification's reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn signs_like_the_reference_implementations() {
        let key = secret_key(SECRET).unwrap();
        assert_eq!(
            sign(&key, ID, 1614265330, BODY),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn standard_verification_checks_signature_and_time() {
        let key = secret_key(SECRET).unwrap();
        let good = sign(&key, ID, 1000, BODY);
        let verify = |ts: &str, sigs: &str, body: &[u8]| {
            verify_standard(&key, ID, ts, sigs, body, 1100, 300)
        };
        assert_eq!(verify("1000", &good, BODY), Ok(()));
        assert_eq!(verify("1000", &format!("v1,AAAA {good}"), BODY), Ok(()));
        assert_eq!(verify("1000", &good, b"{}"), Err(SignatureError::Mismatch));
        assert_eq!(verify("1001", &good, BODY), Err(SignatureError::Mismatch));
        assert_eq!(
            verify_standard(&key, ID, "1000", &good, BODY, 2000, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify("soon", &good, BODY),
            Err(SignatureError::BadTimestamp)
        );
    }

    #[test]
    fn github_verification() {
        // GitHub's documented example: secret "It's a Secret to Everybody".
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            verify_github(b"It's a Secret to Everybody", header, b"Hello, World!"),
            Ok(())
        );
        assert_eq!(
            verify_github(b"another secret", header, b"Hello, World!"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_github(b"It's a Secret to Everybody", "sha1=00", b"Hello, World!"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        assert_eq!(secret_key(&new_secret()).unwrap().len(), 32);
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(secret_key("whsec_!!!").is_err());
        assert!(secret_key("whsec_AAAA").is_err());
    }
}
