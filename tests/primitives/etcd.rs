//! etcd: read-write locks, semaphores and elections against a real etcd
//! (`support::etcd_url()`; `scripts/services.sh up` starts it), and the corners of the etcd
//! design (a cancelled or timed-out writer leaves nothing holding readers back, a queued key
//! outlives its lease, a frozen connection loses a permit, the kinds' keys stay out of the
//! mutex's `inspect`/`list`).

use std::time::{Duration, Instant};

use dlock::{Error, Locker};

use crate::scenarios;
use crate::support::{self, unique};

const SECOND: Duration = Duration::from_secs(1);

async fn locker() -> Locker {
    support::connect("etcd", &support::etcd_url()).await
}

/// `n` Lockers, each its own connection and owner.
async fn lockers(n: usize) -> Vec<Locker> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(locker().await.with_owner(format!("etcd-{i}")));
    }
    all
}

common_scenarios!(lockers, "etcd");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_permit_holder_frees_only_its_permit() {
    // A 2 s lease (etcd's least); the permit frees when the lease alone runs out (etcd checks
    // expiry every 500 ms), then the waiter's watch fires. 15 s: a loaded CI machine.
    scenarios::a_killed_permit_holder_frees_only_its_permit(
        &locker().await,
        &support::etcd_url(),
        &unique("semkill"),
        2 * SECOND,
        15 * SECOND,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_elects_another() {
    // Lease 2 s; the bound allows etcd's expiry check and a loaded CI machine.
    scenarios::killing_the_leader_elects_another(
        &lockers(4).await,
        &support::etcd_url(),
        &unique("elect-kill"),
        2 * SECOND,
        10 * SECOND,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_cancels_the_work_when_leadership_is_lost() {
    // The loss: a private etcd paused (SIGSTOP) for 6 s, so keep-alives stall and `lost()`
    // fires by the 3 s lease's deadline; then resumed, so `lead` can campaign again. (A frozen
    // connection loses the lease as well and is replaced after HTTP/2 keep-alive finds it dead,
    // ~9 s: tests/etcd.rs `a_frozen_connection_is_replaced_and_its_lock_is_lost`.)
    let server = support::EtcdServer::start();
    let url = format!("etcd://127.0.0.1:{}/lead", server.port);
    let locker = support::connect_when_up("private etcd", &url, 20 * SECOND).await;
    let pid = server.child.id();
    let lose = async move {
        support::signal(pid, "-STOP");
        // The term's lease was renewed before the pause: `lost()` fires within its 3 s.
        tokio::time::sleep(6 * SECOND).await;
        support::signal(pid, "-CONT");
    };
    let campaign = locker
        .campaign(&unique("lead"))
        .ttl(3 * SECOND)
        .watchdog(true);
    let started = Instant::now();
    scenarios::lead_cancels_the_work_when_leadership_is_lost(campaign, lose).await;
    // 6 s paused, then the old lease (perhaps renewed once more by a keep-alive that waited
    // in the socket during the pause) goes and the campaign wins; 30 s: a loaded machine.
    assert!(started.elapsed() < 30 * SECOND, "{:?}", started.elapsed());
    eprintln!(
        "lead: lost, re-elected and done {:?} after the start",
        started.elapsed()
    );
    drop(server);
}

/// A writer that gives up (its deadline) or whose acquire is dropped at any point leaves
/// nothing behind: a reader then gets in at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_gives_up_or_is_cancelled_does_not_hold_readers_back() {
    let key = unique("rw-cancel");
    let (a, b) = (locker().await, locker().await.with_owner("other"));
    let reading = b.read_lock(key.as_str()).wait(10 * SECOND).await.unwrap();
    let gave_up = a
        .write_lock(key.as_str())
        .wait(500 * Duration::from_millis(1))
        .await;
    assert!(matches!(gave_up, Err(Error::Busy { .. })), "{gave_up:?}");
    // Nothing queued ahead: one attempt suffices.
    let second = support::in_another_task(b.read_lock(key.as_str()).wait(Duration::ZERO))
        .await
        .expect("a reader after a writer that gave up");
    for micros in (0..8000).step_by(250) {
        let _ = tokio::time::timeout(
            Duration::from_micros(micros),
            a.write_lock(key.as_str()).wait(10 * SECOND),
        )
        .await;
    }
    // Releases of the cancelled tries run in the background: a reader may queue behind one
    // for a moment, and its deletion wakes it. 5 s: a loaded machine.
    let asked = Instant::now();
    let third = support::in_another_task(b.read_lock(key.as_str()).wait(10 * SECOND))
        .await
        .expect("a reader after cancelled writers");
    assert!(asked.elapsed() < 5 * SECOND, "{:?}", asked.elapsed());
    for g in [reading, second, third] {
        g.release().await.unwrap();
    }
    // And nothing holds the write side either.
    let w = a
        .write_lock(key.as_str())
        .wait(Duration::ZERO)
        .await
        .unwrap();
    w.release().await.unwrap();
}

/// A queued key is kept alive while it waits: a writer with a 2 s lease waits 5 s behind a
/// reader and still gets the lock (its key did not expire in the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_keeps_its_place_longer_than_its_lease() {
    let key = unique("rw-long");
    let (a, b) = (locker().await, locker().await.with_owner("other"));
    let reading = b.read_lock(key.as_str()).wait(10 * SECOND).await.unwrap();
    let writer = {
        let key = key.clone();
        tokio::spawn(async move {
            a.write_lock(key.as_str())
                .ttl(2 * SECOND)
                .wait(30 * SECOND)
                .await
        })
    };
    tokio::time::sleep(5 * SECOND).await;
    // The writer queued ahead of new readers all along.
    let blocked = support::in_another_task(b.read_lock(key.as_str()).wait(Duration::ZERO)).await;
    assert!(matches!(blocked, Err(Error::Busy { .. })), "{blocked:?}");
    reading.release().await.unwrap();
    let w = writer
        .await
        .unwrap()
        .expect("the writer waited past its lease");
    assert!(w.fence().is_some());
    w.release().await.unwrap();
}

/// A permit whose connection freezes (keep-alives stall) is lost: `lost()` fires by its lease
/// deadline, and its permit frees for others once etcd expires the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_connection_loses_its_permit() {
    let key = unique("sem-frozen");
    let proxy = support::FreezingProxy::start(2379);
    let url = format!("etcd://127.0.0.1:{}/dlock-test", proxy.port);
    let frozen = support::connect("etcd (through a proxy)", &url).await;
    let other = locker().await.with_owner("other");
    let permit = frozen
        .semaphore(key.as_str(), 1)
        .ttl(2 * SECOND)
        .watchdog(true)
        .wait(10 * SECOND)
        .await
        .unwrap();
    for i in 0..proxy.accepted() {
        proxy.freeze(i);
    }
    let frozen_at = Instant::now();
    tokio::time::timeout(15 * SECOND, permit.lost())
        .await
        .expect("lost() fires while the connection is frozen");
    assert!(
        frozen_at.elapsed() < 5 * SECOND,
        "lost() by the 2 s lease: {:?}",
        frozen_at.elapsed()
    );
    let taken = other
        .semaphore(key.as_str(), 1)
        .wait(15 * SECOND)
        .await
        .expect("the lost permit frees");
    eprintln!(
        "a frozen holder's permit was taken {:?} after the freeze",
        frozen_at.elapsed()
    );
    taken.release().await.unwrap();
}

/// Read-write and semaphore holds are not mutexes: `inspect`, `list` and `force_release` (the
/// mutex's) do not see them, and a mutex of the same key is free.
#[tokio::test]
async fn shared_holds_stay_out_of_the_mutex_space() {
    let key = unique("spaces-etcd");
    let l = locker().await;
    let r = l.read_lock(key.as_str()).wait(10 * SECOND).await.unwrap();
    let p = support::in_another_task(l.semaphore(key.as_str(), 2).wait(10 * SECOND))
        .await
        .unwrap();
    assert!(l.inspect(&key).await.unwrap().is_none());
    assert!(l.list(&key).await.unwrap().is_empty());
    assert!(l
        .list("")
        .await
        .unwrap()
        .iter()
        .all(|i| !i.key.contains(&key)));
    assert!(!l.force_release(&key).await.unwrap());
    for g in [r, p] {
        assert!(g.is_held());
        g.release().await.unwrap();
    }
}
