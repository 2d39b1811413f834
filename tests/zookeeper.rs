//! ZooKeeper backend against the real server on 127.0.0.1:2181 (`scripts/services.sh up`).
//!
//! Every test uses its own keys (`support::unique`), checks with a raw `zookeeper-client` session
//! what is on the server, and ends by asserting that no lock node of its keys is left under the
//! test root (and removing the empty per-key directories, which the server would otherwise reap
//! only at its next container sweep).
//!
//! Timing bounds are generous on purpose: the suite runs on 2-core machines next to other test
//! binaries, and ZooKeeper expires sessions in tick-sized buckets (tickTime 2 s).

mod support;

use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dlock::backend::zookeeper::ZookeeperBackend;
use dlock::{Error, Locker};
use support::{unique, zookeeper_url, Holder};
use tokio::sync::{mpsc, oneshot};
use zookeeper_client as zk;

const SERVER: &str = "ZooKeeper";

async fn locker() -> Locker {
    support::connect(SERVER, &zookeeper_url()).await
}

async fn backend(url: &str) -> ZookeeperBackend {
    match ZookeeperBackend::connect(url).await {
        Ok(b) => b,
        Err(e) => panic!(
            "{SERVER} is not reachable at {url}: {e}\n\
             start the test servers with `scripts/services.sh up` (or set DLOCK_TEST_*_URL)"
        ),
    }
}

/// A raw session to look at the server directly.
struct Raw {
    client: zk::Client,
    hosts: String,
    root: String,
}

impl Raw {
    async fn connect() -> Raw {
        let (hosts, root) = support::zookeeper_hosts_and_root();
        let client = zk::Client::connect(&hosts).await.unwrap_or_else(|e| {
            panic!("{SERVER} is not reachable at {hosts}: {e}; run `scripts/services.sh up`")
        });
        Raw {
            client,
            hosts,
            root,
        }
    }

    fn dir(&self, key: &str) -> String {
        format!("{}/{}", self.root, ZookeeperBackend::encode_key(key))
    }

    /// Lock nodes queued on `key` (0 when its directory is gone).
    async fn queue_len(&self, key: &str) -> usize {
        match self.client.list_children(&self.dir(key)).await {
            Ok(c) => c.len(),
            Err(zk::Error::NoNode) => 0,
            Err(e) => panic!("list {}: {e}", self.dir(key)),
        }
    }

    /// Waits (polling, bounded) until `key` has `n` queued nodes.
    async fn wait_queue_len(&self, key: &str, n: usize) {
        let limit = Instant::now() + Duration::from_secs(10);
        loop {
            let len = self.queue_len(key).await;
            if len == n {
                return;
            }
            assert!(
                Instant::now() < limit,
                "queue of {key:?} has {len} nodes, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Asserts that no lock node is left for any key whose directory name starts with one of
    /// `prefixes` (released guards may still be deleting in the background: waits up to 10 s),
    /// then removes those empty directories.
    async fn assert_clean(&self, prefixes: &[&str]) {
        let limit = Instant::now() + Duration::from_secs(10);
        loop {
            let mut left = Vec::new();
            let dirs = self
                .client
                .list_children(&self.root)
                .await
                .expect("list root");
            for dir in dirs
                .iter()
                .filter(|d| prefixes.iter().any(|p| d.starts_with(p)))
            {
                let path = format!("{}/{dir}", self.root);
                match self.client.list_children(&path).await {
                    Ok(children) => {
                        left.extend(children.into_iter().map(|c| format!("{path}/{c}")))
                    }
                    Err(zk::Error::NoNode) => {}
                    Err(e) => panic!("list {path}: {e}"),
                }
            }
            if left.is_empty() {
                for dir in dirs
                    .iter()
                    .filter(|d| prefixes.iter().any(|p| d.starts_with(p)))
                {
                    let path = format!("{}/{dir}", self.root);
                    match self.client.delete(&path, None).await {
                        Ok(()) | Err(zk::Error::NoNode) => {}
                        Err(e) => panic!("delete {path}: {e}"),
                    }
                }
                return;
            }
            assert!(Instant::now() < limit, "lock nodes left behind: {left:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_over_four_sessions_keep_a_counter_exact() {
    let raw = Raw::connect().await;
    let key = unique("counter");
    let mut lockers = Vec::new();
    for _ in 0..4 {
        lockers.push(locker().await);
    }
    let fences = support::contend(&lockers, &key, 16, 5).await;
    assert_eq!(fences.len(), 16 * 5, "zookeeper gives fences");
    raw.assert_clean(&[&key]).await;
}

#[tokio::test]
async fn waiters_are_served_in_arrival_order() {
    let raw = Raw::connect().await;
    let key = unique("fifo");
    let lockers = [locker().await, locker().await, locker().await];
    let holder = lockers[0].lock(key.as_str()).await.expect("lock");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let locker = lockers[i % 3].clone();
        let (key2, order) = (key.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let guard = locker
                .lock(key2.as_str())
                .wait(Duration::from_secs(60))
                .await
                .expect("lock");
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(20)).await;
            guard.release().await.expect("release");
        }));
        // Waiter i is queued before waiter i+1 arrives.
        raw.wait_queue_len(&key, i + 2).await;
    }
    holder.release().await.expect("release");
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    raw.assert_clean(&[&key]).await;
}

#[tokio::test]
async fn one_release_wakes_exactly_one_waiter() {
    let raw = Raw::connect().await;
    let key = unique("herd");
    let holder_locker = locker().await;
    let waiters = backend(&zookeeper_url()).await;
    let waiters_locker = Locker::from_backend(waiters.clone());
    let holder = holder_locker.lock(key.as_str()).await.expect("lock");

    const WAITERS: usize = 10;
    let (acquired_tx, mut acquired) = mpsc::unbounded_channel();
    let mut release_now = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..WAITERS {
        let (tx, rx) = oneshot::channel::<()>();
        release_now.push(tx);
        let (locker, key2, acquired_tx) =
            (waiters_locker.clone(), key.clone(), acquired_tx.clone());
        tasks.push(tokio::spawn(async move {
            let guard = locker
                .lock(key2.as_str())
                .wait(Duration::from_secs(60))
                .await
                .expect("lock");
            acquired_tx.send(i).expect("report");
            let _ = rx.await;
            guard.release().await.expect("release");
        }));
        raw.wait_queue_len(&key, i + 2).await;
    }
    assert_eq!(
        waiters.watch_wakeups(),
        0,
        "nobody is woken while the holder holds"
    );

    holder.release().await.expect("release");
    for i in 0..WAITERS {
        let next = tokio::time::timeout(Duration::from_secs(10), acquired.recv())
            .await
            .expect("a waiter takes over")
            .expect("channel open");
        assert_eq!(next, i, "served in arrival order");
        // Give any extra (herd) wake-up time to show up before counting.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            waiters.watch_wakeups(),
            i as u64 + 1,
            "release number {} woke more than one waiter",
            i + 1
        );
        release_now.remove(0).send(()).expect("waiter alive");
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(waiters.watch_wakeups(), WAITERS as u64);
    raw.assert_clean(&[&key]).await;
}

#[tokio::test]
async fn a_sigkilled_holder_frees_the_lock_within_its_session_timeout() {
    let raw = Raw::connect().await;
    let key = unique("crash");
    let url = support::zookeeper_url_with_short_session();
    let holder = Holder::start(&url, &key, Duration::from_secs(60), true);
    let held_fence = holder.fence.expect("zookeeper gives fences");
    let locker = locker().await;
    assert!(locker.try_lock(key.as_str()).await.unwrap().is_none());

    let killed_at = Instant::now();
    holder.kill();
    let guard = locker
        .lock(key.as_str())
        .wait(Duration::from_secs(60))
        .await
        .expect("the lock frees once the dead holder's session expires");
    let waited = killed_at.elapsed();
    // Session timeout 4 s; the server expires sessions in 2 s tick buckets, so ~4-6 s. 20 s leaves
    // room for a loaded 2-core machine while still proving the lock freed by session expiry.
    assert!(waited < Duration::from_secs(20), "took {waited:?} to free");
    assert!(guard.fence().unwrap() > held_fence);
    guard.release().await.expect("release");
    raw.assert_clean(&[&key]).await;
}

/// A TCP proxy in front of the ZooKeeper server (std threads: the suite's tokio has no `net`),
/// so a test can cut a locker off the server, as a network partition would, and heal it.
struct Proxy {
    port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(target: &str) -> Proxy {
        use std::net::{Shutdown, TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (target, cut2, conns2) = (target.to_owned(), cut.clone(), conns.clone());
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { continue };
                if cut2.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection close at once
                }
                let Ok(up) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut list = conns2.lock().unwrap();
                list.push(down.try_clone().expect("clone"));
                list.push(up.try_clone().expect("clone"));
                drop(list);
                for (mut from, mut to) in [
                    (
                        down.try_clone().expect("clone"),
                        up.try_clone().expect("clone"),
                    ),
                    (up, down),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, cut, conns }
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// The test URL pointed at this proxy, with a 4 s session timeout.
    fn url(&self, root: &str) -> String {
        format!(
            "zookeeper://127.0.0.1:{}{root}?session_timeout=4s",
            self.port
        )
    }
}

#[tokio::test]
async fn an_expired_session_fires_lost_and_the_locker_opens_a_new_one() {
    let raw = Raw::connect().await;
    let key = unique("expire");
    let proxy = Proxy::start(raw.hosts.split(',').next().unwrap());
    let backend = backend(&proxy.url(&raw.root)).await;
    let other = locker().await;
    let locker = Locker::from_backend(backend.clone());
    let guard = locker.lock(key.as_str()).await.expect("lock");
    let guard2 = locker
        .lock(format!("{key}/second"))
        .ttl(Duration::from_secs(60))
        .await
        .expect("lock");
    assert!(guard.is_held());

    // Expire the session for sure: cut the locker off (so its client cannot take the session
    // back), attach a second client to the session with its id and password and close it, then
    // let the locker's client reconnect: the server tells it the session expired.
    let session = backend.session_info().await.expect("session");
    let old_id = session.id();
    proxy.cut();
    let thief = zk::Client::connector()
        .with_session(session)
        .with_session_timeout(Duration::from_secs(4))
        .connect(&raw.hosts)
        .await
        .expect("attach to the session");
    drop(thief); // closes the session: its ephemeral nodes go
    raw.wait_queue_len(&key, 0).await;
    proxy.heal();

    tokio::time::timeout(Duration::from_secs(20), guard.lost())
        .await
        .expect("lost() fires when the session ends");
    tokio::time::timeout(Duration::from_secs(5), guard2.lost())
        .await
        .expect("every guard of the session fires lost()");
    assert!(!guard.is_held());
    assert!(!guard2.is_held());
    assert!(matches!(
        guard.extend(Duration::from_secs(1)).await,
        Err(Error::Lost { .. })
    ));

    // The ephemeral node went with the session: another session takes the lock at once.
    let taken = other
        .lock(key.as_str())
        .wait(Duration::from_secs(10))
        .await
        .expect("the lock is free");
    assert!(matches!(guard.release().await, Err(Error::Lost { .. })));
    assert!(matches!(guard2.release().await, Err(Error::Lost { .. })));
    taken.release().await.expect("release");

    // The same locker works again, in a new session.
    let again = locker
        .lock(key.as_str())
        .wait(Duration::from_secs(10))
        .await
        .expect("lock in a new session");
    assert!(again.is_held());
    assert_ne!(backend.session_info().await.unwrap().id(), old_id);
    again.release().await.expect("release");
    raw.assert_clean(&[&key]).await;
}

#[tokio::test]
async fn a_partition_longer_than_the_session_fires_lost_before_anyone_else_gets_the_lock() {
    let raw = Raw::connect().await;
    let key = unique("partition");
    let proxy = Proxy::start(raw.hosts.split(',').next().unwrap());
    let other = locker().await;
    let cut_off = support::connect(SERVER, &proxy.url(&raw.root)).await;
    let guard = cut_off.lock(key.as_str()).await.expect("lock");

    proxy.cut();
    let cut_at = Instant::now();
    let lost_at = Arc::new(Mutex::new(None));
    let watcher = {
        let lost_at = lost_at.clone();
        async move {
            guard.lost().await;
            *lost_at.lock().unwrap() = Some(Instant::now());
            guard
        }
    };
    let waiter = async {
        let g = other
            .lock(key.as_str())
            .wait(Duration::from_secs(30))
            .await
            .expect("the lock frees once the server expires the cut-off session");
        (g, Instant::now())
    };
    let (guard, (taken, taken_at)) = tokio::join!(watcher, waiter);
    let lost_at = lost_at.lock().unwrap().expect("lost fired");
    // The holder gives up 3/5 of the session timeout after noticing the cut; the server expires
    // the session only after the whole timeout (4 s, rounded up to its 2 s tick) of silence.
    assert!(
        lost_at <= taken_at,
        "the holder learned of the loss {:?} after the cut, but another took the lock after {:?}",
        lost_at - cut_at,
        taken_at - cut_at
    );
    assert!(!guard.is_held());
    taken.release().await.expect("release");
    proxy.heal();
    assert!(matches!(guard.release().await, Err(Error::Lost { .. })));
    raw.assert_clean(&[&key]).await;
}

#[tokio::test]
async fn a_waiter_that_gives_up_leaves_no_node_behind() {
    let raw = Raw::connect().await;
    let key = unique("giveup");
    let (a, b) = (locker().await, locker().await);
    let holder = a.lock(key.as_str()).await.expect("lock");

    // The wait runs out.
    let started = Instant::now();
    let busy = b.lock(key.as_str()).wait(Duration::from_millis(300)).await;
    assert!(matches!(busy, Err(Error::Busy { .. })), "{busy:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        raw.queue_len(&key).await,
        1,
        "only the holder's node is left"
    );

    // One attempt.
    assert!(b.try_lock(key.as_str()).await.unwrap().is_none());
    assert_eq!(raw.queue_len(&key).await, 1);

    // The acquire future is dropped while queued: the locker releases its token in the background.
    let b2 = b.clone();
    let key2 = key.clone();
    let task =
        tokio::spawn(async move { b2.lock(key2.as_str()).wait(Duration::from_secs(60)).await });
    raw.wait_queue_len(&key, 2).await;
    task.abort();
    raw.wait_queue_len(&key, 1).await;

    // A queued waiter behind a waiter that gave up still gets the lock when the holder leaves.
    let b3 = b.clone();
    let key3 = key.clone();
    let behind =
        tokio::spawn(async move { b3.lock(key3.as_str()).wait(Duration::from_secs(60)).await });
    raw.wait_queue_len(&key, 2).await;
    let quitter = b.lock(key.as_str()).wait(Duration::from_millis(200)).await;
    assert!(quitter.unwrap_err().is_busy());
    holder.release().await.expect("release");
    let next = tokio::time::timeout(Duration::from_secs(10), behind)
        .await
        .expect("the waiter takes over")
        .expect("task")
        .expect("lock");
    next.release().await.expect("release");
    raw.assert_clean(&[&key]).await;
}

#[tokio::test]
async fn odd_keys_lock_exclusively() {
    let raw = Raw::connect().await;
    let p = unique("odd");
    let keys: Vec<String> = vec![
        format!("{p}/a/b/c"),
        format!("{p}/"),
        format!("{p}//"),
        format!("{p}%2F"),
        format!("{p}%"),
        format!("{p}/."),
        format!("{p}/.."),
        format!("{p}/../.."),
        format!("{p}."),
        format!("{p} ключ 鍵 🔑 é"),
        format!("{p}\nline\r\n\ttab"),
        format!("{p}\u{0}nul\u{7f}\u{85}"),
        format!("{p}\u{d7ff}\u{e000}\u{f8ff}\u{fff0}\u{ffff}"),
        format!("{p}%~0123"),
        format!("{p}{}", "x".repeat(5000)),
        format!("{p}{}y", "x".repeat(4999)),
        format!("{p}{}", "é".repeat(2500)),
        ".".to_owned(),
        "..".to_owned(),
    ];
    let mut dirs = std::collections::HashSet::new();
    for k in &keys {
        let dir = ZookeeperBackend::encode_key(k);
        assert!(!dir.contains('/'), "{dir:?} is one path segment");
        assert!(dir != "." && dir != "..", "{dir:?}");
        assert!(dir.len() <= 200, "{} bytes", dir.len());
        assert!(dirs.insert(dir.clone()), "two keys map to {dir:?}");
    }
    let (a, b) = (locker().await, locker().await);
    let mut guards = Vec::new();
    for k in &keys {
        // All at once: distinct keys never block each other.
        let guard = a
            .lock(k.as_str())
            .wait(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("lock {k:?}: {e}"));
        assert_eq!(
            raw.queue_len(k).await,
            1,
            "{k:?} is queued under its own directory"
        );
        guards.push(guard);
    }
    for k in &keys {
        assert!(
            b.try_lock(k.as_str()).await.unwrap().is_none(),
            "{k:?} is exclusive"
        );
    }
    for g in guards {
        g.release().await.expect("release");
    }
    for k in &keys {
        let g = b.try_lock(k.as_str()).await.unwrap();
        g.unwrap_or_else(|| panic!("{k:?} is free after release"))
            .release()
            .await
            .expect("release");
    }
    raw.assert_clean(&[&p, "%2E"]).await;
}

#[tokio::test]
async fn a_fixed_ttl_gives_the_lock_up_and_a_watchdog_keeps_it() {
    let raw = Raw::connect().await;
    let key = unique("ttl");
    let (a, b) = (locker().await, locker().await);

    let fixed = a
        .lock(key.as_str())
        .ttl(Duration::from_millis(800))
        .await
        .expect("lock");
    let fixed_fence = fixed.fence();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), fixed.lost())
        .await
        .expect("a fixed lease runs out");
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert!(!fixed.is_held());
    let next = b
        .lock(key.as_str())
        .wait(Duration::from_secs(5))
        .await
        .expect("the node was deleted when the ttl ran out");
    assert!(matches!(fixed.release().await, Err(Error::Lost { .. })));
    assert!(next.fence() > fixed_fence);
    next.release().await.expect("release");

    let kept = a
        .lock(key.as_str())
        .ttl(Duration::from_millis(300))
        .watchdog(true)
        .await
        .expect("lock");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(kept.is_held(), "renewed while the session lives");
    assert!(b.try_lock(key.as_str()).await.unwrap().is_none());
    kept.extend(Duration::from_secs(5)).await.expect("extend");
    kept.release().await.expect("release");
    raw.assert_clean(&[&key]).await;
}

#[tokio::test]
async fn a_lock_node_deleted_by_someone_else_fires_lost_at_the_next_renewal() {
    let raw = Raw::connect().await;
    let key = unique("deleted");
    let locker = locker().await;
    let guard = locker
        .lock(key.as_str())
        .ttl(Duration::from_millis(600))
        .watchdog(true)
        .await
        .expect("lock");
    let dir = raw.dir(&key);
    let nodes = raw.client.list_children(&dir).await.expect("list");
    assert_eq!(nodes.len(), 1);
    // An operator force-releases the lock.
    raw.client
        .delete(&format!("{dir}/{}", nodes[0]), None)
        .await
        .expect("delete");
    tokio::time::timeout(Duration::from_secs(10), guard.lost())
        .await
        .expect("the holder learns its node is gone");
    assert!(!guard.is_held());
    assert!(matches!(guard.release().await, Err(Error::Lost { .. })));
    raw.assert_clean(&[&key]).await;
}

#[tokio::test]
async fn bad_urls_fail_clearly_and_a_closed_port_fails_fast() {
    for url in [
        "zookeeper://127.0.0.1:2181/a//b",
        "zookeeper://127.0.0.1:2181/a/../b",
        "zookeeper://127.0.0.1:notaport/x",
        "zookeeper://,127.0.0.1:2181/x",
        "zookeeper://127.0.0.1:2181/x?session_timeout=soon",
        "zookeeper://127.0.0.1:2181/x?session_timeout=0s",
        "zookeeper://127.0.0.1:2181/x?bogus=1",
        "zookeeper://justauser@127.0.0.1:2181/x",
        "zookeeper://:pw@127.0.0.1:2181/x",
        "zookeeper://127.0.0.1:2181/x?tls_cert=/c.pem&tls_key=/k.pem",
        "zookeeper://127.0.0.1:2181/zookeeper",
        "zookeeper://127.0.0.1:2181/a%b",
    ] {
        match Locker::connect(url).await {
            Err(Error::InvalidUrl { url: shown, reason }) => {
                assert!(!shown.contains("pw@"), "password masked: {shown}");
                assert!(!reason.is_empty());
            }
            other => panic!("{url}: expected InvalidUrl, got {other:?}"),
        }
    }
    let started = Instant::now();
    let refused = Locker::connect("zookeeper://127.0.0.1:1/x").await;
    assert!(matches!(refused, Err(Error::Backend { .. })), "{refused:?}");
    // Refused at once in practice; the bound is generous for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // The scheme alias, several hosts, and the default root.
    let locker = support::connect(
        SERVER,
        "zk://127.0.0.1:2181,localhost:2181?session_timeout=5s",
    )
    .await;
    let key = unique("alias");
    locker
        .lock(key.as_str())
        .await
        .expect("lock")
        .release()
        .await
        .expect("release");
}

/// Issue 17, item 6: a create retried after a lost reply can leave a ghost node of the token.
/// When the acquire is dropped before its queue loop removes the ghost, the cancellation must
/// remove it too; otherwise it holds the key for as long as the session lives. The test hooks
/// make the ghost (first create's reply "lost") and pause the acquire right after its create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_leaves_no_ghost_node_behind() {
    let url = zookeeper_url();
    let a = support::connect("ZooKeeper", &url).await;
    let b = support::connect("ZooKeeper", &url).await;
    let key = unique("ghost");
    // Make the key's queue directory first, so the ghost create succeeds.
    a.lock(key.as_str()).await.unwrap().release().await.unwrap();
    dlock::test_hooks::zk_ghost_create(&key);
    dlock::test_hooks::zk_pause_after_create(&key, Duration::from_secs(2));
    let cut = tokio::time::timeout(
        Duration::from_millis(500),
        a.lock(key.as_str())
            .ttl(Duration::from_secs(30))
            .into_future(),
    )
    .await;
    assert!(
        cut.is_err(),
        "the acquire was meant to be cut off after its create"
    );
    dlock::test_hooks::zk_pause_after_create(&key, Duration::ZERO);
    // The cancellation releases in the background; then another Locker must get the key.
    let next = b
        .lock(key.as_str())
        .ttl(Duration::from_secs(30))
        .wait(Duration::from_secs(5))
        .await
        .expect("a ghost node of the cancelled acquire holds the key");
    next.release().await.unwrap();
}

/// A private ZooKeeper server (standalone, its own data directory) on a free port, stopped by
/// pid on drop; `kill` and `start_on` restart it on the same port and data.
struct ZkServer {
    port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl ZkServer {
    fn start() -> ZkServer {
        let port = support::free_port();
        let dir = std::env::temp_dir().join(format!("dlock-zk-{port}-{}", std::process::id()));
        Self::start_on(port, dir)
    }

    fn start_on(port: u16, dir: std::path::PathBuf) -> ZkServer {
        std::fs::create_dir_all(dir.join("data")).expect("zk dir");
        let cfg = dir.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={port}\nadmin.enableServer=false\n",
                dir.join("data").display()
            ),
        )
        .expect("zoo.cfg");
        let child = std::process::Command::new("java")
            .args([
                "-cp",
                "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar",
                "org.apache.zookeeper.server.ZooKeeperServerMain",
            ])
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start a private ZooKeeper ({e}); install it with `scripts/services.sh up`")
            });
        ZkServer { port, dir, child }
    }

    fn url(&self) -> String {
        format!(
            "zookeeper://127.0.0.1:{}/dlock-restart?session_timeout=4s",
            self.port
        )
    }

    /// SIGKILL; the data directory stays for a restart.
    fn kill(mut self) -> (u16, std::path::PathBuf) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.port, self.dir.clone())
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 12: the fence (the lock node's czxid) keeps growing across a server restart that kept
/// its data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_keep_growing_across_a_server_restart() {
    let server = ZkServer::start();
    let url = server.url();
    let locker = support::connect_when_up("private ZooKeeper", &url, Duration::from_secs(30)).await;
    let mut last = 0;
    for _ in 0..3 {
        let guard = locker.lock("k").await.unwrap();
        let fence = guard.fence().unwrap();
        assert!(fence > last);
        last = fence;
        guard.release().await.unwrap();
    }
    locker.close().await.unwrap();
    let (port, dir) = server.kill();
    let server = ZkServer::start_on(port, dir.clone());
    let after =
        support::connect_when_up("private ZooKeeper", &server.url(), Duration::from_secs(30)).await;
    let guard = after.lock("k").await.unwrap();
    let fence = guard.fence().unwrap();
    assert!(
        fence > last,
        "fence {fence} after {last} across the restart"
    );
    guard.release().await.unwrap();
    after.close().await.unwrap();
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
