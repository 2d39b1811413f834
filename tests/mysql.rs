//! The MySQL / MariaDB backend against the real server (`DLOCK_TEST_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`; `scripts/services.sh up` starts it).
//!
//! Every test uses keys from `support::unique`, so tests running in parallel (and earlier runs)
//! never share a row, and each ends by checking that no row of its keys is left in the table.
//! Timing bounds are generous on purpose: the suite runs on a 2-core machine next to other test
//! processes, and every lock operation is an fsynced write.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dlock::{Error, Locker};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::AssertSqlSafe;
use support::Holder;

const SECOND: Duration = Duration::from_secs(1);

async fn locker() -> Locker {
    support::connect("MariaDB/MySQL", &support::mysql_url()).await
}

/// A direct sqlx pool on the test database, to look at the table behind dlock's back.
async fn db() -> MySqlPool {
    let url = support::mysql_url();
    MySqlPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "MariaDB/MySQL is not reachable at {url}: {e}\n\
                 start the test servers with `scripts/services.sh up` (or set DLOCK_TEST_MYSQL_URL)"
            )
        })
}

/// Rows of the default table whose `lock_name` starts with `prefix` (a `support::unique` key is
/// lowercase, so its mapped names, plain or hashed, all start with it).
async fn rows_with_prefix(db: &MySqlPool, prefix: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM distributed_lock WHERE lock_name LIKE CONCAT(?, '%')")
        .bind(prefix)
        .fetch_one(db)
        .await
        .unwrap()
}

/// Waits (up to 5 s: a dropped guard releases in the background) until no row of `prefix` is left.
async fn assert_nothing_left(prefix: &str) {
    let db = db().await;
    let until = Instant::now() + 5 * SECOND;
    loop {
        let n = rows_with_prefix(&db, prefix).await;
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < until,
            "{n} row(s) of {prefix} left in distributed_lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_over_four_lockers_keep_a_counter_exact_with_increasing_fences() {
    let key = support::unique("counter");
    let mut lockers = Vec::new();
    for _ in 0..4 {
        lockers.push(locker().await);
    }
    let fences = support::contend(&lockers, &key, 16, 25).await;
    assert_eq!(fences.len(), 16 * 25);
    assert_nothing_left(&key).await;
}

#[tokio::test]
async fn stale_release_and_extend_after_expiry_are_lost_and_leave_the_new_holder_intact() {
    let key = support::unique("stale");
    let (a, b) = (locker().await, locker().await);
    let stale = a.lock(&key).ttl(Duration::from_millis(300)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The expired row is taken over: deleted by its expiry, re-inserted with a new id.
    let next = b.lock(&key).wait(10 * SECOND).await.unwrap();
    assert!(
        next.fence() > stale.fence(),
        "{:?} after {:?}",
        next.fence(),
        stale.fence()
    );
    assert!(matches!(
        stale.extend(10 * SECOND).await,
        Err(Error::Lost { .. })
    ));
    assert!(matches!(stale.release().await, Err(Error::Lost { .. })));
    assert!(next.is_held());
    assert!(
        a.try_lock(&key).await.unwrap().is_none(),
        "the new holder keeps the lock"
    );
    next.extend(10 * SECOND).await.unwrap();
    next.release().await.unwrap();
    assert_nothing_left(&key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_guard_frees_the_key_at_once() {
    let key = support::unique("dropped");
    let (a, b) = (locker().await, locker().await);
    let guard = a.lock(&key).await.unwrap(); // 30 s watchdog lease
    let waiter = {
        let key = key.clone();
        tokio::spawn(async move { b.lock(&key).wait(20 * SECOND).await.map(|g| g.waited()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(guard);
    // "At once" = by the dropped guard's background release and the next poll (at most 50 ms
    // apart), far below the 30 s lease; 5 s leaves room for a loaded 2-core machine.
    let waited = waiter.await.unwrap().unwrap();
    assert!(
        waited < 5 * SECOND + Duration::from_millis(300),
        "waited {waited:?}"
    );
    assert_nothing_left(&key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_guard_frees_after_its_ttl() {
    let key = support::unique("forgotten");
    let (a, b) = (locker().await, locker().await);
    let ttl = 2 * SECOND;
    let started = Instant::now();
    let guard = a.lock(&key).ttl(ttl).await.unwrap();
    std::mem::forget(guard);
    assert!(b.try_lock(&key).await.unwrap().is_none());
    let next = b.lock(&key).wait(20 * SECOND).await.unwrap();
    let after = started.elapsed();
    // Not before the lease ends (server time; allow 100 ms of clock granularity), and well
    // before the wait runs out (generous: loaded 2-core machine).
    assert!(
        after >= ttl - Duration::from_millis(100),
        "freed after {after:?}"
    );
    assert!(after < ttl + 10 * SECOND, "freed after {after:?}");
    next.release().await.unwrap();
    assert_nothing_left(&key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_keeps_a_short_lease_alive_for_several_seconds() {
    let key = support::unique("watchdog");
    let (a, b) = (locker().await, locker().await);
    let guard = a
        .lock(&key)
        .ttl(Duration::from_millis(600))
        .watchdog(true)
        .await
        .unwrap();
    let until = Instant::now() + 3 * SECOND;
    while Instant::now() < until {
        assert!(guard.is_held());
        assert!(
            b.try_lock(&key).await.unwrap().is_none(),
            "the watchdog must keep the 600 ms lease"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(guard.is_held());
    guard.release().await.unwrap();
    assert!(b.try_lock(&key).await.unwrap().is_some());
    assert_nothing_left(&key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_holder_frees_after_its_lease() {
    let key = support::unique("killed");
    let url = support::mysql_url();
    let lease = 2 * SECOND;
    let holder = Holder::start(&url, &key, lease, true);
    let held_fence = holder.fence;
    let b = locker().await;
    assert!(b.try_lock(&key).await.unwrap().is_none());
    let killed_at = Instant::now();
    holder.kill();
    let next = b.lock(&key).wait(30 * SECOND).await.unwrap();
    let after = killed_at.elapsed();
    // The watchdog renewed up to the kill, so the row expires within one lease after it; allow
    // generous slack for a loaded machine.
    assert!(after < lease + 10 * SECOND, "freed after {after:?}");
    assert!(
        next.fence() > held_fence,
        "{:?} after {held_fence:?}",
        next.fence()
    );
    next.release().await.unwrap();
    assert_nothing_left(&key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_lock_exclusively_and_stay_distinct() {
    let prefix = support::unique("hostile");
    let suffixes = [
        "it's \"quoted\" `ticked`".to_string(),
        "'; DROP TABLE distributed_lock; --".to_string(),
        "ключ 日本語 🔒 ẞ".to_string(),
        "line1\nline2\r\n\ttab".to_string(),
        "x".repeat(5000),
        "y".repeat(5001),
        "Order:42".to_string(),
        "order:42".to_string(),
        "ORDER:42".to_string(),
        "k".to_string(),
        "k ".to_string(),
        "k\0".to_string(),
        "%_\\".to_string(),
    ];
    let keys: Vec<String> = suffixes.iter().map(|s| format!("{prefix}:{s}")).collect();
    let (a, b) = (locker().await, locker().await);
    // All held at once: a shared row would make one of these busy.
    let mut guards = Vec::new();
    for key in &keys {
        let guard = a
            .try_lock(key.as_str())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key:?} should be free"));
        guards.push(guard);
    }
    for key in &keys {
        assert!(
            b.try_lock(key.as_str()).await.unwrap().is_none(),
            "{key:?} must be exclusive"
        );
    }
    let db = db().await;
    assert_eq!(rows_with_prefix(&db, &prefix).await, keys.len() as i64);
    // Hashed names end in the SHA-256 of the key, as the module docs say (checked by the server).
    let plain = ["order:42", "k"]; // only these suffixes keep the key as is
    for (key, _) in keys
        .iter()
        .zip(&suffixes)
        .filter(|(_, s)| !plain.contains(&s.as_str()))
    {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM distributed_lock WHERE lock_name LIKE CONCAT(?, '%~', SHA2(?, 256))",
        )
        .bind(&prefix)
        .bind(key)
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(n, 1, "hashed lock_name of {key:?}");
    }
    for guard in guards {
        guard.release().await.unwrap();
    }
    // The table is still there.
    let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM distributed_lock")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_nothing_left(&prefix).await;
}

#[tokio::test]
async fn the_seeds_own_table_gives_the_documented_migration_error() {
    let table = format!("dlock_seed_{}", uuid::Uuid::new_v4().simple());
    let db = db().await;
    // The seed's exact DDL, under another name.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {table} (id BIGINT NOT NULL AUTO_INCREMENT, \
         lock_name VARCHAR(255) NOT NULL, secret_key VARCHAR(64) NOT NULL, \
         create_time DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (id), \
         UNIQUE KEY uk_lock_name (lock_name)) ENGINE=InnoDB"
    )))
    .execute(&db)
    .await
    .unwrap();
    let url = format!("{}?table={table}", support::mysql_url());
    let result = Locker::connect(&url).await;
    let alter = format!(
        "ALTER TABLE `{table}` ADD COLUMN `expire_at` DATETIME(6) NOT NULL DEFAULT '1000-01-01 00:00:00'"
    );
    let outcome = match result {
        Err(e @ Error::Backend { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("lacks column `expire_at`"), "{msg}");
            assert!(msg.contains(&alter), "{msg}");
            // The advice works: after it the same URL connects and locks.
            sqlx::raw_sql(AssertSqlSafe(alter))
                .execute(&db)
                .await
                .unwrap();
            let locker = Locker::connect(&url).await.unwrap();
            let guard = locker.try_lock("seed-table").await.unwrap().unwrap();
            assert!(guard.fence().is_some());
            guard.release().await.unwrap();
            Ok(())
        }
        Err(e) => Err(format!("expected a backend error, got {e:?}")),
        Ok(_) => Err("the seed's table was accepted without expire_at".to_string()),
    };
    // Connecting also made `<table>_holds` (read-write locks, semaphores).
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {table}, {table}_holds"
    )))
    .execute(&db)
    .await
    .unwrap();
    outcome.unwrap();
}

#[tokio::test]
async fn a_closed_port_errors_in_bounded_time() {
    let started = Instant::now();
    let result = Locker::connect("mysql://root@127.0.0.1:1/test").await;
    // Refused at once; 10 s is a generous bound for a loaded machine.
    assert!(started.elapsed() < 10 * SECOND, "{:?}", started.elapsed());
    match result {
        Err(Error::Backend { backend, .. }) => assert_eq!(backend, "mysql"),
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_urls_are_invalid_urls() {
    for url in [
        "mysql://root@127.0.0.1:3306/test?table=a`b",
        "mysql://root@127.0.0.1:3306/test?table=drop%20table",
        "mysql://root:secret@127.0.0.1:3306",
    ] {
        match Locker::connect(url).await {
            Err(Error::InvalidUrl { url: shown, reason }) => {
                assert!(!shown.contains("secret"), "password shown: {shown}");
                assert!(!reason.is_empty());
            }
            other => panic!("{url}: expected InvalidUrl, got {other:?}"),
        }
    }
}

#[test]
fn key_mapping_is_as_documented() {
    use dlock::backend::mysql::lock_name;
    assert_eq!(lock_name("order:42"), "order:42");
    // Capitals, spaces and anything else: readable prefix, `~`, SHA-256 of the whole key.
    // The standard SHA-256 test vector of the empty string (a key the locker itself refuses).
    assert_eq!(
        lock_name(""),
        "~e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let upper = lock_name("Order:42");
    assert!(
        upper.starts_with("order:42~") && upper.len() == 9 + 64,
        "{upper}"
    );
    assert_ne!(lock_name("a b"), lock_name("a_b"));
    assert_ne!(lock_name("k "), lock_name("k"));
    assert!(lock_name(&"x".repeat(5000)).len() <= 255);
    assert_eq!(lock_name(&"y".repeat(190)), "y".repeat(190));
    assert_ne!(lock_name(&"y".repeat(191)), "y".repeat(191));
    let hostile = lock_name("'; DROP TABLE distributed_lock; --");
    assert!(
        hostile.starts_with("___drop_table_distributed_lock__--~"),
        "{hostile}"
    );
    assert!(hostile.chars().all(|c| c.is_ascii_graphic()));
}

#[tokio::test]
async fn a_table_that_would_break_locks_quietly_is_refused() {
    // An INT id (overflows into duplicate-key errors), a nullable expire_at (never expires) and
    // a short prefix unique index (distinct keys collide) would each make locks misbehave
    // without an error; connect refuses the table and names all three.
    let table = format!("dlock_bad_{}", uuid::Uuid::new_v4().simple());
    let db = db().await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {table} (id INT NOT NULL AUTO_INCREMENT, \
         lock_name VARCHAR(255) NOT NULL, secret_key VARCHAR(64) NOT NULL, \
         create_time DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, expire_at DATETIME(6) NULL, \
         PRIMARY KEY (id), UNIQUE KEY uk_lock_name (lock_name(20))) ENGINE=InnoDB"
    )))
    .execute(&db)
    .await
    .unwrap();
    let result = Locker::connect(&format!("{}?table={table}", support::mysql_url())).await;
    // Connecting also made `<table>_holds` (read-write locks, semaphores).
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {table}, {table}_holds"
    )))
    .execute(&db)
    .await
    .unwrap();
    let msg = match result {
        Err(e @ Error::Backend { .. }) => e.to_string(),
        other => panic!("expected the table to be refused, got {other:?}"),
    };
    for part in [
        "`id` as BIGINT",
        "`expire_at` as DATETIME(6) NOT NULL",
        "UNIQUE index on `lock_name`",
    ] {
        assert!(msg.contains(part), "{part} missing from: {msg}");
    }
}

/// Issue 17, item 5: an acquire cut off while its INSERT waits on a row lock on the server. The
/// INSERT commits once the lock is granted, after the locker's undo DELETE (on another pooled
/// connection, not blocked by that lock) found nothing: a row nobody owns until `expire_at`.
/// A gap lock held by a raw transaction makes the INSERT wait, deterministically. A table of its
/// own keeps the gap lock away from other tests' inserts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_cut_off_while_waiting_leaves_no_row_behind() {
    let table = "dlock_cutoff_test";
    let url = format!("{}?table={table}", support::mysql_url());
    let locker = support::connect("MariaDB/MySQL", &url).await;
    let key = support::unique("cutoff");
    let db = db().await;
    let mut blocker = db.begin().await.unwrap();
    // No such row: a locking read on the unique index takes the gap, which blocks inserts of it.
    let _: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT id FROM {table} WHERE lock_name = ? FOR UPDATE"
    )))
    .bind(&key)
    .fetch_optional(&mut *blocker)
    .await
    .unwrap();
    let started = Instant::now();
    let cut = locker
        .lock(key.as_str())
        .ttl(60 * SECOND)
        .wait(Duration::from_millis(300))
        .await;
    assert!(cut.is_err(), "the INSERT was meant to wait on the gap lock");
    assert!(started.elapsed() < 3 * SECOND, "{:?}", started.elapsed());
    // Let the locker's undo run first, then let the INSERT through.
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocker.rollback().await.unwrap();
    let until = Instant::now() + 5 * SECOND;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE lock_name = ?"
        )))
        .bind(&key)
        .fetch_one(&db)
        .await
        .unwrap();
        if rows == 0 && Instant::now() > started + 2 * SECOND {
            break;
        }
        assert!(
            Instant::now() < until,
            "a row nobody owns is left (it would block the key for 60 s)"
        );
    }
    let next = locker.try_lock(key.as_str()).await.unwrap();
    assert!(next.is_some(), "the key is free");
}

// --- Waiting: the local queue (FIFO per key within a Locker) and the cross-Locker turn ---

/// Spawns a task that takes `key` on `locker` (waiting up to 30 s), records `label` in `order`
/// while holding, holds for `hold`, and releases; returns the fence it got.
fn queue_up(
    locker: &Locker,
    key: &str,
    label: &'static str,
    order: &Arc<Mutex<Vec<&'static str>>>,
    hold: Duration,
) -> tokio::task::JoinHandle<Option<u64>> {
    let (locker, key, order) = (locker.clone(), key.to_owned(), order.clone());
    tokio::spawn(async move {
        let guard = locker.lock(&key).wait(30 * SECOND).await.expect(label);
        order.lock().unwrap().push(label);
        tokio::time::sleep(hold).await;
        let fence = guard.fence();
        guard.release().await.expect("release");
        fence
    })
}

/// Lets a task spawned just now reach its place in the key's queue (its first `INSERT` fails,
/// then it queues): generous, the machine may be busy.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_waiters_get_the_key_in_the_order_they_queued() {
    let key = support::unique("fifo");
    let locker = locker().await;
    let holder = locker.lock(&key).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for label in ["w1", "w2", "w3", "w4", "w5"] {
        tasks.push(queue_up(&locker, &key, label, &order, Duration::ZERO));
        settle().await;
    }
    let first = holder.fence().unwrap();
    holder.release().await.unwrap();
    let mut fences = vec![first];
    for t in tasks {
        fences.push(t.await.unwrap().unwrap());
    }
    assert_eq!(*order.lock().unwrap(), ["w1", "w2", "w3", "w4", "w5"]);
    // Every hand-off gives the next holder a new, higher fence.
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
    assert_nothing_left(&key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_does_not_barge_past_a_queued_waiter() {
    let key = support::unique("nobarge");
    let locker = locker().await;
    let holder = locker.lock(&key).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let waiter = queue_up(&locker, &key, "waiter", &order, Duration::from_millis(200));
    settle().await;
    // A newcomer while the key is held queues behind the waiter, without trying the row.
    let newcomer = queue_up(&locker, &key, "newcomer", &order, Duration::ZERO);
    settle().await;
    holder.release().await.unwrap();
    // The release handed the key straight to the waiter: no moment in which it was free,
    // so neither a one-attempt request of this Locker nor one of another Locker gets it.
    assert!(locker.try_lock(&key).await.unwrap().is_none());
    let other = self::locker().await;
    assert!(other.try_lock(&key).await.unwrap().is_none());
    waiter.await.unwrap();
    newcomer.await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["waiter", "newcomer"]);
    assert_nothing_left(&key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_gives_up_or_is_dropped_passes_its_turn_on() {
    let key = support::unique("passon");
    let locker = locker().await;
    let holder = locker.lock(&key).await.unwrap();
    // At the front: gives up when its wait runs out.
    let gives_up = {
        let (locker, key) = (locker.clone(), key.clone());
        tokio::spawn(async move { locker.lock(&key).wait(Duration::from_millis(600)).await })
    };
    settle().await;
    // Next: its acquire is dropped (the task aborted) while it waits.
    let dropped = {
        let (locker, key) = (locker.clone(), key.clone());
        tokio::spawn(async move { locker.lock(&key).wait(30 * SECOND).await })
    };
    settle().await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let last = queue_up(&locker, &key, "last", &order, Duration::ZERO);
    settle().await;
    dropped.abort();
    assert!(matches!(gives_up.await.unwrap(), Err(Error::Busy { .. })));
    // Both left the queue: the release goes to the one still waiting.
    let first = holder.fence().unwrap();
    holder.release().await.unwrap();
    let fence = last.await.unwrap().unwrap();
    assert!(fence > first);
    assert_eq!(*order.lock().unwrap(), ["last"]);
    assert!(dropped.await.unwrap_err().is_cancelled());
    assert_nothing_left(&key).await;
    let again = locker.try_lock(&key).await.unwrap();
    assert!(
        again.is_some(),
        "nothing of the waiters that left holds the key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_dropped_while_the_key_is_handed_to_it_leaves_no_row() {
    let key = support::unique("handoff-drop");
    let locker = locker().await;
    for round in 0..20u64 {
        let holder = locker.lock(&key).await.unwrap();
        let waiter = {
            let (locker, key) = (locker.clone(), key.clone());
            tokio::spawn(async move { locker.lock(&key).wait(30 * SECOND).await })
        };
        settle().await;
        // The release hands the key over while the waiter's acquire is dropped: at various
        // moments of the hand-off, from before it starts to after it committed.
        let release = tokio::spawn(async move { holder.release().await });
        tokio::time::sleep(Duration::from_micros(200 * round)).await;
        waiter.abort();
        release.await.unwrap().unwrap();
        let _ = waiter.await;
        // Whatever the moment, the key ends free: a grant that landed is given back.
        let next = locker.lock(&key).wait(10 * SECOND).await;
        next.expect("the key is not left held by the dropped waiter")
            .release()
            .await
            .unwrap();
    }
    assert_nothing_left(&key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_hand_offs_still_let_another_locker_in() {
    let key = support::unique("handoff-fair");
    let busy = locker().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    use std::sync::atomic::Ordering;
    // Four tasks on one Locker keep the key handed from one to the next.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (locker, key, stop, counter) =
                (busy.clone(), key.clone(), stop.clone(), counter.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let g = locker.lock(&key).wait(60 * SECOND).await.unwrap();
                    let seen = counter.load(Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    counter.store(seen + 1, Ordering::SeqCst);
                    g.release().await.unwrap();
                }
            })
        })
        .collect();
    settle().await;
    // A waiter of another Locker gets its turn: hand-offs are bounded in a row.
    let other = locker().await;
    let g = other
        .lock(&key)
        .wait(30 * SECOND)
        .await
        .expect("the other Locker gets in");
    let seen = counter.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        counter.load(Ordering::SeqCst),
        seen,
        "exclusive while the other Locker holds"
    );
    g.release().await.unwrap();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert_nothing_left(&key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_of_four_lockers_gets_turns_and_the_counter_ends_exact() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let key = support::unique("four-by-four");
    let mut lockers = Vec::new();
    for _ in 0..4 {
        lockers.push(locker().await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let locker = lockers[t % 4].clone();
            let (key, stop, counter) = (key.clone(), stop.clone(), counter.clone());
            tokio::spawn(async move {
                let mut mine = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let g = locker.lock(&key).wait(60 * SECOND).await.unwrap();
                    let seen = counter.load(Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    counter.store(seen + 1, Ordering::SeqCst);
                    mine += 1;
                    g.release().await.unwrap();
                }
                mine
            })
        })
        .collect();
    // Long enough for every Locker to have had the turn several times.
    tokio::time::sleep(3 * SECOND).await;
    stop.store(true, Ordering::SeqCst);
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap());
    }
    assert_eq!(counter.load(Ordering::SeqCst), counts.iter().sum::<u64>());
    // No task is starved: the local queues are FIFO and the turn goes round the Lockers.
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    assert_nothing_left(&key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_waiter_takes_a_key_force_released_by_another_process() {
    let key = support::unique("forced-local");
    let (a, ops) = (locker().await, locker().await);
    let first = a.lock(&key).await.unwrap();
    // The holder whose row is force-released got the key by a hand-off, so the waiter behind it
    // waits for its release rather than polling the row.
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let (a, key) = (a.clone(), key.clone());
        tokio::spawn(async move {
            let g = a.lock(&key).ttl(60 * SECOND).wait(20 * SECOND).await;
            let _ = tx.send(g);
        });
    }
    settle().await;
    let waiter = {
        let (a, key) = (a.clone(), key.clone());
        tokio::spawn(async move { a.lock(&key).wait(20 * SECOND).await })
    };
    settle().await;
    first.release().await.unwrap();
    let holder = rx.await.unwrap().expect("handed over");
    settle().await;
    assert!(ops.force_release(&key).await.unwrap());
    // It still looks at the row now and then, so it does not wait out that holder's 60 s lease
    // (its own wait is 20 s).
    let g = waiter
        .await
        .unwrap()
        .expect("the waiter gets the freed key");
    assert!(g.fence() > holder.fence());
    assert!(matches!(holder.release().await, Err(Error::Lost { .. })));
    g.release().await.unwrap();
    assert_nothing_left(&key).await;
}
