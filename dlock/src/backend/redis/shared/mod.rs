//! Read-write locks and semaphores on Redis ([`Kind::Read`], [`Kind::Write`], [`Kind::Permit`]).
//!
//! # Data
//! Per user key `k` (escaped to `E(k)` as for the mutex) and key space, in the slot of the
//! mutex's hash tag `{E(k)}`, so every key a script touches is on one Cluster node:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `dlock:rw:{E(k)}:readers` | sorted set | reader token → lease end (server ms) |
//! | `dlock:rw:{E(k)}:writer` | string, `PX` | the writer's token |
//! | `dlock:rw:{E(k)}:waiting` | sorted set | waiting writer token → mark end (server ms) |
//! | `dlock:rw:{E(k)}:fence` | string | the fence of the last write (readers are given it) |
//! | `dlock:sem:{E(k)}:holders` | sorted set | permit token → lease end (server ms) |
//! | `dlock:sem:{E(k)}:permits` | string | the count the holders named |
//! | `dlock:sem:{E(k)}:fence` | string | the permits' fence counter |
//!
//! Notices go on `dlock:rw:{E(k)}:released` and `dlock:sem:{E(k)}:released`, apart from the
//! mutex's. Lease ends are the server's clock (`TIME` inside the scripts), never a client's.
//! Each sorted set (and the permit count) expires with its last holder (`PEXPIREAT` to the
//! highest score), so nothing is left behind by holders that crashed.
//!
//! # Grant rule (one Lua script per attempt: prune expired members, then decide)
//! - **read**: no writer holds and no writer waits (a live member of `:waiting`). Writer
//!   preference: once a writer waits, new readers wait behind it; readers already in finish.
//!   The reader's fence is the last write's (`None` before the first write).
//! - **write**: no reader and no writer hold. A writer that finds the lock busy marks itself
//!   in `:waiting` for [`WRITER_MARK`], and renews the mark with every attempt (at least every
//!   [`MARK_RENEWAL`] while it waits). A writer that gives up withdraws its mark; one whose
//!   acquire is dropped has it withdrawn by the locker's release of its token; one that
//!   crashed stops holding readers back when the mark runs out.
//! - **permit**: fewer live holders than the count; a request naming another count than the
//!   live holders' is [`permit_mismatch`].
//!
//! Write and permit fences follow the mutex's rule (`max(counter + 1, server µs)`, and never
//! at or below the highest fence this backend handed out: see the backend's "Fences"), so
//! they never go back across a restart, `FLUSHALL` or failover. The restart delay and
//! `?replicas=N` apply to these grants and renewals as to the mutex's.
//!
//! # Waiting
//! As the mutex: a local FIFO queue per notice channel, subscribed to its channel; a notice
//! wakes the front waiter. A waiter granted a *shared* hold (read, permit) passes the wake-up
//! on to the next one, so one notice admits as many local waiters as the lock now admits; a
//! writer that is granted keeps it. Only the front waiter retries without a notice: a fallback
//! bounded by the earliest lease (or mark) that blocks it, since an expiry publishes nothing.
//! A request attempts at once only when no local waiter is queued for the key; a writer marks
//! itself waiting only from the front of the queue, so a local reader ahead of a marked local
//! writer cannot be held back by it.

mod scripts;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::Cmd;

use super::notices::unsubscribe_if_idle;
use super::waiting::Pause;
use super::{backend_err, replica_wait, ttl_ms, Conn, RedisBackend, RedisKeys, NAME};
use crate::backend::waiters::Waiter;
use crate::backend::{permit_mismatch, remaining, within_wait, Grant, Kind, Space};
use crate::Result;
use scripts::{EXTEND_HOLD, FORGET_COUNTER, RELEASE_HOLD, RELEASE_WRITE, RW_ACQUIRE, SEM_ACQUIRE};

/// How long a waiting writer's mark holds new readers back without being renewed.
pub(crate) const WRITER_MARK: Duration = Duration::from_secs(3);

/// How often a waiting writer renews its mark at least (an attempt renews it).
const MARK_RENEWAL: Duration = Duration::from_secs(1);

/// The Redis names of one user key in the read-write or semaphore key space (see the module
/// docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedKeys {
    /// Readers, or permit holders: token → lease end.
    holders: Vec<u8>,
    /// Read-write: the writer's token.
    writer: Vec<u8>,
    /// Read-write: waiting writers' marks.
    waiting: Vec<u8>,
    /// Semaphore: the count of permits the holders named.
    permits: Vec<u8>,
    fence: Vec<u8>,
    channel: Vec<u8>,
    /// The mutex's names of the key: same slot, for commands routed by key (`WAIT`, `INFO`).
    route: RedisKeys,
}

impl SharedKeys {
    fn new(key: &str, space: Space) -> Self {
        let route = RedisKeys::new(key);
        // `dlock:{E(k)}` becomes `dlock:rw:{E(k)}` or `dlock:sem:{E(k)}`: the hash tag stays.
        let tag = &route.lock()["dlock:".len()..];
        let prefix: &[u8] = match space {
            Space::Semaphore => b"dlock:sem:",
            Space::ReadWrite | Space::Mutex => b"dlock:rw:",
        };
        let name = |suffix: &[u8]| [prefix, tag, suffix].concat();
        SharedKeys {
            holders: name(if space == Space::Semaphore {
                b":holders"
            } else {
                b":readers"
            }),
            writer: name(b":writer"),
            waiting: name(b":waiting"),
            permits: name(b":permits"),
            fence: name(b":fence"),
            channel: name(b":released"),
            route,
        }
    }
}

/// `PUBLISH`, or `SPUBLISH` in a cluster (the notice reaches the subscribers of the key's shard).
fn publish(backend: &RedisBackend) -> &'static str {
    match backend.commands {
        Conn::Single(_) => "PUBLISH",
        Conn::Cluster(_) => "SPUBLISH",
    }
}

/// What one attempt found.
enum Attempt {
    Granted(Grant),
    /// Busy; how long until the earliest lease or mark that blocks it ends, when known.
    Busy(Option<Duration>),
}

/// Takes `key` as `kind` (read, write or permit) for `token`; see the module docs.
pub(super) async fn acquire(
    backend: &RedisBackend,
    key: &str,
    kind: Kind,
    token: &str,
    ttl: Duration,
    deadline: Option<Instant>,
) -> Result<Option<Grant>> {
    if kind == Kind::Exclusive {
        return Err(backend_err("a mutex is not a shared kind (internal error)"));
    }
    let keys = SharedKeys::new(key, kind.space());
    let one_attempt = remaining(deadline).is_some_and(|left| left.is_zero());
    // Attempt at once only when no local waiter is queued for this key (otherwise queue behind
    // them); a writer does not mark itself waiting yet: it marks once at the front of the queue,
    // so a marked writer is always the front one and never held back by a local reader ahead.
    if one_attempt || !backend.notices.waiters.has_entry(keys.channel.as_slice()) {
        if backend.grants_wait().is_none() {
            let attempt = attempt(backend, &keys, kind, token, ttl, false);
            if let Attempt::Granted(grant) = within_wait(NAME, deadline, attempt).await? {
                return Ok(Some(grant));
            }
        }
        if one_attempt {
            return Ok(None);
        }
    }
    Box::pin(wait_in_queue(backend, &keys, kind, token, ttl, deadline)).await
}

/// Queue behind this Locker's waiters of the key; at the front, subscribe and attempt, then
/// attempt again when woken by a notice, or on a fallback bounded by the lease (or mark) that
/// blocks it; a waiting writer attempts (renewing its mark) at least every [`MARK_RENEWAL`].
/// Waiters behind the front check now and then whether they have moved to the front.
async fn wait_in_queue(
    backend: &RedisBackend,
    keys: &SharedKeys,
    kind: Kind,
    token: &str,
    ttl: Duration,
    deadline: Option<Instant>,
) -> Result<Option<Grant>> {
    let waiter = Arc::new(Waiter::new(token, ttl));
    let mut should_attempt = backend
        .notices
        .waiters
        .join(keys.channel.clone(), waiter.clone());
    let mut place = QueuePlace {
        backend,
        channel: &keys.channel,
        waiter: waiter.clone(),
        wake_next: true,
    };
    let mut hint: Option<Duration> = None;
    let mut pause = Pause::new();
    let mut marked = false;
    loop {
        if should_attempt {
            if let Some(until) = backend.grants_wait() {
                // After a recent restart that lost lock state: no grants before `until`.
                hint = Some(until.saturating_duration_since(Instant::now()));
            } else {
                // Subscribe before attempting, so no notice is missed in between. A failed
                // subscription is not fatal: the fallback retries soon, subscribing again.
                let listening =
                    within_wait(NAME, deadline, backend.ensure_subscribed(&keys.channel));
                if let Err(e) = listening.await {
                    tracing::debug!(target: "dlock", backend = NAME, error = %e, "cannot subscribe to release notices; polling meanwhile");
                    pause.shorten();
                }
                // Consume a wake-up before attempting: the attempt answers it.
                waiter.consume_wake();
                let attempt = attempt(backend, keys, kind, token, ttl, kind == Kind::Write);
                match within_wait(NAME, deadline, attempt).await? {
                    Attempt::Granted(grant) => {
                        // A shared hold leaves room for the next local waiter: wake it.
                        place.wake_next = kind != Kind::Write;
                        return Ok(Some(grant));
                    }
                    Attempt::Busy(blocked_for) => {
                        hint = blocked_for;
                        marked |= kind == Kind::Write;
                    }
                }
            }
        }
        let left = remaining(deadline);
        if left.is_some_and(|l| l.is_zero()) {
            if marked {
                withdraw(backend, keys, token).await;
            }
            return Ok(None);
        }
        let front = backend
            .notices
            .waiters
            .is_front(keys.channel.as_slice(), &waiter);
        let renew = marked.then_some(MARK_RENEWAL);
        should_attempt = pause
            .wait(&waiter, front, hint.take(), Duration::MAX, renew, left)
            .await;
    }
}

/// A writer that gives up withdraws its waiting mark at once, so readers it held back go
/// (bounded: if the server does not answer, the mark runs out by itself).
async fn withdraw(backend: &RedisBackend, keys: &SharedKeys, token: &str) {
    let undo = tokio::time::timeout(
        super::MIN_ANSWER_TIME,
        release_keys(backend, keys, Kind::Write, token),
    );
    if !matches!(undo.await, Ok(Ok(_))) {
        tracing::debug!(target: "dlock", backend = NAME, "withdrawing a waiting writer's mark failed; it runs out by itself");
    }
}

/// One attempt (one script); a writer that finds the lock busy marks itself waiting if `mark`.
async fn attempt(
    backend: &RedisBackend,
    keys: &SharedKeys,
    kind: Kind,
    token: &str,
    ttl: Duration,
    mark: bool,
) -> Result<Attempt> {
    backend.attempts.fetch_add(1, Ordering::Relaxed);
    let mut con = backend.commands.clone();
    let seen = backend.highest_fence.load(Ordering::Acquire);
    let sent_at = Instant::now();
    let mut cmd;
    let script = match kind {
        Kind::Permit(permits) => {
            cmd = super::scripts::evalsha(&SEM_ACQUIRE, 3);
            cmd.arg(&keys.holders)
                .arg(&keys.permits)
                .arg(&keys.fence)
                .arg(token)
                .arg(ttl_ms(ttl))
                .arg(seen)
                .arg(permits);
            &*SEM_ACQUIRE
        }
        _ => {
            cmd = super::scripts::evalsha(&RW_ACQUIRE, 4);
            let mark_ms = if mark { ttl_ms(WRITER_MARK) } else { 0 };
            cmd.arg(&keys.holders)
                .arg(&keys.writer)
                .arg(&keys.waiting)
                .arg(&keys.fence)
                .arg(if kind == Kind::Read { "r" } else { "w" })
                .arg(token)
                .arg(ttl_ms(ttl))
                .arg(seen)
                .arg(mark_ms);
            &*RW_ACQUIRE
        }
    };
    let (outcome, value, counter_was_missing): (i64, i64, i64) =
        super::scripts::run(&mut con, script, &cmd)
            .await
            .map_err(backend_err)?;
    match (outcome, kind) {
        (1, _) => {}
        (0, _) => {
            return Ok(Attempt::Busy(
                u64::try_from(value).ok().map(Duration::from_millis),
            ))
        }
        (-2, Kind::Permit(asked)) => return Err(permit_mismatch(asked, u32::try_from(value).ok())),
        (-1, _) => {
            return Err(backend_err(format!(
                "refusing to hand out a fence: the server's clock ({value} µs) is not past the \
                 highest fence this client has seen ({seen}); a lower fence would let a stale \
                 holder's writes through. Check the server's clock (a failover to a server whose \
                 clock is behind?)"
            )))
        }
        _ => {
            return Err(backend_err(format!(
                "unexpected reply from the server's script: outcome {outcome} (value {value}) \
                 for a {kind:?} acquire"
            )))
        }
    }
    // The key's state was lost (or it is new) on a server that restarted recently: a holder
    // from before may still be inside its lease. Give the grant back (see the backend's
    // "Restarts"); the counter goes too, so the next grant checks the restart as well.
    let delayed = backend.grants_wait().is_some()
        || (counter_was_missing == 1 && backend.restarted_recently(&keys.route).await?);
    if delayed {
        release_keys(backend, keys, kind, token).await?;
        if counter_was_missing == 1 {
            let _: i64 = FORGET_COUNTER
                .key(&keys.fence)
                .arg(value)
                .invoke_async(&mut con)
                .await
                .map_err(backend_err)?;
        }
        let until = backend.grants_wait();
        return Ok(Attempt::Busy(
            until.map(|u| u.saturating_duration_since(Instant::now())),
        ));
    }
    // A reader before the first write has no fence.
    let fence = u64::try_from(value).ok().filter(|f| *f > 0);
    if let Some(f) = fence {
        backend.highest_fence.fetch_max(f, Ordering::AcqRel);
    }
    if !backend.replicated(&keys.route, ttl).await? {
        release_keys(backend, keys, kind, token).await?;
        return Err(backend_err(format!(
            "fewer than {n} replica(s) confirmed the grant within {:?} (?replicas={n}); the \
             grant was withdrawn: a failover could have lost it",
            replica_wait(ttl),
            n = backend.replicas,
        )));
    }
    Ok(Attempt::Granted(Grant::new(fence, sent_at)))
}

/// Token-checked release of `kind` on `key` (a writer's waiting mark goes too).
pub(super) async fn release(
    backend: &RedisBackend,
    key: &str,
    kind: Kind,
    token: &str,
) -> Result<bool> {
    release_keys(backend, &SharedKeys::new(key, kind.space()), kind, token).await
}

async fn release_keys(
    backend: &RedisBackend,
    keys: &SharedKeys,
    kind: Kind,
    token: &str,
) -> Result<bool> {
    let mut con = backend.commands.clone();
    let mut cmd: Cmd;
    let script = if kind == Kind::Write {
        cmd = super::scripts::evalsha(&RELEASE_WRITE, 2);
        cmd.arg(&keys.writer).arg(&keys.waiting);
        &*RELEASE_WRITE
    } else {
        if kind == Kind::Read {
            cmd = super::scripts::evalsha(&RELEASE_HOLD, 1);
            cmd.arg(&keys.holders);
        } else {
            cmd = super::scripts::evalsha(&RELEASE_HOLD, 2);
            cmd.arg(&keys.holders).arg(&keys.permits);
        }
        &*RELEASE_HOLD
    };
    cmd.arg(token).arg(&keys.channel).arg(publish(backend));
    if kind != Kind::Write {
        // Only a writer waits on readers, and only for the last one to leave.
        cmd.arg(if kind == Kind::Read { "1" } else { "0" });
    }
    let released: i64 = super::scripts::run(&mut con, script, &cmd)
        .await
        .map_err(backend_err)?;
    Ok(released == 1)
}

/// Token-checked renewal of `kind` on `key` to `ttl` from now (confirmed by `?replicas=N`).
pub(super) async fn extend(
    backend: &RedisBackend,
    key: &str,
    kind: Kind,
    token: &str,
    ttl: Duration,
) -> Result<bool> {
    let keys = SharedKeys::new(key, kind.space());
    let mut con = backend.commands.clone();
    let mut cmd: Cmd;
    let script = match kind {
        Kind::Write => {
            cmd = super::scripts::evalsha(&super::EXTEND, 1);
            cmd.arg(&keys.writer);
            &*super::EXTEND
        }
        Kind::Permit(_) => {
            cmd = super::scripts::evalsha(&EXTEND_HOLD, 2);
            cmd.arg(&keys.holders).arg(&keys.permits);
            &*EXTEND_HOLD
        }
        _ => {
            cmd = super::scripts::evalsha(&EXTEND_HOLD, 1);
            cmd.arg(&keys.holders);
            &*EXTEND_HOLD
        }
    };
    cmd.arg(token).arg(ttl_ms(ttl));
    let extended: i64 = super::scripts::run(&mut con, script, &cmd)
        .await
        .map_err(backend_err)?;
    if extended == 1 && !backend.replicated(&keys.route, ttl).await? {
        return Err(backend_err(format!(
            "fewer than {} replica(s) confirmed the renewal within {:?}",
            backend.replicas,
            replica_wait(ttl)
        )));
    }
    Ok(extended == 1)
}

/// A place in a key's local queue, left on drop (also when the acquire future is dropped).
struct QueuePlace<'a> {
    backend: &'a RedisBackend,
    channel: &'a [u8],
    waiter: Arc<Waiter>,
    /// Leaving wakes the next local waiter (when this one was at the front): it gave up, or it
    /// took a shared hold that leaves room for more. A writer that got in leaves it asleep.
    wake_next: bool,
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        let notices = &self.backend.notices;
        if !notices
            .waiters
            .leave(self.channel, &self.waiter, !self.wake_next, |_| {})
        {
            return;
        }
        // The last local waiter of this key left: unsubscribe in the background (a drop must
        // not wait for the server).
        if let Some(pubsub) = self.backend.pubsub.get() {
            crate::runtime::spawn_background(unsubscribe_if_idle(
                pubsub.clone(),
                Arc::downgrade(notices),
                self.channel.to_vec(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &[u8]) -> &[u8] {
        let open = name.iter().position(|b| *b == b'{').unwrap();
        let close = open + name[open..].iter().position(|b| *b == b'}').unwrap();
        &name[open..=close]
    }

    #[test]
    fn every_name_shares_the_mutex_hash_tag_and_spaces_stay_apart() {
        let mutex = RedisKeys::new("a}b{c%");
        let rw = SharedKeys::new("a}b{c%", Space::ReadWrite);
        let sem = SharedKeys::new("a}b{c%", Space::Semaphore);
        assert_eq!(rw.holders, b"dlock:rw:{a%7Db%7Bc%25}:readers");
        assert_eq!(sem.holders, b"dlock:sem:{a%7Db%7Bc%25}:holders");
        assert_eq!(rw.channel, b"dlock:rw:{a%7Db%7Bc%25}:released");
        for keys in [&rw, &sem] {
            for name in [
                &keys.holders,
                &keys.writer,
                &keys.waiting,
                &keys.permits,
                &keys.fence,
                &keys.channel,
            ] {
                assert_eq!(
                    tag(name),
                    tag(mutex.lock()),
                    "{}",
                    String::from_utf8_lossy(name)
                );
                assert!(
                    !name.starts_with(b"dlock:{"),
                    "not a mutex name (list/inspect)"
                );
            }
        }
        assert_ne!(rw.fence, sem.fence);
        assert_ne!(rw.channel, sem.channel);
        assert_ne!(rw.channel, mutex.channel());
    }
}
