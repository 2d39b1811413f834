//! The etcd backend against a real etcd (`DLOCK_TEST_ETCD_URL`, default
//! `etcd://127.0.0.1:2379/dlock-test`; `scripts/services.sh up` starts it). Keys come from
//! `support::unique`, so parallel tests never share one.

mod support;

use std::time::{Duration, Instant};

use dlock::{Error, Locker};
use support::Holder;

const SECOND: Duration = Duration::from_secs(1);

async fn locker() -> Locker {
    support::connect("etcd", &support::etcd_url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_over_four_lockers_keep_a_counter_exact_with_increasing_fences() {
    let key = support::unique("counter");
    let mut lockers = Vec::new();
    for _ in 0..4 {
        lockers.push(locker().await);
    }
    let fences = support::contend(&lockers, &key, 16, 10).await;
    assert_eq!(fences.len(), 16 * 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_in_arrival_order_and_a_release_wakes_the_next() {
    let key = support::unique("fifo");
    let holder_locker = locker().await;
    let holder = holder_locker
        .lock(key.as_str())
        .ttl(30 * SECOND)
        .await
        .unwrap();
    let mut waiters = Vec::new();
    for i in 0..4u32 {
        let l = locker().await;
        let key = key.clone();
        waiters.push(tokio::spawn(async move {
            let g = l
                .lock(key.as_str())
                .ttl(30 * SECOND)
                .wait(30 * SECOND)
                .await
                .unwrap();
            let fence = g.fence().unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            g.release().await.unwrap();
            (i, fence)
        }));
        // Queue one after the other.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let released = Instant::now();
    holder.release().await.unwrap();
    let mut order = Vec::new();
    for w in waiters {
        order.push(w.await.unwrap());
    }
    assert!(released.elapsed() < 10 * SECOND, "{:?}", released.elapsed());
    let ids: Vec<u32> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, vec![0, 1, 2, 3]);
    assert!(
        order.windows(2).all(|w| w[0].1 < w[1].1),
        "fences grow: {order:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_release_and_extend_after_expiry_are_lost() {
    let key = support::unique("stale");
    let (a, b) = (locker().await, locker().await);
    // A fixed 1 s lease (etcd's lease is at least that long): the client gives it up by itself.
    let stale = a.lock(key.as_str()).ttl(SECOND).await.unwrap();
    let next = b.lock(key.as_str()).wait(20 * SECOND).await.unwrap();
    assert!(next.fence() > stale.fence());
    assert!(!stale.is_held());
    assert!(matches!(
        stale.extend(10 * SECOND).await,
        Err(Error::Lost { .. })
    ));
    assert!(matches!(stale.release().await, Err(Error::Lost { .. })));
    assert!(a.try_lock(key.as_str()).await.unwrap().is_none());
    next.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchdog_keeps_a_short_lease_and_extend_moves_it() {
    let key = support::unique("watchdog");
    let (a, b) = (locker().await, locker().await);
    let guard = a
        .lock(key.as_str())
        .ttl(2 * SECOND)
        .watchdog(true)
        .await
        .unwrap();
    let fence = guard.fence();
    let until = Instant::now() + 5 * SECOND;
    while Instant::now() < until {
        assert!(guard.is_held());
        assert!(b.try_lock(key.as_str()).await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    guard.extend(20 * SECOND).await.unwrap();
    assert_eq!(guard.fence(), fence);
    assert!(b.try_lock(key.as_str()).await.unwrap().is_none());
    guard.release().await.unwrap();
    assert!(b.try_lock(key.as_str()).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_holder_frees_after_its_lease_and_odd_keys_stay_distinct() {
    let key = support::unique("killed/with%odd");
    let holder = Holder::start(&support::etcd_url(), &key, 2 * SECOND, true);
    let held = holder.fence;
    let b = locker().await;
    assert!(b.try_lock(key.as_str()).await.unwrap().is_none());
    // A key that differs only by the escaped characters is another lock.
    assert!(b.try_lock(key.replace('/', "%2F")).await.unwrap().is_some());
    let killed = Instant::now();
    holder.kill();
    let next = b.lock(key.as_str()).wait(30 * SECOND).await.unwrap();
    assert!(killed.elapsed() < 15 * SECOND, "{:?}", killed.elapsed());
    assert!(next.fence() > held);
    next.release().await.unwrap();
}

#[tokio::test]
async fn bad_urls_and_a_closed_port_fail_clearly() {
    let port = support::free_port();
    let started = Instant::now();
    let err = Locker::connect(&format!("etcd://127.0.0.1:{port}/x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(started.elapsed() < 10 * SECOND);
    for url in ["etcd:///x", "etcd://127.0.0.1:notaport/x"] {
        assert!(
            matches!(Locker::connect(url).await, Err(Error::InvalidUrl { .. })),
            "{url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_leaves_nothing_held_and_a_dropped_guard_frees_at_once() {
    let key = support::unique("cancel");
    let (a, b) = (locker().await, locker().await);
    for micros in (0..6000).step_by(200) {
        let _ = tokio::time::timeout(Duration::from_micros(micros), a.lock(key.as_str())).await;
    }
    let next = b.lock(key.as_str()).wait(10 * SECOND).await.unwrap();
    let waiter = {
        let key = key.clone();
        tokio::spawn(async move {
            a.lock(key.as_str())
                .wait(20 * SECOND)
                .await
                .map(|g| g.waited())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(next);
    let waited = waiter.await.unwrap().unwrap();
    assert!(waited < 5 * SECOND, "waited {waited:?}");
}

/// Issue 13: a paused etcd (SIGSTOP) makes keep-alives fail, and `lost()` fires by the lease
/// deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_fires_lost_by_the_lease_deadline() {
    let server = support::EtcdServer::start();
    let url = format!("etcd://127.0.0.1:{}/x", server.port);
    let locker = support::connect_when_up("private etcd", &url, 20 * SECOND).await;
    let guard = locker
        .lock("k")
        .ttl(2 * SECOND)
        .watchdog(true)
        .await
        .unwrap();
    server.signal("-STOP");
    let paused = Instant::now();
    let lost = tokio::time::timeout(15 * SECOND, guard.lost()).await;
    server.signal("-CONT");
    assert!(
        lost.is_ok(),
        "lost() did not fire while the server was paused"
    );
    assert!(paused.elapsed() < 5 * SECOND, "{:?}", paused.elapsed());
    assert!(!guard.is_held());
}

/// A mutex waiter whose wait outlasts its own lease keeps its place: its queued key's lease is
/// kept alive while it waits (nobody else renews it before the grant), and it gets the lock
/// when the holder releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_outlasting_its_lease_keeps_its_place() {
    let key = support::unique("long-wait");
    let (a, b) = (locker().await, locker().await);
    let holder = a.lock(key.as_str()).ttl(30 * SECOND).await.unwrap();
    let held = holder.fence();
    let waiter = {
        let key = key.clone();
        tokio::spawn(async move {
            let guard = b.lock(key.as_str()).ttl(2 * SECOND).wait(20 * SECOND).await;
            (guard, Instant::now())
        })
    };
    // Two and a half of the waiter's 2 s leases.
    tokio::time::sleep(5 * SECOND).await;
    let released = Instant::now();
    holder.release().await.unwrap();
    let (guard, granted) = waiter.await.unwrap();
    let guard = guard.expect("the waiter's key outlived its lease while queued");
    // Woken by the release's watch event, not by a poll: well under a second here; 5 s
    // leaves room for a loaded machine.
    assert!(
        granted.duration_since(released) < 5 * SECOND,
        "{:?}",
        granted.duration_since(released)
    );
    assert!(guard.fence() > held);
    assert!(guard.is_held());
    guard.release().await.unwrap();
}

/// A connection that hangs (the network drops every packet: support::FreezingProxy) is found
/// dead by HTTP/2 pings and replaced: the lock held through it is lost (`lost()` fires by its
/// lease), and a new acquire through the same Locker succeeds on a new connection, as soon as
/// etcd has expired the lost lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_connection_is_replaced_and_its_lock_is_lost() {
    let key = support::unique("frozen");
    let proxy = support::FreezingProxy::start(2379);
    let url = format!("etcd://127.0.0.1:{}/dlock-test", proxy.port);
    let locker = support::connect("etcd (through a proxy)", &url).await;
    let guard = locker
        .lock(key.as_str())
        .ttl(2 * SECOND)
        .watchdog(true)
        .await
        .unwrap();
    let before = proxy.accepted();
    for i in 0..before {
        proxy.freeze(i);
    }
    let frozen_at = Instant::now();
    tokio::time::timeout(15 * SECOND, guard.lost())
        .await
        .expect("lost() fires while the connection is frozen");
    let lost_after = frozen_at.elapsed();
    // By the 2 s lease's deadline (counted from its last renewal before the freeze).
    assert!(lost_after < 5 * SECOND, "lost() after {lost_after:?}");
    assert!(!guard.is_held());
    let lost_fence = guard.fence();
    // Its release (tried in the background) goes while the test's runtime runs.
    drop(guard);
    let again = locker
        .lock(key.as_str())
        .ttl(10 * SECOND)
        .wait(30 * SECOND)
        .await
        .expect("a new acquire after the freeze succeeds on a new connection");
    let recovered_after = frozen_at.elapsed();
    eprintln!("lost() {lost_after:?} and a new acquire {recovered_after:?} after the freeze");
    // With requests in flight, a ping is sent 6 s after the last frame read and the connection
    // dropped 3 s later without its answer; requests meanwhile time out (5 s) and are tried
    // again. About 9-10 s then; 20 s for a loaded machine.
    assert!(
        recovered_after < 20 * SECOND,
        "recovered after {recovered_after:?}"
    );
    assert!(proxy.accepted() > before, "a new connection was opened");
    assert!(again.fence() > lost_fence);
    again.release().await.unwrap();
}

/// A raw client on the test URL's endpoints, and the lock root, to look at keys and leases.
async fn raw() -> (etcd_client::Client, String) {
    let url = support::etcd_url();
    let rest = url.split_once("://").expect("etcd URL").1;
    let (hosts, root) = rest.split_once('/').unwrap_or((rest, ""));
    let root = match root.trim_matches('/') {
        "" => "/dlock".to_owned(),
        r => format!("/{r}"),
    };
    let endpoints: Vec<String> = hosts.split(',').map(str::to_owned).collect();
    let client = etcd_client::Client::connect(endpoints, None)
        .await
        .unwrap_or_else(|e| panic!("etcd is not reachable at {hosts}: {e}"));
    (client, root)
}

async fn backend() -> dlock::backend::etcd::EtcdBackend {
    let url = support::etcd_url();
    dlock::backend::etcd::EtcdBackend::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("etcd is not reachable at {url}: {e}"))
}

/// The etcd key of a hold (the layout documented in the backend; test keys need no escaping).
fn hold_key(root: &str, key: &str, kind: dlock::Kind, id: &str) -> String {
    match kind {
        dlock::Kind::Exclusive => format!("{root}/{key}/{id}"),
        dlock::Kind::Write => format!("{root}/%rw/{key}/q/w/{id}"),
        dlock::Kind::Read => format!("{root}/%rw/{key}/q/r/{id}"),
        dlock::Kind::Permit(n) => format!("{root}/%sem/{key}/{n}/{id}"),
        other => panic!("no etcd layout known for {other:?}"),
    }
}

/// An acquire tried again (as after a timed-out request) finds the key an earlier try made and
/// keeps it, on that try's lease: it renews that lease at once, so the grant's lease (counted
/// from that renewal) is the server's, not one that started before the try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_acquire_renews_the_lease_of_the_key_it_finds() {
    use dlock::backend::Backend;
    let backend = backend().await;
    let (mut raw, root) = raw().await;
    for kind in [
        dlock::Kind::Exclusive,
        dlock::Kind::Write,
        dlock::Kind::Permit(2),
    ] {
        let key = support::unique("adopt");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let token = format!("{id}.retried");
        let ttl = 3 * SECOND;
        let first = backend
            .acquire(&key, kind, &token, ttl, None)
            .await
            .expect("first try")
            .expect("granted");
        let path = hold_key(&root, &key, kind, &id);
        let found = raw.get(path.as_str(), None).await.expect("get");
        let lease = found
            .kvs()
            .first()
            .expect("the key of the first try")
            .lease();
        // Two thirds of the lease pass: about one second is left of it.
        tokio::time::sleep(2 * SECOND).await;
        let again = Instant::now();
        let second = backend
            .acquire(&key, kind, &token, ttl, None)
            .await
            .expect("second try")
            .expect("granted");
        let left = raw
            .lease_time_to_live(lease, None)
            .await
            .expect("lease time to live")
            .ttl();
        // Renewed to 3 s a moment ago (etcd rounds down): 2. Without the renewal: 0 or 1.
        assert!(
            left >= 2,
            "{kind:?}: the found key's lease was renewed: {left} s left"
        );
        assert!(second.sent_at >= again, "{kind:?}");
        assert_eq!(second.fence, first.fence, "{kind:?}: the same key");
        let found = raw.get(path.as_str(), None).await.expect("get");
        assert_eq!(
            found.kvs().first().map(|kv| kv.lease()),
            Some(lease),
            "{kind:?}: the key stays on its lease"
        );
        assert!(backend.release(&key, kind, &token).await.expect("release"));
    }
}

/// Every lease an acquire granted (one per try) is revoked by its release: a put of an earlier
/// try that lands only after the release (a request delayed on the network) fails, instead of
/// making a key that would block the lock for a whole lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_revokes_the_leases_of_every_try_of_its_acquire() {
    use dlock::backend::Backend;
    use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
    let backend = backend().await;
    let (mut raw, root) = raw().await;
    for kind in [dlock::Kind::Exclusive, dlock::Kind::Permit(2)] {
        let key = support::unique("tries");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let token = format!("{id}.retried");
        let path = hold_key(&root, &key, kind, &id);
        let ttl = 30 * SECOND;
        backend
            .acquire(&key, kind, &token, ttl, None)
            .await
            .expect("first try")
            .expect("granted");
        let found = raw.get(path.as_str(), None).await.expect("get");
        let first_lease = found.kvs().first().expect("the first try's key").lease();
        // As if the first try's put had not landed yet when the second try ran.
        raw.delete(path.as_str(), None).await.expect("delete");
        backend
            .acquire(&key, kind, &token, ttl, None)
            .await
            .expect("second try")
            .expect("granted");
        assert!(backend.release(&key, kind, &token).await.expect("release"));
        // The first try's put (create-if-absent on its lease) lands now.
        let late = Txn::new()
            .when([Compare::create_revision(path.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                path.as_str(),
                "late",
                Some(PutOptions::new().with_lease(first_lease)),
            )]);
        let landed = raw.txn(late).await;
        assert!(
            landed.is_err(),
            "{kind:?}: the first try's lease is revoked, so its late put fails: {landed:?}"
        );
        let other = format!("{}.other", uuid::Uuid::new_v4().simple());
        let next = backend
            .acquire(&key, kind, &other, ttl, Some(Instant::now() + 5 * SECOND))
            .await
            .expect("acquire");
        assert!(next.is_some(), "{kind:?}: nothing blocks the lock");
        backend.release(&key, kind, &other).await.expect("release");
    }
}

/// A release that lands between a waiter's look at the queue and the start of its watch still
/// wakes the waiter (the mutex and a reader wait on one key, a permit on the keys ahead). The
/// watch starts at the server's current revision (one from the look's revision is served by
/// etcd's catch-up loop, every 100 ms) and the waiter reads once it exists what changed before
/// it. The release comes at staggered moments after the waiter's key appears, so over the
/// rounds some land between the look and the watch; a missed one would keep the waiter until
/// its wait (10 s) runs out (and its last look then grants it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_between_a_waiters_look_and_its_watch_still_wakes_it() {
    use dlock::backend::Backend;
    use dlock::Kind;
    use etcd_client::EventType;
    use std::sync::Arc;
    const WAIT: Duration = Duration::from_secs(10);
    let backend = Arc::new(backend().await);
    let (mut raw, root) = raw().await;
    let ttl = 10 * SECOND;
    let id = || uuid::Uuid::new_v4().simple().to_string();
    let pairs = [
        (Kind::Exclusive, Kind::Exclusive),
        (Kind::Write, Kind::Read),
        (Kind::Permit(1), Kind::Permit(1)),
    ];
    for (holder_kind, waiter_kind) in pairs {
        for round in 0..24u64 {
            let key = support::unique("gap");
            let holder = format!("{}.holder", id());
            let held = backend
                .acquire(&key, holder_kind, &holder, ttl, None)
                .await
                .expect("holder's acquire");
            assert!(held.is_some(), "{holder_kind:?}: the holder gets it");
            let waiter_id = id();
            let waiter = format!("{waiter_id}.waiter");
            let path = hold_key(&root, &key, waiter_kind, &waiter_id);
            let (_watcher, mut created) = raw.watch(path.as_str(), None).await.expect("watch");
            let acquire = tokio::spawn({
                let (backend, key, waiter) = (backend.clone(), key.clone(), waiter.clone());
                async move {
                    let deadline = Instant::now() + WAIT;
                    backend
                        .acquire(&key, waiter_kind, &waiter, ttl, Some(deadline))
                        .await
                }
            });
            // The waiter's key is there: its look and its watch follow.
            loop {
                let msg = created.message().await.expect("watch").expect("watching");
                if msg
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Put)
                {
                    break;
                }
            }
            let stagger = Instant::now() + Duration::from_micros(150 * round);
            while Instant::now() < stagger {
                tokio::task::yield_now().await;
            }
            let released = Instant::now();
            assert!(backend
                .release(&key, holder_kind, &holder)
                .await
                .expect("holder's release"));
            let grant = acquire
                .await
                .expect("waiter task")
                .expect("waiter's acquire");
            // Granted either way: at the end of its wait the waiter looks once more.
            let woke = released.elapsed();
            assert!(grant.is_some(), "{waiter_kind:?} (round {round}): granted");
            assert!(
                woke < WAIT / 2,
                "{waiter_kind:?} (round {round}): the release woke the waiter ({woke:?} after \
                 it), not the end of its wait ({WAIT:?})"
            );
            assert!(backend
                .release(&key, waiter_kind, &waiter)
                .await
                .expect("waiter's release"));
        }
    }
}
