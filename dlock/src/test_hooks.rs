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

static GHOST_CREATE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static AFTER_CREATE: Mutex<Option<(String, Duration)>> = Mutex::new(None);

/// The next ZooKeeper acquire whose queue path contains `marker` makes a ghost: its first create
/// happens on the server but the client treats its reply as lost and creates again.
pub fn zk_ghost_create(marker: &str) {
    GHOST_CREATE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(marker.to_owned());
}

/// ZooKeeper acquires whose queue path contains `marker` pause `delay` right after their node is
/// created (before they look at the queue).
pub fn zk_pause_after_create(marker: &str, delay: Duration) {
    *AFTER_CREATE.lock().unwrap_or_else(|p| p.into_inner()) = Some((marker.to_owned(), delay));
}

#[allow(dead_code)] // used by the zookeeper backend
pub(crate) fn take_ghost_create(dir: &str) -> bool {
    let mut markers = GHOST_CREATE.lock().unwrap_or_else(|p| p.into_inner());
    match markers.iter().position(|m| dir.contains(m.as_str())) {
        Some(i) => {
            markers.remove(i);
            true
        }
        None => false,
    }
}

#[allow(dead_code)] // used by the zookeeper backend
pub(crate) async fn after_create(dir: &str) {
    let delay = AFTER_CREATE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|(m, _)| dir.contains(m.as_str()))
        .map(|(_, d)| *d);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
}
