//! Previews of a policy change before it is deployed: `portcullis plan`
//! (and `POST /api/provisioning/plan`) replay every stored user's next
//! login under a new configuration; `portcullis test` ([`cases`]) checks
//! the configuration against the operator's own table of cases. Both run
//! the provisioning engine a login runs, and write nothing.

pub mod cases;

use crate::config::Config;
use crate::provision::preview::{PreviewTotals, UserPreview, preview_user};
use crate::store::{Store, StoreError};

/// Users read from the store at a time: memory stays bounded by one page
/// whatever the store holds.
pub const PAGE: i64 = 500;

/// Replays every user in `store` under `config`, a page at a time, in user
/// id order. `each` sees every user's preview (to print or keep it),
/// `progress` the count done and the total after every page.
pub async fn plan_store(
    store: &Store,
    config: &Config,
    mut each: impl FnMut(&UserPreview),
    mut progress: impl FnMut(u64, u64),
) -> Result<PreviewTotals, StoreError> {
    if !store.is_current().await? {
        return Err(StoreError::Corrupt(
            "the store has not been migrated to this version of Portcullis: start the gateway on it once, then plan"
                .into(),
        ));
    }
    // The JIT rules the new file declares, with what the management API
    // added to the store: what the next logins would apply.
    let jit = crate::login::provision::jit_in_force(store, config).await?;
    let total = store.count_users().await?.max(0) as u64;
    let mut totals = PreviewTotals::default();
    let mut after: Option<String> = None;
    loop {
        let page = store.users_to_replay(after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for user in &page {
            let p = preview_user(config, &jit, user);
            totals.add(&p);
            each(&p);
        }
        progress(totals.users, total.max(totals.users));
    }
    Ok(totals)
}
