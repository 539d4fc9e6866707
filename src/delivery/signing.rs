//! Signatures of outgoing webhooks.
//!
//! Job results follow the Standard Webhooks scheme, so receivers verify them with
//! the public `standardwebhooks` or `svix` libraries: `webhook-signature` holds
//! `v1,<base64 HMAC-SHA256>` of `id.timestamp.body` under the secret's bytes (the
//! base64 after `whsec_`), one entry per secret that is signing. Pusher's own
//! webhooks carry `X-Pusher-Signature`, the hex HMAC-SHA256 of the body under the
//! app secret, as the Pusher SDKs expect.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::protocol::hmac_sha256_hex;

/// Prefix of Standard Webhooks secrets.
const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` and the base64 of 24 random bytes.
pub fn new_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The key bytes of a secret: the base64 after `whsec_`, or the text itself for a
/// secret that is not in that form.
fn key_of(secret: &str) -> Vec<u8> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .unwrap_or_else(|_| secret.as_bytes().to_vec())
}

/// The `webhook-signature` header: `v1,<signature>` for each secret, separated by
/// spaces.
pub fn standard_signatures(secrets: &[&str], id: &str, timestamp: i64, body: &str) -> String {
    let signed = format!("{id}.{timestamp}.{body}");
    secrets
        .iter()
        .map(|secret| {
            // HMAC takes keys of any length, so this cannot fail.
            let mut mac = Hmac::<Sha256>::new_from_slice(&key_of(secret))
                .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
            mac.update(signed.as_bytes());
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `X-Pusher-Signature` header of a Pusher webhook.
pub fn pusher_signature(app_secret: &str, body: &str) -> String {
    hmac_sha256_hex(app_secret, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_test_vector_signs() {
        let signature = standard_signatures(
            &["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn two_secrets_give_two_signatures() {
        let header = standard_signatures(&[&new_secret(), &new_secret()], "msg_1", 1, "{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.split(' ').all(|part| part.starts_with("v1,")));
    }

    #[test]
    fn new_secrets_carry_24_random_bytes() {
        let secret = new_secret();
        assert_eq!(key_of(&secret).len(), 24);
        assert_ne!(secret, new_secret());
    }
}
