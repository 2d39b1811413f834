//! Read-write locks and semaphores: a table of holds, every grant decided under a per-key
//! transaction-scoped advisory lock, waiting by the same `LISTEN`/`NOTIFY` as the mutex.
//!
//! # The table
//! Created at [`connect`](super::PostgresBackend::connect) beside the lock table (the name is
//! the lock table's with `_holds`; see [`HOLDS_COLUMNS`]):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS dlock_locks_holds (
//!   space      SMALLINT NOT NULL,          -- 1 read-write lock, 2 semaphore
//!   lock_name  TEXT COLLATE "C" NOT NULL,  -- the mapped key, as in the lock table
//!   secret_key TEXT NOT NULL,              -- the hold's token id; '' for the last-write record
//!   owner      TEXT,                       -- who holds it
//!   lock_key   BYTEA,                      -- the key, when lock_name is its digest
//!   kind       SMALLINT NOT NULL,          -- 0 last write, 1 read, 2 write, 3 waiting writer, 4 permit
//!   permits    BIGINT,                     -- a permit's semaphore size
//!   fence      BIGINT,                     -- write and permit holds; the last write's for kind 0
//!   expire_at  TIMESTAMPTZ NOT NULL,       -- lease end, server time ('infinity' for kind 0)
//!   PRIMARY KEY (space, lock_name, secret_key));
//! ```
//!
//! One row per hold (every reader and every permit has its own token and lease), one row per
//! waiting writer, and one last-write row per read-write key that was ever written (the fence its
//! readers are given; it stays, one small row per key, so a reader long after the write still
//! gets that write's fence). Fences come from the lock table's sequence.
//!
//! # Grant rule, in one round trip
//! An acquire sends one simple-protocol query of two statements, run by the server as one
//! implicit transaction: `SELECT pg_advisory_xact_lock(<class>, <key hash>)`, then the decision.
//! The second statement takes its snapshot after the lock is granted, so it sees every decision,
//! grant and renewal of the key committed before (a single statement could not: its snapshot
//! would predate its own wait for the lock). That needs READ COMMITTED (a snapshot per
//! statement), which every dlock connection sets whatever the role's or database's default:
//! under REPEATABLE READ the decision would keep the snapshot of before the wait. The decision
//! deletes the key's expired rows, and among the other live rows:
//! - **read** is granted when no write hold and no waiting writer is there (writer preference);
//! - **write** when no read and no write hold is there; otherwise the writer's request leaves or
//!   refreshes a *waiting writer* row (a lease of [`WAITING_LEASE`], refreshed by each re-check,
//!   longer than the longest gap between two re-checks) that holds new readers back; the grant
//!   turns that row into the write hold;
//! - **permit(n)** when fewer than n permit holds are there; a live permit naming another count
//!   is [`permit_mismatch`](crate::backend::permit_mismatch), and nothing is written.
//!
//! A granted write or permit draws `nextval` of the fence sequence under the key's advisory
//! lock, so fences strictly increase per key (and survive restarts); a write also stores its
//! fence in the key's last-write row, which a granted reader returns. Renewals (`extend`) take
//! the same advisory lock, so a renewal and a decision that found the lease expired cannot
//! cross. Releases need no turn: a token-checked `DELETE` only ever frees.
//!
//! Values are written into the query as integers and hex (`decode('..', 'hex')`): the simple
//! protocol takes no parameters, and hex cannot break out of its literal.
//!
//! # Waiting
//! A release (and a waiting writer giving up) deletes its row and sends `pg_notify` on the lock
//! table's channel, with a payload that no mutex name can be (U+0001 twice, the space, the
//! name); the notice wakes *every* local waiter of that key (a release may admit several readers
//! or permit holders), and each runs the decision again. A waiter also re-checks at the earliest
//! expiry of the rows that block it (an expired holder sends no notice) and at most
//! [`MAX_RECHECK`] apart (a lost notice, and the waiting writer's refresh).
//!
//! # Cancellation
//! The acquire query runs in a task that keeps its connection until the server answers (and does
//! not run it when the acquire was dropped before); when the acquire was dropped meanwhile, or
//! the task stopped waiting for the answer while the query may still run on the server, that
//! task deletes what the query left (a hold, or a waiting writer's row) on the same connection,
//! so the `DELETE` runs after the query. A writer that gives up at its deadline deletes its
//! waiting row (and notifies) before returning; a crashed waiting writer stops holding readers
//! back after [`WAITING_LEASE`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Row};

use super::{
    backend_err, bounded, lock_class, lock_name, micros, pooled, quote, Holder, PostgresBackend,
    WaitPlace, INSERT_OUTCOME_WAIT, NAME, STATEMENT_TIMEOUT,
};
use crate::backend::digest::sha256;
use crate::backend::{jitter, permit_mismatch, remaining, token_parts, within_wait, Grant, Kind};
use crate::{Error, Result};

/// The columns of the holds table, in the DDL.
pub(super) const HOLDS_COLUMNS: &str = "space SMALLINT NOT NULL, \
     lock_name TEXT COLLATE \"C\" NOT NULL, secret_key TEXT NOT NULL, owner TEXT, lock_key BYTEA, \
     kind SMALLINT NOT NULL, permits BIGINT, fence BIGINT, expire_at TIMESTAMPTZ NOT NULL, \
     PRIMARY KEY (space, lock_name, secret_key)";

/// The lease of a waiting writer's row: how long a writer that vanished without a word (crash,
/// partition) still holds new readers back. Each re-check refreshes it; two refreshes are at
/// most [`MAX_RECHECK`] plus one decision apart, and a decision the writer still waits for takes
/// less than [`STATEMENT_TIMEOUT`] (its wait for the key's advisory lock, at most the session's
/// 5 s `lock_timeout`, included): longer than both, so a live writer's row never lapses.
pub(super) const WAITING_LEASE: Duration = Duration::from_secs(12);
/// The longest a waiter goes without re-checking (a lost notice; a waiting writer's refresh,
/// within [`WAITING_LEASE`]).
pub(super) const MAX_RECHECK: Duration = Duration::from_secs(1);
/// Starts every notice payload of the holds table: no mutex `lock_name` starts so (a mapped
/// name has a printable character after its U+0001).
const PAYLOAD_PREFIX: &str = "\u{1}\u{1}";

/// `kind` values of the holds table.
const LAST_WRITE: i16 = 0;
const READ: i16 = 1;
const WRITE: i16 = 2;
const WAITING: i16 = 3;
const PERMIT: i16 = 4;

/// The holds table of lock table `table`.
pub(super) fn holds_table(table: &str) -> String {
    format!("{table}_holds")
}

/// Whether a notice payload is a holds table's (it wakes every local waiter of the key).
pub(super) fn wakes_all(payload: &str) -> bool {
    payload.starts_with(PAYLOAD_PREFIX)
}

/// A kind's space, its row kind, and the row kinds its release deletes.
fn codes(kind: Kind) -> (i16, i16, (i16, i16)) {
    match kind {
        Kind::Read => (1, READ, (READ, READ)),
        Kind::Write => (1, WRITE, (WRITE, WAITING)),
        // Exclusive never comes here (dispatched to the lock table).
        Kind::Exclusive | Kind::Permit(_) => (2, PERMIT, (PERMIT, PERMIT)),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `s` as a SQL text expression made of hex digits only.
fn text(s: &str) -> String {
    format!(
        "convert_from(decode('{}', 'hex'), 'UTF8')",
        hex(s.as_bytes())
    )
}

/// One key of one space: names, the advisory lock's two keys, the notice payload.
struct Target {
    table: String,
    seq: String,
    space: i16,
    name: String,
    /// `pg_advisory_xact_lock(class, hash)` of the key.
    turn: (i32, i32),
    payload: String,
}

impl Target {
    fn new(backend_table: &str, kind: Kind, key: &str) -> Self {
        let (space, ..) = codes(kind);
        let name = lock_name(key).into_owned();
        let table = holds_table(backend_table);
        let digest = sha256(format!("{space}:{name}").as_bytes());
        let hash = i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        Target {
            seq: quote(&format!("{backend_table}_fence")),
            turn: (lock_class(&table), hash),
            payload: format!("{PAYLOAD_PREFIX}{space}{name}"),
            table: quote(&table),
            space,
            name,
        }
    }

    fn lock_statement(&self) -> String {
        format!(
            "SELECT pg_advisory_xact_lock({}, {})",
            self.turn.0, self.turn.1
        )
    }

    /// The two statements of one decision (see the module docs); `wait`: a writer not granted
    /// leaves (or refreshes) its waiting row.
    fn acquire_sql(&self, kind: Kind, holder: &Holder, ttl_us: i64, wait: bool) -> String {
        let (h, s, seq) = (&self.table, self.space, &self.seq);
        let (_, k, _) = codes(kind);
        let n = text(&self.name);
        let id = text(&holder.id);
        let owner = holder.owner.as_deref().map_or("NULL".to_owned(), text);
        let key = holder.key.as_deref().map_or("NULL".to_owned(), |b| {
            format!("decode('{}', 'hex')", hex(b))
        });
        let (blocks, ok, mismatch, permits) = match kind {
            Kind::Read => (
                "kind IN (2, 3)",
                "NOT EXISTS (SELECT 1 FROM blocking)".to_owned(),
                "NULL::bigint".to_owned(),
                "NULL".to_owned(),
            ),
            Kind::Write => (
                "kind IN (1, 2)",
                "NOT EXISTS (SELECT 1 FROM blocking)".to_owned(),
                "NULL::bigint".to_owned(),
                "NULL".to_owned(),
            ),
            Kind::Exclusive | Kind::Permit(_) => {
                let p = match kind {
                    Kind::Permit(p) => p,
                    _ => 1,
                };
                (
                    "kind = 4",
                    format!("(SELECT count(*) FROM blocking) < {p}"),
                    format!("(SELECT max(permits) FROM others WHERE kind = 4 AND permits <> {p})"),
                    p.to_string(),
                )
            }
        };
        let register = kind == Kind::Write && wait;
        let waiting_us = micros(WAITING_LEASE);
        let fence = if kind == Kind::Read {
            format!(
                "(SELECT fence FROM {h} WHERE space = {s} AND lock_name = {n} \
                 AND secret_key = '' AND kind = {LAST_WRITE})"
            )
        } else {
            format!("(SELECT fence FROM hold WHERE kind = {k})")
        };
        format!(
            "{lock};\n\
             WITH now AS MATERIALIZED (SELECT clock_timestamp() AS t),\n\
             gone AS (DELETE FROM {h} g USING now WHERE g.space = {s} AND g.lock_name = {n} \
               AND g.kind <> {LAST_WRITE} AND g.secret_key <> {id} AND g.expire_at < now.t),\n\
             others AS MATERIALIZED (SELECT o.kind, o.permits, o.expire_at FROM {h} o, now \
               WHERE o.space = {s} AND o.lock_name = {n} AND o.kind <> {LAST_WRITE} \
               AND o.secret_key <> {id} AND o.expire_at >= now.t),\n\
             blocking AS MATERIALIZED (SELECT expire_at FROM others WHERE {blocks}),\n\
             verdict AS MATERIALIZED (SELECT {ok} AS ok, {mismatch} AS mismatch, \
               (SELECT min(expire_at) FROM blocking) AS until),\n\
             hold AS (INSERT INTO {h} AS h \
               (space, lock_name, secret_key, owner, lock_key, kind, permits, fence, expire_at) \
               SELECT {s}, {n}, {id}, {owner}, {key}, CASE WHEN v.ok THEN {k} ELSE {WAITING} END, \
                 {permits}, CASE WHEN v.ok AND {k} <> {READ} THEN nextval('{seq}') END, \
                 now.t + (CASE WHEN v.ok THEN {ttl_us} ELSE {waiting_us} END) \
                   * interval '1 microsecond' \
               FROM verdict v, now WHERE v.mismatch IS NULL AND (v.ok OR {register}) \
               ON CONFLICT (space, lock_name, secret_key) DO UPDATE \
               SET owner = EXCLUDED.owner, lock_key = EXCLUDED.lock_key, kind = EXCLUDED.kind, \
                 permits = EXCLUDED.permits, fence = EXCLUDED.fence, \
                 expire_at = EXCLUDED.expire_at \
               RETURNING h.kind, h.fence),\n\
             mark AS (INSERT INTO {h} AS m (space, lock_name, secret_key, kind, fence, expire_at) \
               SELECT {s}, {n}, '', {LAST_WRITE}, hold.fence, 'infinity' FROM hold \
               WHERE hold.kind = {WRITE} \
               ON CONFLICT (space, lock_name, secret_key) DO UPDATE SET fence = EXCLUDED.fence)\n\
             SELECT (SELECT count(*) FROM hold WHERE kind = {k})::bigint AS granted, \
               {fence}::bigint AS fence, (SELECT mismatch FROM verdict)::bigint AS mismatch, \
               (extract(epoch FROM ((SELECT until FROM verdict) - (SELECT t FROM now))) \
                 * 1000000)::bigint AS left_us",
            lock = self.lock_statement(),
        )
    }

    fn extend_sql(&self, kind: Kind, id: &str, ttl_us: i64) -> String {
        let (h, s) = (&self.table, self.space);
        let (_, k, _) = codes(kind);
        format!(
            "{lock};\n\
             WITH u AS (UPDATE {h} SET expire_at = clock_timestamp() + {ttl_us} \
               * interval '1 microsecond' WHERE space = {s} AND lock_name = {n} \
               AND secret_key = {id} AND kind = {k} AND expire_at >= clock_timestamp() \
               RETURNING 1) \
             SELECT count(*)::bigint AS extended FROM u",
            lock = self.lock_statement(),
            n = text(&self.name),
            id = text(id),
        )
    }

    fn release_sql(&self, channel: &str) -> String {
        format!(
            "WITH d AS (DELETE FROM {h} WHERE space = $1 AND lock_name = $2 AND secret_key = $3 \
               AND kind BETWEEN $4 AND $5 RETURNING kind, expire_at) \
             SELECT d.kind = $4 AND d.expire_at >= clock_timestamp(), pg_notify('{channel}', $6) \
             FROM d",
            h = self.table,
        )
    }
}

/// What one decision found.
enum Look {
    Granted(Option<u64>),
    /// Not granted; how long until the first blocking row expires (none: blocked by nothing
    /// live any more).
    Busy(Option<Duration>),
}

/// A decision's row: granted (0/1), fence, a live permit's other count, µs until the first
/// blocking row expires.
fn read_look(kind: Kind, rows: &[sqlx::postgres::PgRow]) -> Result<Look> {
    let row = rows
        .iter()
        .rev()
        .find(|r| r.try_column("granted").is_ok())
        .ok_or_else(|| backend_err("the acquire query returned no decision"))?;
    let get = |name: &str| row.try_get::<Option<i64>, _>(name).map_err(backend_err);
    if let (Some(held), Kind::Permit(asked)) = (get("mismatch")?, kind) {
        return Err(permit_mismatch(asked, u32::try_from(held).ok()));
    }
    if get("granted")?.unwrap_or(0) > 0 {
        return Ok(Look::Granted(
            get("fence")?.and_then(|f| u64::try_from(f).ok()),
        ));
    }
    let left = get("left_us")?.map(|us| Duration::from_micros(u64::try_from(us).unwrap_or(0)));
    Ok(Look::Busy(left))
}

/// Explains what an administrator must do when the holds table is missing or not granted.
fn explain(e: sqlx::Error, table: &str) -> Error {
    let code = match &e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    };
    let holds = holds_table(table);
    match code.as_deref() {
        Some("42P01") => backend_err(format!(
            "read-write locks and semaphores need the table {holds}, which is missing (dlock \
             creates it at connect when its user may); have the database's owner run: CREATE \
             TABLE IF NOT EXISTS {holds} ({HOLDS_COLUMNS}); ({e})"
        )),
        Some("42501") => backend_err(format!(
            "read-write locks and semaphores need, for dlock's user: GRANT SELECT, INSERT, \
             UPDATE, DELETE ON {holds} TO <user>; GRANT USAGE ON SEQUENCE {table}_fence TO \
             <user>; ({e})"
        )),
        _ => backend_err(e),
    }
}

impl PostgresBackend {
    /// One decision in a task that keeps its connection until answered; skipped when the caller
    /// is gone before it runs. When the caller is gone by the answer, or no answer came within
    /// [`INSERT_OUTCOME_WAIT`] (the query may still commit), what the decision wrote is deleted
    /// on that connection (after the query, which the connection finishes first).
    async fn decide(
        &self,
        target: &Arc<Target>,
        kind: Kind,
        sql: String,
        id: &str,
    ) -> Result<Look> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (pool, table, channel) = (
            self.pool.clone(),
            self.table.clone(),
            self.sql.channel.clone(),
        );
        let (target, id) = (target.clone(), id.to_owned());
        tokio::spawn(async move {
            let mut conn = match pooled(&pool).await {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            if tx.is_closed() {
                return; // the acquire is gone: nothing to decide for
            }
            let run = sqlx::raw_sql(AssertSqlSafe(sql)).fetch_all(&mut *conn);
            let answer = tokio::time::timeout(INSERT_OUTCOME_WAIT, run).await;
            let unanswered = answer.is_err();
            let outcome = match answer {
                Ok(Ok(rows)) => read_look(kind, &rows),
                // The advisory lock's wait timed out on the server (55P03), or a deadlock was
                // broken (40P01): rolled back, so the key counts as held and is looked at again.
                Ok(Err(sqlx::Error::Database(e)))
                    if matches!(e.code().as_deref(), Some("55P03" | "40P01")) =>
                {
                    Ok(Look::Busy(None))
                }
                Ok(Err(e)) => Err(explain(e, &table)),
                Err(_) => Err(backend_err("the server did not answer the acquire")),
            };
            // A writer's refused decision may have left its waiting row: undone as well.
            let wrote = matches!(outcome, Ok(Look::Granted(_))) || kind == Kind::Write;
            // Unanswered: the query may yet commit a grant that nobody holds; the caller's own
            // release would run on another connection, possibly before that commit.
            if (tx.send(outcome).is_err() && wrote) || unanswered {
                let (space, _, (lo, hi)) = codes(kind);
                let undo = sqlx::query(AssertSqlSafe(target.release_sql(&channel)))
                    .bind(space)
                    .bind(&target.name)
                    .bind(&id)
                    .bind(lo)
                    .bind(hi)
                    .bind(&target.payload)
                    .execute(&mut *conn);
                let _ = tokio::time::timeout(STATEMENT_TIMEOUT, undo).await;
            }
        });
        match tokio::time::timeout(STATEMENT_TIMEOUT, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(backend_err("the acquire task ended without an answer")),
            Err(_) => Err(backend_err(format!(
                "the server did not answer within {STATEMENT_TIMEOUT:?}"
            ))),
        }
    }

    /// Acquires a read, write or permit hold (see the module docs).
    pub(super) async fn acquire_shared(
        &self,
        key: &str,
        kind: Kind,
        token: &str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> Result<Option<Grant>> {
        let target = Arc::new(Target::new(&self.table, kind, key));
        let holder = Holder::new(key, &target.name, token);
        let ttl_us = micros(ttl);
        let mut place: Option<WaitPlace<'_>> = None;
        // Whether a look may have left this writer's waiting row.
        let mut registered = false;
        loop {
            let notify = place.as_ref().and_then(|p| p.notify.clone());
            let notified = notify.as_ref().map(|n| n.notified());
            tokio::pin!(notified);
            if let Some(n) = notified.as_mut().as_pin_mut() {
                n.enable();
            }
            let wait = remaining(deadline).is_none_or(|l| !l.is_zero());
            registered |= wait && kind == Kind::Write;
            let sql = target.acquire_sql(kind, &holder, ttl_us, wait);
            let sent_at = Instant::now();
            let look = within_wait(NAME, deadline, self.decide(&target, kind, sql, &holder.id));
            let left = match look.await? {
                Look::Granted(fence) => return Ok(Some(Grant::new(fence, sent_at))),
                Look::Busy(left) => left,
            };
            let mut sleep = jitter(MAX_RECHECK / 2, MAX_RECHECK);
            if let Some(l) = left {
                // Wake no later than the first blocker's expiry (+1 ms: `expire_at < now`).
                sleep = sleep.min(l + Duration::from_millis(1));
            }
            match remaining(deadline) {
                Some(l) if l.is_zero() => {
                    if registered {
                        // Readers held back by this writer's waiting row may go now.
                        self.release_shared(key, kind, token).await?;
                    }
                    return Ok(None);
                }
                Some(l) => sleep = sleep.min(l),
                None => {}
            }
            let Some(notified) = notified.as_mut().as_pin_mut() else {
                // Queue locally, then look again at once: a release between the first look and
                // joining would otherwise be missed.
                let joined = self.waiters.join(&target.payload);
                place = Some(WaitPlace {
                    waiters: &self.waiters,
                    name: &target.payload,
                    notify: Some(joined),
                });
                continue;
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Deletes `token`'s row of `kind` (a waiting writer's too) and wakes the key's waiters;
    /// `true` when it was a live hold.
    pub(super) async fn release_shared(&self, key: &str, kind: Kind, token: &str) -> Result<bool> {
        let target = Target::new(&self.table, kind, key);
        let (space, _, (lo, hi)) = codes(kind);
        let held: Option<bool> = bounded(
            sqlx::query_scalar(AssertSqlSafe(target.release_sql(&self.sql.channel)))
                .bind(space)
                .bind(&target.name)
                .bind(token_parts(token).0)
                .bind(lo)
                .bind(hi)
                .bind(&target.payload)
                .fetch_optional(&self.pool),
        )
        .await?;
        Ok(held == Some(true))
    }

    /// Moves the lease of `token`'s live hold of `kind` to `ttl` from now, under the key's
    /// advisory lock (see the module docs).
    pub(super) async fn extend_shared(
        &self,
        key: &str,
        kind: Kind,
        token: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let target = Target::new(&self.table, kind, key);
        let sql = target.extend_sql(kind, token_parts(token).0, micros(ttl));
        let rows = match tokio::time::timeout(
            STATEMENT_TIMEOUT,
            sqlx::raw_sql(AssertSqlSafe(sql)).fetch_all(&self.pool),
        )
        .await
        {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return Err(explain(e, &self.table)),
            Err(_) => {
                return Err(backend_err(format!(
                    "the server did not answer within {STATEMENT_TIMEOUT:?}"
                )))
            }
        };
        let extended = rows
            .iter()
            .find_map(|r| r.try_get::<i64, _>("extended").ok())
            .unwrap_or(0);
        Ok(extended > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_reach_the_query_as_hex_only() {
        let target = Target::new("dlock_locks", Kind::Read, "it's a key'); DROP TABLE x; --");
        let holder = Holder::new("k", "k", "0123.owner'\"");
        let sql = target.acquire_sql(Kind::Read, &holder, 1000, true);
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(!sql.contains("owner'"), "{sql}");
        assert!(sql.starts_with("SELECT pg_advisory_xact_lock("));
    }

    #[test]
    fn payloads_are_never_mutex_names() {
        for key in ["a", "\u{2}x", &"k".repeat(600), "a\0b"] {
            let name = lock_name(key);
            assert!(!wakes_all(&name), "{name:?}");
            for kind in [Kind::Read, Kind::Write, Kind::Permit(3)] {
                assert!(wakes_all(&Target::new("t", kind, key).payload));
            }
        }
        // Read and write share a key space; semaphores have their own.
        let (r, w, p) = (
            Target::new("t", Kind::Read, "a"),
            Target::new("t", Kind::Write, "a"),
            Target::new("t", Kind::Permit(2), "a"),
        );
        assert_eq!((r.payload.as_str(), r.turn), (w.payload.as_str(), w.turn));
        assert_ne!(r.payload, p.payload);
    }
}
