//! MySQL/MariaDB: read-write locks, semaphores and elections against the server of
//! `support::mysql_url()` (`scripts/services.sh up`), plus the corners of the design (see
//! `dlock/src/backend/mysql/shared.rs`): a writer that gives up or is dropped stops holding
//! readers back at once, a writer that vanished while waiting holds them back for its waiting
//! lease only, fences strictly increase, renewals keep every kind, many local waiters behind a
//! stalled gate leave the holder's renewals a connection, a missing holds table is named with the
//! statement to run, a wrongly keyed one is refused at connect, and a user granted only the four
//! statements on both tables needs no `CREATE`.
//!
//! Bounds are generous: the suite runs on 2-core machines beside other test binaries.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dlock::{Error, Locker};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::AssertSqlSafe;

use crate::scenarios;
use crate::support::{self, connect, mysql_url, unique};

const SERVER: &str = "MariaDB/MySQL";
/// The holds table of the default lock table.
const HOLDS: &str = "distributed_lock_holds";

async fn locker() -> Locker {
    connect(SERVER, &mysql_url()).await
}

/// `n` Lockers, each its own `connect` (its own pool) and owner.
async fn lockers(n: usize) -> Vec<Locker> {
    let mut lockers = Vec::new();
    for i in 0..n {
        lockers.push(locker().await.with_owner(format!("mysql-{i}")));
    }
    lockers
}

/// A direct pool on the test database, to look at the holds table behind dlock's back.
async fn db() -> MySqlPool {
    let url = mysql_url();
    MySqlPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{SERVER} is not reachable at {url}: {e}"))
}

/// Rows of `key` in the holds table, by kind (0 gate, 1 read, 2 write, 3 waiting, 4 permit).
async fn kinds(db: &MySqlPool, key: &str) -> Vec<i8> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT kind FROM {HOLDS} WHERE lock_name = ? ORDER BY kind"
    )))
    .bind(key)
    .fetch_all(db)
    .await
    .expect("read the holds table")
}

/// The test URL through a proxy on `port` (0: straight to the server), as `user` when given.
fn through(port: u16, user: Option<&str>) -> (String, u16) {
    support::url_through(&mysql_url(), 3306, port, user)
}

common_scenarios!(lockers, "mysql");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_cancels_the_work_when_leadership_is_lost() {
    scenarios::lead_cancels_the_work_when_its_connections_freeze(
        "MariaDB/MySQL (through a proxy)",
        through(0, None).1,
        |port| through(port, None).0,
        &unique("my-lead"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_permit_holder_frees_only_its_permit() {
    // The lease runs out on the server (2 s); the waiter re-checks at the holders' earliest
    // expiry (and at most every 250 ms). 15 s allows a loaded machine.
    scenarios::a_killed_permit_holder_frees_only_its_permit(
        &locker().await,
        &mysql_url(),
        &unique("my-semkill"),
        Duration::from_secs(2),
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaces_a_killed_leader() {
    let lockers = lockers(4).await;
    let lease = Duration::from_secs(2);
    // The lease runs out on the server; waiters poll the row (with GET_LOCK turns) at most every
    // 2 s, so the bound allows that plus a loaded machine.
    scenarios::killing_the_leader_elects_another(
        &lockers,
        &mysql_url(),
        &unique("mysql-kill"),
        lease,
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_gives_up_or_is_dropped_stops_holding_readers_back() {
    let (a, b, c) = (locker().await, locker().await, locker().await);
    let db = db().await;
    let key = unique("my-giveup");
    let held = a.read_lock(key.as_str()).await.expect("read");

    // A writer that gives up at its deadline takes its waiting row with it.
    let gave_up = b
        .write_lock(key.as_str())
        .wait(Duration::from_millis(500))
        .await;
    assert!(matches!(gave_up, Err(Error::Busy { .. })), "{gave_up:?}");
    assert_eq!(kinds(&db, &key).await, vec![0, 1], "gate and the reader");
    let reader = b.read_lock(key.as_str()).wait(Duration::ZERO).await;
    let reader = reader.expect("no writer waits: a new reader goes at once");
    reader.release().await.expect("release");

    // A waiting writer holds new readers back (writer preference) ...
    let writer = tokio::spawn(
        b.write_lock(key.as_str())
            .wait(Duration::from_secs(60))
            .into_future(),
    );
    let until = Instant::now() + Duration::from_secs(10);
    while !kinds(&db, &key).await.contains(&3) {
        assert!(
            Instant::now() < until,
            "the writer never registered as waiting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held_back = c.read_lock(key.as_str()).wait(Duration::ZERO).await;
    assert!(
        matches!(held_back, Err(Error::Busy { .. })),
        "{held_back:?}"
    );
    // ... until its acquire is dropped: the locker releases its token, which deletes the row.
    writer.abort();
    let dropped = Instant::now();
    let reader = c
        .read_lock(key.as_str())
        .wait(Duration::from_secs(10))
        .await
        .expect("readers go once the writer is gone");
    // Well under the 12 s waiting lease: the row went with the release, not by expiring.
    let took = dropped.elapsed();
    eprintln!("a reader got in {took:?} after the waiting writer was dropped");
    assert!(took < Duration::from_secs(2), "{took:?}");
    reader.release().await.expect("release");
    held.release().await.expect("release");

    // A write leaves only the gate (with its fence, for later readers).
    let w = a.write_lock(key.as_str()).await.expect("write");
    w.release().await.expect("release");
    assert_eq!(kinds(&db, &key).await, vec![0], "only the gate is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_waiting_writer_holds_readers_back_for_its_waiting_lease_only() {
    let db = db().await;
    let key = unique("my-ghost");
    let ghost = async {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {HOLDS} (space, lock_name, secret_key, kind, expire_at) \
             VALUES (1, ?, 'ghost', 3, UTC_TIMESTAMP(6) + INTERVAL 12 SECOND)"
        )))
        .bind(&key)
        .execute(&db)
        .await
        .expect("insert a waiting writer's row");
    };
    scenarios::a_vanished_waiting_writer_holds_readers_back_for_its_waiting_lease_only(
        &locker().await,
        &key,
        ghost,
    )
    .await;
    assert_eq!(
        kinds(&db, &key).await,
        vec![0],
        "the expired row was deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_local_waiters_at_once() {
    // Same Locker: a release wakes its waiters of the key, which decide again at once instead of
    // at their next poll. A writer waits behind a reader long enough for its pauses to reach
    // their cap (jittered 125-250 ms); then the reader releases. Polling alone would let the
    // writer in after the rest of its current pause, spread over 0-250 ms (under 30 ms about one
    // time in six); a wake-up lets it in after one decision's commit (a few ms). Seven rounds,
    // and the median must be under 30 ms: one slow commit on a loaded machine cannot fail the
    // test, and polling alone passes it about one time in seventy.
    let locker = locker().await;
    let key = unique("my-wake");
    let mut took = Vec::new();
    for _ in 0..7 {
        let r = locker.read_lock(key.as_str()).await.expect("read");
        let writer = tokio::spawn(
            locker
                .write_lock(key.as_str())
                .wait(Duration::from_secs(30))
                .into_future(),
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
        r.release().await.expect("release");
        let released = Instant::now();
        let w = writer.await.expect("task").expect("write");
        took.push(released.elapsed());
        w.release().await.expect("release");
    }
    took.sort();
    eprintln!("local writers got the key after the reader's release in {took:?}");
    assert!(took[3] < Duration::from_millis(30), "{took:?}");
}

#[tokio::test]
async fn a_missing_holds_table_is_named_with_the_statement_to_run() {
    // A lock table of its own, whose holds table an administrator dropped (or never created).
    let table = format!("dlock_missing_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}?table={table}", mysql_url());
    let locker = connect(SERVER, &url).await;
    let db = db().await;
    sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {table}_holds")))
        .execute(&db)
        .await
        .expect("drop the holds table");
    let outcome = locker.read_lock("k").wait(Duration::from_secs(2)).await;
    // Mutexes go on working.
    let m = locker.lock("k").await.expect("mutex");
    m.release().await.expect("release");
    sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&db)
        .await
        .expect("drop the test table");
    match outcome {
        Err(e @ Error::Backend { .. }) => assert!(
            e.to_string()
                .contains(&format!("CREATE TABLE IF NOT EXISTS `{table}_holds`")),
            "{e}"
        ),
        other => panic!("expected a backend error naming the table, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_needs_no_create_for_the_holds_table() {
    // An administrator made both tables (dlock connected once as root) and granted a user the
    // four statements on each, nothing else: that user connects (no CREATE sent) and holds
    // reads, writes and permits. The accounts are for 127.0.0.1 and localhost (MariaDB matches
    // the more specific host first).
    let table = format!("dlock_lp_{}", uuid::Uuid::new_v4().simple());
    let user = format!("dl{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    drop(connect(SERVER, &format!("{}?table={table}", mysql_url())).await);
    let db = db().await;
    let mut setup = String::new();
    for host in ["127.0.0.1", "localhost", "%"] {
        setup.push_str(&format!(
            "CREATE USER '{user}'@'{host}' IDENTIFIED BY 'pw'; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON test.{table} TO '{user}'@'{host}'; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON test.{table}_holds TO '{user}'@'{host}'; "
        ));
    }
    sqlx::raw_sql(AssertSqlSafe(setup))
        .execute(&db)
        .await
        .expect("create the user");
    let (base, _) = through(0, Some(&format!("{user}:pw")));
    let url = format!("{base}?table={table}");
    let outcome: dlock::Result<()> = async {
        let locker = connect("MariaDB/MySQL (least privilege)", &url).await;
        let w = locker.write_lock("k").await?;
        let fence = w.fence();
        w.release().await?;
        let r = locker.read_lock("k").await?;
        assert_eq!(r.fence(), fence, "the reader sees the write's fence");
        r.release().await?;
        let p = locker.semaphore("k", 2).await?;
        p.release().await?;
        Ok(())
    }
    .await;
    let mut cleanup = format!("DROP TABLE {table}, {table}_holds; ");
    for host in ["127.0.0.1", "localhost", "%"] {
        cleanup.push_str(&format!("DROP USER '{user}'@'{host}'; "));
    }
    sqlx::raw_sql(AssertSqlSafe(cleanup))
        .execute(&db)
        .await
        .expect("clean up");
    outcome.expect("read-write locks and semaphores with the four statements only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_local_waiters_do_not_starve_the_holders_renewals() {
    // 40 writers of one Locker wait on a key its watchdog writer holds with a 3 s lease (renewed
    // every second through the same pool of 16 connections), while the key's gate row is held
    // for 4 s at a time by another session, as a stalled decision elsewhere holds it: every
    // decision of the key queues behind it. The Locker's decisions of a key take turns, so they
    // hold one connection, not all of them: the renewals (which need no gate) get through and
    // the holder keeps the key for the 10 s it holds it; then every waiter gets its turn.
    let locker = locker().await;
    let db = db().await;
    let key = unique("my-crowd");
    let held = locker
        .write_lock(key.as_str())
        .ttl(Duration::from_secs(3))
        .watchdog(true)
        .await
        .expect("write");
    let inside = Arc::new(AtomicUsize::new(0));
    let mut waiters = Vec::new();
    for _ in 0..40 {
        let (request, inside) = (
            locker
                .write_lock(key.as_str())
                .wait(Duration::from_secs(120)),
            inside.clone(),
        );
        waiters.push(tokio::spawn(async move {
            let g = request.await?;
            inside.fetch_add(1, Ordering::SeqCst);
            g.release().await
        }));
    }
    let started = Instant::now();
    let stall = {
        let (db, key) = (db.clone(), key.clone());
        tokio::spawn(async move {
            while started.elapsed() < Duration::from_secs(9) {
                let mut tx = db.begin().await.expect("begin");
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT kind FROM {HOLDS} \
                     WHERE space = 1 AND lock_name = ? AND secret_key = '' FOR UPDATE"
                )))
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await
                .expect("lock the gate row");
                // Under the server's 5 s lock-wait timeout: the queued decisions wait, not fail.
                tokio::time::sleep(Duration::from_secs(4)).await;
                tx.commit().await.expect("commit");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    while started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            held.is_held(),
            "the hold was lost after {:?}",
            started.elapsed()
        );
        assert_eq!(inside.load(Ordering::SeqCst), 0, "a waiter got in");
    }
    stall.await.expect("stalling task");
    held.release().await.expect("release");
    let released = Instant::now();
    for w in waiters {
        // 40 writes one after another, each a decision and a release: seconds at most; 60 s
        // allows a loaded machine.
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("every waiter gets through")
            .expect("task")
            .expect("write");
    }
    eprintln!("40 waiting writers got through in {:?}", released.elapsed());
}

#[tokio::test]
async fn a_wrongly_keyed_holds_table_is_refused_at_connect() {
    // An administrator made the holds table keyed by `id` alone (and in a case-insensitive
    // collation): a decision would not read and lock the key's gate row first. Connect says so.
    let table = format!("dlock_badkey_{}", uuid::Uuid::new_v4().simple());
    let db = db().await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE {table}_holds (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
           space TINYINT NOT NULL, lock_name VARCHAR(255) CHARACTER SET ascii NOT NULL, \
           secret_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL, \
           owner VARCHAR(128) NULL, lock_key MEDIUMTEXT NULL, kind TINYINT NOT NULL, \
           permits INT UNSIGNED NULL, fence BIGINT NULL, expire_at DATETIME(6) NOT NULL) \
         ENGINE=InnoDB"
    )))
    .execute(&db)
    .await
    .expect("create the wrongly keyed table");
    let outcome = Locker::connect(&format!("{}?table={table}", mysql_url())).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {table}, {table}_holds"
    )))
    .execute(&db)
    .await
    .expect("drop the test tables");
    match outcome {
        Err(e @ Error::Backend { .. }) => {
            let message = e.to_string();
            for part in [
                format!("`{table}_holds`"),
                "its primary key is (id)".to_owned(),
                "`secret_key` has the collation ascii_general_ci".to_owned(),
                "PRIMARY KEY (space, lock_name, secret_key)".to_owned(),
            ] {
                assert!(message.contains(&part), "{part:?} missing from: {message}");
            }
        }
        Err(other) => panic!("expected a backend error naming the key, got {other:?}"),
        Ok(_) => panic!("connect accepted a holds table keyed by id"),
    }
}
