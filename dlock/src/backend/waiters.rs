//! The local waiter queue a backend keeps per key: FIFO within one [`Locker`](crate::Locker),
//! so that one release wakes one local waiter (no herd), a release can hand the lock straight to
//! the front waiter (no window in which another task of the same process barges in), a newcomer
//! queues behind waiters already there, and a waiter that gives up passes its turn on.
//!
//! What the server does stays the backend's: this module only decides *who* is next locally and
//! carries the outcome of a hand-off from the releasing task to the waiting one.
//!
//! - [`Waiters::join`] / [`Waiters::leave`]: a waiter's place, in arrival order. Leaving as the
//!   front without the lock, or with a wake-up not used, wakes the next waiter.
//! - [`Waiters::claim_front`]: a release that will hand the lock over claims the front waiter
//!   ([`Handoff::Claimed`]), then [`Waiter::settle`]s it with the grant (or with nothing, and the
//!   waiter goes back to waiting). At most `max_handoffs_in_a_row` claims in a row, so waiters of
//!   other Lockers (other processes) get their turn; [`Waiters::wake_front`] (the key went free)
//!   counts afresh.
//! - A waiter whose acquire is dropped while a hand-off is in flight is [`Handoff::Abandoned`]:
//!   the releasing side must give back a grant that lands anyway.
//! - Each key's entry carries a backend state `S` ([`KeyState`]); the entry stays while it has
//!   waiters or its state is not [idle](KeyState::idle) (MySQL keeps its cross-Locker turn there).

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::MIN_ANSWER_TIME;

/// A backend's own state per key, kept beside the key's waiters.
pub(crate) trait KeyState: Default + Send {
    /// Nothing to keep: the key's entry may go once it has no waiters.
    fn idle(&self) -> bool {
        true
    }
}

impl KeyState for () {}

/// Local waiters per key, in arrival order.
pub(crate) struct Waiters<K, S = ()> {
    queues: Mutex<HashMap<K, Queue<S>>>,
    max_handoffs_in_a_row: u32,
}

/// One key's waiters and backend state.
pub(crate) struct Queue<S> {
    waiters: VecDeque<Arc<Waiter>>,
    /// Hand-offs since the key was last let go free.
    handoffs_in_a_row: u32,
    /// The backend's state for this key.
    pub(crate) state: S,
}

impl<S: Default> Default for Queue<S> {
    fn default() -> Self {
        Queue {
            waiters: VecDeque::new(),
            handoffs_in_a_row: 0,
            state: S::default(),
        }
    }
}

impl<S> Queue<S> {
    pub(crate) fn has_waiters(&self) -> bool {
        !self.waiters.is_empty()
    }

    pub(crate) fn front(&self) -> Option<&Arc<Waiter>> {
        self.waiters.front()
    }

    /// The key went free: hand-offs count afresh, and the front waiter is woken.
    pub(crate) fn wake_front(&mut self) {
        self.handoffs_in_a_row = 0;
        if let Some(front) = self.waiters.front() {
            front.wake();
        }
    }
}

impl<S: KeyState> Queue<S> {
    fn idle(&self) -> bool {
        self.waiters.is_empty() && self.state.idle()
    }
}

/// One waiting acquire.
pub(crate) struct Waiter {
    /// The acquisition's token (a hand-off grants the lock to it).
    pub(crate) token: String,
    /// The lease it asked for.
    pub(crate) ttl: Duration,
    notify: Notify,
    /// Woken and not yet consumed: forwarded to the next waiter if this one leaves.
    pending: AtomicBool,
    handoff: Mutex<Handoff>,
}

/// A local holder's release may hand the lock straight to the front waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handoff {
    Open,
    /// A release is handing the lock over right now: wait for the outcome.
    Claimed,
    Granted {
        fence: u64,
        sent_at: Instant,
    },
    /// The waiter gave up; no hand-off may start.
    Closed,
    /// The waiter's acquire was dropped: a hand-off that completes anyway must be undone.
    Abandoned,
}

impl Waiter {
    pub(crate) fn new(token: &str, ttl: Duration) -> Self {
        Waiter {
            token: token.to_owned(),
            ttl,
            notify: Notify::new(),
            pending: AtomicBool::new(false),
            handoff: Mutex::new(Handoff::Open),
        }
    }

    /// Wakes the waiter (or its next wait, if it is not waiting right now).
    pub(crate) fn wake(&self) {
        self.pending.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Resolves at the next [`wake`](Self::wake) (at once if one came since the last wait).
    pub(crate) async fn woken(&self) {
        self.notify.notified().await;
    }

    /// Marks the wake-ups so far as answered (by the attempt about to be made, or a grant): they
    /// are not passed on when the waiter leaves.
    pub(crate) fn consume_wake(&self) {
        self.pending.store(false, Ordering::Release);
    }

    pub(crate) fn handoff(&self) -> MutexGuard<'_, Handoff> {
        self.handoff.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends a hand-off: granted, or back to waiting (the release found the lock not its own, or
    /// failed, or was dropped). `false` when the waiter was abandoned meanwhile: nothing changes,
    /// and a grant must be given back by the releasing side.
    pub(crate) fn settle(&self, grant: Option<(u64, Instant)>) -> bool {
        let mut state = self.handoff();
        if matches!(*state, Handoff::Abandoned) {
            return false;
        }
        *state = match grant {
            Some((fence, sent_at)) => Handoff::Granted { fence, sent_at },
            None => Handoff::Open,
        };
        drop(state);
        self.wake();
        true
    }

    /// Ends a claimed hand-off that did not grant and must not wake the waiter: back to waiting
    /// (Redis: the release passed the turn to another Locker; ours comes with a notice).
    pub(crate) fn reopen(&self) {
        let mut state = self.handoff();
        if matches!(*state, Handoff::Claimed) {
            *state = Handoff::Open;
        }
    }

    /// The waiter's wait ran out: no hand-off may start any more. `true` when one is in flight
    /// or done already (the caller takes its outcome).
    pub(crate) fn close(&self) -> bool {
        let mut state = self.handoff();
        match *state {
            Handoff::Open | Handoff::Closed | Handoff::Abandoned => {
                *state = Handoff::Closed;
                false
            }
            Handoff::Claimed | Handoff::Granted { .. } => true,
        }
    }

    /// The waiter's wait ran out. `true`: give up, nothing was handed over (no hand-off was in
    /// flight, or one still in flight after [`MIN_ANSWER_TIME`] that `abandon` gave up on; the
    /// releasing side then gives back a grant that lands anyway). `false`: a hand-off settled
    /// or is done: look at its outcome, even this late.
    pub(crate) async fn wait_ran_out(&self, abandon: impl FnOnce() -> bool) -> bool {
        if !self.close() {
            return true;
        }
        // Waited for no longer than one request may take.
        if matches!(*self.handoff(), Handoff::Claimed) {
            let settled = tokio::time::timeout(MIN_ANSWER_TIME, self.woken()).await;
            if settled.is_err() && abandon() {
                return true;
            }
        }
        false
    }

    /// The acquire is going away without the lock: a hand-off not granted yet is abandoned.
    pub(crate) fn abandon(&self) {
        let mut state = self.handoff();
        if !matches!(*state, Handoff::Granted { .. }) {
            *state = Handoff::Abandoned;
        }
    }

    /// Gives up on a hand-off still in flight; `false` when it settled meanwhile.
    pub(crate) fn abandon_claimed(&self) -> bool {
        let mut state = self.handoff();
        if !matches!(*state, Handoff::Claimed) {
            return false;
        }
        *state = Handoff::Abandoned;
        true
    }
}

/// Settles a claimed hand-off as "not granted" if the releasing future is dropped midway.
pub(crate) struct SettleOnDrop(pub(crate) Option<Arc<Waiter>>);

impl Drop for SettleOnDrop {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            let _ = w.settle(None);
        }
    }
}

impl<K: Hash + Eq, S: KeyState> Waiters<K, S> {
    pub(crate) fn new(max_handoffs_in_a_row: u32) -> Self {
        Waiters {
            queues: Mutex::new(HashMap::new()),
            max_handoffs_in_a_row,
        }
    }

    fn queues(&self) -> MutexGuard<'_, HashMap<K, Queue<S>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the key has an entry: waiters, or backend state that is not idle.
    pub(crate) fn has_entry<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.queues().contains_key(key)
    }

    pub(crate) fn is_front<Q>(&self, key: &Q, waiter: &Arc<Waiter>) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.queues()
            .get(key)
            .and_then(|q| q.waiters.front())
            .is_some_and(|f| Arc::ptr_eq(f, waiter))
    }

    /// Adds a waiter at the back of the key's queue; `true` when it is at the front.
    pub(crate) fn join(&self, key: K, waiter: Arc<Waiter>) -> bool {
        let mut queues = self.queues();
        let queue = queues.entry(key).or_default();
        queue.waiters.push_back(waiter);
        queue.waiters.len() == 1
    }

    /// Removes a waiter; `true` when the key's entry went with it (no waiters, idle state).
    /// A front waiter leaving without the lock (it gave up), or with a wake-up it did not use,
    /// wakes the next one. `on_leave` sees the key's queue after the waiter left, before an idle
    /// entry is dropped.
    pub(crate) fn leave<Q>(
        &self,
        key: &Q,
        waiter: &Arc<Waiter>,
        acquired: bool,
        on_leave: impl FnOnce(&mut Queue<S>),
    ) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut queues = self.queues();
        let Some(queue) = queues.get_mut(key) else {
            return false;
        };
        let was_front = queue
            .waiters
            .front()
            .is_some_and(|f| Arc::ptr_eq(f, waiter));
        queue.waiters.retain(|w| !Arc::ptr_eq(w, waiter));
        if waiter.pending.load(Ordering::Acquire) || (was_front && !acquired) {
            if let Some(next) = queue.waiters.front() {
                next.wake();
            }
        }
        on_leave(queue);
        if queue.idle() {
            queues.remove(key);
            true
        } else {
            false
        }
    }

    /// The key went free: count hand-offs afresh and wake the front waiter.
    pub(crate) fn wake_front<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(queue) = self.queues().get_mut(key) {
            queue.wake_front();
        }
    }

    /// Claims the front waiter for a hand-off, unless the key was handed over
    /// `max_handoffs_in_a_row` times in a row already or the front waiter is not open to one.
    pub(crate) fn claim_front<Q>(&self, key: &Q) -> Option<Arc<Waiter>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut queues = self.queues();
        let queue = queues.get_mut(key)?;
        if queue.handoffs_in_a_row >= self.max_handoffs_in_a_row {
            return None;
        }
        let front = queue.waiters.front()?;
        let mut state = front.handoff();
        if !matches!(*state, Handoff::Open) {
            return None;
        }
        *state = Handoff::Claimed;
        drop(state);
        queue.handoffs_in_a_row += 1;
        Some(front.clone())
    }

    /// Whether no key has an entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.queues().is_empty()
    }

    /// The keys that have an entry.
    pub(crate) fn keys(&self) -> Vec<K>
    where
        K: Clone,
    {
        self.queues().keys().cloned().collect()
    }

    /// Wakes the front waiter of every key (a notice may have been missed on every one).
    pub(crate) fn wake_all_fronts(&self) {
        for front in self.queues().values().filter_map(|q| q.waiters.front()) {
            front.wake();
        }
    }

    /// Runs `f` on the key's entry, if there is one; an entry left idle is dropped.
    pub(crate) fn with<Q, R>(&self, key: &Q, f: impl FnOnce(Option<&mut Queue<S>>) -> R) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut queues = self.queues();
        let Some(queue) = queues.get_mut(key) else {
            return f(None);
        };
        let out = f(Some(queue));
        if queue.idle() {
            queues.remove(key);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(token: &str) -> Arc<Waiter> {
        Arc::new(Waiter::new(token, Duration::from_secs(1)))
    }

    #[test]
    fn fifo_claims_bounded_in_a_row_and_turns_passed_on() {
        let w: Waiters<String> = Waiters::new(2);
        let (a, b, c) = (waiter("a"), waiter("b"), waiter("c"));
        assert!(w.join("k".into(), a.clone()));
        assert!(!w.join("k".into(), b.clone()));
        assert!(!w.join("k".into(), c.clone()));
        assert!(w.is_front("k", &a));
        // The front is claimed; a claimed front cannot be claimed twice.
        let claimed = w.claim_front("k").unwrap();
        assert!(Arc::ptr_eq(&claimed, &a));
        assert!(w.claim_front("k").is_none());
        assert!(claimed.settle(Some((7, Instant::now()))));
        assert!(matches!(*a.handoff(), Handoff::Granted { fence: 7, .. }));
        a.consume_wake();
        assert!(!w.leave("k", &a, true, |_| {}));
        // b gives up at the front without the lock: c is woken and is the front.
        assert!(w.is_front("k", &b));
        let c_woken = c.pending.load(Ordering::Acquire);
        assert!(!c_woken);
        assert!(!w.leave("k", &b, false, |_| {}));
        assert!(c.pending.load(Ordering::Acquire));
        assert!(w.is_front("k", &c));
        // Second claim in a row, then the bound; the key going free resets it.
        assert!(w.claim_front("k").is_some());
        assert!(c.settle(None));
        assert!(w.claim_front("k").is_none(), "bounded in a row");
        w.wake_front("k");
        assert!(w.claim_front("k").is_some());
        assert!(c.settle(None));
        assert!(
            w.leave("k", &c, false, |_| {}),
            "the entry goes with the last waiter"
        );
        assert!(!w.has_entry("k"));
    }

    #[derive(Default)]
    struct Busy(bool);
    impl KeyState for Busy {
        fn idle(&self) -> bool {
            !self.0
        }
    }

    #[test]
    fn an_entry_with_busy_state_stays_until_idle() {
        let w: Waiters<String, Busy> = Waiters::new(16);
        let a = waiter("a");
        w.join("k".into(), a.clone());
        assert!(!w.leave("k", &a, true, |q| q.state.0 = true));
        assert!(w.has_entry("k"));
        w.with("k", |q| q.unwrap().state.0 = false);
        assert!(!w.has_entry("k"));
    }

    #[test]
    fn closing_and_abandoning() {
        let a = waiter("a");
        assert!(!a.close(), "nothing in flight");
        let b = waiter("b");
        *b.handoff() = Handoff::Claimed;
        assert!(b.close(), "a hand-off in flight is waited for");
        assert!(b.abandon_claimed());
        assert!(
            !b.settle(Some((1, Instant::now()))),
            "an abandoned waiter is never granted"
        );
        assert_eq!(*b.handoff(), Handoff::Abandoned);
    }
}
