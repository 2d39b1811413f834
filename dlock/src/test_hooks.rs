//! Hooks that let the test suite force an interleaving that is otherwise a matter of luck
//! (cargo feature `test-hooks`, for dlock's own tests; not part of the API).

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

static RENEWAL_DELAY: Mutex<Option<(String, Duration)>> = Mutex::new(None);
static RENEWAL_REPLIED: Notify = Notify::const_new();

/// From now on, a watchdog renewal of `key` that succeeded waits `delay` before the client
/// records its new deadline (as if its task were scheduled late).
pub fn delay_renewal_record(key: &str, delay: Duration) {
    *RENEWAL_DELAY.lock().unwrap_or_else(|p| p.into_inner()) = Some((key.to_owned(), delay));
}

/// Resolves when a delayed renewal (see [`delay_renewal_record`]) has its reply and is about to
/// wait.
pub async fn renewal_replied() {
    RENEWAL_REPLIED.notified().await;
}

pub(crate) async fn before_renewal_recorded(key: &str) {
    let delay = RENEWAL_DELAY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|(k, _)| k == key)
        .map(|(_, d)| *d);
    if let Some(delay) = delay {
        RENEWAL_REPLIED.notify_one();
        tokio::time::sleep(delay).await;
    }
}
