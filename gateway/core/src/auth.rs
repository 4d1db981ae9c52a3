//! Access tokens: how they are checked. Tokens are 256-bit random secrets made by the
//! runtime (`tern-gateway user add`); only their SHA-256 is stored. A fast hash is
//! right for high-entropy secrets (no dictionary to search), and comparison runs over
//! the hashes so its timing says nothing about the token.

use sha2::{Digest, Sha256};

/// The stored form of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `token` matches the stored hash, in time independent of where they differ.
pub fn verify_token(token: &str, stored: &[u8; 32]) -> bool {
    let given = hash_token(token);
    given
        .iter()
        .zip(stored.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_token_matches_and_wrong_does_not() {
        let stored = hash_token("s3cret");
        assert!(verify_token("s3cret", &stored));
        assert!(!verify_token("s3cret ", &stored));
        assert!(!verify_token("", &stored));
    }
}
