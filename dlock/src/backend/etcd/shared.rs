//! Read-write locks and semaphores on etcd: a key per hold on its own lease, created only if
//! absent, as for the mutex ([module docs](super)); queue order is `create_revision`, and each
//! waiter watches what it waits for. After etcd's own recipes (`recipes/rwmutex.go`,
//! `concurrency/mutex.go`).
//!
//! # Keys
//! Each kind has its own space under the root, in a first segment no encoded key can be (an
//! encoded key has `%` only before `25` or `2F`), so neither collides with the mutex's
//! `<root>/<encoded key>/` and mutex `list`/`inspect` skip them:
//! - read-write: `<root>/%rw/<encoded key>/q/r/<id>` (a reader), `.../q/w/<id>` (a writer), and
//!   `<root>/%rw/<encoded key>/fence`, the fence of the last write hold (no lease: it outlives
//!   the holds, one small key per read-write lock ever written).
//! - semaphore: `<root>/%sem/<encoded key>/<permits>/<id>`, the permit count a path segment. The
//!   value of every key is the mutex's (`dlock1`, the owner), a semaphore's with the line
//!   `permits=<n>` added.
//!
//! # Grant rule (FIFO by `create_revision`)
//! - reader: holds when no writer key was created before it (it waits for the last such writer,
//!   watching that key's deletion, then looks again).
//! - writer: holds when no key at all (reader or writer) was created before it (it watches the
//!   one just ahead). One transaction checks this (every key of `q/` created at or after its
//!   own) and writes its fence into `fence`.
//! - permit of `n`: holds when fewer than `n` keys were created before it. A waiter watches the
//!   semaphore's range for deletions of keys ahead of it: a release wakes every waiter behind
//!   the released key, each of which reads the first `n` keys ahead once (simple and correct;
//!   the herd is the number of waiters).
//!
//! Preference: first come, first served. A reader arriving after a waiting writer queues behind
//! it, so a stream of readers never starves a writer; readers that arrived before the writer
//! go first (the memory backend lets a waiting writer pass them too). A writer that gives up
//! or is cancelled deletes its key, which wakes whoever watched it.
//!
//! # Permit counts
//! A semaphore key is created in one transaction that also requires no key of another count
//! under the semaphore's prefix (two range compares), so all holders and waiters of a
//! semaphore name one count; a request with another count answers
//! [`permit_mismatch`] naming the count found. Once every key is gone any count is fine.
//!
//! # Fences
//! A writer's or permit's fence is its key's `create_revision` (unique, growing, granted in
//! that order). A reader's is the `fence` key, read in the same transaction that found no
//! writer ahead: every earlier writer's key was gone by then, and a writer writes `fence` only
//! while its key exists, so the last write hold's fence is there (`None` before any write).
//!
//! # Leases
//! Each hold has its own lease: a killed holder's key goes when its lease alone runs out.
//! While waiting, the lease is kept alive every third of its length (a queued key must not
//! expire); once held, the Locker's watchdog renews it through `extend`, as for the mutex, and
//! a lease found expired there fires `lost()`.

use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};

use super::watches::{Hubs, Joined};
use super::{backend_err, encode_key, inspect, EtcdBackend, Held, NAME};
use crate::backend::{permit_mismatch, remaining, token_parts, within_wait, Grant, Kind};
use crate::Result;

/// How often a semaphore's creation is tried again when the key of another count that made
/// it fail was gone before it could be read.
const CREATE_TRIES: usize = 5;
/// The pause before looking at the queue again when a look decided nothing.
const AGAIN_PAUSE: Duration = Duration::from_millis(10);

/// What a waiter waits for.
#[derive(Clone)]
pub(super) enum Watch {
    /// The deletion of this key (the one just ahead, created before ours).
    Key(Vec<u8>),
    /// The deletion of any key created before ours under this prefix, while at least
    /// `permits` of them are there.
    Ahead { prefix: Vec<u8>, permits: u32 },
}

/// What one look at the queue found.
enum Turn {
    Granted(Option<u64>),
    Wait(Watch),
    /// Our key is gone (its lease expired, or it was deleted).
    Vanished,
    /// Nothing to watch, not granted (cannot happen in one transaction): look again.
    Again,
}

/// The `n`-th response of a transaction, when it is a range read.
fn got(done: &TxnResponse, n: usize) -> Option<etcd_client::GetResponse> {
    match done.op_responses().into_iter().nth(n)? {
        TxnOpResponse::Get(get) => Some(get),
        _ => None,
    }
}

/// The end of the range of keys starting with `prefix` (etcd's `--prefix` rule).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The permit count in a semaphore key's path (the segment after `base`).
fn permits_of(path: &[u8], base: &[u8]) -> Option<u32> {
    let rest = path.strip_prefix(base)?;
    let segment = rest.split(|&b| b == b'/').next()?;
    std::str::from_utf8(segment).ok()?.parse().ok()
}

impl EtcdBackend {
    /// `<root>/%rw/<encoded key>/`.
    fn rw_prefix(&self, key: &str) -> String {
        format!("{}/%rw/{}/", self.root, encode_key(key))
    }

    /// `<root>/%sem/<encoded key>/`.
    fn semaphore_prefix(&self, key: &str) -> String {
        format!("{}/%sem/{}/", self.root, encode_key(key))
    }

    /// The etcd key of `token`'s hold of `kind` (a mutex's too).
    pub(super) fn hold_path(&self, key: &str, kind: Kind, token: &str) -> Vec<u8> {
        let id = token_parts(token).0;
        match kind {
            Kind::Exclusive => return Self::lock_path(&self.prefix(key), token),
            Kind::Read => format!("{}q/r/{id}", self.rw_prefix(key)),
            Kind::Permit(n) => format!("{}{n}/{id}", self.semaphore_prefix(key)),
            Kind::Write => format!("{}q/w/{id}", self.rw_prefix(key)),
        }
        .into_bytes()
    }

    /// Creates our semaphore key (once) if every key of the semaphore names `permits`; returns
    /// it, its create revision and when its lease was last renewed (as
    /// [`create`](EtcdBackend::create)), or [`permit_mismatch`].
    async fn create_permit(
        &self,
        key: &str,
        permits: u32,
        path: &[u8],
        ttl: Duration,
        token: &str,
    ) -> Result<(Held, i64, Instant)> {
        let mut client = self.client.clone();
        let (held, lease_from) = self.new_lease(path, ttl, token).await?;
        let lease = held.lease;
        let base = self.semaphore_prefix(key).into_bytes();
        let ours = format!("{}{permits}/", self.semaphore_prefix(key)).into_bytes();
        // The keys of other counts: before and after the range of ours.
        let (below, above) = (
            (base.clone(), ours.clone()),
            (prefix_end(&ours), prefix_end(&base)),
        );
        let mut value = inspect::key_value(token);
        value.extend_from_slice(format!("\npermits={permits}").as_bytes());
        let one = || Some(GetOptions::new().with_keys_only().with_limit(1));
        for _ in 0..CREATE_TRIES {
            let txn = Txn::new()
                .when([
                    Compare::create_revision(path, CompareOp::Equal, 0),
                    // Every key in the range has create revision 0: the range is empty.
                    Compare::create_revision(below.0.clone(), CompareOp::Equal, 0)
                        .with_range(below.1.clone()),
                    Compare::create_revision(above.0.clone(), CompareOp::Equal, 0)
                        .with_range(above.1.clone()),
                ])
                .and_then([TxnOp::put(
                    path,
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([
                    TxnOp::get(path, None),
                    TxnOp::get(
                        below.0.clone(),
                        one().map(|o| o.with_range(below.1.clone())),
                    ),
                    TxnOp::get(
                        above.0.clone(),
                        one().map(|o| o.with_range(above.1.clone())),
                    ),
                ]);
            let done = client.txn(txn).await.map_err(|e| self.err(e))?;
            if done.succeeded() {
                let revision = done
                    .header()
                    .map(|h| h.revision())
                    .ok_or_else(|| backend_err("transaction without a header"))?;
                return Ok((held, revision, lease_from));
            }
            if let Some(kv) = got(&done, 0).and_then(|g| g.kvs().first().cloned()) {
                // Made by an earlier try of this same acquire: ours, with that try's lease.
                let (held, lease_from) = self.adopt(held, kv.lease(), token).await?;
                return Ok((held, kv.create_revision(), lease_from));
            }
            let other = [1, 2]
                .into_iter()
                .filter_map(|n| got(&done, n))
                .find_map(|g| g.kvs().first().map(|kv| kv.key().to_vec()));
            if let Some(other) = other {
                self.forget(token).await;
                return Err(permit_mismatch(permits, permits_of(&other, &base)));
            }
            // The other count's keys went between the compare and the read: try again.
        }
        self.forget(token).await;
        Err(permit_mismatch(permits, None))
    }

    /// One look at the queue for our key `path` (create revision `mine`).
    async fn turn(&self, key: &str, kind: Kind, path: &[u8], mine: i64) -> Result<Turn> {
        let mut client = self.client.clone();
        let ours = Compare::create_revision(path, CompareOp::Equal, mine);
        let ahead = |limit: i64, order: SortOrder| {
            GetOptions::new()
                .with_prefix()
                .with_keys_only()
                .with_max_create_revision(mine - 1)
                .with_sort(SortTarget::Create, order)
                .with_limit(limit)
        };
        let rw = self.rw_prefix(key);
        let fence_key = format!("{rw}fence");
        let (writers, queue) = (format!("{rw}q/w/"), format!("{rw}q/"));
        let txn = match kind {
            Kind::Read => Txn::new().when([ours]).and_then([
                TxnOp::get(writers.clone(), Some(ahead(1, SortOrder::Descend))),
                TxnOp::get(fence_key, None),
            ]),
            Kind::Permit(n) => Txn::new().when([ours]).and_then([TxnOp::get(
                self.semaphore_prefix(key),
                Some(ahead(i64::from(n), SortOrder::Ascend)),
            )]),
            _ => Txn::new()
                .when([
                    ours,
                    // Every queued key created at or after ours: nobody ahead.
                    Compare::create_revision(queue.clone(), CompareOp::Greater, mine - 1)
                        .with_prefix(),
                ])
                .and_then([TxnOp::put(fence_key, mine.to_string(), None)])
                .or_else([
                    TxnOp::get(path, Some(GetOptions::new().with_keys_only())),
                    TxnOp::get(queue, Some(ahead(1, SortOrder::Descend))),
                ]),
        };
        let done = client.txn(txn).await.map_err(|e| self.err(e))?;
        let fence = u64::try_from(mine).ok();
        Ok(match kind {
            Kind::Read if !done.succeeded() => Turn::Vanished,
            Kind::Read => match got(&done, 0).and_then(|g| g.kvs().first().cloned()) {
                Some(writer) => Turn::Wait(Watch::Key(writer.key().to_vec())),
                None => {
                    let last_write = got(&done, 1)
                        .and_then(|g| g.kvs().first().cloned())
                        .and_then(|kv| kv.value_str().ok()?.parse().ok());
                    Turn::Granted(last_write)
                }
            },
            Kind::Permit(_) if !done.succeeded() => Turn::Vanished,
            Kind::Permit(n) => {
                let before = got(&done, 0).map_or(0, |g| g.kvs().len());
                if before < n as usize {
                    Turn::Granted(fence)
                } else {
                    Turn::Wait(Watch::Ahead {
                        prefix: self.semaphore_prefix(key).into_bytes(),
                        permits: n,
                    })
                }
            }
            _ if done.succeeded() => Turn::Granted(fence),
            _ if got(&done, 0).is_none_or(|g| g.kvs().is_empty()) => Turn::Vanished,
            _ => match got(&done, 1).and_then(|g| g.kvs().first().cloned()) {
                Some(ahead) => Turn::Wait(Watch::Key(ahead.key().to_vec())),
                None => Turn::Again,
            },
        })
    }

    /// Whether what `watch` waits for has changed since the look that chose it (a key ahead
    /// gone, fewer than `permits` keys ahead), or our own key is gone: one linearizable read.
    async fn moved(&self, watch: &Watch, held: &Held, mine: i64) -> Result<bool> {
        let mut client = self.client.clone();
        // Keys created before ours only go: none is created after our look (revisions grow).
        let ahead = GetOptions::new()
            .with_keys_only()
            .with_max_create_revision(mine - 1);
        let (target, options, enough) = match watch {
            Watch::Key(key) => (key.clone(), ahead.with_limit(1), 1),
            Watch::Ahead { prefix, permits } => (
                prefix.clone(),
                ahead.with_prefix().with_limit(i64::from(*permits)),
                *permits as usize,
            ),
        };
        let txn = Txn::new()
            .when([Compare::create_revision(
                held.path.clone(),
                CompareOp::Equal,
                mine,
            )])
            .and_then([TxnOp::get(target, Some(options))]);
        let done = client.txn(txn).await.map_err(|e| self.err(e))?;
        Ok(!done.succeeded() || got(&done, 0).map_or(0, |g| g.kvs().len()) < enough)
    }

    /// Waits until what `watch` names changes (after the look that chose it) or `deadline`
    /// passes, keeping our lease alive meanwhile (`lease_from`: when its last renewal was sent).
    ///
    /// The deletion comes through this backend's watch of the queue's prefix, shared by its
    /// waiters there and kept open between waits (see the `watches` module: a watch made per
    /// wait was now and then left behind by the server, and caught up only within 100 ms). It
    /// starts at the server's current revision (one from the look's revision would always be
    /// behind, for the same reason). What happened between the look and the subscription is
    /// read once the watch exists and the subscription is in it ([`moved`](Self::moved)): a
    /// deletion before the read is seen by it, one after by the watch, so none is missed.
    pub(super) async fn wait_turn(
        &self,
        watch: Watch,
        held: &Held,
        mine: i64,
        deadline: Option<Instant>,
        lease_from: &mut Instant,
    ) -> Result<()> {
        let subscription = match self.watches.subscribe(watch.clone(), mine, &held.path) {
            Joined::Existing(subscription) => subscription,
            Joined::New(subscription, new) => {
                let mut client = self.client.clone();
                let (prefix, options) = new.watch();
                let (watcher, stream) = within_wait(NAME, deadline, async {
                    client
                        .watch(prefix, Some(options))
                        .await
                        .map_err(|e| self.err(e))
                })
                .await?;
                Hubs::start(new, watcher, stream);
                subscription
            }
        };
        let changed = async {
            // The watch ended before it began, or something changed between the look and the
            // subscription (or the read failed): look again.
            if !subscription.live().await || self.moved(&watch, held, mine).await.unwrap_or(true) {
                return;
            }
            subscription.fired().await;
        };
        let until = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed => {}
            _ = until => {}
            // Returns when the lease is gone: the next look finds our key gone.
            _ = self.keep_queued(held, lease_from) => {}
        }
        Ok(())
    }

    /// [`Backend::acquire`](super::Backend::acquire) of a read, write or permit hold.
    pub(super) async fn acquire_shared(
        &self,
        key: &str,
        kind: Kind,
        token: &str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> Result<Option<Grant>> {
        let path = self.hold_path(key, kind, token);
        let created = within_wait(NAME, deadline, async {
            match kind {
                Kind::Permit(n) => self.create_permit(key, n, &path, ttl, token).await,
                _ => self.create(&path, ttl, token).await,
            }
        });
        // `lease_from`: when the lease was last renewed (sent), see `keep_queued`.
        let (held, mine, mut lease_from) = created.await?;
        loop {
            let turn = within_wait(NAME, deadline, self.turn(key, kind, &path, mine)).await?;
            let watch = match turn {
                Turn::Granted(fence) => return Ok(Some(Grant::new(fence, lease_from))),
                Turn::Vanished => {
                    self.forget(token).await;
                    return Err(backend_err(
                        "the lock key vanished while queued (its lease expired?)",
                    ));
                }
                Turn::Again => {
                    // Cannot happen (see `Turn::Again`); a short pause keeps a surprise from
                    // becoming a busy loop.
                    tokio::time::sleep(AGAIN_PAUSE).await;
                    continue;
                }
                Turn::Wait(watch) => watch,
            };
            if remaining(deadline).is_some_and(|l| l.is_zero()) {
                // Deleting our key wakes whoever waited on it (readers behind a writer).
                let held = self.held().remove(token).unwrap_or(held);
                self.remove(&held).await?;
                return Ok(None);
            }
            self.wait_turn(watch, &held, mine, deadline, &mut lease_from)
                .await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permit_counts_are_path_segments() {
        let base = b"/dlock/%sem/a%2Fb/";
        assert_eq!(permits_of(b"/dlock/%sem/a%2Fb/3/0123", base), Some(3));
        assert_eq!(permits_of(b"/dlock/%sem/a%2Fb/x/0123", base), None);
        assert_eq!(permits_of(b"/dlock/%sem/other/3/0123", base), None);
        // The range of count 3 ends before count 30's keys start.
        assert!(prefix_end(b"/s/3/").as_slice() <= b"/s/30/".as_slice());
        assert!(b"/s/10/".as_slice() < b"/s/3/".as_slice());
    }
}
