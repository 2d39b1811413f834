//! [`LockRequest`]: the builder returned by [`Locker::lock`](crate::Locker::lock).

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{Backend, BoxFuture, Kind, Space};
use crate::lease::{Lease, LeaseSpec};
use crate::locker::{Holder, Shared};
use crate::telemetry::{self, Outcome};
use crate::{runtime, Error, LockGuard, Locker, Result};

/// The lease of a lock taken without [`LockRequest::ttl`]: 30 s, renewed every 10 s.
pub const DEFAULT_WATCHDOG_TTL: Duration = Duration::from_secs(30);

/// A request for a lock: set the lease and the wait, then `.await` it (or call
/// [`blocking`](Self::blocking) from sync code).
///
/// It is [`IntoFuture`], not a `Future`: `.await` works directly, and where a `Future` value
/// is needed (`tokio::spawn`, `select!` arms, `join!`), call [`acquire`](Self::acquire), or
/// `.into_future()`.
///
/// | call | lease | wait |
/// |---|---|---|
/// | (nothing) | 30 s, renewed every 10 s while the guard lives | until acquired |
/// | `.ttl(d)` | fixed `d`; lost when it runs out | |
/// | `.ttl(d).watchdog(true)` | `d`, renewed every `d/3` | |
/// | `.wait(d)` | | up to `d`, then [`Error::Busy`]; `Duration::ZERO` is one attempt |
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dlock::Error> {
/// use std::time::Duration;
/// let locker = dlock::Locker::memory();
/// let guard = locker
///     .lock("order:42")
///     .ttl(Duration::from_secs(30))
///     .wait(Duration::from_secs(5))
///     .await?;
/// # drop(guard); Ok(()) }
/// ```
#[must_use = "a lock request does nothing until it is awaited"]
#[derive(Debug, Clone)]
pub struct LockRequest {
    locker: Locker,
    key: String,
    kind: Kind,
    ttl: Option<Duration>,
    wait: Option<Duration>,
    watchdog: Option<bool>,
}

impl LockRequest {
    pub(crate) fn new(locker: Locker, key: String, kind: Kind) -> Self {
        LockRequest {
            locker,
            key,
            kind,
            ttl: None,
            wait: None,
            watchdog: None,
        }
    }

    /// A fixed lease of `ttl` (not renewed unless [`watchdog(true)`](Self::watchdog)).
    /// Must be at least 1 ms.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Gives up with [`Error::Busy`] after waiting `wait`; `Duration::ZERO` is one attempt.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Renew the lease every ttl/3 while the guard lives (the default without `.ttl`).
    pub fn watchdog(mut self, renew: bool) -> Self {
        self.watchdog = Some(renew);
        self
    }

    fn lease_spec(&self) -> LeaseSpec {
        LeaseSpec {
            ttl: self.ttl.unwrap_or(DEFAULT_WATCHDOG_TTL),
            watchdog: self.watchdog.unwrap_or(self.ttl.is_none()),
        }
    }

    /// Acquires the lock, blocking the calling thread: for sync code.
    ///
    /// | called from | does |
    /// |---|---|
    /// | a thread without a runtime | blocks; the request runs on dlock's background runtime |
    /// | a `tokio::task::spawn_blocking` thread | the same |
    /// | an async task of a multi-thread runtime | the same, inside [`tokio::task::block_in_place`] (the worker's other tasks move to another thread) |
    /// | an async task of a current-thread runtime (`#[tokio::test]`, `flavor = "current_thread"`) | [`Error::BlockingInAsync`]: blocking the runtime's only thread could deadlock |
    ///
    /// # Errors
    /// As awaiting the request, plus [`Error::BlockingInAsync`] from a current-thread runtime's
    /// async task.
    pub fn blocking(self) -> Result<LockGuard> {
        // The caller, not the background task that runs the request, is the holder.
        let holder = Holder::current();
        runtime::block_on(self.acquire_for(holder))?
    }

    /// Acquires the lock; the same as awaiting the request.
    ///
    /// # Errors
    /// [`Error::Busy`] when the wait runs out; [`Error::InvalidKey`] for an empty key;
    /// [`Error::Backend`] when the server fails.
    pub async fn acquire(self) -> Result<LockGuard> {
        self.acquire_for(Holder::current()).await
    }

    /// Runs `work` while holding this lock, as one loop: acquire; run `work(fence)`; if the lock
    /// is lost first, drop (cancel) that future and acquire again; when `work` finishes, release
    /// and return its output. Made for leader election
    /// ([`Locker::campaign`](crate::Locker::campaign)): the shape of Kubernetes'
    /// `OnStartedLeading` / `OnStoppedLeading` as one async loop; what `OnStoppedLeading` would
    /// do belongs in a `Drop` of something the work owns (it runs when the work is cancelled).
    ///
    /// `fence` is the term's fence (strictly increasing per key, `None` on Redlock): pass it to
    /// what the leader writes, so a deposed leader's late writes are refused. Errors while
    /// acquiring (a server down, a wait that ran out) are logged and retried after a second; only
    /// errors a retry cannot mend end the loop. The lease defaults to a watchdog lease
    /// of 30 s; a shorter one (`.ttl(d).watchdog(true)`) finds a loss sooner.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), dlock::Error> {
    /// use std::time::Duration;
    /// let locker = dlock::Locker::memory();
    /// let done = locker
    ///     .campaign("reports")
    ///     .ttl(Duration::from_secs(6))
    ///     .watchdog(true)
    ///     .lead(|fence| async move { format!("report written under term {fence:?}") })
    ///     .await?;
    /// assert!(done.starts_with("report written"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::InvalidArgument`], [`Error::Unsupported`],
    /// [`Error::AlreadyHeld`], [`Error::BlockingInAsync`], or any error once the Locker is
    /// closed: what acquiring again would not change.
    pub async fn lead<F, Fut, T>(self, mut work: F) -> Result<T>
    where
        F: FnMut(Option<u64>) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let backend = self.locker.backend_name();
        loop {
            let held = match self.clone().acquire().await {
                Ok(guard) => guard,
                Err(
                    e @ (Error::InvalidKey { .. }
                    | Error::Unsupported { .. }
                    | Error::InvalidArgument { .. }
                    | Error::AlreadyHeld { .. }
                    | Error::BlockingInAsync),
                ) => return Err(e),
                Err(e) if self.locker.shared().is_closed() => return Err(e),
                Err(e) => {
                    tracing::warn!(target: "dlock", key = self.key.as_str(), backend, error = %e, "acquiring to lead failed; trying again in 1 s");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            tracing::info!(target: "dlock", key = self.key.as_str(), backend, fence = held.fence(), "leading");
            tokio::select! {
                output = work(held.fence()) => {
                    // Fails only when the lock was lost just now: the work is done anyway.
                    let _ = held.release().await;
                    return Ok(output);
                }
                _ = held.lost() => {
                    tracing::warn!(target: "dlock", key = self.key.as_str(), backend, "lock lost while leading; work cancelled, acquiring again");
                }
            }
        }
    }

    async fn acquire_for(self, holder: Holder) -> Result<LockGuard> {
        let spec = self.lease_spec();
        validate(&self.key, spec)?;
        let backend = self.locker.backend().clone();
        let shared = self.locker.shared();
        if shared.is_closed() {
            return Err(Error::backend(
                backend.name(),
                "this Locker was closed (Locker::close); connect a new one",
            ));
        }
        let kind = self.kind;
        if let Kind::Permit(0) = kind {
            return Err(Error::InvalidArgument {
                reason: format!(
                    "semaphore `{}` with 0 permits could never be acquired; give it at least 1",
                    self.key
                ),
            });
        }
        let key: Arc<str> = self.key.into();
        // Refused at once when this task already holds or is acquiring the key here: it would
        // wait for itself. A single attempt (`try_lock`) is simply busy: the key is held. Read
        // and write holds of one key count as one claim (a task waiting to write behind its own
        // read would wait for ever), and so do a task's permits of one semaphore.
        let claimed: Arc<str> = match kind.space() {
            Space::Mutex => key.clone(),
            Space::ReadWrite => format!("\0rw\0{key}").into(),
            Space::Semaphore => format!("\0semaphore\0{key}").into(),
        };
        let claim = match shared.claim(&claimed, holder) {
            Ok(claim) => claim,
            Err(_) if self.wait == Some(Duration::ZERO) => {
                return Err(Error::Busy {
                    key: key.to_string(),
                    waited: Duration::ZERO,
                })
            }
            Err(e) => return Err(e),
        };
        let token = crate::inspect::new_token(self.locker.owner());
        let started = Instant::now();
        // A wait too long to represent is no deadline at all.
        let deadline = self.wait.and_then(|w| started.checked_add(w));

        // If this future is dropped mid-acquire, or the acquire fails, the server may have
        // granted the lock anyway: release the token (token-checked, harmless otherwise).
        let mut cancel = ReleaseOnDrop {
            backend: Some(backend.clone()),
            kind,
            key: key.clone(),
            token: token.clone(),
            shared: shared.clone(),
            lease: spec.ttl,
        };
        let grant = match backend
            .acquire(&key, kind, &token, spec.ttl, deadline)
            .await
        {
            Ok(grant) => grant,
            Err(e) => {
                telemetry::acquire(backend.name(), Outcome::Error, started.elapsed());
                return Err(e);
            }
        };
        let waited = started.elapsed();
        let Some(grant) = grant else {
            cancel.backend = None;
            telemetry::acquire(backend.name(), Outcome::Busy, waited);
            tracing::debug!(target: "dlock", key = &*key, backend = backend.name(), kind = kind.name(), waited_ms = waited.as_millis() as u64, "lock busy");
            return Err(Error::Busy {
                key: key.to_string(),
                waited,
            });
        };
        cancel.backend = None;
        telemetry::acquire(backend.name(), Outcome::Acquired, waited);
        tracing::debug!(
            target: "dlock",
            key = &*key,
            backend = backend.name(),
            kind = kind.name(),
            fence = grant.fence,
            waited_ms = waited.as_millis() as u64,
            "lock acquired"
        );
        // The lease counts from when the granting attempt was sent: the server's cannot end earlier.
        let lease = Lease::start(
            backend.clone(),
            kind,
            key.clone(),
            token.clone(),
            spec,
            grant.sent_at,
            grant.lost,
        );
        claim.held_under(&lease.state);
        Ok(LockGuard::new(
            backend,
            kind,
            key,
            token,
            grant.fence,
            waited,
            started + waited,
            lease,
            claim,
        ))
    }
}

impl IntoFuture for LockRequest {
    type Output = Result<LockGuard>;
    type IntoFuture = BoxFuture<'static, Result<LockGuard>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.acquire())
    }
}

/// The longest lease accepted, 365 days: a lease is a safety net for a crashed holder, not a way
/// to keep a lock for ever (use a watchdog lease for long jobs). `#[distributed_lock]` checks
/// `ttl` against it at compile time.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

fn validate(key: &str, spec: LeaseSpec) -> Result<()> {
    validate_key(key)?;
    validate_ttl(spec.ttl)
}

/// A lock key must not be empty (also checked by inspection and force-release).
pub(crate) fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey {
            key: String::new(),
            reason: "a lock key must not be empty; name the resource, e.g. \"order:42\"".into(),
        });
    }
    Ok(())
}

/// A lease length must be between 1 ms and [`MAX_TTL`].
pub(crate) fn validate_ttl(ttl: Duration) -> Result<()> {
    if ttl < Duration::from_millis(1) || ttl > MAX_TTL {
        return Err(Error::InvalidArgument {
            reason: format!(
                "ttl {ttl:?} is out of range; a lease must be at least 1 ms and at most 365 days \
                 (use a watchdog lease, the default, for long jobs)"
            ),
        });
    }
    Ok(())
}

/// Releases `token` in the background unless disarmed (by taking `backend`).
struct ReleaseOnDrop {
    backend: Option<Arc<dyn Backend>>,
    kind: Kind,
    key: Arc<str>,
    token: Arc<str>,
    shared: Arc<Shared>,
    /// The lease asked for: retrying the release longer is pointless.
    lease: Duration,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let Some(backend) = self.backend.take() else {
            return;
        };
        let (key, token, kind) = (self.key.clone(), self.token.clone(), self.kind);
        let pending = self.shared.background_release();
        let until = Instant::now() + self.lease;
        runtime::spawn_background(async move {
            let _pending = pending;
            if let Ok(true) =
                crate::guard::release_retrying(&*backend, &key, kind, &token, until).await
            {
                tracing::debug!(target: "dlock", key = &*key, backend = backend.name(), "released a lock whose acquire was cancelled");
            }
        });
    }
}
