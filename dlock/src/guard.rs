//! [`LockGuard`]: a held lock, released when dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{Backend, Kind};
use crate::lease::Lease;
use crate::locker::Claim;
use crate::{runtime, Error, Result};

/// A held lock. Dropping it releases the lock in the background; [`release`](Self::release)
/// does the same and reports the outcome. Before a program ends, call
/// [`Locker::close`](crate::Locker::close) so background releases reach the server.
///
/// Locks are not reentrant: while a task holds (or is acquiring) a key through a Locker, the
/// same task locking that key again through the same Locker gets [`Error::AlreadyHeld`] at once
/// instead of waiting for itself (a single attempt, `try_lock` or `.wait(0)`, finds it busy). The task that acquired a guard counts as its holder until the
/// guard is released, also when the guard was moved to another task.
///
/// A guard is `Send + Sync`: it may be moved to, and released from, any task or thread, also one
/// without a runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dlock::Error> {
/// let locker = dlock::Locker::memory();
/// let guard = locker.lock("order:42").await?;
/// assert_eq!(guard.key(), "order:42");
/// assert!(guard.is_held());
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LockGuard {
    key: Arc<str>,
    fence: Option<u64>,
    waited: Duration,
    /// `None` once released.
    live: Option<Live>,
}

struct Live {
    backend: Arc<dyn Backend>,
    kind: Kind,
    token: Arc<str>,
    lease: Lease,
    /// The key claimed by the task that acquired it, until released.
    claim: Claim,
    /// When the acquire returned (for the hold-time metric).
    acquired_at: Instant,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("backend", &self.backend.name())
            .field("held", &self.lease.state.is_held())
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    #[allow(clippy::too_many_arguments)] // crate-private: the parts of one acquisition
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        kind: Kind,
        key: Arc<str>,
        token: Arc<str>,
        fence: Option<u64>,
        waited: Duration,
        acquired_at: Instant,
        lease: Lease,
        claim: Claim,
    ) -> Self {
        LockGuard {
            key,
            fence,
            waited,
            live: Some(Live {
                backend,
                kind,
                token,
                lease,
                claim,
                acquired_at,
            }),
        }
    }

    /// The key this guard holds.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fencing token: strictly increasing per key across holders. Pass it to the resource
    /// you protect so it can refuse writes from a holder whose lease has since been lost.
    /// Fences are per backend: fences of different lock services are not comparable.
    /// `None` on backends that cannot give one (Redlock).
    pub fn fence(&self) -> Option<u64> {
        self.fence
    }

    /// How long the acquire waited for the lock.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The name of the backend holding the lock (`"memory"`, `"redis"`, ...).
    pub fn backend(&self) -> &'static str {
        self.live.as_ref().map_or("released", |l| l.backend.name())
    }

    /// `false` once the lease is known lost (renewal refused, lease ran out, session ended).
    pub fn is_held(&self) -> bool {
        self.live.as_ref().is_some_and(|l| l.lease.state.is_held())
    }

    /// Resolves when the lease is lost: a renewal was refused or failed until the deadline, a
    /// fixed `ttl` ran out, or the backend's session ended. Never resolves while the lock is held.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dlock::Error> {
    /// # use std::time::Duration;
    /// let locker = dlock::Locker::memory();
    /// let guard = locker.lock("job").ttl(Duration::from_millis(50)).await?;
    /// tokio::select! {
    ///     _ = guard.lost() => println!("lease lost: stop writing"),
    ///     _ = tokio::time::sleep(Duration::from_secs(5)) => unreachable!(),
    /// }
    /// assert!(!guard.is_held());
    /// # Ok(()) }
    /// ```
    pub async fn lost(&self) {
        if let Some(live) = &self.live {
            live.lease.state.lost().await;
        }
    }

    /// Sets the lease to `ttl` from now, if this guard still holds the lock. A watchdog lease
    /// goes back to its own ttl at the next renewal.
    ///
    /// # Errors
    /// [`Error::Lost`] when the lock is no longer ours (nothing is changed on the server);
    /// [`Error::Backend`] when the server cannot be reached.
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        let lost = || Error::Lost {
            key: self.key.to_string(),
        };
        crate::request::validate_ttl(ttl)?;
        let live = self.live.as_ref().ok_or_else(lost)?;
        if !live.lease.state.is_held() {
            return Err(lost());
        }
        // No renewal may be in flight meanwhile (see `LeaseState::change`).
        let _changing = live.lease.state.change().await;
        let sent_at = Instant::now();
        if live
            .backend
            .extend(&self.key, live.kind, &live.token, ttl)
            .await?
        {
            live.lease.state.extended(sent_at, ttl);
            tracing::debug!(target: "dlock", key = &*self.key, backend = live.backend.name(), fence = self.fence, ttl_ms = ttl.as_millis() as u64, "lock extended");
            Ok(())
        } else {
            live.lease.state.mark_lost("extend refused");
            Err(lost())
        }
    }

    /// Releases the lock and reports the outcome.
    ///
    /// # Errors
    /// [`Error::Lost`] when the lock was no longer ours (expired or taken over; the next holder's
    /// lock is left untouched); [`Error::Backend`] when the server cannot be reached (the lease
    /// then runs out by itself).
    pub async fn release(mut self) -> Result<()> {
        let Some(live) = self.live.as_ref() else {
            return Ok(());
        };
        live.lease.stop();
        // A lease already known lost is reported as lost even if the row or key was still
        // there to delete: the holder must not believe it held the lock to the end.
        let was_held = live.lease.state.is_held();
        // `live` stays in the guard until the release has answered: if this future is dropped
        // midway (or fails), the guard's Drop still releases in the background.
        let released = live
            .backend
            .release(&self.key, live.kind, &live.token)
            .await?;
        let Some(live) = self.live.take() else {
            return Ok(());
        };
        crate::telemetry::hold(live.backend.name(), live.acquired_at);
        if released && was_held {
            tracing::debug!(target: "dlock", key = &*self.key, backend = live.backend.name(), fence = self.fence, "lock released");
            Ok(())
        } else {
            live.lease.state.mark_lost("release found another holder");
            Err(Error::Lost {
                key: self.key.to_string(),
            })
        }
    }

    /// [`release`](Self::release) for code without a runtime.
    ///
    /// # Errors
    /// As [`release`](Self::release), plus [`Error::BlockingInAsync`] where
    /// [`LockRequest::blocking`](crate::LockRequest::blocking) refuses to block (the guard is
    /// then released in the background).
    pub fn release_blocking(self) -> Result<()> {
        runtime::block_on(self.release())?
    }
}

impl Drop for LockGuard {
    /// Releases the lock in the background (on dlock's own runtime thread). The release outlives
    /// the caller's runtime but not the process: before a program ends, call
    /// [`Locker::close`](crate::Locker::close), which waits for such releases.
    fn drop(&mut self) {
        let Some(Live {
            backend,
            kind,
            token,
            lease,
            claim,
            acquired_at,
        }) = self.live.take()
        else {
            return;
        };
        crate::telemetry::hold(backend.name(), acquired_at);
        drop(lease); // stops renewing
        let key = self.key.clone();
        let fence = self.fence;
        let pending = claim.shared().background_release();
        // The task may lock the key again at once (it then waits for this release).
        drop(claim);
        runtime::spawn_background(async move {
            let _pending = pending;
            let name = backend.name();
            let until = Instant::now() + RELEASE_RETRIES_FOR;
            match release_retrying(&*backend, &key, kind, &token, until).await {
                Ok(true) => {
                    tracing::debug!(target: "dlock", key = &*key, backend = name, fence, "lock released (guard dropped)")
                }
                Ok(false) => {
                    tracing::debug!(target: "dlock", key = &*key, backend = name, fence, "dropped guard's lock was already gone")
                }
                Err(e) => {
                    tracing::warn!(target: "dlock", key = &*key, backend = name, error = %e, "releasing a dropped guard failed; the lease will run out")
                }
            }
        });
    }
}

/// How long a background release (a dropped guard's) keeps trying through errors: about the
/// default watchdog lease, after which the lease has run out on the server anyway.
const RELEASE_RETRIES_FOR: Duration = Duration::from_secs(30);

/// A token-checked release, tried again (50 ms, doubling to 1 s) after errors until `until`: a
/// release that fails while the server fails over or reconnects would otherwise leave the lock
/// held, by nobody, until its lease runs out.
pub(crate) async fn release_retrying(
    backend: &dyn Backend,
    key: &str,
    kind: Kind,
    token: &str,
    until: Instant,
) -> crate::Result<bool> {
    let mut pause = Duration::from_millis(50);
    loop {
        match backend.release(key, kind, token).await {
            Err(e) if Instant::now() + pause < until => {
                tracing::debug!(target: "dlock", key, backend = backend.name(), error = %e, "a background release failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            done => return done,
        }
    }
}
