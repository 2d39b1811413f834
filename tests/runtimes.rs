//! A Locker outlives the runtime it was made on, on every backend, and the blocking API works from
//! `spawn_blocking`, plain threads and multi-thread workers (not from a current-thread runtime's
//! task, where it says so).
//!
//! These tests build and drop their own runtimes, so most are plain `#[test]` functions.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dlock::{distributed_lock, Error, Locker};
use support::{etcd_url, mysql_url, postgres_url, redis_url, unique, zookeeper_url, RedisServer};
use tokio::runtime::Runtime;

const SECOND: Duration = Duration::from_secs(1);

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Every networked backend, by name and URL (Redlock over three private servers, kept alive by
/// the returned handles).
fn backends() -> (Vec<(&'static str, String)>, Vec<RedisServer>) {
    let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let list = vec![
        ("redis", redis_url()),
        ("redlock", format!("redlock://{}", hosts.join(","))),
        ("mysql", mysql_url()),
        ("zookeeper", zookeeper_url()),
        ("postgres", postgres_url()),
        ("etcd", etcd_url()),
    ];
    (list, nodes)
}

/// Acquire/release cycles on `locker`; fences (where the backend gives them) strictly increase.
async fn cycles(locker: &Locker, key: &str, n: usize) {
    let mut last = None;
    for i in 0..n {
        let guard = locker
            .lock(key)
            .ttl(10 * SECOND)
            .wait(10 * SECOND)
            .await
            .unwrap_or_else(|e| panic!("{}: cycle {i}: {e}", locker.backend_name()));
        if let (Some(prev), Some(now)) = (last, guard.fence()) {
            assert!(
                now > prev,
                "{}: fence {now} after {prev}",
                locker.backend_name()
            );
        }
        last = guard.fence();
        guard
            .release()
            .await
            .unwrap_or_else(|e| panic!("{}: release {i}: {e}", locker.backend_name()));
    }
}

#[test]
fn a_locker_keeps_working_after_the_runtime_it_was_made_on_shut_down() {
    let (list, _nodes) = backends();
    for (name, url) in &list {
        for (flavor, make) in [
            ("current_thread", current_thread as fn() -> Runtime),
            ("multi_thread", multi_thread),
        ] {
            let key = unique(&format!("rt-outlive-{name}-{flavor}"));
            let first = make();
            let locker = first.block_on(async {
                let locker = support::connect(name, url).await;
                cycles(&locker, &key, 2).await;
                locker
            });
            drop(first);
            // A new runtime of each kind, then no runtime at all (the blocking API).
            for next in [current_thread(), multi_thread()] {
                next.block_on(cycles(&locker, &key, 5));
                drop(next);
            }
            for _ in 0..3 {
                let guard = locker
                    .lock(key.as_str())
                    .wait(10 * SECOND)
                    .blocking()
                    .unwrap();
                guard.release_blocking().unwrap();
            }
            eprintln!("{name}: made on a {flavor} runtime: fine after it shut down");
        }
    }
}

/// One attributed function per backend name; each registry entry is made on the first runtime.
macro_rules! attributed {
    ($($fn_name:ident => $backend:literal),* $(,)?) => {$(
        #[distributed_lock(key = "rt-registry:{key}", ttl = "10s", wait = "10s", backend = $backend)]
        async fn $fn_name(key: &str, counter: &AtomicU64) -> Result<u64, Error> {
            // Non-atomic read-yield-write: overlapping holders would lose increments.
            let seen = counter.load(Ordering::SeqCst);
            tokio::task::yield_now().await;
            counter.store(seen + 1, Ordering::SeqCst);
            Ok(seen + 1)
        }
    )*};
}

attributed! {
    registry_redis => "rt-redis",
    registry_redlock => "rt-redlock",
    registry_mysql => "rt-mysql",
    registry_zookeeper => "rt-zookeeper",
    registry_postgres => "rt-postgres",
    registry_etcd => "rt-etcd",
}

#[test]
fn a_registered_locker_made_by_a_runtime_that_finished_serves_twenty_later_ones() {
    let (list, _nodes) = backends();
    // As `#[tokio::test]` does: the first "test" registers, finishes (its runtime drops), and the
    // others, each on a fresh runtime, use the registered lockers. Both kinds of runtime make it.
    for (round, make) in [current_thread as fn() -> Runtime, multi_thread]
        .into_iter()
        .enumerate()
    {
        let maker = make();
        maker.block_on(async {
            for (name, url) in &list {
                dlock::register(format!("rt-{name}"), support::connect(name, url).await);
            }
        });
        drop(maker);
        let key = unique(&format!("round{round}"));
        let counter = AtomicU64::new(0);
        for i in 0..20u64 {
            let rt = if i % 2 == 0 {
                current_thread()
            } else {
                multi_thread()
            };
            rt.block_on(async {
                let calls = [
                    registry_redis(&key, &counter).await,
                    registry_redlock(&key, &counter).await,
                    registry_mysql(&key, &counter).await,
                    registry_zookeeper(&key, &counter).await,
                    registry_postgres(&key, &counter).await,
                    registry_etcd(&key, &counter).await,
                ];
                for (call, (name, _)) in calls.into_iter().zip(&list) {
                    call.unwrap_or_else(|e| panic!("run {i}, {name}: {e}"));
                }
            });
        }
        assert_eq!(counter.load(Ordering::SeqCst), 120);
    }
}

/// A watchdog lock taken on runtime `made_on`, whose guard moves to another runtime before
/// `made_on` shuts down: renewals go on (its lease is 900 ms, held here for 3 s).
fn hold_across_shutdown(name: &str, url: &str, made_on: Runtime) -> (Locker, dlock::LockGuard) {
    let key = unique(&format!("rt-watchdog-{name}"));
    let (locker, guard) = made_on.block_on(async {
        let locker = support::connect(name, url).await;
        let guard = locker
            .lock(key.as_str())
            .ttl(Duration::from_millis(900))
            .watchdog(true)
            .await
            .unwrap();
        (locker, guard)
    });
    drop(made_on);
    (locker, guard)
}

#[test]
fn a_watchdog_lock_keeps_its_lease_after_its_runtime_shut_down() {
    let (list, _nodes) = backends();
    let other = multi_thread();
    for (name, url) in &list {
        for (flavor, make) in [
            ("current_thread", current_thread as fn() -> Runtime),
            ("multi_thread", multi_thread),
        ] {
            let (locker, guard) = hold_across_shutdown(name, url, make());
            other.block_on(async {
                let rival = support::connect(name, url).await;
                let until = Instant::now() + 3 * SECOND;
                // A ZooKeeper session made on a multi-thread runtime lived there and ended with
                // it: the guard must say so (lost), never claim a lock it no longer has.
                if *name == "zookeeper" && flavor == "multi_thread" {
                    tokio::time::timeout(15 * SECOND, guard.lost())
                        .await
                        .expect("zookeeper: lost() fires when the session's runtime shut down");
                    assert!(!guard.is_held());
                    // The next call opens a new session and works.
                    cycles(&locker, &unique("rt-zk-after"), 2).await;
                    return;
                }
                while Instant::now() < until {
                    assert!(guard.is_held(), "{name} ({flavor}): lease lost");
                    assert!(
                        rival.try_lock(guard.key()).await.unwrap().is_none(),
                        "{name} ({flavor}): another locker took a held lock"
                    );
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                guard
                    .release()
                    .await
                    .unwrap_or_else(|e| panic!("{name} ({flavor}): release: {e}"));
                // And the locker still works.
                cycles(&locker, &unique("rt-after"), 2).await;
            });
        }
    }
}

#[distributed_lock(key = "rt-sync:{key}", ttl = "10s", wait = "10s", backend = "rt-sync")]
fn sync_critical_section(key: &str, counter: &AtomicU64) -> Result<u64, Error> {
    let seen = counter.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1));
    counter.store(seen + 1, Ordering::SeqCst);
    Ok(seen + 1)
}

#[test]
fn a_sync_attributed_fn_works_from_spawn_blocking_threads_and_multi_thread_workers() {
    let setup = current_thread();
    setup.block_on(async {
        dlock::register("rt-sync", support::connect("redis", &redis_url()).await);
    });
    drop(setup);
    let key = unique("sync");
    let counter = std::sync::Arc::new(AtomicU64::new(0));

    // A plain thread.
    {
        let (key, counter) = (key.clone(), counter.clone());
        std::thread::spawn(move || sync_critical_section(&key, &counter).unwrap())
            .join()
            .unwrap();
    }
    // spawn_blocking, on both kinds of runtime, four at once.
    for rt in [current_thread(), multi_thread()] {
        rt.block_on(async {
            let calls: Vec<_> = (0..4)
                .map(|_| {
                    let (key, counter) = (key.clone(), counter.clone());
                    tokio::task::spawn_blocking(move || sync_critical_section(&key, &counter))
                })
                .collect();
            for call in calls {
                call.await
                    .unwrap()
                    .expect("spawn_blocking: the blocking API works");
            }
        });
    }
    // An async task of a multi-thread runtime: block_in_place.
    multi_thread().block_on(async {
        let (key, counter) = (key.clone(), counter.clone());
        tokio::spawn(async move { sync_critical_section(&key, &counter) })
            .await
            .unwrap()
            .expect("multi-thread worker: the blocking API works through block_in_place");
    });
    // An async task of a current-thread runtime: the clear error, nothing run.
    current_thread().block_on(async {
        let before = counter.load(Ordering::SeqCst);
        match sync_critical_section(&key, &counter) {
            Err(Error::BlockingInAsync) => {}
            other => panic!("current-thread runtime: expected BlockingInAsync, got {other:?}"),
        }
        assert_eq!(counter.load(Ordering::SeqCst), before);
    });
    assert_eq!(counter.load(Ordering::SeqCst), 1 + 4 + 4 + 1);
}

/// Issue 20, item 1: a program that drops its guard and ends at once. `Locker::close` waits for
/// the background release, so the next process finds the key free right away, not after the
/// 60 s lease.
#[test]
fn a_program_that_drops_its_guard_and_closes_leaves_nothing_held() {
    let (list, _nodes) = backends();
    let rt = multi_thread();
    for (name, url) in &list {
        let key = unique(&format!("close-{name}"));
        for run in 0..3 {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_dlock-hold"))
                .args([url.as_str(), key.as_str(), "60000", "drop-close"])
                .output()
                .expect("run dlock-hold");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("CLOSED"),
                "{name}: dlock-hold failed: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            rt.block_on(async {
                let locker = support::connect(name, url).await;
                let next = locker
                    .try_lock(key.as_str())
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(
                    next.is_some(),
                    "{name}, run {run}: the closed program's lock is held"
                );
                next.unwrap().release().await.unwrap();
                locker.close().await.unwrap();
            });
        }
    }
}

#[test]
fn a_closed_locker_refuses_new_locks() {
    let rt = current_thread();
    rt.block_on(async {
        let locker = support::connect("redis", &redis_url()).await;
        locker.close().await.unwrap();
        let err = locker.lock(unique("closed")).await.unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
    });
}

/// Issue 20, item 6: every configured name can be checked at start-up; a bad one fails there.
#[tokio::test]
async fn configured_lockers_are_connected_and_checked_at_start_up() {
    // Safe here: nextest runs each test in a process of its own.
    std::env::set_var("DLOCK_URL_CFG_REDIS", redis_url());
    std::env::set_var("DLOCK_URL_CFG_BAD", "redis://127.0.0.1:1");
    let err = dlock::connect_configured().await.unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    std::env::remove_var("DLOCK_URL_CFG_BAD");
    let names = dlock::connect_configured().await.unwrap();
    assert!(names.contains(&"cfg_redis".to_string()), "{names:?}");
    // Registered under the variable's name: `cfg-redis` and `cfg_redis` are the same name.
    let locker = dlock::lookup("cfg-redis").await.unwrap();
    std::env::remove_var("DLOCK_URL_CFG_REDIS");
    let again = dlock::lookup("cfg_redis").await.unwrap();
    assert_eq!(locker.backend_name(), "redis");
    assert_eq!(again.backend_name(), "redis");
}

/// Issue 20, item 7: a URL pointed at a closed port, or at another kind of server, fails in
/// bounded time with a message that says so and where (never a raw protocol parse error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_port_or_the_wrong_kind_of_server_gets_a_clear_message() {
    let closed = support::free_port();
    let cases = [
        (
            format!("redis://127.0.0.1:{closed}"),
            vec!["refused", "127.0.0.1"],
        ),
        (
            format!("mysql://root@127.0.0.1:{closed}/test"),
            vec!["refused", "127.0.0.1"],
        ),
        (
            format!("zookeeper://127.0.0.1:{closed}/x"),
            vec!["refused", "127.0.0.1"],
        ),
        (
            "redis://127.0.0.1:3306".to_string(),
            vec!["not answer like Redis", "3306"],
        ),
        ("redis://127.0.0.1:2181".to_string(), vec!["Redis", "2181"]),
        (
            "mysql://root@127.0.0.1:6379/test".to_string(),
            vec!["MySQL", "6379"],
        ),
        (
            "zookeeper://127.0.0.1:6379/x".to_string(),
            vec!["ZooKeeper", "6379"],
        ),
        (
            format!("postgres://postgres@127.0.0.1:{closed}/test"),
            vec!["refused", "127.0.0.1"],
        ),
        (
            "postgres://postgres@127.0.0.1:6379/test".to_string(),
            vec!["PostgreSQL", "6379"],
        ),
    ];
    for (url, expected) in cases {
        let started = Instant::now();
        let result = tokio::time::timeout(15 * SECOND, Locker::connect(&url))
            .await
            .unwrap_or_else(|_| panic!("{url}: no answer within 15 s"));
        let err = match result {
            Ok(_) => panic!("{url}: connected"),
            Err(e) => e.to_string(),
        };
        eprintln!("{url} ({:?}): {err}", started.elapsed());
        for word in expected {
            assert!(err.contains(word), "{url}: `{word}` missing in: {err}");
        }
        assert!(!err.contains('\n'), "{url}: a multi-line message: {err}");
    }
}
