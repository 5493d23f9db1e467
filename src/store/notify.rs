//! Replicas telling each other what changed (SPEC 8), on PostgreSQL:
//! `NOTIFY` inside the transaction that ends sessions or changes a user
//! (delivered when, and only if, it commits), and one `LISTEN` connection
//! per replica whose notices drop the affected entries from the caches.
//! A lost notice is bounded by `store.cache_ttl`; after the listener's
//! connection was lost, the receiver is told to drop everything, since
//! notices may have been missed meanwhile. SQLite has no other replicas to
//! tell: nothing is sent and nothing listens.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::config::StoreKind;

const CHANNEL: &str = "portcullis";
/// `NOTIFY` payloads are limited to 8,000 bytes: hashes go in batches.
const BATCH: usize = 90;
/// The listener's connection, named so that operators (and tests) can
/// tell it apart.
const APPLICATION_NAME: &str = "portcullis-notify";

/// What changed on some replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// Sessions ended or changed (hashed ids): read them again.
    Sessions(Vec<String>),
    /// ID tokens ended with them (SHA-256, hex): no longer bearer tokens.
    Tokens(Vec<String>),
    /// Users whose memberships, profile or sessions changed.
    Users(Vec<String>),
    /// The listener is back after it lost its connection: notices may
    /// have been missed meanwhile. Sent once listening again, not when the
    /// connection drops: during an outage the caches go on serving what
    /// they hold (each entry still lives at most `store.cache_ttl`), as
    /// SPEC 7 asks, and are dropped when the store can answer again.
    Lost,
}

/// Sends `notice` in `tx` (PostgreSQL only; nothing to send when empty).
pub(super) async fn send(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    notice: Notice,
) -> Result<(), StoreError> {
    if tx.backend_name() != "PostgreSQL" {
        return Ok(());
    }
    let items = match &notice {
        Notice::Sessions(v) | Notice::Tokens(v) | Notice::Users(v) => v,
        Notice::Lost => return Ok(()),
    };
    for chunk in items.chunks(BATCH) {
        let part = match &notice {
            Notice::Sessions(_) => Notice::Sessions(chunk.to_vec()),
            Notice::Tokens(_) => Notice::Tokens(chunk.to_vec()),
            _ => Notice::Users(chunk.to_vec()),
        };
        let payload =
            serde_json::to_string(&part).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Sends a notice outside any other change.
    pub(super) async fn notify(&self, notice: Notice) -> Result<(), StoreError> {
        if self.kind != StoreKind::Postgres {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        send(&mut tx, notice).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The notices of every replica (this one's too), as they commit, for
    /// as long as the receiver lives; `None` on SQLite. Call it on the
    /// runtime the listener should live on. Reconnects by itself after the
    /// database was unreachable, and sends [`Notice::Lost`] once it listens
    /// again.
    pub fn notices(&self) -> Option<tokio::sync::mpsc::Receiver<Notice>> {
        if self.kind != StoreKind::Postgres {
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let url = listener_url(&self.url);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut interrupted = false;
            loop {
                if tx.is_closed() {
                    return;
                }
                match listen(&url, &tx, &mut interrupted).await {
                    Ok(()) => return,
                    Err(e) => {
                        if !interrupted {
                            tracing::warn!(target: "portcullis::store", error = %e, "store notifications interrupted; reconnecting (caches dropped once back)");
                        }
                        interrupted = true;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Some(rx)
    }
}

/// The store URL with the listener's `application_name`.
fn listener_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let kept: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| k != "application_name")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            u.query_pairs_mut()
                .clear()
                .extend_pairs(kept)
                .append_pair("application_name", APPLICATION_NAME);
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// One listening connection, until it fails (`Err`) or the receiver is
/// gone (`Ok`).
/// After an interruption (`interrupted`), [`Notice::Lost`] goes first.
async fn listen(
    url: &str,
    tx: &tokio::sync::mpsc::Sender<Notice>,
    interrupted: &mut bool,
) -> Result<(), StoreError> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    tracing::info!(target: "portcullis::store", "store notifications on");
    if std::mem::take(interrupted) && tx.send(Notice::Lost).await.is_err() {
        return Ok(());
    }
    loop {
        // `None`: the connection was lost (sqlx would reconnect on the next
        // call, silently missing what was sent meanwhile: say so instead).
        let Some(n) = listener.try_recv().await? else {
            return Err(StoreError::Unavailable(
                "the notification connection was lost".into(),
            ));
        };
        match serde_json::from_str::<Notice>(n.payload()) {
            Ok(notice) => {
                if tx.send(notice).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                tracing::warn!(target: "portcullis::store", error = %e, "unreadable store notification ignored")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_names_its_connection() {
        let cases = [
            (
                "postgres://u:p@db/portcullis",
                "postgres://u:p@db/portcullis?application_name=portcullis-notify",
            ),
            (
                "postgres://db/p?sslmode=require&application_name=x",
                "postgres://db/p?sslmode=require&application_name=portcullis-notify",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(listener_url(url), want);
        }
    }

    #[test]
    fn notices_read_back_as_sent() {
        for n in [
            Notice::Sessions(vec!["a".into()]),
            Notice::Users(vec!["u_1".into(), "u_2".into()]),
            Notice::Tokens(vec![]),
        ] {
            let text = serde_json::to_string(&n).unwrap();
            assert_eq!(serde_json::from_str::<Notice>(&text).unwrap(), n);
        }
    }
}
