//! Standard Webhooks signing (standard-webhooks spec 1.0): `webhook-id`, `webhook-timestamp`
//! and `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use hubcache_plugin_api::Secret;

/// Signs payloads with one key. `Debug` never shows it.
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

impl Signer {
    /// A `whsec_<base64>` secret (the spec's form) is the base64-decoded key; any other
    /// non-empty string is used as the key bytes as is.
    pub fn new(secret: &Secret) -> Result<Signer, String> {
        let text = secret.expose();
        let key = match text.strip_prefix("whsec_") {
            Some(encoded) => STANDARD.decode(encoded).map_err(|_| {
                "a secret starting with whsec_ must continue in base64 (as Standard Webhooks \
                 secrets do)"
                    .to_string()
            })?,
            None => text.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err("is empty".to_string());
        }
        Ok(Signer { key })
    }

    /// The `webhook-signature` header value for this message.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_the_standard_webhooks_test_vector() {
        let signer = Signer::new(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
        assert_eq!(
            signer.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_plain_secret_is_used_as_key_bytes() {
        let plain = Signer::new(&Secret::new("hunter2")).unwrap();
        let encoded = Signer::new(&Secret::new(format!(
            "whsec_{}",
            STANDARD.encode("hunter2")
        )))
        .unwrap();
        assert_eq!(plain.sign("a", 1, b"x"), encoded.sign("a", 1, b"x"));
        assert_ne!(plain.sign("a", 1, b"x"), plain.sign("a", 2, b"x"));
    }

    #[test]
    fn bad_secrets_are_rejected_without_echoing_them() {
        let err = Signer::new(&Secret::new("whsec_not base64!")).unwrap_err();
        assert!(!err.contains("not base64!"), "{err}");
        assert!(Signer::new(&Secret::new("")).is_err());
        assert!(Signer::new(&Secret::new("whsec_")).is_err());
        assert_eq!(
            format!("{:?}", Signer::new(&Secret::new("k")).unwrap()),
            "Signer(***)"
        );
    }
}
