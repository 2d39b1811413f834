//! Leases: one timer task per held lock that renews it (watchdog) or gives it up at its deadline,
//! and the `held` flag behind [`LockGuard::is_held`](crate::LockGuard::is_held) and
//! [`LockGuard::lost`](crate::LockGuard::lost).
//!
//! The lease deadline is kept on the client, conservatively: it counts from the moment the
//! acquire (or renewal) request was *sent*, so the client always believes the lease ends no later
//! than the server does. When the deadline passes without a successful renewal, the lease is lost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;

use crate::backend::{Backend, BoxFuture};

/// How a lease is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseSpec {
    /// Lease length set on the server at acquire and at each renewal.
    pub ttl: Duration,
    /// Renew every `ttl / 3` while the guard lives.
    pub watchdog: bool,
}

/// Lease state shared by the guard and its timer task.
#[derive(Debug)]
pub(crate) struct LeaseState {
    held: watch::Sender<bool>,
    deadline: Mutex<Instant>,
    moved: Notify,
}

impl LeaseState {
    pub(crate) fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    pub(crate) async fn lost(&self) {
        let mut rx = self.held.subscribe();
        // Err means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|held| !*held).await;
    }

    fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_deadline(&self, sent_at: Instant, ttl: Duration) {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = sent_at + ttl;
    }

    /// Records a lease extended by the guard from `sent_at` for `ttl`, and wakes the timer task
    /// so it sleeps to the new deadline.
    pub(crate) fn extended(&self, sent_at: Instant, ttl: Duration) {
        self.set_deadline(sent_at, ttl);
        self.moved.notify_one();
    }

    /// Marks the lease lost (idempotent); logs once.
    pub(crate) fn mark_lost(&self, key: &str, backend: &str, why: &str) {
        if self.held.send_replace(false) {
            tracing::warn!(target: "dlock", key, backend, reason = why, "lock lease lost");
        }
    }
}

/// A running lease: the shared state plus its timer task, stopped on drop.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) state: Arc<LeaseState>,
    task: AbortHandle,
}

impl Lease {
    /// Starts the timer task for a lock granted to `token` at `sent_at` (when its acquire
    /// request was sent). Must be called inside a tokio runtime.
    pub(crate) fn start(
        backend: Arc<dyn Backend>,
        key: Arc<str>,
        token: Arc<str>,
        spec: LeaseSpec,
        sent_at: Instant,
        backend_lost: Option<BoxFuture<'static, ()>>,
    ) -> Lease {
        let state = Arc::new(LeaseState {
            held: watch::channel(true).0,
            deadline: Mutex::new(sent_at + spec.ttl),
            moved: Notify::new(),
        });
        let task = tokio::spawn(run(
            backend,
            key,
            token,
            spec,
            sent_at,
            state.clone(),
            backend_lost,
        ))
        .abort_handle();
        Lease { state, task }
    }

    /// Stops renewing (before a release).
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    backend: Arc<dyn Backend>,
    key: Arc<str>,
    token: Arc<str>,
    spec: LeaseSpec,
    sent_at: Instant,
    state: Arc<LeaseState>,
    backend_lost: Option<BoxFuture<'static, ()>>,
) {
    let name = backend.name();
    let mut backend_lost = backend_lost.unwrap_or_else(|| Box::pin(std::future::pending()));
    let renew_every = spec.ttl / 3;
    // After a failed renewal, try again soon, but not in a tight loop.
    let retry_every = (spec.ttl / 10).clamp(Duration::from_millis(5), Duration::from_secs(1));
    let mut next_renewal = sent_at + renew_every;
    loop {
        let deadline = state.deadline();
        let wake_at = if spec.watchdog {
            next_renewal.min(deadline)
        } else {
            deadline
        };
        tokio::select! {
            _ = &mut backend_lost => {
                state.mark_lost(&key, name, "the backend reported the lock gone (session ended)");
                return;
            }
            _ = state.moved.notified() => continue,
            _ = tokio::time::sleep_until(wake_at.into()) => {}
        }
        let now = Instant::now();
        if now >= state.deadline() {
            let why = if spec.watchdog {
                "no renewal succeeded before the lease deadline"
            } else {
                "the fixed lease (ttl) ran out while the guard was still held"
            };
            state.mark_lost(&key, name, why);
            // Give the lock up explicitly: backends whose locks do not expire by themselves
            // (ZooKeeper) must not keep it past its ttl. Token-checked, so harmless elsewhere.
            let _ = backend.release(&key, &token).await;
            return;
        }
        if !spec.watchdog || now < next_renewal {
            continue;
        }
        let left = state.deadline().saturating_duration_since(now);
        match tokio::time::timeout(left, backend.extend(&key, &token, spec.ttl)).await {
            Ok(Ok(true)) => {
                state.set_deadline(now, spec.ttl);
                next_renewal = now + renew_every;
                tracing::trace!(target: "dlock", key = &*key, backend = name, "lock lease renewed");
            }
            Ok(Ok(false)) => {
                state.mark_lost(
                    &key,
                    name,
                    "renewal refused: the lock is held by another token",
                );
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(target: "dlock", key = &*key, backend = name, error = %e, "lock renewal failed; retrying");
                next_renewal = now + retry_every;
            }
            // The deadline passed while the renewal was in flight; the loop declares the loss.
            Err(_) => {}
        }
    }
}
