//! Waiting for a MySQL lock (see the module docs, "Waiting"): the local queue of each key,
//! hand-offs from a local holder to the front local waiter, and the cross-Locker turn, a
//! `GET_LOCK` user lock that only says whose turn it is to take the row.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlPool};
use sqlx::ConnectOptions;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    bounded, checked, lock_name, micros, query, Failure, Holder, Look, MysqlBackend, Statements,
    CONNECT_TIMEOUT, MAX_POLL, MIN_POLL, NAME, STATEMENT_TIMEOUT,
};
use crate::backend::digest::sha256_hex;
use crate::backend::waiters::{Handoff, KeyState, SettleOnDrop, Waiter, Waiters};
use crate::backend::{jitter, remaining, token_parts, within_wait, Grant};
use crate::Result;

/// How many times in a row a key may be handed from a holder to a local waiter before a release
/// lets it go (and gives up the turn), so that waiters of other Lockers get theirs.
pub(super) const MAX_HANDOFFS_IN_A_ROW: u32 = 16;
/// Connections per backend that wait for or hold a turn: one per key being waited for. Keys
/// beyond this many at once are waited for by polling alone.
const SIGNALS: usize = 8;
/// The longest `GET_LOCK` wait, in seconds: a turn held by a stalled process (or a row taken
/// without the turn) is looked past after at most this long.
const ASK_SECS: u32 = 2;
/// After a turn connection could not be opened or failed, waiters poll for this long.
const SIGNALS_PAUSE: Duration = Duration::from_secs(1);
/// How often a waiter that is not at the front checks whether it has become the front one, and
/// the front one checks a turn or a local holder it waits for (a safety net: both wake it).
const FRONT_CHECK: Duration = Duration::from_millis(500);
/// Looks in a row that find the key free again right away (released or taken over between the
/// `INSERT` and the probe); bounded so a one-attempt request cannot loop.
const FREE_LOOKS: u32 = 4;

/// The waiting state of one backend: local queues per `lock_name`, the turn connections.
pub(super) struct Waiting {
    pool: MySqlPool,
    sql: Arc<Statements>,
    queues: Waiters<String, KeyTurn>,
    signals: Signals,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").finish_non_exhaustive()
    }
}

/// This Locker's state of one key besides its waiters.
#[derive(Default)]
pub(super) struct KeyTurn {
    turn: Turn,
    /// The local token holding the row, with its lease end as the client counts it: the turn is
    /// kept while it holds, and the front waiter waits for its release instead of polling.
    holder: Option<(Box<str>, Instant)>,
    /// The last ask for the turn timed out or failed: the front looks at the row itself once.
    ask_failed: bool,
}

/// The cross-Locker turn of one key, as this Locker has it.
#[derive(Default)]
enum Turn {
    #[default]
    Free,
    /// A `GET_LOCK` is waiting on a turn connection.
    Asking,
    /// This Locker holds the user lock, on this connection.
    Held(Signal),
    /// The user lock is being released.
    Releasing,
}

impl KeyTurn {
    fn holding(&self) -> bool {
        self.holder
            .as_ref()
            .is_some_and(|(_, until)| Instant::now() < *until)
    }

    /// Time left of the local holder's lease, if one holds.
    fn holder_left(&self) -> Option<Duration> {
        self.holder
            .as_ref()
            .map(|(_, until)| until.saturating_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    /// Forgets `id` as the holder; `true` when it was.
    fn clear_holder(&mut self, id: &str) -> bool {
        if self.holder.as_ref().is_some_and(|(h, _)| &**h == id) {
            self.holder = None;
            return true;
        }
        false
    }

    /// Takes a held turn out for release.
    fn take_held(&mut self) -> Option<Signal> {
        if !matches!(self.turn, Turn::Held(_)) {
            return None;
        }
        match std::mem::replace(&mut self.turn, Turn::Releasing) {
            Turn::Held(signal) => Some(signal),
            _ => None,
        }
    }
}

impl KeyState for KeyTurn {
    fn idle(&self) -> bool {
        matches!(self.turn, Turn::Free) && !self.holding()
    }
}

/// What the front waiter does next.
enum Step {
    /// Try the row (`INSERT`, or a probe first): with the turn, after a failed ask, or polling
    /// because no turn connection is to be had.
    Attempt(Mode),
    /// Ask for the turn (a `GET_LOCK` task), then wait to be woken.
    Ask(OwnedSemaphorePermit),
    /// Wait to be woken (the turn, or a release of the key here), at most this long.
    Wait(Duration),
    /// Wait for the local holder's release (it hands the key over or wakes us), at most this
    /// long; then look at the row once (it may have been deleted from outside: a force release).
    WaitHolder(Duration),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Turn,
    AfterAsk,
    Poll,
}

/// How the ask for a turn ended.
enum Asked {
    Granted(Signal),
    TimedOut,
    Failed,
}

/// The connections that wait for and hold turns: outside the statement pool (a `GET_LOCK`
/// blocks its connection), at most [`SIGNALS`]. A connection goes back for reuse only when it
/// is known to hold no user lock; any other is closed, and closing a session frees its user
/// locks on the server.
struct Signals {
    options: MySqlConnectOptions,
    /// Database and table: user-lock names are server-wide.
    scope: String,
    idle: Mutex<Vec<MySqlConnection>>,
    permits: Arc<Semaphore>,
    paused_until: Mutex<Option<Instant>>,
}

struct Signal {
    conn: MySqlConnection,
    _permit: OwnedSemaphorePermit,
}

impl Signals {
    fn idle(&self) -> MutexGuard<'_, Vec<MySqlConnection>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn paused_until(&self) -> MutexGuard<'_, Option<Instant>> {
        self.paused_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A permit to use a turn connection, unless all are in use or they failed just now.
    fn permit(&self) -> Option<OwnedSemaphorePermit> {
        if self.paused_until().is_some_and(|t| Instant::now() < t) {
            return None;
        }
        self.permits.clone().try_acquire_owned().ok()
    }

    fn pause(&self) {
        *self.paused_until() = Some(Instant::now() + SIGNALS_PAUSE);
    }

    /// A turn connection, and whether it was kept from an earlier ask (it may have gone stale).
    async fn open(&self, permit: OwnedSemaphorePermit) -> Result<(Signal, bool)> {
        let kept = self.idle().pop();
        let reused = kept.is_some();
        let conn = match kept {
            Some(conn) => conn,
            None => tokio::time::timeout(CONNECT_TIMEOUT, self.options.connect())
                .await
                .map_err(|_| super::backend_err("no answer opening a turn connection"))?
                .map_err(super::backend_err)?,
        };
        let signal = Signal {
            conn,
            _permit: permit,
        };
        Ok((signal, reused))
    }

    /// Keeps a connection that holds no user lock for the next ask.
    fn put_back(&self, signal: Signal) {
        self.idle().push(signal.conn);
    }

    /// The user lock of a `lock_name`: `dlock:` and 56 hex digits of SHA-256 over the database,
    /// the table and the name (MySQL allows 64 characters).
    fn lock_name(&self, name: &str) -> String {
        let digest = sha256_hex(format!("{}\0{name}", self.scope).as_bytes());
        format!("dlock:{}", &digest[..56])
    }
}

/// Seconds a `GET_LOCK` may wait: at most [`ASK_SECS`], shorter when the holder's lease ends
/// sooner (whole seconds: MySQL counts them so).
fn ask_secs(lease_left: Option<Duration>) -> u32 {
    match lease_left {
        Some(left) if left < Duration::from_secs(u64::from(ASK_SECS)) => {
            (left.as_secs() as u32 + 1).min(ASK_SECS)
        }
        _ => ASK_SECS,
    }
}

/// A grant learnt from the row itself: its lease ends `left` from now, so it counts as sent
/// `ttl - left` ago.
fn grant_found(fence: u64, ttl: Duration, left: Duration) -> Grant {
    let now = Instant::now();
    let sent_at = now.checked_sub(ttl.saturating_sub(left)).unwrap_or(now);
    Grant::new(Some(fence), sent_at)
}

/// The outcome of a few looks at the key.
enum Attempt {
    Won(Grant),
    /// Held by another token (for this long yet, when known).
    Busy(Option<Duration>),
}

impl Waiting {
    pub(super) fn new(
        pool: MySqlPool,
        sql: Arc<Statements>,
        options: MySqlConnectOptions,
        table: &str,
    ) -> Self {
        let scope = format!("{}\0{table}", options.get_database().unwrap_or_default());
        Waiting {
            pool,
            sql,
            queues: Waiters::new(MAX_HANDOFFS_IN_A_ROW),
            signals: Signals {
                options,
                scope,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(SIGNALS)),
                paused_until: Mutex::new(None),
            },
        }
    }

    /// Drops the idle turn connections (at `Locker::close`).
    pub(super) fn close(&self) {
        self.signals.idle().clear();
    }

    /// What the front waiter of `name` does next.
    fn front_step(&self, name: &str) -> Step {
        self.queues.with(name, |q| {
            let Some(q) = q else {
                return Step::Attempt(Mode::Poll);
            };
            let state = &mut q.state;
            let holder_left = state.holder_left();
            match state.turn {
                // A local holder releases to us (or wakes us): no need to look at the row.
                Turn::Held(_) => match holder_left {
                    Some(left) => Step::WaitHolder(left.min(FRONT_CHECK) + MIN_POLL),
                    None => Step::Attempt(Mode::Turn),
                },
                Turn::Asking | Turn::Releasing => Step::Wait(FRONT_CHECK),
                Turn::Free if std::mem::take(&mut state.ask_failed) && holder_left.is_none() => {
                    Step::Attempt(Mode::AfterAsk)
                }
                Turn::Free => match self.signals.permit() {
                    Some(permit) => {
                        state.turn = Turn::Asking;
                        Step::Ask(permit)
                    }
                    None => match holder_left {
                        Some(left) => Step::WaitHolder(left.min(FRONT_CHECK) + MIN_POLL),
                        None => Step::Attempt(Mode::Poll),
                    },
                },
            }
        })
    }

    /// Asks for the turn of `name` in a task of its own (a `GET_LOCK` of at most `secs`
    /// seconds on a turn connection), which wakes the front waiter when it has the answer.
    fn ask(self: &Arc<Self>, name: &str, permit: OwnedSemaphorePermit, secs: u32) {
        let waiting = self.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            // Should the task end without an answer, the waiters must not wait for one.
            let mut done = AskDone {
                waiting: Some(waiting.clone()),
                name: name.clone(),
            };
            let lock = waiting.signals.lock_name(&name);
            let mut reused = false;
            let asked = match waiting.signals.open(permit).await {
                Ok((mut signal, kept)) => {
                    reused = kept;
                    let get = sqlx::query_scalar::<_, Option<i64>>("SELECT GET_LOCK(?, ?)")
                        .bind(&lock)
                        .bind(secs)
                        .fetch_one(&mut signal.conn);
                    let limit = Duration::from_secs(u64::from(secs)) + STATEMENT_TIMEOUT;
                    match tokio::time::timeout(limit, get).await {
                        Ok(Ok(Some(1))) => Asked::Granted(signal),
                        Ok(Ok(Some(_))) => {
                            waiting.signals.put_back(signal);
                            Asked::TimedOut
                        }
                        // Closing the connection frees whatever it may hold.
                        Ok(Ok(None)) | Ok(Err(_)) | Err(_) => Asked::Failed,
                    }
                }
                Err(e) => {
                    tracing::debug!(target: "dlock", backend = NAME, error = %e, "cannot open a turn connection; polling meanwhile");
                    Asked::Failed
                }
            };
            // A fresh connection that fails: waiters poll for a while. (A kept one may just
            // have gone stale; the next ask opens another.)
            if matches!(asked, Asked::Failed) && !reused {
                waiting.signals.pause();
            }
            done.waiting = None;
            waiting.asked(&name, asked).await;
        });
    }

    /// Records the answer to an ask and wakes the front waiter; a turn nobody here needs any
    /// more is released at once.
    async fn asked(self: &Arc<Self>, name: &str, asked: Asked) {
        let unneeded = self.queues.with(name, |q| {
            let Some(q) = q else {
                return match asked {
                    Asked::Granted(signal) => Some(signal),
                    _ => None,
                };
            };
            let unneeded = match asked {
                Asked::Granted(signal) if q.has_waiters() || q.state.holding() => {
                    q.state.turn = Turn::Held(signal);
                    None
                }
                Asked::Granted(signal) => {
                    q.state.turn = Turn::Releasing;
                    Some(signal)
                }
                Asked::TimedOut | Asked::Failed => {
                    q.state.turn = Turn::Free;
                    q.state.ask_failed = true;
                    None
                }
            };
            if let Some(front) = q.front() {
                front.wake();
            }
            unneeded
        });
        if let Some(signal) = unneeded {
            self.release_turn(name, signal, false).await;
        }
    }

    /// Releases a held turn (`RELEASE_LOCK`), then lets the front waiter ask again; after a
    /// release that let the key go free (`key_went_free`), hand-offs count afresh.
    async fn release_turn(&self, name: &str, mut signal: Signal, key_went_free: bool) {
        let lock = self.signals.lock_name(name);
        let released = bounded(
            sqlx::query_scalar::<_, Option<i64>>("SELECT RELEASE_LOCK(?)")
                .bind(&lock)
                .fetch_one(&mut signal.conn),
        )
        .await;
        match released {
            Ok(Some(1)) => self.signals.put_back(signal),
            // Not held any more, or no answer: closing the session frees it on the server.
            _ => drop(signal),
        }
        self.turn_released(name, key_went_free);
    }

    fn turn_released(&self, name: &str, key_went_free: bool) {
        self.queues.with(name, |q| {
            if let Some(q) = q {
                q.state.turn = Turn::Free;
                if key_went_free {
                    q.wake_front();
                } else if let Some(front) = q.front() {
                    front.wake();
                }
            }
        });
    }

    /// Releases a turn from a place that cannot wait (a drop): in a task when there is a
    /// runtime, else by closing its connection.
    fn release_turn_soon(self: &Arc<Self>, name: &str, signal: Signal) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let (waiting, name) = (self.clone(), name.to_owned());
                handle.spawn(async move { waiting.release_turn(&name, signal, false).await });
            }
            Err(_) => {
                drop(signal);
                self.turn_released(name, false);
            }
        }
    }

    /// After a release that did not hand the key over: `released` when it let the key go free.
    /// The holder is forgotten; the turn is given up when the key went free (others may be
    /// waiting for it) or nobody here needs it; the front waiter is woken.
    async fn after_release(self: &Arc<Self>, name: &str, id: &str, released: bool) {
        let yielded = self.queues.with(name, |q| {
            let q = q?;
            let was_holder = q.state.clear_holder(id);
            let unneeded = !q.has_waiters() && !q.state.holding();
            let signal = if released || unneeded {
                q.state.take_held()
            } else {
                None
            };
            if signal.is_none() {
                if released {
                    q.wake_front();
                } else if was_holder {
                    if let Some(front) = q.front() {
                        front.wake();
                    }
                }
            }
            signal
        });
        if let Some(signal) = yielded {
            self.release_turn(name, signal, released).await;
        }
    }

    /// A renewal: a holder that renewed keeps the turn as long again, one that lost its lease
    /// lets it go.
    pub(super) async fn extended(self: &Arc<Self>, name: &str, id: &str, ttl: Duration, ok: bool) {
        if !self.queues.has_entry(name) {
            return;
        }
        if ok {
            self.queues.with(name, |q| {
                if let Some((holder, until)) = q.and_then(|q| q.state.holder.as_mut()) {
                    if &**holder == id {
                        *until = Instant::now() + ttl;
                    }
                }
            });
        } else {
            self.after_release(name, id, false).await;
        }
    }

    /// The row of `name` was deleted from outside the holder (a force release): as a release
    /// by its holder `id` would have.
    pub(super) async fn freed(self: &Arc<Self>, name: &str, id: &str) {
        if self.queues.has_entry(name) {
            self.after_release(name, id, true).await;
        }
    }

    /// The hand-off: in one transaction, the releasing token's row is deleted and a row for the
    /// waiter inserted, with a new `AUTO_INCREMENT` id (its fence). `None` when the releasing
    /// token no longer held the key (nothing changed).
    async fn transfer(
        &self,
        name: &str,
        from: &str,
        to: Holder<'_>,
        ttl: Duration,
    ) -> std::result::Result<Option<(u64, Instant)>, Failure> {
        let mut tx = bounded(self.pool.begin()).await?;
        let deleted = bounded(
            query(&self.sql.release)
                .bind(name)
                .bind(from)
                .execute(&mut *tx),
        )
        .await?;
        if deleted.rows_affected() == 0 {
            let _ = bounded(tx.rollback()).await;
            return Ok(None);
        }
        let sent_at = Instant::now();
        let inserted = bounded(
            query(&self.sql.insert)
                .bind(name)
                .bind(to.id)
                .bind(to.owner)
                .bind(to.key)
                .bind(micros(ttl))
                .execute(&mut *tx),
        )
        .await?;
        bounded(tx.commit()).await?;
        Ok(Some((inserted.last_insert_id(), sent_at)))
    }

    /// A release of a key that has local waiters or a turn: hands the key to the front waiter
    /// when it may (see [`MAX_HANDOFFS_IN_A_ROW`]), else deletes the row and gives up the turn.
    async fn release_contended(
        self: Arc<Self>,
        key: String,
        name: String,
        id: String,
    ) -> Result<bool> {
        // Another local token holds the key (this one is, say, the clean-up release of a
        // dropped acquire): nothing to hand over.
        let other_holds = self.queues.with(name.as_str(), |q| {
            q.is_some_and(|q| {
                q.state.holding() && q.state.holder.as_ref().is_none_or(|(h, _)| **h != *id)
            })
        });
        let claimed = if other_holds {
            None
        } else {
            self.queues.claim_front(name.as_str())
        };
        if let Some(waiter) = claimed {
            let mut settle = SettleOnDrop(Some(waiter.clone()));
            let to = Holder::new(&key, &name, &waiter.token);
            match self.transfer(&name, &id, to, waiter.ttl).await {
                Ok(Some((fence, sent_at))) => {
                    settle.0 = None;
                    let until = sent_at + waiter.ttl;
                    // The holder is recorded first: the key must not look idle in between.
                    self.queues.with(name.as_str(), |q| {
                        if let Some(q) = q {
                            q.state.holder = Some((to.id.into(), until));
                        }
                    });
                    if !waiter.settle(Some((fence, sent_at))) {
                        // The waiter's acquire was dropped while the key was on its way: give
                        // the key up for it (its own cancel-release may have run before).
                        let undone = checked(&self.pool, "release", || {
                            query(&self.sql.release).bind(&*name).bind(to.id)
                        })
                        .await
                        .unwrap_or(false);
                        self.after_release(&name, to.id, undone).await;
                    }
                    return Ok(true);
                }
                Ok(None) => {
                    drop(settle);
                    self.after_release(&name, &id, false).await;
                    return Ok(false);
                }
                Err(f) => {
                    drop(settle);
                    let e = f.into_error();
                    tracing::debug!(target: "dlock", backend = NAME, key = %key, error = %e, "hand-off failed; releasing without it");
                }
            }
        }
        let released = checked(&self.pool, "release", || {
            query(&self.sql.release).bind(&*name).bind(&*id)
        })
        .await?;
        self.after_release(&name, &id, released).await;
        Ok(released)
    }
}

/// Ends an ask that stopped without an answer (its task was dropped): the front waiter is
/// woken and looks at the row itself.
struct AskDone {
    waiting: Option<Arc<Waiting>>,
    name: String,
}

impl Drop for AskDone {
    fn drop(&mut self) {
        if let Some(waiting) = self.waiting.take() {
            waiting.queues.with(self.name.as_str(), |q| {
                if let Some(q) = q {
                    q.state.turn = Turn::Free;
                    q.state.ask_failed = true;
                    if let Some(front) = q.front() {
                        front.wake();
                    }
                }
            });
        }
    }
}

/// A waiter's place in a key's local queue, left on drop (also when the acquire is dropped).
struct Place<'a> {
    waiting: &'a Arc<Waiting>,
    name: &'a str,
    id: &'a str,
    waiter: Arc<Waiter>,
    /// Left with the lock, whose lease ends then (as the client counts it).
    acquired: Option<Instant>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.acquired.is_none() {
            self.waiter.abandon();
        }
        let (acquired, id) = (self.acquired, self.id);
        let mut unneeded = None;
        self.waiting
            .queues
            .leave(self.name, &self.waiter, acquired.is_some(), |q| {
                if let Some(until) = acquired {
                    q.state.holder = Some((id.into(), until));
                }
                if !q.has_waiters() && !q.state.holding() {
                    unneeded = q.state.take_held();
                }
            });
        if let Some(signal) = unneeded {
            self.waiting.release_turn_soon(self.name, signal);
        }
    }
}

impl MysqlBackend {
    /// A few looks at the key: the `INSERT` (or, with `probe_first`, the probe first, and the
    /// `INSERT` only when it finds the key free), again while the key keeps turning out free.
    async fn attempt(
        &self,
        key: &str,
        name: &str,
        holder: Holder<'_>,
        ttl: Duration,
        deadline: Option<Instant>,
        probe_first: bool,
    ) -> Result<Attempt> {
        let ttl_us = micros(ttl);
        let mut try_insert = !probe_first;
        for _ in 0..FREE_LOOKS {
            let sent_at = Instant::now();
            let look = within_wait(
                NAME,
                deadline,
                self.look(key, name, holder, ttl_us, try_insert),
            )
            .await?;
            match look {
                Look::Won(fence) => return Ok(Attempt::Won(Grant::new(Some(fence), sent_at))),
                Look::Mine(fence, left) => return Ok(Attempt::Won(grant_found(fence, ttl, left))),
                Look::Held(left) => return Ok(Attempt::Busy(Some(left))),
                Look::Retry => return Ok(Attempt::Busy(None)),
                Look::Free => try_insert = true,
            }
        }
        Ok(Attempt::Busy(None))
    }

    pub(super) async fn acquire_inner(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> Result<Option<Grant>> {
        let name = lock_name(key);
        let holder = Holder::new(key, &name, token);
        let queues = &self.waiting.queues;
        let one_attempt = remaining(deadline).is_some_and(|left| left.is_zero());
        let mut lease_left = None;
        // Straight to the row only when this Locker has nobody queued for the key (nor a turn
        // or a holder of it): otherwise behind them, so a release hands the key on in order.
        if one_attempt || !queues.has_entry(&*name) {
            match self
                .attempt(key, &name, holder, ttl, deadline, false)
                .await?
            {
                Attempt::Won(grant) => return Ok(Some(grant)),
                Attempt::Busy(left) => lease_left = left,
            }
            if one_attempt {
                return Ok(None);
            }
        }
        let waiter = Arc::new(Waiter::new(token, ttl));
        queues.join(name.to_string(), waiter.clone());
        let mut place = Place {
            waiting: &self.waiting,
            name: &name,
            id: holder.id,
            waiter: waiter.clone(),
            acquired: None,
        };
        let mut poll = MIN_POLL;
        let mut probe_first = lease_left.is_some();
        // The wait for a local holder ran out without a word from it: look at the row once.
        let mut check_row = false;
        loop {
            let handoff = *waiter.handoff();
            if let Handoff::Granted { fence, sent_at } = handoff {
                // The hand-off's wake-up is used up: not passed on when leaving.
                waiter.consume_wake();
                place.acquired = Some(sent_at + ttl);
                return Ok(Some(Grant::new(Some(fence), sent_at)));
            }
            // None: until woken (or the deadline).
            let mut sleep = None;
            if matches!(handoff, Handoff::Claimed) {
                // A local release is handing the key to us: wait for its outcome.
            } else if queues.is_front(&*name, &waiter) {
                let step = match self.waiting.front_step(&name) {
                    Step::WaitHolder(_) if std::mem::take(&mut check_row) => {
                        probe_first = true;
                        Step::Attempt(Mode::Poll)
                    }
                    step => step,
                };
                match step {
                    Step::Attempt(mode) => {
                        waiter.consume_wake();
                        let attempt = self
                            .attempt(key, &name, holder, ttl, deadline, probe_first)
                            .await?;
                        match attempt {
                            Attempt::Won(grant) => {
                                place.acquired = Some(grant.sent_at + ttl);
                                return Ok(Some(grant));
                            }
                            Attempt::Busy(left) => {
                                lease_left = left;
                                probe_first = left.is_some();
                                sleep = Some(if mode == Mode::AfterAsk {
                                    // Ask again at once (the wait is in the `GET_LOCK`).
                                    Duration::ZERO
                                } else {
                                    // Wake no later than the holder's expiry (+1 ms:
                                    // `expire_at < now` must hold).
                                    let pause = jitter(poll / 2, poll);
                                    poll = (poll * 2).min(MAX_POLL);
                                    left.map_or(pause, |l| pause.min(l + MIN_POLL))
                                });
                            }
                        }
                    }
                    Step::Ask(permit) => {
                        self.waiting.ask(&name, permit, ask_secs(lease_left));
                        sleep = Some(FRONT_CHECK);
                    }
                    Step::Wait(at_most) => sleep = Some(at_most),
                    Step::WaitHolder(at_most) => {
                        sleep = Some(at_most);
                        check_row = true;
                    }
                }
            } else {
                sleep = Some(FRONT_CHECK);
            }
            let left = remaining(deadline);
            if left.is_some_and(|l| l.is_zero()) {
                if waiter.wait_ran_out(|| waiter.abandon_claimed()).await {
                    return Ok(None);
                }
                continue;
            }
            let sleep = match (sleep, left) {
                (Some(s), Some(l)) => Some(s.min(l)),
                (None, l) => l,
                (s, None) => s,
            };
            match sleep {
                Some(d) if d.is_zero() => {}
                Some(d) => {
                    tokio::select! {
                        _ = waiter.woken() => {
                            poll = MIN_POLL;
                            check_row = false;
                        }
                        _ = tokio::time::sleep(d) => {}
                    }
                }
                None => {
                    waiter.woken().await;
                    poll = MIN_POLL;
                    check_row = false;
                }
            }
        }
    }

    pub(super) async fn release_inner(&self, key: &str, token: &str) -> Result<bool> {
        let name = lock_name(key);
        let id = token_parts(token).0;
        if !self.waiting.queues.has_entry(&*name) {
            // Nobody here waits for the key: the plain token-checked DELETE.
            let released = self
                .checked("release", || query(&self.sql.release).bind(&*name).bind(id))
                .await?;
            if released {
                // A waiter that queued meanwhile may be polling: let it look now.
                self.waiting.queues.wake_front(&*name);
            }
            return Ok(released);
        }
        // In a task of its own, so that a dropped release never leaves a hand-off half done
        // (the waiter claimed, the turn held for nobody).
        let task = tokio::spawn(self.waiting.clone().release_contended(
            key.to_owned(),
            name.into_owned(),
            id.to_owned(),
        ));
        match task.await {
            Ok(done) => done,
            Err(e) => Err(super::backend_err(format!("the release task failed: {e}"))),
        }
    }
}
