//! Small helpers shared by several modules.

use sha2::{Digest, Sha256};

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(bytes));
    out
}

/// SHA-256 of `bytes` in lowercase hex: session and token keys, made on
/// every request (a stack buffer, not `hex::encode`'s char by char).
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut out = [0u8; 64];
    // Cannot fail: the buffer is twice the digest's length.
    let _ = hex::encode_to_slice(sha256(bytes), &mut out);
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// `sha256:<hex>`, the form `admin.tokens` accepts.
pub fn hash_token(token: &str) -> String {
    format!("sha256:{}", sha256_hex(token.as_bytes()))
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

/// A runtime of its own for I/O that outlives any one Pingora service: the
/// store's connection pool and the IdP client live here, so their sockets
/// stay registered with one reactor for the life of the process. Work is
/// handed over with [`Background::run`] from any runtime.
#[derive(Clone, Debug)]
pub struct Background {
    handle: tokio::runtime::Handle,
}

impl Background {
    pub fn start(name: &str) -> std::io::Result<Background> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        // The runtime is never dropped: its thread holds it until exit.
        std::thread::Builder::new()
            .name(format!("{name}-owner"))
            .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        Ok(Background { handle })
    }

    pub async fn run<T, F>(&self, task: F) -> Result<T, tokio::task::JoinError>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.handle.spawn(task).await
    }

    /// Starts `task` without waiting for it.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(task);
    }

    /// Runs `task` to completion from outside any runtime (start-up).
    pub fn block_on<F: std::future::Future>(&self, task: F) -> F::Output {
        self.handle.block_on(task)
    }
}
