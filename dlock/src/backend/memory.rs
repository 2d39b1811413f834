//! The in-process backend: a map of keys to holders, waiters woken by [`tokio::sync::Notify`].
//!
//! Always compiled. Each [`Locker::memory()`](crate::Locker::memory) is its own lock space; the
//! registry's `"memory"` name is one process-wide space. Fences come from one counter per
//! backend, so they strictly increase per key (and across keys). Leases expire by the clock of
//! this process; a mutex release wakes exactly one waiter (`notify_one`; a waiter cancelled after being
//! woken passes the wake-up on), and waiters of an expired holder wake at its expiry, without
//! polling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{permit_mismatch, token_parts, Backend, BoxFuture, Grant, Kind, LockInfo, Space};
use crate::Result;

/// The in-memory [`Backend`].
#[derive(Debug, Default)]
pub struct MemoryBackend {
    slots: Mutex<HashMap<(Space, String), Slot>>,
    /// The fence of the last write hold per read-write key, which its readers are given.
    last_write: Mutex<HashMap<String, u64>>,
    next_fence: AtomicU64,
    attempts: AtomicU64,
}

/// Every this many attempts, slots whose lease ran out unreleased (a forgotten guard) and that
/// nobody waits on are dropped, so they do not pile up.
const SWEEP_EVERY: u64 = 1024;

#[derive(Debug, Default)]
struct Slot {
    /// One for a mutex or a write hold; readers or permit holders otherwise.
    holders: Vec<Holder>,
    /// Writers waiting for this read-write key: new readers wait behind them.
    writers_waiting: usize,
    released: Arc<Notify>,
}

#[derive(Debug)]
struct Holder {
    token: String,
    kind: Kind,
    fence: u64,
    expires_at: Instant,
}

impl Holder {
    fn live(&self, now: Instant) -> bool {
        self.expires_at > now
    }

    fn info(&self, key: &str, now: Instant) -> LockInfo {
        LockInfo {
            key: key.to_owned(),
            owner: token_parts(&self.token).1.map(str::to_owned),
            fence: Some(self.fence),
            expires_in: Some(self.expires_at - now),
        }
    }
}

impl Slot {
    /// Whether `kind` may be granted now (holders already pruned of expired ones).
    fn admits(&self, kind: Kind) -> Result<bool> {
        Ok(match kind {
            Kind::Exclusive | Kind::Write => self.holders.is_empty(),
            Kind::Read => {
                self.writers_waiting == 0 && self.holders.iter().all(|h| h.kind == Kind::Read)
            }
            Kind::Permit(permits) => {
                if let Some(other) = self.holders.iter().find(|h| h.kind != kind) {
                    let held = match other.kind {
                        Kind::Permit(n) => Some(n),
                        _ => None,
                    };
                    return Err(permit_mismatch(permits, held));
                }
                self.holders.len() < permits as usize
            }
        })
    }

    fn is_idle(&self) -> bool {
        self.holders.is_empty()
            && self.writers_waiting == 0
            && Arc::strong_count(&self.released) == 1
    }
}

/// Counts a waiting writer of a read-write key while it waits (new readers queue behind it).
struct WaitingWriter<'a> {
    backend: &'a MemoryBackend,
    key: &'a str,
}

impl Drop for WaitingWriter<'_> {
    fn drop(&mut self) {
        let mut slots = self.backend.slots();
        if let Some(slot) = slots.get_mut(&(Space::ReadWrite, self.key.to_owned())) {
            slot.writers_waiting -= 1;
            if slot.writers_waiting == 0 {
                // Readers held back by this writer may go now.
                slot.released.notify_waiters();
            }
        }
    }
}

impl MemoryBackend {
    /// An empty lock space.
    pub fn new() -> Self {
        Self::default()
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<(Space, String), Slot>> {
        // A panic while holding this lock cannot leave the map inconsistent (every update is a
        // single assignment), so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn last_write(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.last_write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of keys currently held by a live lease (for tests and diagnostics).
    pub fn held_keys(&self) -> usize {
        let now = Instant::now();
        self.slots()
            .values()
            .filter(|s| s.holders.iter().any(|h| h.live(now)))
            .count()
    }

    fn fence_for(&self, key: &str, kind: Kind) -> u64 {
        if kind == Kind::Read {
            return 0;
        }
        let fence = self.next_fence.fetch_add(1, Ordering::Relaxed) + 1;
        if kind == Kind::Write {
            self.last_write().insert(key.to_owned(), fence);
        }
        fence
    }

    async fn acquire_inner(
        &self,
        key: &str,
        kind: Kind,
        token: &str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> Result<Option<Grant>> {
        let id = (kind.space(), key.to_owned());
        let mut waiting_writer = None;
        loop {
            // Registered before the map is unlocked, so no release in between is missed.
            let (released, wake_at) = match self.attempt(&id, kind, token, ttl, deadline)? {
                Attempt::Granted(grant) => return Ok(Some(grant)),
                Attempt::Busy { released, wake_at } => (released, wake_at),
                Attempt::GaveUp => return Ok(None),
            };
            if kind == Kind::Write && waiting_writer.is_none() {
                // Counted from the first failed attempt (the attempt below sees it).
                let mut slots = self.slots();
                if let Some(slot) = slots.get_mut(&id) {
                    slot.writers_waiting += 1;
                    drop(slots);
                    waiting_writer = Some(WaitingWriter { backend: self, key });
                    continue;
                }
            }
            let notified = released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A release between the attempt and `enable` would be missed: look once more.
            if self.peek(&id, kind)? {
                continue;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(wake_at.into()) => {}
            }
        }
    }

    /// Whether `kind` would be admitted now (nothing changed).
    fn peek(&self, id: &(Space, String), kind: Kind) -> Result<bool> {
        let now = Instant::now();
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(id) else {
            return Ok(true);
        };
        slot.holders.retain(|h| h.live(now));
        slot.admits(kind)
    }

    fn attempt(
        &self,
        id: &(Space, String),
        kind: Kind,
        token: &str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> Result<Attempt> {
        let now = Instant::now();
        let mut slots = self.slots();
        if self.attempts.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            slots.retain(|_, s| {
                s.holders.retain(|h| h.live(now));
                !s.is_idle()
            });
        }
        let slot = slots.entry(id.clone()).or_default();
        slot.holders.retain(|h| h.live(now));
        if slot.admits(kind)? {
            let key = &id.1;
            let fence = self.fence_for(key, kind);
            slot.holders.push(Holder {
                token: token.to_owned(),
                kind,
                fence,
                expires_at: now + ttl,
            });
            let fence = match kind {
                Kind::Read => self.last_write().get(key).copied(),
                _ => Some(fence),
            };
            return Ok(Attempt::Granted(Grant::new(fence, now)));
        }
        if deadline.is_some_and(|d| d <= now) {
            return Ok(Attempt::GaveUp);
        }
        // Wake on a release, the first holder's expiry, or our deadline, whichever is first.
        let expires_at = slot
            .holders
            .iter()
            .map(|h| h.expires_at)
            .min()
            .unwrap_or(now);
        Ok(Attempt::Busy {
            released: slot.released.clone(),
            wake_at: deadline.map_or(expires_at, |d| d.min(expires_at)),
        })
    }
}

enum Attempt {
    Granted(Grant),
    Busy {
        released: Arc<Notify>,
        wake_at: Instant,
    },
    GaveUp,
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn acquire<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        Box::pin(self.acquire_inner(key, kind, token, ttl, deadline))
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut slots = self.slots();
            let id = (kind.space(), key.to_owned());
            let Some(slot) = slots.get_mut(&id) else {
                return Ok(false);
            };
            let before = slot.holders.len();
            slot.holders
                .retain(|h| !(h.token == token && h.kind == kind && h.live(now)));
            let ours = slot.holders.len() < before;
            if ours {
                if kind == Kind::Exclusive {
                    // A mutex admits one: wake exactly one waiter.
                    slot.released.notify_one();
                } else {
                    // Several readers (or a writer, or any permit waiter) may go now.
                    slot.released.notify_waiters();
                }
            }
            // Drop the slot when nobody holds or waits on it (waiters keep a clone of the Notify).
            slot.holders.retain(|h| h.live(now));
            if slot.is_idle() {
                slots.remove(&id);
            }
            Ok(ours)
        })
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut slots = self.slots();
            let id = (kind.space(), key.to_owned());
            let holder = slots.get_mut(&id).and_then(|s| {
                s.holders
                    .iter_mut()
                    .find(|h| h.token == token && h.kind == kind && h.live(now))
            });
            match holder {
                Some(h) => {
                    h.expires_at = now + ttl;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    fn inspect<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<LockInfo>>> {
        Box::pin(async move {
            let now = Instant::now();
            let slots = self.slots();
            Ok(slots
                .get(&(Space::Mutex, key.to_owned()))
                .and_then(|s| s.holders.iter().find(|h| h.live(now)))
                .map(|h| h.info(key, now)))
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(async move {
            let now = Instant::now();
            let slots = self.slots();
            Ok(slots
                .iter()
                .filter(|((space, key), _)| *space == Space::Mutex && key.starts_with(prefix))
                .filter_map(|((_, key), s)| {
                    let h = s.holders.iter().find(|h| h.live(now))?;
                    Some(h.info(key, now))
                })
                .collect())
        })
    }

    fn force_release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let token = {
                let now = Instant::now();
                let slots = self.slots();
                let holder = slots
                    .get(&(Space::Mutex, key.to_owned()))
                    .and_then(|s| s.holders.iter().find(|h| h.live(now)));
                match holder {
                    Some(h) => h.token.clone(),
                    None => return Ok(false),
                }
            };
            // The holder's own (token-checked) release: waiters are woken the same way.
            self.release(key, Kind::Exclusive, &token).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: Kind = Kind::Exclusive;

    #[tokio::test]
    async fn release_is_token_checked() {
        let m = MemoryBackend::new();
        let g = m.acquire("k", X, "a", Duration::from_secs(5), None).await;
        assert_eq!(g.unwrap().unwrap().fence, Some(1));
        assert!(!m.release("k", X, "b").await.unwrap());
        assert!(!m.extend("k", X, "b", Duration::from_secs(1)).await.unwrap());
        assert!(m.extend("k", X, "a", Duration::from_secs(1)).await.unwrap());
        assert!(m.release("k", X, "a").await.unwrap());
        assert!(!m.release("k", X, "a").await.unwrap());
        assert_eq!(m.slots().len(), 0, "a free, unwatched slot is dropped");
    }

    #[tokio::test]
    async fn slots_of_forgotten_leases_are_swept() {
        let m = MemoryBackend::new();
        let short = Duration::from_millis(1);
        for i in 0..SWEEP_EVERY {
            let r = m.acquire(&format!("k{i}"), X, "t", short, None).await;
            assert!(r.unwrap().is_some());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        for _ in 0..SWEEP_EVERY {
            let r = m
                .acquire("live", X, "t", Duration::from_secs(5), Some(Instant::now()))
                .await;
            r.unwrap();
        }
        assert_eq!(m.slots().len(), 1, "only the live slot is left");
    }

    #[tokio::test]
    async fn one_attempt_when_deadline_passed() {
        let m = MemoryBackend::new();
        let ttl = Duration::from_secs(5);
        assert!(m.acquire("k", X, "a", ttl, None).await.unwrap().is_some());
        let busy = m
            .acquire("k", X, "b", ttl, Some(Instant::now()))
            .await
            .unwrap();
        assert!(busy.is_none());
    }

    #[tokio::test]
    async fn expired_holder_is_taken_over_with_a_higher_fence() {
        let m = MemoryBackend::new();
        let first = m
            .acquire("k", X, "a", Duration::from_millis(20), None)
            .await;
        let f1 = first.unwrap().unwrap().fence.unwrap();
        let second = m.acquire("k", X, "b", Duration::from_secs(5), None).await;
        let f2 = second.unwrap().unwrap().fence.unwrap();
        assert!(f2 > f1);
        assert!(!m.release("k", X, "a").await.unwrap());
    }
}
