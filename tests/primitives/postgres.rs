//! postgres: read-write locks, semaphores and elections against the server of
//! `support::postgres_url()` (`scripts/services.sh up`), plus the corners of the design (see
//! `dlock/src/backend/postgres/shared.rs`): a writer that gives up or is dropped stops holding
//! readers back at once, a writer that vanished while waiting holds them back for its waiting
//! lease only, and nothing but the last-write record is left behind; and a database whose
//! default isolation is REPEATABLE READ changes nothing.
//!
//! Bounds are generous: the suite runs on 2-core machines beside other test binaries.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use dlock::{Error, Locker};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::scenarios;
use crate::support::{self, postgres_url, unique};
use sqlx::AssertSqlSafe;

const SERVER: &str = "PostgreSQL";
/// The holds table of the default lock table.
const HOLDS: &str = "dlock_locks_holds";

async fn locker() -> Locker {
    support::connect(SERVER, &postgres_url()).await
}

/// `n` Lockers, each its own `connect` (its own pool and notice connection) and owner.
async fn lockers(n: usize) -> Vec<Locker> {
    let mut lockers = Vec::new();
    for i in 0..n {
        lockers.push(locker().await.with_owner(format!("postgres-{i}")));
    }
    lockers
}

/// A direct pool on the test database, to look at the holds table behind dlock's back.
async fn db() -> PgPool {
    let url = postgres_url();
    PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{SERVER} is not reachable at {url}: {e}"))
}

/// Rows of `key` in the holds table, by kind (0 last write, 1 read, 2 write, 3 waiting, 4 permit).
async fn kinds(db: &PgPool, key: &str) -> Vec<i16> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT kind FROM {HOLDS} WHERE lock_name = $1 ORDER BY kind"
    )))
    .bind(key)
    .fetch_all(db)
    .await
    .expect("read the holds table")
}

/// The test URL with its database replaced by `database`.
fn database_url(database: &str) -> String {
    let url = postgres_url();
    let (base, query) = url
        .split_once('?')
        .map_or((url.as_str(), None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority_end..]
        .find('/')
        .map_or(base.len(), |i| authority_end + i);
    let mut out = format!("{}/{database}", &base[..path]);
    if let Some(q) = query {
        out = format!("{out}?{q}");
    }
    out
}

/// The test URL through a proxy on `port` (0: straight to the server), and the server's port.
fn through(port: u16) -> (String, u16) {
    support::url_through(&postgres_url(), 5432, port, None)
}

common_scenarios!(lockers, "pg");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_cancels_the_work_when_leadership_is_lost() {
    scenarios::lead_cancels_the_work_when_its_connections_freeze(
        "PostgreSQL (through a proxy)",
        through(0).1,
        |port| through(port).0,
        &unique("pg-lead"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_permit_holder_frees_only_its_permit() {
    // The lease runs out on the server (2 s); the waiter re-checks at the holders' earliest
    // expiry. 15 s allows a loaded machine.
    scenarios::a_killed_permit_holder_frees_only_its_permit(
        &locker().await,
        &postgres_url(),
        &unique("pg-semkill"),
        Duration::from_secs(2),
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another() {
    // A candidate polls the row at most every 250 ms, bounded by the leader's lease.
    scenarios::killing_the_leader_elects_another(
        &lockers(4).await,
        &postgres_url(),
        &unique("pg-kill"),
        Duration::from_secs(2),
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_gives_up_or_is_dropped_stops_holding_readers_back() {
    let (a, b) = (locker().await, locker().await);
    let db = db().await;
    let key = unique("pg-giveup");
    let held = a.read_lock(key.as_str()).await.expect("read");

    // A writer that gives up at its deadline takes its waiting row with it.
    let gave_up = b
        .write_lock(key.as_str())
        .wait(Duration::from_millis(500))
        .await;
    assert!(matches!(gave_up, Err(Error::Busy { .. })), "{gave_up:?}");
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
    // Its row's lease outlasts the longest gap between two of its refreshes (a 1 s re-check plus
    // a decision, bounded by the 10 s statement bound, its 5 s lock wait included).
    let lease: f64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT extract(epoch FROM expire_at - clock_timestamp())::float8 FROM {HOLDS} \
         WHERE lock_name = $1 AND kind = 3"
    )))
    .bind(&key)
    .fetch_one(&db)
    .await
    .expect("read the waiting row's lease");
    assert!(
        (10.0..=12.0).contains(&lease),
        "waiting lease left: {lease} s"
    );
    let held_back = b.read_lock(key.as_str()).wait(Duration::ZERO).await;
    assert!(
        matches!(held_back, Err(Error::Busy { .. })),
        "{held_back:?}"
    );
    // ... until its acquire is dropped: the locker releases its token, which deletes the row.
    writer.abort();
    let dropped = Instant::now();
    let reader = b
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

    // A write leaves only its last-write record (its fence, for later readers).
    let w = a.write_lock(key.as_str()).await.expect("write");
    w.release().await.expect("release");
    assert_eq!(
        kinds(&db, &key).await,
        vec![0],
        "only the last-write record is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_waiting_writer_holds_readers_back_for_its_waiting_lease_only() {
    let db = db().await;
    let key = unique("pg-ghost");
    let ghost = async {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {HOLDS} (space, lock_name, secret_key, kind, expire_at) \
             VALUES (1, $1, 'ghost', 3, clock_timestamp() + interval '12 seconds')"
        )))
        .bind(&key)
        .execute(&db)
        .await
        .expect("insert a waiting writer's row");
    };
    // Woken at the row's expiry, not by a notice: none comes.
    scenarios::a_vanished_waiting_writer_holds_readers_back_for_its_waiting_lease_only(
        &locker().await,
        &key,
        ghost,
    )
    .await;
    assert!(
        kinds(&db, &key).await.is_empty(),
        "the expired row was deleted"
    );
}

#[tokio::test]
async fn a_missing_holds_table_is_named_with_the_statement_to_run() {
    // A lock table of its own, whose holds table an administrator dropped (or never created).
    let table = format!("dlock_missing_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}?table={table}", postgres_url());
    let locker = support::connect(SERVER, &url).await;
    let db = db().await;
    let drop_holds = format!("DROP TABLE {table}_holds");
    sqlx::query(sqlx::AssertSqlSafe(drop_holds))
        .execute(&db)
        .await
        .expect("drop the holds table");
    match locker.read_lock("k").wait(Duration::from_secs(2)).await {
        Err(e @ Error::Backend { .. }) => assert!(
            e.to_string()
                .contains(&format!("CREATE TABLE IF NOT EXISTS {table}_holds")),
            "{e}"
        ),
        other => panic!("expected a backend error naming the table, got {other:?}"),
    }
    // Mutexes go on working.
    let m = locker.lock("k").await.expect("mutex");
    m.release().await.expect("release");
    let cleanup = format!("DROP TABLE {table}; DROP SEQUENCE {table}_fence");
    sqlx::raw_sql(sqlx::AssertSqlSafe(cleanup))
        .execute(&db)
        .await
        .expect("drop the test table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_exclude_where_the_database_defaults_to_repeatable_read() {
    // An administrator may make REPEATABLE READ the default of a database (or role). A decision
    // is a second statement after the key's advisory lock and must see what committed while it
    // waited for that lock: dlock pins READ COMMITTED on its connections. Without that, two
    // writers are granted at once (or the decisions fail with serialization errors).
    let admin = db().await;
    let database = format!("dlock_rr_{}", uuid::Uuid::new_v4().simple());
    // Two queries: CREATE DATABASE runs outside any transaction block.
    for setup in [
        format!("CREATE DATABASE {database}"),
        format!("ALTER DATABASE {database} SET default_transaction_isolation = 'repeatable read'"),
    ] {
        sqlx::raw_sql(AssertSqlSafe(setup))
            .execute(&admin)
            .await
            .expect("create a database defaulting to REPEATABLE READ");
    }
    let url = database_url(&database);
    let run = tokio::spawn(async move {
        // The default took: a plain connection to it is REPEATABLE READ.
        let plain = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("connect to the new database");
        let level: String = sqlx::query_scalar("SHOW transaction_isolation")
            .fetch_one(&plain)
            .await
            .expect("SHOW transaction_isolation");
        assert_eq!(level, "repeatable read");
        plain.close().await;
        let mut lockers = Vec::new();
        for i in 0..4 {
            lockers.push(
                support::connect(SERVER, &url)
                    .await
                    .with_owner(format!("postgres-rr-{i}")),
            );
        }
        scenarios::readers_overlap_and_writers_exclude(&lockers, &unique("pg-rr")).await;
        for l in &lockers {
            let _ = l.close().await;
        }
    })
    .await;
    // FORCE: the Lockers of a failed run still have connections open.
    let cleanup = format!("DROP DATABASE {database} WITH (FORCE)");
    sqlx::raw_sql(AssertSqlSafe(cleanup))
        .execute(&admin)
        .await
        .expect("drop the test database");
    if let Err(e) = run {
        std::panic::resume_unwind(e.into_panic());
    }
}
