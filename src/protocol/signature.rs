//! HMAC-SHA256 signatures: channel authorizations and signed API requests.
//!
//! Every comparison goes through `Mac::verify_slice`, which takes the same time
//! however many leading bytes match, so a client cannot find a signature byte by byte.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, message: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(message.as_bytes());
    mac
}

/// Lower-case hex HMAC-SHA256 of `message` under `secret`.
pub fn hmac_sha256_hex(secret: &str, message: &str) -> String {
    hex::encode(mac(secret, message).finalize().into_bytes())
}

/// Whether `given` is the hex HMAC-SHA256 of `message` under `secret`, compared in
/// constant time.
pub fn hex_signature_matches(secret: &str, message: &str, given: &str) -> bool {
    match hex::decode(given) {
        Ok(bytes) => mac(secret, message).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

/// Whether a channel authorization `auth` (`key:hexsignature`) signs `message` with
/// this app's key and secret.
pub fn channel_auth_matches(key: &str, secret: &str, auth: &str, message: &str) -> bool {
    match auth.split_once(':') {
        Some((given_key, signature)) => {
            given_key == key && hex_signature_matches(secret, message, signature)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pusher_published_request_signature_verifies() {
        let to_sign = "POST\n/apps/3/events\n\
                       auth_key=278d425bdf160c739803&auth_timestamp=1353088179\
                       &auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f";
        let expected = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";
        assert_eq!(hmac_sha256_hex("7ad3773142a6692b25b8", to_sign), expected);
        assert!(hex_signature_matches(
            "7ad3773142a6692b25b8",
            to_sign,
            expected
        ));
        assert!(!hex_signature_matches(
            "7ad3773142a6692b25b8",
            to_sign,
            &expected[1..]
        ));
        assert!(!hex_signature_matches("other", to_sign, expected));
    }

    #[test]
    fn channel_auth_needs_the_right_key_and_signature() {
        let signature = hmac_sha256_hex("secret", "1.2:private-a");
        let auth = format!("key:{signature}");
        assert!(channel_auth_matches(
            "key",
            "secret",
            &auth,
            "1.2:private-a"
        ));
        assert!(!channel_auth_matches(
            "other",
            "secret",
            &auth,
            "1.2:private-a"
        ));
        assert!(!channel_auth_matches(
            "key",
            "secret",
            &auth,
            "1.3:private-a"
        ));
        assert!(!channel_auth_matches(
            "key",
            "secret",
            &signature,
            "1.2:private-a"
        ));
    }
}
