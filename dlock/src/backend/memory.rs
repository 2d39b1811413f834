//! The in-process backend: a map of keys to holders, waiters woken by [`tokio::sync::Notify`].
//!
//! Always compiled. Each [`Locker::memory()`](crate::Locker::memory) is its own lock space; the
//! registry's `"memory"` name is one process-wide space. Fences come from one counter per
//! backend, so they strictly increase per key (and across keys). Leases expire by the clock of
//! this process; a release wakes exactly one waiter (`notify_one`; a waiter cancelled after being
//! woken passes the wake-up on), and waiters of an expired holder wake at its expiry, without
//! polling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{token_parts, Backend, BoxFuture, Grant, LockInfo};
use crate::Result;

/// The in-memory [`Backend`].
#[derive(Debug, Default)]
pub struct MemoryBackend {
    slots: Mutex<HashMap<String, Slot>>,
    next_fence: AtomicU64,
    attempts: AtomicU64,
}

/// Every this many attempts, slots whose lease ran out unreleased (a forgotten guard) and that
/// nobody waits on are dropped, so they do not pile up.
const SWEEP_EVERY: u64 = 1024;

#[derive(Debug, Default)]
struct Slot {
    holder: Option<Holder>,
    released: Arc<Notify>,
}

#[derive(Debug)]
struct Holder {
    token: String,
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

enum Attempt {
    Granted(u64, Instant),
    Busy {
        released: Arc<Notify>,
        expires_at: Instant,
    },
}

impl MemoryBackend {
    /// An empty lock space.
    pub fn new() -> Self {
        Self::default()
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding this lock cannot leave the map inconsistent (every update is a
        // single assignment), so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn attempt(&self, key: &str, token: &str, ttl: Duration) -> Attempt {
        let now = Instant::now();
        let mut slots = self.slots();
        if self.attempts.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            slots.retain(|_, s| {
                s.holder.as_ref().is_some_and(|h| h.live(now)) || Arc::strong_count(&s.released) > 1
            });
        }
        let slot = slots.entry(key.to_owned()).or_default();
        match &slot.holder {
            Some(h) if h.live(now) => Attempt::Busy {
                released: slot.released.clone(),
                expires_at: h.expires_at,
            },
            _ => {
                let fence = self.next_fence.fetch_add(1, Ordering::Relaxed) + 1;
                slot.holder = Some(Holder {
                    token: token.to_owned(),
                    fence,
                    expires_at: now + ttl,
                });
                Attempt::Granted(fence, now)
            }
        }
    }

    /// Number of keys currently held by a live lease (for tests and diagnostics).
    pub fn held_keys(&self) -> usize {
        let now = Instant::now();
        self.slots()
            .values()
            .filter(|s| s.holder.as_ref().is_some_and(|h| h.live(now)))
            .count()
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn acquire<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        Box::pin(async move {
            loop {
                let (released, expires_at) = match self.attempt(key, token, ttl) {
                    Attempt::Granted(fence, sent_at) => {
                        return Ok(Some(Grant::new(Some(fence), sent_at)))
                    }
                    Attempt::Busy {
                        released,
                        expires_at,
                    } => (released, expires_at),
                };
                if deadline.is_some_and(|d| d <= Instant::now()) {
                    return Ok(None);
                }
                // Wake on the holder's release, its expiry, or our deadline, whichever is first.
                let wake_at = deadline.map_or(expires_at, |d| d.min(expires_at));
                tokio::select! {
                    _ = released.notified() => {}
                    _ = tokio::time::sleep_until(wake_at.into()) => {}
                }
            }
        })
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut slots = self.slots();
            let Some(slot) = slots.get_mut(key) else {
                return Ok(false);
            };
            let ours = slot
                .holder
                .as_ref()
                .is_some_and(|h| h.token == token && h.live(now));
            if ours {
                slot.holder = None;
                slot.released.notify_one();
            }
            // Drop the slot when nobody holds or waits on it (waiters keep a clone of the Notify).
            if slot.holder.is_none() && Arc::strong_count(&slot.released) == 1 {
                slots.remove(key);
            }
            Ok(ours)
        })
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let now = Instant::now();
            let mut slots = self.slots();
            match slots.get_mut(key).and_then(|s| s.holder.as_mut()) {
                Some(h) if h.token == token && h.live(now) => {
                    h.expires_at = now + ttl;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    fn inspect<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<LockInfo>>> {
        Box::pin(async move {
            let now = Instant::now();
            let slots = self.slots();
            Ok(slots
                .get(key)
                .and_then(|s| s.holder.as_ref())
                .filter(|h| h.live(now))
                .map(|h| h.info(key, now)))
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(async move {
            let now = Instant::now();
            let slots = self.slots();
            Ok(slots
                .iter()
                .filter(|(key, _)| key.starts_with(prefix))
                .filter_map(|(key, s)| {
                    let h = s.holder.as_ref().filter(|h| h.live(now))?;
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
                let holder = slots.get(key).and_then(|s| s.holder.as_ref());
                match holder.filter(|h| h.live(now)) {
                    Some(h) => h.token.clone(),
                    None => return Ok(false),
                }
            };
            // The holder's own (token-checked) release: waiters are woken the same way.
            self.release(key, &token).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn release_is_token_checked() {
        let m = MemoryBackend::new();
        let g = m.acquire("k", "a", Duration::from_secs(5), None).await;
        assert_eq!(g.unwrap().unwrap().fence, Some(1));
        assert!(!m.release("k", "b").await.unwrap());
        assert!(!m.extend("k", "b", Duration::from_secs(1)).await.unwrap());
        assert!(m.extend("k", "a", Duration::from_secs(1)).await.unwrap());
        assert!(m.release("k", "a").await.unwrap());
        assert!(!m.release("k", "a").await.unwrap());
        assert_eq!(m.slots().len(), 0, "a free, unwatched slot is dropped");
    }

    #[tokio::test]
    async fn slots_of_forgotten_leases_are_swept() {
        let m = MemoryBackend::new();
        let short = Duration::from_millis(1);
        for i in 0..SWEEP_EVERY {
            let r = m.acquire(&format!("k{i}"), "t", short, None).await;
            assert!(r.unwrap().is_some());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        for _ in 0..SWEEP_EVERY {
            let r = m
                .acquire("live", "t", Duration::from_secs(5), Some(Instant::now()))
                .await;
            r.unwrap();
        }
        assert_eq!(m.slots().len(), 1, "only the live slot is left");
    }

    #[tokio::test]
    async fn one_attempt_when_deadline_passed() {
        let m = MemoryBackend::new();
        let ttl = Duration::from_secs(5);
        assert!(m.acquire("k", "a", ttl, None).await.unwrap().is_some());
        let busy = m
            .acquire("k", "b", ttl, Some(Instant::now()))
            .await
            .unwrap();
        assert!(busy.is_none());
    }

    #[tokio::test]
    async fn expired_holder_is_taken_over_with_a_higher_fence() {
        let m = MemoryBackend::new();
        let first = m.acquire("k", "a", Duration::from_millis(20), None).await;
        let f1 = first.unwrap().unwrap().fence.unwrap();
        let second = m.acquire("k", "b", Duration::from_secs(5), None).await;
        let f2 = second.unwrap().unwrap().fence.unwrap();
        assert!(f2 > f1);
        assert!(!m.release("k", "a").await.unwrap());
    }
}
