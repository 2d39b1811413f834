//! Support for the code `#[distributed_lock]` generates. Not a public API: it may change in any
//! release.

use std::future::Future;

use crate::{Error, LockGuard};

/// Runs `body` until it finishes or the lease of `guard` is lost, whichever comes first; on a
/// loss the body is dropped and [`Error::Lost`] returned (`abort_on_lost = true`).
pub async fn race_lost<F: Future>(guard: &LockGuard, body: F) -> Result<F::Output, Error> {
    tokio::select! {
        biased;
        out = body => Ok(out),
        () = guard.lost() => Err(Error::Lost { key: guard.key().to_owned() }),
    }
}

/// Releases `guard` after the body returned. The body's result stands either way: a lost lease
/// was already logged when it was noticed, and a release that fails lets the lease run out.
pub async fn release(guard: LockGuard) {
    let key = guard.key().to_owned();
    if let Err(e) = guard.release().await {
        log_release_error(&key, &e);
    }
}

/// [`release`] for a plain `fn` (no runtime on this thread).
pub fn release_blocking(guard: LockGuard) {
    let key = guard.key().to_owned();
    if let Err(e) = guard.release_blocking() {
        log_release_error(&key, &e);
    }
}

fn log_release_error(key: &str, e: &Error) {
    if e.is_lost() {
        tracing::debug!(target: "dlock", key, "lock was already lost when the function returned");
    } else {
        tracing::warn!(target: "dlock", key, error = %e, "releasing the lock when the function returned failed; the lease will run out");
    }
}
