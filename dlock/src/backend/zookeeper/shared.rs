//! Read-write locks and semaphores on ZooKeeper: Curator's `InterProcessReadWriteLock`, and a
//! semaphore on the same kind of queue, both of ephemeral sequential nodes whose names say what
//! they ask for.
//!
//! # Data layout
//!
//! Each space has its own queue directories under the root, beside the mutexes':
//!
//! | kind | queue directory | node name |
//! |---|---|---|
//! | read, write | `/<root>/%rw-<encoded key>` | `<id>-read-<seq>`, `<id>-write-<seq>` |
//! | semaphore of `n` | `/<root>/%sem-<encoded key>` | `<id>-permits<n>-<seq>` |
//!
//! `<encoded key>` is the key's mutex segment ("Keys" in the [module docs](super)). A mutex
//! segment never starts with `%r` or `%s` (an escape is `%` and two upper-case hex digits, the
//! digest mark `%~`), so the three spaces never share a directory, and `list`, which decodes
//! only mutex segments, passes these by. Directories are containers as the mutex's (the server
//! removes them once empty); node data is the mutex's ("Node data"); `<id>` is the token's id,
//! so `release` finds the node of a cancelled acquire and of a create retried after a lost reply,
//! as for the mutex.
//!
//! # Read-write rule: arrival order
//!
//! A writer holds when its node is the lowest of the queue; a reader holds when no `write` node
//! is ahead of it. A waiting writer watches its immediate predecessor, a waiting reader the
//! nearest `write` node ahead of it (one `getData` watch each). Requests are served in arrival
//! order: a reader that arrives after a waiting writer queues behind it, so a stream of readers
//! never starves a writer. That is the preference chosen. The memory backend prefers writers
//! instead: while a writer waits it admits no reader, not even one that arrived before that
//! writer; here such a reader goes first (strict arrival order). Both keep a stream of readers
//! from starving a writer. A reader's release wakes the writer right behind it, if any; a
//! writer's release (or a waiting writer giving up) wakes its successor and the readers up to
//! the next writer, which then hold together.
//!
//! # Semaphore rule
//!
//! A node holds when fewer than `n` nodes are ahead of it (the first `n` hold). A waiter watches
//! the `n` nodes immediately ahead of it: while those all exist at least `n` are ahead, and a
//! node leaving further ahead does not change which `n` are immediately ahead, so the waiter has
//! to look again only when one of those goes. A release therefore wakes the waiters at most `n`
//! places behind the released node (at most `n` of them, one `getData` watch per watched node);
//! the first of them holds, the others watch their new `n` nodes ahead.
//!
//! The count is in each node's name. A request that finds a node ahead of it naming another
//! count removes its node and answers [`permit_mismatch`]. Every holder checked every node ahead
//! of it, so holders never disagree; when nobody holds or waits, any count is taken.
//!
//! # Fences
//!
//! A writer's or a permit holder's fence is its node's `czxid`, which grows in queue order, as
//! the mutex's. A granted writer writes its fence into the queue directory's data (decimal), in
//! one transaction with a check that its node still exists (so a write delayed past the loss
//! of its node cannot land after a later writer's and lower the fence); a granted reader reads
//! it there: the last writer wrote it before deleting its node, and no writer can be granted
//! while the reader's node is queued. The fence lives as long as the
//! directory: when a key stays unused until the server's container sweep (by default within a
//! minute) removes its empty directory, readers see `None` until the next write (keeping it for
//! ever would take a node per key ever written).
//!
//! # Lease, loss, cancellation
//!
//! As for the mutex: the session is the lease (`lost()` fires when it ends, for every kind);
//! a fixed `.ttl(d)` gives the hold up after `d`; renewals check that the node still exists in
//! this session; a waiter that gives up, or whose future is dropped (the locker then calls
//! `release`), deletes its node, which wakes whoever watched it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use zookeeper_client as zk;

use super::{
    encode_key, inspect, node_of, sequence_of, Fail, Session, ZookeeperBackend, NAME,
    SESSION_RETRIES,
};
use crate::backend::{permit_mismatch, token_parts, Grant, Kind, Space};
use crate::{Error, Result};

/// The prefix of read-write queue directories (never the start of a mutex segment).
const READ_WRITE_PREFIX: &str = "%rw-";
/// The prefix of semaphore queue directories (never the start of a mutex segment).
const SEMAPHORE_PREFIX: &str = "%sem-";

/// What a node of a shared queue asks for, from the middle part of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Read,
    Write,
    Permits(u32),
}

impl Mark {
    fn of(kind: Kind) -> Option<Mark> {
        match kind {
            Kind::Read => Some(Mark::Read),
            Kind::Write => Some(Mark::Write),
            Kind::Permit(n) => Some(Mark::Permits(n)),
            Kind::Exclusive => None,
        }
    }

    fn text(self) -> String {
        match self {
            Mark::Read => "read".into(),
            Mark::Write => "write".into(),
            Mark::Permits(n) => format!("permits{n}"),
        }
    }

    /// The mark of a node named `<id>-<mark>-<seq>`; `None` for any other name.
    fn parse(name: &str) -> Option<Mark> {
        let mut parts = name.rsplitn(3, '-');
        let (_seq, mark, _id) = (parts.next()?, parts.next()?, parts.next()?);
        match mark {
            "read" => Some(Mark::Read),
            "write" => Some(Mark::Write),
            _ => {
                let digits = mark.strip_prefix("permits")?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                digits.parse().ok().map(Mark::Permits)
            }
        }
    }
}

/// What one look at the queue decided.
#[derive(Debug, PartialEq, Eq)]
enum Decision<'q> {
    Hold,
    /// Wait until one of these nodes (names) goes.
    Watch(Vec<&'q str>),
    /// A node ahead names another permit count than ours.
    Mismatch {
        asked: u32,
        held: u32,
    },
}

/// The grant rule (see the module docs): `ahead` are the nodes ahead of ours, in queue order.
fn decide<'q>(mark: Mark, ahead: &[(i64, Mark, &'q str)]) -> Decision<'q> {
    match mark {
        Mark::Write => match ahead.last() {
            None => Decision::Hold,
            Some((_, _, name)) => Decision::Watch(vec![name]),
        },
        Mark::Read => match ahead.iter().rev().find(|(_, m, _)| *m == Mark::Write) {
            None => Decision::Hold,
            Some((_, _, name)) => Decision::Watch(vec![name]),
        },
        Mark::Permits(n) => {
            let other = ahead.iter().find_map(|(_, m, _)| match *m {
                Mark::Permits(held) if held != n => Some(held),
                _ => None,
            });
            if let Some(held) = other {
                return Decision::Mismatch { asked: n, held };
            }
            let n = n as usize;
            if ahead.len() < n {
                Decision::Hold
            } else {
                Decision::Watch(ahead[ahead.len() - n..].iter().map(|e| e.2).collect())
            }
        }
    }
}

/// How one acquire in one session ended.
enum Outcome {
    Held(Grant),
    GaveUp,
    Mismatch { asked: u32, held: u32 },
}

/// The reader's fence as the last writer stored it in the queue directory's data.
fn parse_fence(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Resolves when the first of `watches` fires (never, for none).
async fn first_of(watches: Vec<zk::OneshotWatcher>) {
    let mut changes: Vec<Pin<Box<dyn Future<Output = zk::WatchedEvent> + Send>>> = watches
        .into_iter()
        .map(|w| Box::pin(w.changed()) as Pin<Box<_>>)
        .collect();
    std::future::poll_fn(|cx| {
        for change in &mut changes {
            if change.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

impl ZookeeperBackend {
    /// The queue directory of `key` in the space of `kind` (see the module docs).
    pub(super) fn space_path(&self, key: &str, kind: Kind) -> String {
        let prefix = match kind.space() {
            Space::ReadWrite => READ_WRITE_PREFIX,
            Space::Semaphore => SEMAPHORE_PREFIX,
            Space::Mutex => "",
        };
        format!("{}/{prefix}{}", self.inner.cfg.root, encode_key(key))
    }

    /// [`Backend::acquire`](super::Backend::acquire) of a read, write or permit hold.
    pub(super) async fn acquire_shared(
        &self,
        key: &str,
        kind: Kind,
        token: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<Grant>> {
        let mark = match Mark::of(kind) {
            Some(Mark::Permits(0)) => {
                return Err(Error::InvalidArgument {
                    reason: "a semaphore with 0 permits could never be acquired".into(),
                })
            }
            Some(mark) => mark,
            None => return Ok(self.acquire_inner(key, token, deadline).await?),
        };
        let dir = self.space_path(key, kind);
        let data = inspect::node_data(token, key, &dir);
        let mut retries = 0;
        loop {
            let session = self.session().await?;
            match self
                .queue_shared(&session, &dir, mark, token, &data, deadline)
                .await
            {
                Ok(Outcome::Held(grant)) => return Ok(Some(grant)),
                Ok(Outcome::GaveUp) => return Ok(None),
                Ok(Outcome::Mismatch { asked, held }) => {
                    return Err(permit_mismatch(asked, Some(held)))
                }
                Err(f)
                    if f.session_ended()
                        && !session.alive()
                        && retries < SESSION_RETRIES
                        && deadline.is_none_or(|d| d > Instant::now()) =>
                {
                    // The node went (or will go) with the session: queue again in a new one.
                    tracing::debug!(target: "dlock", key, kind = kind.name(), backend = NAME, error = %f, "session ended while acquiring; queueing again");
                    self.nodes().remove(token);
                    retries += 1;
                }
                Err(f) => return Err(f.into()),
            }
        }
    }

    /// One acquire in one session: queue, wait, and either hold or leave.
    async fn queue_shared(
        &self,
        session: &Arc<Session>,
        dir: &str,
        mark: Mark,
        token: &str,
        data: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Outcome, Fail> {
        let id = token_parts(token).0;
        // `create_node` names the node `<stem>-<seq>` and finds it by that stem after a lost reply.
        let stem = format!("{id}-{}", mark.text());
        let (name, path, czxid, created_at) =
            self.enqueue(session, dir, token, &stem, data).await?;
        let mut first = true;
        loop {
            let checked_at = Instant::now();
            let children = match Self::retry(session, || session.client.list_children(dir)).await {
                Ok(c) => c,
                // The directory is only removed when empty, so our node is gone too.
                Err(zk::Error::NoNode) => Vec::new(),
                Err(e) => return Err(Fail::op("list lock queue", dir)(e)),
            };
            // Another node of our token (a create retried after a lost reply, whose first try
            // showed up late) would hold a place it should not: remove it.
            for ghost in children.iter().filter(|c| **c != name && node_of(c, id)) {
                Self::delete(session, &format!("{dir}/{ghost}")).await?;
            }
            let mut queue: Vec<(i64, Mark, &str)> = children
                .iter()
                .filter(|c| **c == name || !node_of(c, id))
                .filter_map(|c| Some((sequence_of(c)?, Mark::parse(c)?, c.as_str())))
                .collect();
            queue.sort_unstable_by_key(|e| e.0);
            let Some(place) = queue.iter().position(|e| e.2 == name) else {
                self.nodes().remove(token);
                return Err(if session.alive() {
                    Fail::Vanished { path }
                } else {
                    session.lost()
                });
            };
            let watch = match decide(mark, &queue[..place]) {
                Decision::Hold => {
                    let fence = self.fence(session, dir, &path, mark, czxid).await?;
                    let sent_at = if first { created_at } else { checked_at };
                    return Ok(Outcome::Held(Grant {
                        fence,
                        lost: Some(Box::pin(session.ended())),
                        sent_at,
                    }));
                }
                Decision::Mismatch { asked, held } => {
                    self.give_up(session, token, &path).await?;
                    return Ok(Outcome::Mismatch { asked, held });
                }
                Decision::Watch(names) => names,
            };
            first = false;
            if deadline.is_some_and(|d| d <= Instant::now()) {
                self.give_up(session, token, &path).await?;
                return Ok(Outcome::GaveUp);
            }
            // All watches are sent at once; a node already gone means: look again.
            let paths: Vec<String> = watch.iter().map(|n| format!("{dir}/{n}")).collect();
            let set = paths
                .iter()
                .map(|p| {
                    Box::pin(Self::retry(session, move || {
                        session.client.get_and_watch_data(p)
                    }))
                })
                .collect();
            let mut watchers = Vec::with_capacity(paths.len());
            let mut gone = false;
            for (p, result) in paths.iter().zip(crate::backend::join_all(set).await) {
                match result {
                    Ok((_, _, watcher)) => watchers.push(watcher),
                    Err(zk::Error::NoNode) => gone = true,
                    Err(e) => return Err(Fail::op("watch node ahead", p)(e)),
                }
            }
            if gone {
                continue;
            }
            let until = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = first_of(watchers) => {
                    self.inner.wakeups.fetch_add(1, Ordering::Relaxed);
                }
                _ = until => {
                    self.give_up(session, token, &path).await?;
                    return Ok(Outcome::GaveUp);
                }
                _ = session.ended() => return Err(session.lost()),
            }
        }
    }

    /// The fence of a hold just granted (our node: `path`): a writer's czxid, stored in the
    /// directory's data for the readers after it; a reader's, the last writer's from there; a
    /// permit's, its czxid.
    ///
    /// A writer stores its fence in one transaction with a check that its node still exists:
    /// a store sent before the node went (the session presumed dead and the node deleted, or
    /// expired) but applied after would otherwise overwrite a later writer's higher fence, and
    /// readers would see the fence go back. While the node exists no later writer is granted
    /// (each waits for every node ahead), and an earlier writer's store was applied while its
    /// node existed, before this writer found itself first: stores land in fence order, so
    /// the stored value never decreases and no compare with it is needed.
    async fn fence(
        &self,
        session: &Session,
        dir: &str,
        path: &str,
        mark: Mark,
        czxid: i64,
    ) -> Result<Option<u64>, Fail> {
        let own = u64::try_from(czxid).ok();
        match mark {
            Mark::Permits(_) => Ok(own),
            Mark::Write => {
                let text = czxid.to_string();
                #[cfg(feature = "test-hooks")]
                hooks::before_write_fence(dir).await;
                let stored = Self::retry(session, || {
                    let mut txn = session.client.new_multi_writer();
                    // `commit` sends at once: only a transaction built whole.
                    let commit = txn
                        .add_check_version(path, -1)
                        .and_then(|()| txn.add_set_data(dir, text.as_bytes(), None))
                        .map(|()| txn.commit());
                    async move { commit?.await.map(drop).map_err(zk::Error::from) }
                })
                .await;
                match stored {
                    Ok(()) => Ok(own),
                    // The check failed: our node is gone, and with it the hold (a retry after
                    // a lost reply may have stored the fence first, while the node existed).
                    Err(zk::Error::NoNode) if session.alive() => Err(Fail::Vanished {
                        path: path.to_owned(),
                    }),
                    Err(zk::Error::NoNode) => Err(session.lost()),
                    Err(e) => Err(Fail::op("record write fence", dir)(e)),
                }
            }
            Mark::Read => match Self::retry(session, || session.client.get_data(dir)).await {
                Ok((data, _)) => Ok(parse_fence(&data)),
                Err(e) => Err(Fail::op("read last write fence", dir)(e)),
            },
        }
    }

    /// [`Backend::release`](super::Backend::release) of a read, write or permit hold: deletes
    /// the token's node(s) in the kind's queue.
    pub(super) async fn release_shared(&self, key: &str, kind: Kind, token: &str) -> Result<bool> {
        if kind == Kind::Exclusive {
            return Ok(self.release_inner(key, token).await?);
        }
        Ok(self.release_in(self.space_path(key, kind), token).await?)
    }

    /// [`Backend::extend`](super::Backend::extend) of a read, write or permit hold: the node
    /// still exists in this live session.
    pub(super) async fn extend_shared(&self, key: &str, kind: Kind, token: &str) -> Result<bool> {
        if kind == Kind::Exclusive {
            return Ok(self.extend_inner(key, token).await?);
        }
        Ok(self.extend_in(self.space_path(key, kind), token).await?)
    }
}

/// A test hook (cargo feature `test-hooks`, for dlock's own tests; not part of the API).
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod hooks {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::sync::Notify;

    static PAUSE: Mutex<Vec<(String, Duration)>> = Mutex::new(Vec::new());
    static PAUSED: Notify = Notify::const_new();

    /// The next granted ZooKeeper writer whose queue path contains `marker` pauses `delay`
    /// before it stores its fence (as a store delayed on the network would).
    pub fn pause_before_write_fence(marker: &str, delay: Duration) {
        PAUSE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((marker.to_owned(), delay));
    }

    /// Resolves when a writer paused by [`pause_before_write_fence`] (or at once if one did
    /// since the last call).
    pub async fn write_fence_paused() {
        PAUSED.notified().await;
    }

    pub(super) async fn before_write_fence(dir: &str) {
        let delay = {
            let mut pauses = PAUSE.lock().unwrap_or_else(|p| p.into_inner());
            match pauses.iter().position(|(m, _)| dir.contains(m.as_str())) {
                Some(i) => pauses.remove(i).1,
                None => return,
            }
        };
        PAUSED.notify_one();
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn queue(names: &[&'static str]) -> Vec<(i64, Mark, &'static str)> {
        names
            .iter()
            .map(|n| (sequence_of(n).unwrap(), Mark::parse(n).unwrap(), *n))
            .collect()
    }

    #[test]
    fn names_carry_their_mark() {
        for mark in [
            Mark::Read,
            Mark::Write,
            Mark::Permits(1),
            Mark::Permits(4000),
        ] {
            let name = format!("{ID}-{}-0000000042", mark.text());
            assert_eq!(Mark::parse(&name), Some(mark), "{name}");
            assert_eq!(sequence_of(&name), Some(42));
            assert!(node_of(&name, ID));
        }
        // A mutex node, or anything else, has no mark.
        for foreign in [
            &format!("{ID}-0000000001")[..],
            "x-permits-0000000001",
            "x-permits1a-0000000001",
            "x-reader-0000000001",
            "lock-0000000001",
        ] {
            assert_eq!(Mark::parse(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn space_prefixes_never_start_a_mutex_segment() {
        for key in ["%rw-a", "%sem-a", "rw-a", "%", "", "%~", "\u{1f511}"] {
            let segment = encode_key(key);
            assert!(
                !segment.starts_with(READ_WRITE_PREFIX) && !segment.starts_with(SEMAPHORE_PREFIX),
                "{key:?} -> {segment}"
            );
        }
    }

    #[test]
    fn writers_wait_for_everyone_ahead_readers_for_writers_ahead() {
        let q = queue(&["a-read-01", "b-read-02", "c-write-03", "d-read-04"]);
        assert_eq!(decide(Mark::Read, &q[..1]), Decision::Hold);
        assert_eq!(decide(Mark::Write, &q[..0]), Decision::Hold);
        assert_eq!(
            decide(Mark::Write, &q[..2]),
            Decision::Watch(vec!["b-read-02"])
        );
        // A reader behind a waiting writer waits for it (arrival order).
        assert_eq!(
            decide(Mark::Read, &q[..3]),
            Decision::Watch(vec!["c-write-03"])
        );
        assert_eq!(
            decide(Mark::Read, &q[..4]),
            Decision::Watch(vec!["c-write-03"])
        );
    }

    #[test]
    fn permits_go_to_the_first_n_and_waiters_watch_the_n_ahead() {
        let q = queue(&[
            "a-permits2-01",
            "b-permits2-02",
            "c-permits2-03",
            "d-permits2-04",
        ]);
        assert_eq!(decide(Mark::Permits(2), &q[..1]), Decision::Hold);
        assert_eq!(
            decide(Mark::Permits(2), &q[..2]),
            Decision::Watch(vec!["a-permits2-01", "b-permits2-02"])
        );
        assert_eq!(
            decide(Mark::Permits(2), &q[..3]),
            Decision::Watch(vec!["b-permits2-02", "c-permits2-03"])
        );
        assert_eq!(
            decide(Mark::Permits(3), &q[..1]),
            Decision::Mismatch { asked: 3, held: 2 }
        );
        assert_eq!(parse_fence(b"12345"), Some(12345));
        for bad in [&b""[..], b"-1", b"12 ", b"\xff"] {
            assert_eq!(parse_fence(bad), None);
        }
    }
}
