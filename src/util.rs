//! Small helpers shared by several modules.

use sha2::{Digest, Sha256};

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(bytes));
    out
}

/// `sha256:<hex>`, the form `admin.tokens` accepts.
pub fn hash_token(token: &str) -> String {
    format!("sha256:{}", hex::encode(sha256(token.as_bytes())))
}
