//! The PostgreSQL backend against the real server (`DLOCK_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; `scripts/services.sh up` starts it).
//!
//! Every test uses keys from `support::unique`, so tests running in parallel never share a row,
//! and checks at the end that no row of its keys is left. Timing bounds are generous: the suite
//! runs on a 2-core machine next to other test processes.

mod support;

use std::time::{Duration, Instant};

use dlock::{Error, Locker};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::AssertSqlSafe;
use support::Holder;

const SECOND: Duration = Duration::from_secs(1);

async fn locker() -> Locker {
    support::connect("PostgreSQL", &support::postgres_url()).await
}

/// A direct pool on the test database, to look at the table behind dlock's back.
async fn db() -> PgPool {
    let url = support::postgres_url();
    PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {url}: {e}\n\
                 start the test servers with `scripts/services.sh up` (or set DLOCK_TEST_POSTGRES_URL)"
            )
        })
}

async fn rows(db: &PgPool, table: &str, prefix: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {table} WHERE lock_name LIKE $1 || '%'"
    )))
    .bind(prefix)
    .fetch_one(db)
    .await
    .unwrap()
}

/// Waits (up to 5 s: a dropped guard releases in the background) until no row of `prefix` is left.
async fn assert_nothing_left(prefix: &str) {
    let db = db().await;
    let until = Instant::now() + 5 * SECOND;
    while rows(&db, "dlock_locks", prefix).await > 0 {
        assert!(
            Instant::now() < until,
            "rows of {prefix} left in dlock_locks"
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
    // The expired row is taken over in place, with a new fence.
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

/// A release wakes a waiter of another Locker by `NOTIFY`: a waiter whose holder has a 60 s
/// lease gets the lock soon after the release, not at the lease's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_a_waiter_of_another_locker() {
    let key = support::unique("notify");
    let (a, b) = (locker().await, locker().await);
    let guard = a.lock(&key).ttl(60 * SECOND).await.unwrap();
    let waiter = {
        let key = key.clone();
        tokio::spawn(async move { b.lock(&key).ttl(60 * SECOND).wait(30 * SECOND).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let released = Instant::now();
    guard.release().await.unwrap();
    let next = waiter.await.unwrap().unwrap();
    // Generous for a loaded machine; the point is "not after the 60 s lease".
    assert!(released.elapsed() < 5 * SECOND, "{:?}", released.elapsed());
    next.release().await.unwrap();
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
        assert!(b.try_lock(&key).await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    guard.release().await.unwrap();
    assert!(b.try_lock(&key).await.unwrap().is_some());
    assert_nothing_left(&key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_holder_frees_after_its_lease() {
    let key = support::unique("killed");
    let lease = 2 * SECOND;
    let holder = Holder::start(&support::postgres_url(), &key, lease, true);
    let held_fence = holder.fence;
    let b = locker().await;
    assert!(b.try_lock(&key).await.unwrap().is_none());
    let killed_at = Instant::now();
    holder.kill();
    let next = b.lock(&key).wait(30 * SECOND).await.unwrap();
    let after = killed_at.elapsed();
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
async fn odd_and_long_keys_lock_exclusively_and_stay_distinct() {
    let prefix = support::unique("odd");
    let (a, b) = (locker().await, locker().await);
    let keys = [
        format!("{prefix}:plain"),
        format!("{prefix}:with space and ünïcode 🔑"),
        format!("{prefix}:nul\0byte"),
        format!("{prefix}:nul\0bytf"),
        format!("{prefix}:{}", "x".repeat(5000)),
        format!("{prefix}:{}y", "x".repeat(5000)),
    ];
    let mut guards = Vec::new();
    for key in &keys {
        let g = a.lock(key.as_str()).await.unwrap();
        assert!(
            b.try_lock(key.as_str()).await.unwrap().is_none(),
            "{:.40}",
            key
        );
        guards.push(g);
    }
    for g in guards {
        g.release().await.unwrap();
    }
    for key in &keys {
        assert!(b.try_lock(key.as_str()).await.unwrap().is_some());
    }
}

/// The acquire statement cut off while it waits on a row lock (another transaction's
/// uncommitted row of the same key): when that transaction rolls back, the statement inserts,
/// and the row must be undone rather than left for nobody until its 60 s lease ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_cut_off_while_waiting_leaves_no_row_behind() {
    let key = support::unique("cutoff");
    let locker = locker().await;
    let db = db().await;
    let mut blocker = db.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO dlock_locks (lock_name, secret_key, expire_at) \
         VALUES ($1, 'blocker', clock_timestamp() - interval '1 hour')",
    )
    .bind(&key)
    .execute(&mut *blocker)
    .await
    .unwrap();
    let cut = locker
        .lock(key.as_str())
        .ttl(60 * SECOND)
        .wait(Duration::from_millis(300))
        .await;
    assert!(
        cut.is_err(),
        "the acquire was meant to wait on the uncommitted row"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocker.rollback().await.unwrap();
    let until = Instant::now() + 5 * SECOND;
    tokio::time::sleep(Duration::from_millis(300)).await;
    while rows(&db, "dlock_locks", &key).await > 0 {
        assert!(Instant::now() < until, "a row nobody owns is left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(locker.try_lock(key.as_str()).await.unwrap().is_some());
}

#[tokio::test]
async fn bad_urls_and_a_closed_port_fail_clearly() {
    let port = support::free_port();
    let started = Instant::now();
    let err = Locker::connect(&format!("postgres://postgres@127.0.0.1:{port}/test"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(started.elapsed() < 5 * SECOND);
    for url in [
        "postgres://postgres@127.0.0.1:5432/test?table=bad-name",
        "postgres://postgres@127.0.0.1:notaport/test",
    ] {
        assert!(
            matches!(Locker::connect(url).await, Err(Error::InvalidUrl { .. })),
            "{url}"
        );
    }
    let secret = "s3cr3t-pg-pw";
    let err = Locker::connect(&format!("postgres://nobody:{secret}@127.0.0.1:{port}/test"))
        .await
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains(secret), "{err:?}");
}

/// A private PostgreSQL cluster (`initdb` in a temp directory, run as the `postgres` user) on a
/// free port; stopped by pid on drop.
struct PgServer {
    port: u16,
    dir: std::path::PathBuf,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl PgServer {
    fn start() -> PgServer {
        let port = support::free_port();
        let dir = std::env::temp_dir().join(format!("dlock-pg-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("chown")
            .args(["postgres"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown postgres {} (the test needs root)", dir.display());
        let initdb = std::process::Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &format!("{PG_BIN}/initdb"),
                "-U",
                "postgres",
            ])
            .args(["--auth=trust", "-E", "UTF8", "-D"])
            .arg(dir.join("data"))
            .output()
            .expect("runuser initdb");
        assert!(
            initdb.status.success(),
            "initdb failed (PostgreSQL 15 is installed by `scripts/services.sh up`): {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let server = PgServer { port, dir };
        server.run();
        server
    }

    /// `pg_ctl start`, waiting until it accepts connections (after crash recovery, too).
    fn run(&self) {
        let started = std::process::Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &format!("{PG_BIN}/pg_ctl"),
                "-w",
                "-D",
            ])
            .arg(self.dir.join("data"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.dir.display()
            ))
            .arg("-l")
            .arg(self.dir.join("log"))
            .arg("start")
            .output()
            .expect("pg_ctl");
        assert!(
            started.status.success(),
            "pg_ctl start: {:?}\n{}",
            started,
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// SIGKILL of the postmaster: a crash; the next `run` recovers from the WAL.
    fn crash(&self) {
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).unwrap_or_default();
        if let Some(pid) = pid.lines().next() {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid.trim()])
                .status();
        }
        // Its children exit when they see the postmaster gone.
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::process::Command::new("pkill")
            .args(["-9", "-f"])
            .arg(self.dir.join("data"))
            .status();
        let _ = std::fs::remove_file(self.dir.join("data/postmaster.pid"));
        let _ = std::fs::remove_file(self.dir.join(format!(".s.PGSQL.{}.lock", self.port)));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.crash();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Issue 13: fences keep growing across a crash and restart of the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_keep_growing_across_a_server_crash_and_restart() {
    let server = PgServer::start();
    let locker = support::connect("private PostgreSQL", &server.url()).await;
    let mut last = 0;
    for _ in 0..5 {
        let guard = locker.lock("k").ttl(10 * SECOND).await.unwrap();
        let fence = guard.fence().unwrap();
        assert!(fence > last);
        last = fence;
        guard.release().await.unwrap();
    }
    locker.close().await.unwrap();
    server.crash();
    server.run();
    let after = support::connect("restarted PostgreSQL", &server.url()).await;
    let guard = after
        .lock("k")
        .ttl(10 * SECOND)
        .wait(10 * SECOND)
        .await
        .unwrap();
    let fence = guard.fence().unwrap();
    assert!(fence > last, "fence {fence} after {last} across the crash");
    guard.release().await.unwrap();
    after.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_leaves_nothing_held_and_a_dropped_guard_frees_at_once() {
    let key = support::unique("cancel");
    let (a, b) = (locker().await, locker().await);
    // Cut the acquire at many points, some after the server granted it (the acquire takes
    // about a millisecond here).
    for micros in (0..6000).step_by(200) {
        let _ = tokio::time::timeout(Duration::from_micros(micros), a.lock(key.as_str())).await;
    }
    // Each granted-then-dropped acquire is released in the background: the key frees within
    // moments, not after the 30 s lease (generous bound).
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
    assert_nothing_left(&key).await;
}

/// Issue 13: a stalled server (every process of a private cluster SIGSTOPped) makes renewals
/// fail, and `lost()` fires by the lease deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_fires_lost_by_the_lease_deadline() {
    let server = PgServer::start();
    let locker = support::connect("private PostgreSQL", &server.url()).await;
    let guard = locker
        .lock("k")
        .ttl(2 * SECOND)
        .watchdog(true)
        .await
        .unwrap();
    let pid = std::fs::read_to_string(server.dir.join("data/postmaster.pid")).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_owned();
    let signal = |sig: &str| {
        let _ = std::process::Command::new("pkill")
            .args([sig, "-P", &pid])
            .status();
        let _ = std::process::Command::new("kill")
            .args([sig, &pid])
            .status();
    };
    signal("-STOP");
    let paused = Instant::now();
    let lost = tokio::time::timeout(15 * SECOND, guard.lost()).await;
    signal("-CONT");
    assert!(
        lost.is_ok(),
        "lost() did not fire while the server was paused"
    );
    // The lease is 2 s; allow for the renewal period and a loaded machine.
    assert!(paused.elapsed() < 5 * SECOND, "{:?}", paused.elapsed());
    assert!(!guard.is_held());
}
