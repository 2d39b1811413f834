//! The core API on the in-memory backend: no server needed.

mod support;

use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dlock::{Error, Locker};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_tasks_keep_a_non_atomic_counter_exact_with_increasing_fences() {
    let fences = support::contend(&[Locker::memory()], "counter", 16, 25).await;
    assert_eq!(fences.len(), 400);
}

#[tokio::test]
async fn stale_holder_cannot_release_or_extend_the_next_holders_lock() {
    let locker = Locker::memory();
    let stale = locker
        .lock("k")
        .ttl(Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let next = locker.lock("k").wait(SECOND).await.unwrap();
    assert!(next.fence() > stale.fence());
    assert!(matches!(
        stale.extend(SECOND).await,
        Err(Error::Lost { .. })
    ));
    assert!(matches!(stale.release().await, Err(Error::Lost { .. })));
    assert!(next.is_held());
    assert!(
        locker.try_lock("k").await.unwrap().is_none(),
        "next holder keeps the lock"
    );
    next.release().await.unwrap();
}

#[tokio::test]
async fn dropped_guard_frees_the_key_at_once() {
    let locker = Locker::memory();
    let guard = locker.lock("k").await.unwrap();
    let waiter = {
        let locker = locker.clone();
        tokio::spawn(async move { locker.lock("k").wait(5 * SECOND).await.map(|g| g.waited()) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(guard);
    // Generous bound: "at once" means by notification, far below the 30 s lease.
    let waited = waiter.await.unwrap().unwrap();
    assert!(waited < 5 * SECOND, "waited {waited:?}");
}

#[tokio::test]
async fn forgotten_guard_frees_after_its_ttl() {
    let locker = Locker::memory();
    let guard = support::in_another_task(locker.lock("k").ttl(Duration::from_millis(200)))
        .await
        .unwrap();
    let start = Instant::now();
    std::mem::forget(guard);
    assert!(locker.try_lock("k").await.unwrap().is_none());
    let next = locker.lock("k").wait(5 * SECOND).await.unwrap();
    // Lower bound exact (lease), upper bound generous (scheduling on a loaded 2-core machine).
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
    assert!(start.elapsed() < 3 * SECOND);
    next.release().await.unwrap();
}

#[tokio::test]
async fn watchdog_lease_outlives_several_ttls() {
    let locker = Locker::memory();
    let guard = locker
        .lock("k")
        .ttl(Duration::from_millis(150))
        .watchdog(true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(guard.is_held());
    assert!(locker.try_lock("k").await.unwrap().is_none());
    guard.release().await.unwrap();
    assert!(locker.try_lock("k").await.unwrap().is_some());
}

#[tokio::test]
async fn fixed_lease_fires_lost_and_extend_moves_it() {
    let locker = Locker::memory();
    let guard = locker
        .lock("k")
        .ttl(Duration::from_millis(200))
        .await
        .unwrap();
    guard.extend(Duration::from_millis(600)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        guard.is_held(),
        "extend moved the deadline past the original ttl"
    );
    tokio::time::timeout(5 * SECOND, guard.lost())
        .await
        .expect("lost() fires");
    assert!(!guard.is_held());
    assert!(matches!(guard.release().await, Err(Error::Lost { .. })));
}

#[tokio::test]
async fn try_lock_on_a_held_key_is_none_and_wait_zero_is_busy() {
    let locker = Locker::memory();
    let held = support::in_another_task(locker.lock("k").wait(Duration::ZERO))
        .await
        .expect("free key");
    assert!(locker.try_lock("k").await.unwrap().is_none());
    match locker.lock("k").wait(Duration::ZERO).await {
        Err(Error::Busy { key, .. }) => assert_eq!(key, "k"),
        other => panic!("expected Busy, got {other:?}"),
    }
    let err = locker
        .lock("k")
        .wait(Duration::from_millis(100))
        .await
        .unwrap_err();
    match err {
        Error::Busy { waited, .. } => assert!(waited >= Duration::from_millis(100)),
        other => panic!("expected Busy, got {other:?}"),
    }
    held.release().await.unwrap();
}

#[tokio::test]
async fn cancelled_acquire_leaves_nothing_held() {
    let locker = Locker::memory();
    let held = support::in_another_task(locker.lock("k")).await.unwrap();
    // The waiter is dropped mid-wait by the timeout.
    let r = tokio::time::timeout(Duration::from_millis(50), locker.lock("k")).await;
    assert!(r.is_err());
    held.release().await.unwrap();
    let next = locker.lock("k").wait(SECOND).await.unwrap();
    next.release().await.unwrap();
}

#[tokio::test]
async fn bad_input_gives_the_documented_errors() {
    let locker = Locker::memory();
    assert!(matches!(
        locker.lock("").await,
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        locker.lock("k").ttl(Duration::ZERO).await,
        Err(Error::InvalidArgument { .. })
    ));
    for url in ["127.0.0.1:6379", "foo://x", "://x", ""] {
        match Locker::connect(url).await {
            Err(Error::InvalidUrl { reason, .. }) => {
                assert!(reason.contains("redis://"), "lists schemes: {reason}")
            }
            other => panic!("{url}: expected InvalidUrl, got {other:?}"),
        }
    }
    let err = dlock::lookup("nobody-registered-this").await.unwrap_err();
    assert!(matches!(err, Error::NotConfigured { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("dlock::register") && msg.contains("DLOCK_URL_NOBODY_REGISTERED_THIS"),
        "{msg}"
    );
    // Odd keys are fine on the memory backend.
    for key in ["a/b", "{tag}", " ", "\n", "ключ", &"x".repeat(5000)] {
        let g = locker.lock(key).await.unwrap();
        assert!(locker.try_lock(key).await.unwrap().is_none());
        g.release().await.unwrap();
    }
}

#[tokio::test]
async fn registry_names() {
    let a = dlock::lookup("memory").await.unwrap();
    let b = dlock::lookup("memory").await.unwrap();
    let g = a.lock("shared").await.unwrap();
    assert!(
        b.try_lock("shared").await.unwrap().is_none(),
        "one process-wide memory space"
    );
    g.release().await.unwrap();
    let mine = Locker::memory();
    dlock::register("registry-test", mine.clone());
    let g = mine.lock("k").await.unwrap();
    let found = dlock::lookup("registry-test").await.unwrap();
    assert!(found.try_lock("k").await.unwrap().is_none());
    g.release().await.unwrap();
}

#[test]
fn blocking_api_works_from_plain_threads() {
    let locker = Locker::memory();
    let counter = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (locker, counter) = (locker.clone(), counter.clone());
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let guard = locker.lock("t").wait(30 * SECOND).blocking().unwrap();
                    let seen = counter.load(Ordering::SeqCst);
                    std::thread::yield_now();
                    counter.store(seen + 1, Ordering::SeqCst);
                    if seen % 2 == 0 {
                        guard.release_blocking().unwrap();
                    } else {
                        drop(guard); // released by the background runtime
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(counter.load(Ordering::SeqCst), 60);
}

#[tokio::test]
async fn blocking_api_errors_inside_a_runtime() {
    let locker = Locker::memory();
    assert!(matches!(
        locker.lock("k").blocking(),
        Err(Error::BlockingInAsync)
    ));
    assert!(matches!(
        Locker::connect_blocking("memory://"),
        Err(Error::BlockingInAsync)
    ));
    // A guard acquired here and moved to a plain thread is released there.
    let guard = locker.lock("k").await.unwrap();
    std::thread::spawn(move || drop(guard)).join().unwrap();
    let next = locker.lock("k").wait(5 * SECOND).await.unwrap();
    next.release().await.unwrap();
}

#[tokio::test]
async fn extreme_durations_are_errors_not_panics() {
    let locker = Locker::memory();
    let g = locker.lock("k").wait(Duration::MAX).await.unwrap();
    assert!(matches!(
        g.extend(Duration::MAX).await,
        Err(Error::InvalidArgument { .. })
    ));
    g.release().await.unwrap();
    assert!(matches!(
        locker.lock("k").ttl(Duration::MAX).await,
        Err(Error::InvalidArgument { .. })
    ));
}

#[tokio::test]
async fn a_short_extend_under_a_watchdog_lease_is_renewed_in_time() {
    let locker = Locker::memory();
    let guard = locker
        .lock("k")
        .ttl(3 * SECOND)
        .watchdog(true)
        .await
        .unwrap();
    // Shorter than the 1 s renewal period: the watchdog must renew before it runs out.
    guard.extend(Duration::from_millis(300)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(guard.is_held());
    guard.release().await.unwrap();
}

/// Issue 20, item 2: locking a key the same task already holds (or is acquiring) through the
/// same Locker fails at once with `AlreadyHeld`, instead of waiting for itself forever.
#[tokio::test]
async fn relocking_a_key_this_task_holds_fails_at_once() {
    let locker = Locker::memory();
    let guard = locker.lock("k").await.unwrap();
    let started = std::time::Instant::now();
    let again = locker.lock("k").await;
    assert!(
        matches!(again, Err(Error::AlreadyHeld { ref key }) if key == "k"),
        "{again:?}"
    );
    // One attempt (`try_lock`, `wait(0)`) cannot wait for itself: the key is simply busy.
    assert!(locker.try_lock("k").await.unwrap().is_none());
    assert!(started.elapsed() < SECOND);
    // Another task waits as usual, and gets the key once it is released.
    let other = tokio::spawn({
        let locker = locker.clone();
        async move { locker.lock("k").wait(5 * SECOND).await.map(|g| g.fence()) }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    guard.release().await.unwrap();
    assert!(other.await.unwrap().is_ok());
    // After a release, and after a drop, the same task may lock it again.
    let guard = locker.lock("k").await.unwrap();
    drop(guard);
    let guard = locker.lock("k").wait(5 * SECOND).await.unwrap();
    guard.release().await.unwrap();
    // Two acquires of one key joined in one task: the second is refused, not deadlocked.
    let (a, b) = tokio::join!(
        locker.lock("j").into_future(),
        locker.lock("j").into_future()
    );
    assert!(a.is_ok() != b.is_ok());
    assert!(matches!(
        a.as_ref().err().or(b.as_ref().err()),
        Some(Error::AlreadyHeld { .. })
    ));
    // A different Locker is a different holder, as another process would be.
    let second = Locker::memory();
    assert!(second.try_lock("j").await.unwrap().is_some());
}

#[test]
fn relocking_through_the_blocking_api_on_one_thread_fails_at_once() {
    let locker = Locker::memory();
    let guard = locker.lock("k").blocking().unwrap();
    assert!(matches!(
        locker.lock("k").wait(5 * SECOND).blocking(),
        Err(Error::AlreadyHeld { .. })
    ));
    // Another thread waits for it as usual.
    let other = std::thread::spawn({
        let locker = locker.clone();
        move || locker.lock("k").wait(5 * SECOND).blocking().is_ok()
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    guard.release_blocking().unwrap();
    assert!(other.join().unwrap());
}
