//! Support for the code `#[distributed_lock]` generates. Not a public API: it may change in any
//! release.

use std::future::Future;

use crate::{Error, LockGuard};

/// The return types an attributed function may have: `Result<T, E>` with
/// `E: From<dlock::Error>`, also behind an alias (`type AppResult<T> = Result<T, AppError>`).
#[diagnostic::on_unimplemented(
    message = "`#[distributed_lock]` needs a function returning `Result<T, E>` with `E: From<dlock::Error>`; `{Self}` is not a `Result`",
    label = "not a `Result`",
    note = "return `Result<T, dlock::Error>`, or `Result<T, YourError>` with `impl From<dlock::Error> for YourError`"
)]
pub trait LockResult: Sized {
    /// A lock failure as this return value: `Err(From::from(e))`.
    fn from_lock_error(e: Error) -> Self;

    /// The value of a call skipped because the lock was busy (`on_busy = "skip"`):
    /// `Ok(Default::default())`.
    fn skipped() -> Self
    where
        Self: SkipDefault,
    {
        <Self as SkipDefault>::skipped_value()
    }
}

impl<T, E: From<Error>> LockResult for Result<T, E> {
    fn from_lock_error(e: Error) -> Self {
        Err(E::from(e))
    }
}

/// `Ok(Default::default())` for [`LockResult::skipped`]: needs `T: Default`.
pub trait SkipDefault {
    /// `Ok(T::default())`.
    fn skipped_value() -> Self;
}

impl<T: Default, E> SkipDefault for Result<T, E> {
    fn skipped_value() -> Self {
        Ok(T::default())
    }
}

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
