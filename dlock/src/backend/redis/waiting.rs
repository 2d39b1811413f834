//! Waiting for a Redis lock: the local FIFO queue per key (one release wakes, or hands the lock
//! to, the front waiter only) and this Locker's place in the key's queue of waiting Lockers on
//! the server (see the module docs, "Waiting").

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::scripts::{self, LEAVE_QUEUE};
use super::{RedisBackend, RedisKeys, NAME};
use crate::backend::waiters::{Handoff, Waiter};
use crate::backend::{jitter, remaining, within_wait, Grant};
use crate::Result;

/// First fallback delay when a waiter hears no notice; doubles up to [`FALLBACK_MAX`].
const FALLBACK_MIN: Duration = Duration::from_millis(200);
/// The longest a front waiter goes without an attempt: each attempt renews its Locker's place
/// in the key's queue ([`scripts::QUEUE_MARK_MS`], three times as long).
const FALLBACK_MAX: Duration = Duration::from_secs(1);
/// How often a waiter behind others checks whether it has become the front one.
const FRONT_CHECK: Duration = Duration::from_millis(500);

/// How a waiter of a Redis key waits between attempts: until woken (a notice, a hand-off), or
/// at the front a fallback for a missed notice, jittered, bounded by how long the blocker lasts
/// when known, doubling from [`FALLBACK_MIN`] up to [`FALLBACK_MAX`]; behind the front, a check
/// every [`FRONT_CHECK`] whether it has moved to the front (the waiter ahead took the lock and
/// may never release it: crashed, or its lease ran out). Mutex and shared kinds alike.
pub(super) struct Pause {
    fallback: Duration,
}

impl Pause {
    pub(super) fn new() -> Self {
        Pause {
            fallback: FALLBACK_MIN,
        }
    }

    /// The next fallback is the shortest again (a notice may be lost: the subscription failed).
    pub(super) fn shorten(&mut self) {
        self.fallback = FALLBACK_MIN;
    }

    /// Waits; `true` when the waiter should attempt now. `busy_for`: how long the blocker lasts,
    /// as the last attempt heard (`None`: unknown, then at most `unknown`); `renew`: attempt at
    /// least this often (an attempt renews a mark); `left`: the wait's remaining time.
    pub(super) async fn wait(
        &mut self,
        waiter: &Waiter,
        front: bool,
        busy_for: Option<Duration>,
        unknown: Duration,
        renew: Option<Duration>,
        left: Option<Duration>,
    ) -> bool {
        let mut sleep = if front {
            let bound = match busy_for {
                Some(busy) => self.fallback.min(busy + Duration::from_millis(1)),
                None => self.fallback.min(unknown),
            };
            jitter(bound / 2, bound)
        } else {
            FRONT_CHECK
        };
        if let Some(renew) = renew {
            sleep = sleep.min(renew);
        }
        if let Some(left) = left {
            sleep = sleep.min(left);
        }
        tokio::select! {
            _ = waiter.woken() => {
                self.fallback = FALLBACK_MIN;
                true
            }
            _ = tokio::time::sleep(sleep) => {
                if front {
                    self.fallback = (self.fallback * 2).min(FALLBACK_MAX);
                }
                front || renew.is_some()
            }
        }
    }
}

/// The outcome of one acquire attempt.
pub(super) enum Attempt {
    Won {
        fence: u64,
        sent_at: Instant,
    },
    /// `left`: the holder's lease left, or the first queued Locker's turn (when known).
    Busy {
        left: Option<Duration>,
    },
}

/// A place in a key's local queue, left on drop (also when the acquire future is dropped).
struct QueuePlace<'a> {
    backend: &'a RedisBackend,
    keys: &'a RedisKeys,
    waiter: Arc<Waiter>,
    /// Leaving with the lock: the next waiter waits for our release notice.
    acquired: bool,
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        if !self.acquired {
            self.waiter.abandon();
        }
        let notices = &self.backend.notices;
        if !notices
            .waiters
            .leave(self.keys.channel(), &self.waiter, self.acquired, |_| {})
        {
            return;
        }
        // The last local waiter of this key left. Without the lock: this Locker leaves the
        // key's queue (a grant took it out already). Either way unsubscribe; in the background
        // (a drop must not wait for the server).
        if !self.acquired {
            self.backend.leave_queue(self.keys);
        }
        if let Some(pubsub) = self.backend.pubsub.get() {
            crate::runtime::spawn_background(super::notices::unsubscribe_if_idle(
                pubsub.clone(),
                Arc::downgrade(&self.backend.notices),
                self.keys.channel().to_vec(),
            ));
        }
    }
}

impl RedisBackend {
    pub(super) async fn acquire_once(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> Result<Option<Grant>> {
        let keys = RedisKeys::new(key);
        // After a recent restart that lost lock state: no grants until the restart delay.
        while let Some(until) = self.grants_wait() {
            if deadline.is_some_and(|d| d < until) {
                return Ok(None);
            }
            tokio::time::sleep_until(until.into()).await;
        }
        let one_attempt = remaining(deadline).is_some_and(|left| left.is_zero());
        // Barge only when no local waiter is queued for this key: otherwise queue behind
        // them, so a release hands the lock to the front waiter instead of racing it.
        if one_attempt || !self.notices.waiters.has_entry(keys.channel()) {
            // Inline: its rare steps (restart checks, replica waits) are boxed inside it.
            let attempt = self.attempt(&keys, token, ttl, !one_attempt);
            if let Attempt::Won { fence, sent_at } = within_wait(NAME, deadline, attempt).await? {
                return Ok(Some(Grant::new(Some(fence), sent_at)));
            }
            if one_attempt {
                return Ok(None);
            }
        }
        // Boxed likewise: the waiting loop's state is most of this future's size (4.5 KB
        // inline, copied into the box of every acquire).
        Box::pin(self.wait_in_queue(&keys, token, ttl, deadline)).await
    }

    /// The rest of an acquire whose first attempt found the key held (or local waiters ahead):
    /// queue behind this Locker's waiters, attempt when woken by a release notice or handed the
    /// lock, with a fallback retry bounded by the holder's lease.
    async fn wait_in_queue(
        &self,
        keys: &RedisKeys,
        token: &str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> Result<Option<Grant>> {
        // How long the holder's lease (or the first queued Locker's turn) has left, as the last
        // lost attempt heard.
        let mut busy_for: Option<Duration> = None;
        // Join the queue and subscribe before the next attempt, so no notice is missed.
        let waiter = Arc::new(Waiter::new(token, ttl));
        let mut should_attempt = self
            .notices
            .waiters
            .join(keys.channel().to_vec(), waiter.clone());
        let mut place = QueuePlace {
            backend: self,
            keys,
            waiter: waiter.clone(),
            acquired: false,
        };
        let mut pause = Pause::new();
        loop {
            // A holder of this Locker may have handed the lock straight to us.
            let handoff = *waiter.handoff();
            match handoff {
                Handoff::Granted { fence, sent_at } => {
                    // The hand-off's wake-up is used up: do not pass it on when leaving.
                    waiter.consume_wake();
                    place.acquired = true;
                    return Ok(Some(Grant::new(Some(fence), sent_at)));
                }
                Handoff::Claimed => should_attempt = false,
                Handoff::Open | Handoff::Closed | Handoff::Abandoned => {}
            }
            if should_attempt {
                // Subscribe before attempting, so no notice is missed in between. A failed
                // subscription is not fatal: the fallback retries soon, subscribing again.
                let listening =
                    within_wait(NAME, deadline, self.ensure_subscribed(keys.channel())).await;
                if let Err(e) = listening {
                    tracing::debug!(target: "dlock", backend = NAME, error = %e, "cannot subscribe to release notices; polling meanwhile");
                    pause.shorten();
                }
                // Consume a wake-up before attempting: the attempt answers it.
                waiter.consume_wake();
                match within_wait(NAME, deadline, self.attempt(keys, token, ttl, true)).await? {
                    Attempt::Won { fence, sent_at } => {
                        place.acquired = true;
                        return Ok(Some(Grant::new(Some(fence), sent_at)));
                    }
                    Attempt::Busy { left } => busy_for = left,
                }
            }
            let left = remaining(deadline);
            if left.is_some_and(|l| l.is_zero()) {
                if waiter
                    .wait_ran_out(|| self.abandon_claimed(keys, &waiter))
                    .await
                {
                    return Ok(None);
                }
                continue;
            }
            // The front waiter's fallback is bounded by the holder's lease (or the queued
            // Locker's turn) and comes at least every [`FALLBACK_MAX`], so its attempts renew
            // this Locker's place in the key's queue.
            let front = self.notices.waiters.is_front(keys.channel(), &waiter);
            let unknown = Duration::from_millis(5);
            should_attempt = pause
                .wait(&waiter, front, busy_for.take(), unknown, None, left)
                .await;
        }
    }

    /// Gives up on a hand-off still in flight when the wait has run out: the releaser will undo
    /// it when its answer comes, and a release of our own token queued behind the hand-off (same
    /// connection, so the server runs it after) undoes it if the releaser never hears back.
    /// `false` when the hand-off settled meanwhile.
    fn abandon_claimed(&self, keys: &RedisKeys, waiter: &Waiter) -> bool {
        if !waiter.abandon_claimed() {
            return false;
        }
        let (mut con, release) = (self.commands.clone(), self.release_script());
        let mut cmd = scripts::evalsha(release, 2);
        cmd.arg(keys.lock())
            .arg(keys.queue())
            .arg(&waiter.token)
            .arg(keys.channel())
            .arg(&*self.id);
        crate::runtime::spawn_background(async move {
            let undo: redis::RedisResult<i64> = scripts::run(&mut con, release, &cmd).await;
            if let Err(e) = undo {
                tracing::debug!(target: "dlock", backend = NAME, error = %e, "undoing an abandoned hand-off failed; its lease will run out");
            }
        });
        true
    }

    /// Takes this Locker out of the key's queue of waiting Lockers, in the background (its last
    /// local waiter gave up); when it was first in line for a free key, the next Locker is told.
    fn leave_queue(&self, keys: &RedisKeys) {
        let mut con = self.commands.clone();
        let mut cmd = scripts::evalsha(&LEAVE_QUEUE, 2);
        cmd.arg(keys.lock())
            .arg(keys.queue())
            .arg(&*self.id)
            .arg(keys.channel())
            .arg(self.publish_command());
        crate::runtime::spawn_background(async move {
            let left: redis::RedisResult<i64> = scripts::run(&mut con, &LEAVE_QUEUE, &cmd).await;
            if let Err(e) = left {
                tracing::debug!(target: "dlock", backend = NAME, error = %e, "leaving a key's queue failed; the place lapses by itself");
            }
        });
    }
}
