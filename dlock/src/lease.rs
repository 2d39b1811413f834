//! Leases: a timer task per held lock where something must happen on time (a watchdog renewal,
//! or giving up a lock the server does not expire by itself), and the state behind [`LockGuard::is_held`](crate::LockGuard::is_held) and
//! [`LockGuard::lost`](crate::LockGuard::lost).
//!
//! The lease deadline is kept on the client, conservatively: it counts from the moment the
//! acquire (or renewal) request was *sent*, so the client always believes the lease ends no later
//! than the server does, less an allowance for clock drift (see `lease_end`). When the deadline
//! passes without a successful renewal, the lease is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::backend::{Backend, BoxFuture, Kind};
use crate::runtime;

/// How a lease is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseSpec {
    /// Lease length set on the server at acquire and at each renewal.
    pub ttl: Duration,
    /// Renew every `ttl / 3` while the guard lives.
    pub watchdog: bool,
}

/// When the client must consider a lease of `ttl`, requested at `sent_at`, over: counted from
/// the send (the server's lease cannot start earlier) and shortened by an allowance for clocks
/// running at different rates, the Redlock description's `ttl × 1 % + 2 ms` (at most a tenth of
/// the ttl, so very short leases stay usable).
pub(crate) fn lease_end(sent_at: Instant, ttl: Duration) -> Instant {
    let drift = (ttl / 100 + Duration::from_millis(2)).min(ttl / 10);
    sent_at + (ttl - drift)
}

/// Lease state shared by the guard and its timer task (if any).
///
/// Plain atomics, a mutex and two `Notify`s rather than watch channels: this is made and dropped
/// once per lock cycle, and a watch channel allocates and wakes its (8-slot) notifier on drop,
/// a measurable share of an uncontended cycle (callgrind).
#[derive(Debug)]
pub(crate) struct LeaseState {
    held: AtomicBool,
    /// The client-side lease deadline; moved by renewals and `extend`.
    deadline: Mutex<Instant>,
    /// Wakes `lost()` waiters on any change (lost, deadline moved).
    changed: Notify,
    /// Wakes the timer task when the deadline moved; `notify_one` keeps a permit, so a move made
    /// before the task first waits still reaches it.
    moved: Notify,
    key: Arc<str>,
    backend: &'static str,
    /// Held across a lease change on the server *and* its recording here (a renewal, an
    /// `extend`): two changes in flight could reach the server in one order and be recorded in
    /// the other, leaving the client believing a longer lease than the server keeps.
    changing: tokio::sync::Mutex<()>,
}

impl LeaseState {
    /// Serializes lease changes (see `changing`).
    pub(crate) async fn change(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changing.lock().await
    }

    /// Held: not marked lost and the deadline not passed. A fixed lease with no timer task is
    /// found lost here, lazily.
    pub(crate) fn is_held(&self) -> bool {
        if !self.held.load(Ordering::Acquire) {
            return false;
        }
        if Instant::now() >= self.deadline() {
            self.ran_out();
            return false;
        }
        true
    }

    pub(crate) async fn lost(&self) {
        loop {
            // Registered before the state is read, so a change in between is not missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.held.load(Ordering::Acquire) {
                return;
            }
            let at = self.deadline();
            if Instant::now() >= at {
                self.ran_out();
                return;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(at.into()) => {}
            }
        }
    }

    fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_deadline(&self, sent_at: Instant, ttl: Duration) {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = lease_end(sent_at, ttl);
        self.moved.notify_one();
        self.changed.notify_waiters();
    }

    /// Records a lease extended by the guard from `sent_at` for `ttl`; the timer task (if any)
    /// and `lost()` waiters follow the new deadline.
    pub(crate) fn extended(&self, sent_at: Instant, ttl: Duration) {
        self.set_deadline(sent_at, ttl);
    }

    fn ran_out(&self) {
        self.mark_lost("the lease ran out before a renewal or release");
    }

    /// Marks the lease lost (idempotent); logs once.
    pub(crate) fn mark_lost(&self, why: &str) {
        if self.held.swap(false, Ordering::AcqRel) {
            self.changed.notify_waiters();
            crate::telemetry::loss(self.backend);
            tracing::warn!(target: "dlock", key = &*self.key, backend = self.backend, reason = why, "lock lease lost");
        }
    }
}

/// A running lease: the shared state plus its timer task (if it needs one), stopped on drop.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) state: Arc<LeaseState>,
    task: Option<AbortHandle>,
}

impl Lease {
    /// Starts the lease of a lock granted to `token` by an attempt sent at `sent_at`. A timer
    /// task runs only where something must happen on time: watchdog renewals, or a backend
    /// that reports losses itself (`backend_lost`, whose locks also do not expire by themselves
    /// and so are given up at the deadline). A fixed lease elsewhere costs no task: the server
    /// expires it, and `is_held`/`lost` read the deadline.
    pub(crate) fn start(
        backend: Arc<dyn Backend>,
        kind: Kind,
        key: Arc<str>,
        token: Arc<str>,
        spec: LeaseSpec,
        sent_at: Instant,
        backend_lost: Option<BoxFuture<'static, ()>>,
    ) -> Lease {
        let state = Arc::new(LeaseState {
            held: AtomicBool::new(true),
            deadline: Mutex::new(lease_end(sent_at, spec.ttl)),
            changed: Notify::new(),
            moved: Notify::new(),
            key: key.clone(),
            backend: backend.name(),
            changing: tokio::sync::Mutex::new(()),
        });
        let task = (spec.watchdog || backend_lost.is_some()).then(|| {
            let task = LeaseTask {
                backend,
                kind,
                key,
                token,
                spec,
                state: state.clone(),
                backend_lost,
            };
            // On dlock's background runtime: renewals go on when the caller's runtime ends.
            runtime::spawn_background(run(task, sent_at))
        });
        let task = task.flatten();
        Lease { state, task }
    }

    /// Stops renewing (before a release).
    pub(crate) fn stop(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the timer task of one lease works with.
struct LeaseTask {
    backend: Arc<dyn Backend>,
    kind: Kind,
    key: Arc<str>,
    token: Arc<str>,
    spec: LeaseSpec,
    state: Arc<LeaseState>,
    backend_lost: Option<BoxFuture<'static, ()>>,
}

async fn run(task: LeaseTask, sent_at: Instant) {
    let LeaseTask {
        backend,
        kind,
        key,
        token,
        spec,
        state,
        backend_lost,
    } = task;
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
                state.mark_lost("the backend reported the lock gone (session ended)");
                return;
            }
            _ = state.moved.notified() => {
                // An `extend` shorter than the watchdog's ttl must not run out before the next
                // renewal: renew within a third of what is left.
                let now = Instant::now();
                let left = state.deadline().saturating_duration_since(now);
                next_renewal = next_renewal.min(now + left / 3);
                continue;
            }
            _ = tokio::time::sleep_until(wake_at.into()) => {}
        }
        let now = Instant::now();
        if now >= state.deadline() {
            let why = if spec.watchdog {
                "no renewal succeeded before the lease deadline"
            } else {
                "the fixed lease (ttl) ran out while the guard was still held"
            };
            state.mark_lost(why);
            // Give the lock up explicitly: backends whose locks do not expire by themselves
            // (ZooKeeper) must not keep it past its ttl. Token-checked, so harmless elsewhere.
            let _ = backend.release(&key, kind, &token).await;
            return;
        }
        if !spec.watchdog || now < next_renewal {
            continue;
        }
        let changing = state.change().await;
        let now = Instant::now();
        let left = state.deadline().saturating_duration_since(now);
        match tokio::time::timeout(left, backend.extend(&key, kind, &token, spec.ttl)).await {
            Ok(Ok(true)) => {
                #[cfg(feature = "test-hooks")]
                crate::test_hooks::before_renewal_recorded(&key).await;
                state.set_deadline(now, spec.ttl);
                drop(changing);
                next_renewal = now + renew_every;
                crate::telemetry::renewal(name, true);
                tracing::trace!(target: "dlock", key = &*key, backend = name, "lock lease renewed");
            }
            Ok(Ok(false)) => {
                state.mark_lost("renewal refused: the lock is held by another token");
                return;
            }
            Ok(Err(e)) => {
                crate::telemetry::renewal(name, false);
                tracing::debug!(target: "dlock", key = &*key, backend = name, error = %e, "lock renewal failed; retrying");
                next_renewal = now + retry_every;
            }
            // The deadline passed while the renewal was in flight; the loop declares the loss.
            Err(_) => {}
        }
    }
}
