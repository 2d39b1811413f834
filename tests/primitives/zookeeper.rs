//! zookeeper: read-write locks, semaphores and elections against the server on 127.0.0.1:2181
//! (`scripts/services.sh up`), plus the corners of the recipe (see
//! `dlock/src/backend/zookeeper/shared.rs`): a writer that leaves stops holding readers back,
//! a reader behind a waiting writer waits (arrival order), a semaphore release wakes at most `n`
//! waiters, every kind fires `lost()` when its session ends, a ghost node of a retried create is
//! removed, and no node is left behind.
//!
//! Bounds are generous: the suite runs on 2-core machines beside other test binaries, and
//! ZooKeeper expires sessions in tick-sized buckets (tickTime 2 s).

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dlock::backend::zookeeper::ZookeeperBackend;
use dlock::{Error, Locker};
use zookeeper_client as zk;

use crate::scenarios;
use crate::support::{self, unique, zookeeper_url};

const SERVER: &str = "ZooKeeper";
/// The server's minimum session timeout with tickTime 2000: the lease of the killed-holder tests.
const SHORT_SESSION: Duration = Duration::from_secs(4);

/// `n` Lockers, each its own session, with distinct owners.
async fn lockers(n: usize) -> Vec<Locker> {
    let mut all = Vec::new();
    for i in 0..n {
        let locker = support::connect(SERVER, &zookeeper_url()).await;
        all.push(locker.with_owner(format!("zookeeper-{i}")));
    }
    all
}

async fn locker() -> Locker {
    support::connect(SERVER, &zookeeper_url()).await
}

/// A raw session, to look at the queues on the server.
struct Raw {
    client: zk::Client,
    root: String,
}

impl Raw {
    async fn connect() -> Raw {
        let (hosts, root) = support::zookeeper_hosts_and_root();
        let client = zk::Client::connect(&hosts).await.unwrap_or_else(|e| {
            panic!("{SERVER} is not reachable at {hosts}: {e}; run `scripts/services.sh up`")
        });
        Raw { client, root }
    }

    /// The read-write queue of `key` (the layout documented in the backend).
    fn rw(&self, key: &str) -> String {
        format!("{}/%rw-{}", self.root, ZookeeperBackend::encode_key(key))
    }

    /// The semaphore queue of `key`.
    fn sem(&self, key: &str) -> String {
        format!("{}/%sem-{}", self.root, ZookeeperBackend::encode_key(key))
    }

    async fn nodes(&self, dir: &str) -> Vec<String> {
        match self.client.list_children(dir).await {
            Ok(mut c) => {
                c.sort_by_key(|n| n.rsplit('-').next().map(str::to_owned));
                c
            }
            Err(zk::Error::NoNode) => Vec::new(),
            Err(e) => panic!("list {dir}: {e}"),
        }
    }

    /// Waits (polling, bounded) until `dir` has `n` nodes.
    async fn wait_len(&self, dir: &str, n: usize) {
        let limit = Instant::now() + Duration::from_secs(10);
        loop {
            let nodes = self.nodes(dir).await;
            if nodes.len() == n {
                return;
            }
            assert!(Instant::now() < limit, "{dir} has {nodes:?}, expected {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Asserts that the queues `dirs` empty (released guards may still be deleting in the
    /// background: up to 10 s), then removes them (the server would at its container sweep).
    async fn assert_clean(&self, dirs: &[String]) {
        for dir in dirs {
            self.wait_len(dir, 0).await;
            match self.client.delete(dir, None).await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => panic!("delete {dir}: {e}"),
            }
        }
    }
}

common_scenarios!(lockers, "zk", then leaves_nothing);

/// Every queue of `key` is empty (and gone) once a scenario is over.
async fn leaves_nothing(key: &str) {
    let raw = Raw::connect().await;
    raw.assert_clean(&[raw.rw(key), raw.sem(key)]).await;
}

/// A TCP proxy (std threads: the suite's tokio runs no listener here) that can blackhole every
/// connection, current and new, and later forward again. `support::FreezingProxy` freezes single
/// connections, but a ZooKeeper client whose connection goes silent opens a new one and takes
/// its session back (the server still has it): only freezing every connection makes the session
/// end, as a partition longer than the session timeout does.
struct Blackhole {
    port: u16,
    frozen: Arc<AtomicBool>,
}

impl Blackhole {
    fn start(target_port: u16) -> Blackhole {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let frozen2 = frozen.clone();
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { continue };
                let Ok(up) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                // A connection that swallowed bytes is broken for good (its stream has a gap).
                let broken = Arc::new(AtomicBool::new(false));
                for (mut from, mut to) in [
                    (
                        down.try_clone().expect("clone"),
                        up.try_clone().expect("clone"),
                    ),
                    (up, down),
                ] {
                    let (frozen, broken) = (frozen2.clone(), broken.clone());
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if frozen.load(Ordering::SeqCst) {
                                broken.store(true, Ordering::SeqCst);
                            }
                            if broken.load(Ordering::SeqCst) {
                                continue;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Blackhole { port, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }

    /// The test URL pointed at this proxy, with a 4 s session timeout.
    fn url(&self) -> String {
        let root = support::zookeeper_hosts_and_root().1;
        format!(
            "zookeeper://127.0.0.1:{}{root}?session_timeout=4s",
            self.port
        )
    }
}

/// The port of the test server (the raw client's first host).
fn server_port() -> u16 {
    let (hosts, _) = support::zookeeper_hosts_and_root();
    let first = hosts.split(',').next().unwrap_or_default();
    first
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(2181)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_cancels_the_work_when_leadership_is_lost() {
    let proxy = Blackhole::start(server_port());
    let locker = support::connect(SERVER, &proxy.url()).await;
    let name = unique("lead");
    // Every connection of the leader goes silent for 8 s: its client notices after 2/5 of the
    // 4 s session timeout and gives the session up 2 s later (lost() fires, the work is
    // cancelled); the server expires it after 4 s of silence (rounded up to its 2 s tick). The
    // campaign that follows connects once the proxy forwards again.
    let lose = async move {
        proxy.freeze();
        tokio::time::sleep(Duration::from_secs(8)).await;
        proxy.thaw();
    };
    let started = Instant::now();
    // The default 30 s watchdog lease: the loss is the session's, not a missed renewal.
    scenarios::lead_cancels_the_work_when_leadership_is_lost(locker.campaign(&name), lose).await;
    let took = started.elapsed();
    eprintln!("lead: lost, re-elected and finished after {took:?}");
    assert!(took < Duration::from_secs(40), "{took:?}");
}

#[tokio::test]
async fn a_killed_permit_holder_frees_only_its_permit() {
    let raw = Raw::connect().await;
    let key = unique("semkill");
    // The lease is the 4 s session: freed ~4-6 s after the kill; 30 s leaves room for a loaded
    // machine while still proving that the session's expiry freed it.
    scenarios::a_killed_permit_holder_frees_only_its_permit(
        &locker().await,
        &support::zookeeper_url_with_short_session(),
        &key,
        SHORT_SESSION,
        Duration::from_secs(30),
    )
    .await;
    raw.wait_len(&raw.sem(&key), 1).await; // the live child's permit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another() {
    let name = unique("elect-kill");
    // Session 4 s, expired in 2 s ticks: a new leader ~4-6 s after the kill; 16 s of slack.
    scenarios::killing_the_leader_elects_another(
        &lockers(4).await,
        &support::zookeeper_url_with_short_session(),
        &name,
        SHORT_SESSION,
        Duration::from_secs(16),
    )
    .await;
}

/// A writer that gives up, or whose acquire is dropped, stops holding readers back at once; and
/// while it waits, a reader that came after it waits too (arrival order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_leaves_stops_holding_readers_back() {
    let raw = Raw::connect().await;
    let key = unique("rwleave");
    let dir = raw.rw(&key);
    let (a, b) = (locker().await, locker().await);
    let reading = a.read_lock(key.as_str()).await.expect("read");

    // A writer waits behind the reader; a reader that comes after it waits behind it.
    let writer = {
        let (b, key) = (b.clone(), key.clone());
        tokio::spawn(async move {
            b.write_lock(key.as_str())
                .wait(Duration::from_secs(60))
                .await
        })
    };
    raw.wait_len(&dir, 2).await;
    let late = a.read_lock(key.as_str()).wait(Duration::from_millis(300));
    let late = support::in_another_task(late).await;
    assert!(matches!(late, Err(Error::Busy { .. })), "{late:?}");
    raw.wait_len(&dir, 2).await;

    // The writer's acquire is dropped: the locker deletes its node in the background, which
    // wakes the readers watching it.
    writer.abort();
    let asked = Instant::now();
    let second = support::in_another_task(a.read_lock(key.as_str()).wait(Duration::from_secs(10)))
        .await
        .expect("a reader gets in once the writer left");
    // A notice, not a poll: well under a second on loopback; 5 s for a loaded machine.
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );

    // A writer whose wait runs out leaves no node, and readers go on.
    let busy = b
        .write_lock(key.as_str())
        .wait(Duration::from_millis(300))
        .await;
    assert!(matches!(busy, Err(Error::Busy { .. })), "{busy:?}");
    raw.wait_len(&dir, 2).await;
    let third = support::in_another_task(a.read_lock(key.as_str()).wait(Duration::ZERO))
        .await
        .expect("one attempt finds no writer ahead");
    for g in [reading, second, third] {
        g.release().await.expect("release");
    }
    raw.assert_clean(&[dir]).await;
}

/// A semaphore waiter watches only the `n` nodes right ahead of it: a release wakes at most `n`
/// waiters, and exactly one of them is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semaphore_release_wakes_at_most_n_waiters() {
    let raw = Raw::connect().await;
    let key = unique("semwake");
    let dir = raw.sem(&key);
    let backend = match ZookeeperBackend::connect(&zookeeper_url()).await {
        Ok(b) => b,
        Err(e) => panic!("{SERVER} is not reachable: {e}; run `scripts/services.sh up`"),
    };
    let waiting = Locker::from_backend(backend.clone());
    let holders = lockers(2).await;
    let mut held = Vec::new();
    for h in &holders {
        held.push(h.semaphore(key.as_str(), 2).await.expect("permit"));
    }
    // Four waiters, queued one after the other (places 2..5).
    let granted = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (waiting, key, granted) = (waiting.clone(), key.clone(), granted.clone());
        tasks.push(tokio::spawn(async move {
            let permit = waiting
                .semaphore(key.as_str(), 2)
                .wait(Duration::from_secs(60))
                .await
                .expect("permit");
            granted.lock().unwrap().push(i);
            permit
        }));
        raw.wait_len(&dir, 3 + i).await;
    }
    let wakeups = |n: u64| {
        let backend = backend.clone();
        async move {
            let limit = Instant::now() + Duration::from_secs(10);
            while backend.watch_wakeups() < n {
                assert!(
                    Instant::now() < limit,
                    "{} wake-ups",
                    backend.watch_wakeups()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    // Releasing the second holder (place 1) wakes the waiters at places 2 and 3, which watch it.
    let second = held.pop().expect("two held");
    second.release().await.expect("release");
    wakeups(2).await;
    raw.wait_len(&dir, 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // any stray wake-up would show now
    assert_eq!(backend.watch_wakeups(), 2);
    assert_eq!(*granted.lock().unwrap(), vec![0], "the first waiter holds");
    // Releasing the first holder (place 0) wakes only the waiter now at place 2.
    let first = held.pop().expect("one held");
    first.release().await.expect("release");
    wakeups(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(backend.watch_wakeups(), 3);
    assert_eq!(*granted.lock().unwrap(), vec![0, 1]);
    let mut tasks = tasks.into_iter();
    for t in tasks.by_ref().take(2) {
        t.await.expect("task").release().await.expect("release");
    }
    for t in tasks {
        t.await.expect("task").release().await.expect("release");
    }
    raw.assert_clean(&[dir]).await;
}

/// Every kind's guard fires `lost()` when its session ends (a partition longer than the session
/// timeout), and the holds are free for others once the server expired the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_fires_lost_when_its_session_ends() {
    let raw = Raw::connect().await;
    let key = unique("rwlost");
    let proxy = Blackhole::start(server_port());
    let cut_off = support::connect(SERVER, &proxy.url()).await;
    let other = locker().await;
    let read = cut_off.read_lock(format!("{key}/r")).await.expect("read");
    let write = cut_off.write_lock(format!("{key}/w")).await.expect("write");
    let permit = cut_off.semaphore(key.as_str(), 1).await.expect("permit");

    proxy.freeze();
    let frozen_at = Instant::now();
    for g in [&read, &write, &permit] {
        // Lost 2/5 + 1/2 of the 4 s session timeout after the freeze: ~3.6 s; 20 s for a loaded
        // machine.
        tokio::time::timeout(Duration::from_secs(20), g.lost())
            .await
            .expect("lost() fires when the session ends");
        assert!(!g.is_held());
    }
    eprintln!("every kind lost after {:?}", frozen_at.elapsed());
    // The server expires the silent session (4 s, 2 s ticks): then the holds are free.
    let wait = Duration::from_secs(30);
    let w = other
        .write_lock(format!("{key}/r"))
        .wait(wait)
        .await
        .expect("write");
    let w2 = other
        .write_lock(format!("{key}/w"))
        .wait(wait)
        .await
        .expect("write");
    let p = other
        .semaphore(key.as_str(), 1)
        .wait(wait)
        .await
        .expect("permit");
    proxy.thaw();
    for g in [read, write, permit] {
        assert!(matches!(g.release().await, Err(Error::Lost { .. })));
    }
    for g in [w, w2, p] {
        g.release().await.expect("release");
    }
    raw.assert_clean(&[
        raw.rw(&format!("{key}/r")),
        raw.rw(&format!("{key}/w")),
        raw.sem(&key),
    ])
    .await;
}

/// A create retried after a lost reply leaves a ghost node of the token; the queue check removes
/// it (it would stand ahead of the holder), and the release leaves nothing.
#[tokio::test]
async fn a_ghost_node_of_a_retried_create_is_removed() {
    let raw = Raw::connect().await;
    let key = unique("rwghost");
    let locker = locker().await;
    // The queue directories exist first, so the ghost create succeeds.
    locker
        .write_lock(key.as_str())
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    locker
        .semaphore(key.as_str(), 2)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    for (dir, kind) in [(raw.rw(&key), "write"), (raw.sem(&key), "permits2")] {
        dlock::test_hooks::zk_ghost_create(&dir[raw.root.len() + 1..]);
        let guard = match kind {
            "write" => locker.write_lock(key.as_str()),
            _ => locker.semaphore(key.as_str(), 2),
        }
        .into_future()
        .await
        .expect("held");
        let nodes = raw.nodes(&dir).await;
        assert_eq!(nodes.len(), 1, "the ghost is gone: {nodes:?}");
        assert!(nodes[0].contains(&format!("-{kind}-")), "{nodes:?}");
        // The first hold took sequence 0, the ghost 1: the hold is the retried create's node.
        assert!(nodes[0].ends_with("-0000000002"), "{nodes:?}");
        guard.release().await.expect("release");
    }
    raw.assert_clean(&[raw.rw(&key), raw.sem(&key)]).await;
}

/// A fixed lease gives a read hold up by itself (the locker deletes the node and fires `lost()`);
/// a watchdog lease of the same length keeps a write hold and a permit (renewals find the node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_leases_end_and_watchdog_leases_are_renewed_for_every_kind() {
    let raw = Raw::connect().await;
    let key = unique("rwttl");
    let (a, b) = (locker().await, locker().await);
    let ttl = Duration::from_secs(1);
    let read = a.read_lock(key.as_str()).ttl(ttl).await.expect("read");
    let write = a
        .write_lock(format!("{key}/w"))
        .ttl(ttl)
        .watchdog(true)
        .await
        .expect("write");
    let permit = a
        .semaphore(key.as_str(), 1)
        .ttl(ttl)
        .watchdog(true)
        .await
        .expect("permit");
    // The fixed lease ends after 1 s (10 s for a loaded machine); the writer waiting on it then
    // gets in.
    tokio::time::timeout(Duration::from_secs(10), read.lost())
        .await
        .expect("a fixed lease ends");
    let w = b
        .write_lock(key.as_str())
        .wait(Duration::from_secs(10))
        .await
        .expect("the read hold was given up");
    // Three renewals later the watchdog holds are still there.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(write.is_held() && permit.is_held());
    assert_eq!(raw.nodes(&raw.rw(&format!("{key}/w"))).await.len(), 1);
    assert_eq!(raw.nodes(&raw.sem(&key)).await.len(), 1);
    for g in [w, write, permit] {
        g.release().await.expect("release");
    }
    assert!(matches!(read.release().await, Err(Error::Lost { .. })));
    raw.assert_clean(&[raw.rw(&key), raw.rw(&format!("{key}/w")), raw.sem(&key)])
        .await;
}

/// A writer whose fence store is delayed until after its node is gone (its session presumed
/// dead and the node removed) must not store that older fence over a later writer's: the store
/// is checked against the node's existence, fails, and the writer is not granted; a reader then
/// sees the later writer's fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_fence_stored_late_never_lowers_the_read_fence() {
    let raw = Raw::connect().await;
    let key = unique("rwlatefence");
    let dir = raw.rw(&key);
    let (a, b) = (locker().await, locker().await);
    // Long enough for the steps below (a delete and one uncontended write hold: milliseconds on
    // loopback) on a loaded machine.
    let pause = Duration::from_secs(3);
    dlock::backend::zookeeper::test_hooks::pause_before_write_fence(
        &dir[raw.root.len() + 1..],
        pause,
    );
    let late = {
        let (a, key) = (a.clone(), key.clone());
        tokio::spawn(async move { a.write_lock(key.as_str()).await })
    };
    tokio::time::timeout(
        Duration::from_secs(10),
        dlock::backend::zookeeper::test_hooks::write_fence_paused(),
    )
    .await
    .expect("the first writer is granted and pauses before storing its fence");
    // Its node goes, as when its session is presumed dead and the node removed.
    let nodes = raw.nodes(&dir).await;
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    raw.client
        .delete(&format!("{dir}/{}", nodes[0]), None)
        .await
        .expect("delete the first writer's node");

    let second = b.write_lock(key.as_str()).await.expect("the next writer");
    let higher = second.fence().expect("a writer has a fence");
    second.release().await.expect("release");

    let stale = late.await.expect("task");
    assert!(
        stale.is_err(),
        "a writer whose node went before its fence was stored is not granted: {stale:?}"
    );
    let reading = b.read_lock(key.as_str()).await.expect("read");
    // `None` only if the server's container sweep removed the empty queue directory between the
    // release and this read (documented: readers then have no last write to see); a late store
    // of the first writer's lower fence would show here as `Some(lower)`.
    let read = reading.fence();
    assert!(
        read == Some(higher) || read.is_none(),
        "the read fence never goes back: read {read:?}, the last write had {higher}"
    );
    reading.release().await.expect("release");
    raw.assert_clean(&[dir]).await;
}
