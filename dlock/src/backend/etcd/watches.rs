//! One etcd watch per lock prefix, shared by this backend's waiters on it and kept while
//! anyone waits there (and [`LINGER`] after), instead of a watch per wait.
//!
//! Why: a watch created without a start revision is meant to start at the server's current
//! revision, "synced" (each later event sent at once), but etcd (`serverWatchStream.recvLoop`,
//! 3.4 here) reads its current revision first and registers the watcher only after, at that
//! revision + 1: a write landing in between leaves the watcher behind the store, in the
//! *unsynced* group, which a background loop catches up only every 100 ms (`syncWatchersLoop`
//! in `watchable_store.go`). Under contention writes come every fraction of a millisecond and
//! about 1 % of the watches made per wait lost that race; each such waiter then learned of its
//! turn up to 100 ms late (hand-off p99 20-60 ms, 16 tasks over 4 Lockers). A watch that lives
//! on is caught up once and stays synced, so at most the first hand-offs after a hub is made
//! can be late; it also saves each wait the watch's creation and cancel.
//!
//! A waiter subscribes (what it waits for), then waits for the hub's watch to exist, then
//! reads what changed before ([`moved`](super::EtcdBackend::moved)): a deletion after that read
//! reaches the hub after the subscription was there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{Event, EventType, WatchFilterType, WatchOptions};
use tokio::sync::{watch, Notify};

use super::shared::Watch;

/// How long a hub's watch stays open once nobody waits on its prefix: the next wait there
/// (a Locker's tasks queue on one key again and again) finds it synced.
const LINGER: Duration = Duration::from_secs(1);

/// A hub's watched prefix, and whether its events carry the previous key.
type Range = (Vec<u8>, bool);

/// The hubs of one backend, by [`Range`].
#[derive(Default)]
pub(super) struct Hubs {
    map: Mutex<HashMap<Range, Arc<Hub>>>,
}

/// What one waiter waits for: a deletion matching its [`Watch`].
struct Sub {
    id: u64,
    watch: Watch,
    /// Our key's create revision and path (for [`Watch::Ahead`]).
    mine: i64,
    own: Vec<u8>,
    fired: Arc<Notify>,
}

impl Sub {
    fn matters(&self, event: &Event) -> bool {
        if event.event_type() != EventType::Delete {
            return false;
        }
        match &self.watch {
            Watch::Key(key) => event.kv().is_none_or(|kv| kv.key() == key.as_slice()),
            Watch::Ahead { .. } => event
                .prev_kv()
                .is_none_or(|prev| prev.create_revision() < self.mine || prev.key() == self.own),
        }
    }
}

#[derive(Default)]
struct Subs {
    next: u64,
    list: Vec<Sub>,
    /// The watch ended (or was never made): no event comes any more.
    dead: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Creating,
    Live,
    Dead,
}

struct Hub {
    subs: Mutex<Subs>,
    phase: watch::Sender<Phase>,
    /// Told when the last subscriber leaves (the linger starts).
    idle: Notify,
}

impl Hub {
    fn subs(&self) -> MutexGuard<'_, Subs> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One waiter's place in a hub; leaves it when dropped.
pub(super) struct Subscription {
    hub: Arc<Hub>,
    id: u64,
    fired: Arc<Notify>,
}

impl Subscription {
    /// Waits until the hub's watch exists on the server; `false` when it ended instead (the
    /// caller looks at the queue again).
    pub(super) async fn live(&self) -> bool {
        let mut phase = self.hub.phase.subscribe();
        let now = phase.wait_for(|p| *p != Phase::Creating).await.map(|p| *p);
        matches!(now, Ok(Phase::Live))
    }

    /// Returns once a deletion this waiter waits for came, or the watch ended.
    pub(super) async fn fired(&self) {
        self.fired.notified().await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = self.hub.subs();
        subs.list.retain(|s| s.id != self.id);
        if subs.list.is_empty() {
            self.hub.idle.notify_one();
        }
    }
}

/// What [`Hubs::subscribe`] found: a hub whose watch exists or is being made by another
/// waiter, or a new one that the caller must [`start`](Hubs::start).
pub(super) enum Joined {
    Existing(Subscription),
    New(Subscription, NewHub),
}

/// A hub just made, whose watch is not yet asked for: dropped without
/// [`Hubs::start`] (the watch failed, or the wait was cancelled), it dies, and its
/// subscribers look again.
pub(super) struct NewHub {
    hubs: Arc<Hubs>,
    key: Range,
    hub: Option<Arc<Hub>>,
}

impl NewHub {
    /// The prefix to watch and the options of the watch: deletions only, under the prefix.
    pub(super) fn watch(&self) -> (Vec<u8>, WatchOptions) {
        let options = WatchOptions::new()
            .with_filters([WatchFilterType::NoPut])
            .with_prefix();
        let (prefix, prev) = &self.key;
        let options = if *prev {
            options.with_prev_key()
        } else {
            options
        };
        (prefix.clone(), options)
    }
}

impl Drop for NewHub {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.take() {
            self.hubs.kill(&self.key, &hub);
        }
    }
}

impl Hubs {
    fn map(&self) -> MutexGuard<'_, HashMap<Range, Arc<Hub>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The watched prefix of `watch` and whether its events need the previous key.
    pub(super) fn range(watch: &Watch) -> Range {
        match watch {
            // The key's parent: all keys of one queue (a mutex's, a read-write lock's readers
            // or writers) share one watch.
            Watch::Key(key) => {
                let end = key.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
                (key[..end].to_vec(), false)
            }
            Watch::Ahead { prefix, .. } => (prefix.clone(), true),
        }
    }

    /// Subscribes to the deletions `watch` waits for (`mine`, `own`: our key's create
    /// revision and path).
    pub(super) fn subscribe(self: &Arc<Self>, watch: Watch, mine: i64, own: &[u8]) -> Joined {
        let key = Self::range(&watch);
        let fired = Arc::new(Notify::new());
        let mut map = self.map();
        let sub = |hub: &Arc<Hub>, subs: &mut Subs| {
            subs.next += 1;
            subs.list.push(Sub {
                id: subs.next,
                watch,
                mine,
                own: own.to_vec(),
                fired: fired.clone(),
            });
            Subscription {
                hub: hub.clone(),
                id: subs.next,
                fired: fired.clone(),
            }
        };
        if let Some(hub) = map.get(&key) {
            let mut subs = hub.subs();
            if !subs.dead {
                return Joined::Existing(sub(hub, &mut subs));
            }
        }
        let hub = Arc::new(Hub {
            subs: Mutex::new(Subs::default()),
            phase: watch::Sender::new(Phase::Creating),
            idle: Notify::new(),
        });
        map.insert(key.clone(), hub.clone());
        let joined = sub(&hub, &mut hub.subs());
        Joined::New(
            joined,
            NewHub {
                hubs: self.clone(),
                key,
                hub: Some(hub),
            },
        )
    }

    /// Runs a new hub on the watch just made for it: its subscribers are told of their
    /// deletions until the watch ends or nobody waited for [`LINGER`].
    pub(super) fn start(
        mut new: NewHub,
        mut watcher: etcd_client::Watcher,
        mut stream: etcd_client::WatchStream,
    ) {
        let Some(hub) = new.hub.take() else { return };
        let (hubs, key) = (new.hubs.clone(), new.key.clone());
        hub.phase.send_replace(Phase::Live);
        // Killed also when the task is dropped (its runtime shut down): waiters then look again.
        let dies = NewHub {
            hubs: hubs.clone(),
            key: key.clone(),
            hub: Some(hub.clone()),
        };
        tokio::spawn(async move {
            let _dies = dies;
            // When the last subscriber left (events meanwhile do not extend the linger).
            let mut idle_since: Option<tokio::time::Instant> = None;
            loop {
                let idle = hub.subs().list.is_empty();
                idle_since = if idle {
                    idle_since.or_else(|| Some(tokio::time::Instant::now()))
                } else {
                    None
                };
                let linger_ends =
                    idle_since.map_or_else(tokio::time::Instant::now, |at| at + LINGER);
                tokio::select! {
                    msg = stream.message() => match msg {
                        Ok(Some(msg)) if !msg.canceled() => {
                            let subs = hub.subs();
                            for sub in &subs.list {
                                if msg.events().iter().any(|e| sub.matters(e)) {
                                    sub.fired.notify_one();
                                }
                            }
                        }
                        // Cancelled (compacted), ended or failed: the waiters look again.
                        _ => break,
                    },
                    _ = tokio::time::sleep_until(linger_ends), if idle => {
                        if hubs.remove_if_idle(&key, &hub) {
                            break;
                        }
                    }
                    _ = hub.idle.notified(), if !idle => {}
                }
            }
            let _ = watcher.cancel().await;
        });
    }

    /// Removes `hub` when nobody waits on it; `true` when removed.
    fn remove_if_idle(&self, key: &Range, hub: &Arc<Hub>) -> bool {
        let mut map = self.map();
        let mut subs = hub.subs();
        if !subs.list.is_empty() {
            return false;
        }
        subs.dead = true;
        if map.get(key).is_some_and(|h| Arc::ptr_eq(h, hub)) {
            map.remove(key);
        }
        hub.phase.send_replace(Phase::Dead);
        true
    }

    /// Ends `hub`: out of the map, and every subscriber woken to look again.
    fn kill(&self, key: &Range, hub: &Arc<Hub>) {
        let mut map = self.map();
        if map.get(key).is_some_and(|h| Arc::ptr_eq(h, hub)) {
            map.remove(key);
        }
        let mut subs = hub.subs();
        subs.dead = true;
        for sub in &subs.list {
            sub.fired.notify_one();
        }
        drop(subs);
        hub.phase.send_replace(Phase::Dead);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_watched_through_its_queue() {
        let key = Hubs::range(&Watch::Key(b"/dlock/a%2Fb/0123".to_vec()));
        assert_eq!(key, (b"/dlock/a%2Fb/".to_vec(), false));
        let rw = Hubs::range(&Watch::Key(b"/dlock/%rw/k/q/w/0123".to_vec()));
        assert_eq!(rw, (b"/dlock/%rw/k/q/w/".to_vec(), false));
        let ahead = Hubs::range(&Watch::Ahead {
            prefix: b"/dlock/%sem/k/".to_vec(),
            permits: 2,
        });
        assert_eq!(ahead, (b"/dlock/%sem/k/".to_vec(), true));
    }
}
