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

/// Runs `task` on a thread of its own with a single-threaded runtime, for
/// work that lives outside the Pingora server's runtimes.
pub fn spawn_on_own_runtime<F>(task: F) -> std::io::Result<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || rt.block_on(task));
    Ok(())
}
