//! The signature check the providers' callbacks share.

/// `true` when `signature_hex` is the HMAC-SHA256 of `message` under `secret`; the comparison
/// is constant-time.
pub fn signed(secret: &[u8], message: &[u8], signature_hex: &str) -> bool {
    use hmac::{Hmac, Mac};
    let Ok(signature) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(message);
    mac.verify_slice(&signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::signed;

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), a published test
        // vector.
        let expected = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
        let message = b"The quick brown fox jumps over the lazy dog";
        assert!(signed(b"key", message, expected));
        assert!(signed(b"key", message, &expected.to_uppercase()));
        assert!(!signed(b"key", message, &expected[..62]), "truncated");
        assert!(!signed(b"other", message, expected), "another secret");
        assert!(!signed(b"key", b"tampered", expected), "another message");
        assert!(!signed(b"key", message, "not hex"));
    }
}
