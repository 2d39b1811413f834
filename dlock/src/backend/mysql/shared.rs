//! Read-write locks and semaphores: a table of holds, every grant decided in a transaction that
//! first locks the key's gate row, waiting by polling the decision (MySQL has no notifications)
//! with local releases waking local waiters at once.
//!
//! # The table
//! Created at [`connect`](super::MysqlBackend::connect) beside the lock table, named after it
//! with `_holds` ([`holds_table`]; see [`HOLDS_COLUMNS`]):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS `distributed_lock_holds` (
//!   id         BIGINT NOT NULL AUTO_INCREMENT,   -- the fence of a write or permit hold
//!   space      TINYINT NOT NULL,                 -- 1 read-write lock, 2 semaphore
//!   lock_name  VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,  -- as in the lock table
//!   secret_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,   -- token id; '' gate
//!   owner      VARCHAR(128) CHARACTER SET utf8mb4 NULL,
//!   lock_key   MEDIUMTEXT CHARACTER SET utf8mb4 NULL,  -- the key, when lock_name is its digest
//!   kind       TINYINT NOT NULL,      -- 0 gate, 1 read, 2 write, 3 waiting writer, 4 permit
//!   permits    INT UNSIGNED NULL,     -- a permit's semaphore size
//!   fence      BIGINT NULL,           -- the gate's: the last write's fence
//!   expire_at  DATETIME(6) NOT NULL,  -- lease end, server UTC ('9999-12-31' for the gate)
//!   PRIMARY KEY (space, lock_name, secret_key), UNIQUE KEY uk_id (id)) ENGINE=InnoDB
//! ```
//!
//! One row per hold (every reader and every permit has its own token and lease), one per
//! waiting writer, and one **gate** row per key (`secret_key = ''`), made by the key's first
//! acquire (`INSERT IGNORE`, on its own) and kept: it serializes the key's decisions and records
//! the fence of the key's last write, which readers are given. So one small row per key ever
//! used stays in the table.
//!
//! # Grant rule
//! A decision is one transaction on one connection: `SELECT ... FROM holds WHERE space = ? AND
//! lock_name = ? FOR UPDATE` reads the key's rows in primary-key order, the gate first, and
//! locks them: a second decision of the key waits on the gate until the first commits, then
//! reads the rows as committed (a locking read, not the transaction's snapshot). So no two
//! decisions of a key see the same state. Among the live rows of other tokens:
//! - **read** is granted when no write hold and no waiting writer is there (writer preference);
//! - **write** when no read and no write hold is there; otherwise a writer that waits writes a
//!   *waiting writer* row (lease [`WAITING_LEASE`], rewritten by each re-check) that holds new
//!   readers back; the grant replaces that row by the write hold;
//! - **permit(n)** when fewer than n permit holds are there; a live permit naming another count
//!   is [`permit_mismatch`], and nothing is written.
//!
//! A granting decision deletes the key's expired rows (and the token's own waiting row), then
//! `INSERT`s the hold: its `AUTO_INCREMENT` id is the fence of a write or permit. Inserts of one
//! key are serialized by the gate and every grant inserts a new row, so fences strictly increase
//! per key; the counter survives restarts on the servers `connect` accepts (see "Fence" in the
//! module docs). A write stores its fence in the gate row, which a granted reader returns.
//! Releases (token-checked `DELETE`) and renewals (token-checked `UPDATE ... AND expire_at >=
//! UTC_TIMESTAMP(6)`) need no gate: a release only frees, and an expired hold can never be
//! renewed, so a decision that counted it as gone cannot be contradicted.
//!
//! # Waiting
//! **Polling**, as MySQL offers no notifications and the mutex's `GET_LOCK` turn is exclusive
//! (one holder), which shared holds are not. A waiter runs the decision again after a jittered
//! pause growing from [`FIRST_RECHECK`] to [`MAX_RECHECK`], never later than the earliest expiry
//! of the rows that block it (an expired holder is taken over at once). A release by the same
//! Locker (and a waiting writer of it giving up) wakes that Locker's waiters of the key at once.
//! Each re-check is a short locking transaction on the key: keys with many waiters across many
//! processes cost one decision per waiter per pause.
//!
//! The acquires of one key in one Locker take turns to decide (a local `tokio` mutex per key):
//! the gate serializes a key's decisions on the server anyway, and without turns every local
//! waiter would hold a pooled connection while it queues on the gate, leaving none for the
//! renewals of the key's holders when the gate is slow (a stalled decision elsewhere).
//!
//! # Cancellation
//! A decision runs in a task that keeps its connection until the server answers; when the
//! acquire was dropped meanwhile, the task deletes what the decision wrote (a hold, a waiting
//! writer's row) on that connection. The locker's release after a dropped or failed acquire
//! deletes a waiting writer's row as well. A writer that gives up at its deadline deletes its
//! waiting row before returning; a crashed waiting writer stops holding readers back after
//! [`WAITING_LEASE`]. A decision that failed (a timeout, while its `COMMIT` may still have
//! reached the server) deletes whatever it may have written, on its own connection, after it.
//!
//! # Server settings
//! Decisions run under `READ COMMITTED`; a server with `binlog_format = STATEMENT` refuses its
//! writes (error 1665), and decisions then run under the session's level. When that refuses them
//! too (the server's default level is `READ COMMITTED`), the acquire fails naming the setting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sqlx::mysql::MySqlPool;
use tokio::sync::{Mutex as Turn, Notify, OwnedMutexGuard};

use super::{
    backend_err, lock_name, micros, quote, Failure, Holder, MysqlBackend, INSERT_OUTCOME_WAIT,
    NAME, STATEMENT_TIMEOUT,
};
mod decide;

use decide::{decide, q, run, Look, Request};

use crate::backend::digest::sha256_hex;
use crate::backend::{jitter, remaining, token_parts, within_wait, Grant, Kind, MIN_ANSWER_TIME};
use crate::Result;

/// The columns of the holds table, in the DDL.
pub(super) const HOLDS_COLUMNS: &str = "id BIGINT NOT NULL AUTO_INCREMENT, \
     space TINYINT NOT NULL, \
     lock_name VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, \
     secret_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, \
     owner VARCHAR(128) CHARACTER SET utf8mb4 NULL, lock_key MEDIUMTEXT CHARACTER SET utf8mb4 NULL, \
     kind TINYINT NOT NULL, permits INT UNSIGNED NULL, fence BIGINT NULL, \
     expire_at DATETIME(6) NOT NULL, \
     PRIMARY KEY (space, lock_name, secret_key), UNIQUE KEY uk_id (id)";

/// The lease of a waiting writer's row: how long a writer that vanished without a word (crash,
/// partition) still holds new readers back. Each of its decisions rewrites it; two are at most
/// [`MAX_RECHECK`] plus one decision apart, and a decision takes less than the statement bound
/// (10 s, the server's 5 s lock waits included): longer than that, so a live writer's row never
/// lapses while its decision waits on the key's gate (as PostgreSQL's).
pub(super) const WAITING_LEASE: Duration = Duration::from_secs(12);
/// The first pause between a waiter's decisions; doubled per busy decision up to
/// [`MAX_RECHECK`] (jittered), back to this after a local wake-up.
pub(super) const FIRST_RECHECK: Duration = Duration::from_millis(10);
/// The longest pause between a waiter's decisions (well within [`WAITING_LEASE`], so a waiting
/// writer's row is rewritten in time).
pub(super) const MAX_RECHECK: Duration = Duration::from_millis(250);
/// Starts a decision's transaction: `READ COMMITTED`, so its locking reads lock the key's rows
/// only, not the gaps around them (under `REPEATABLE READ` a decision would also lock the next
/// key's first row, serializing neighbouring keys). The gate row serializes a key's decisions
/// either way.
const BEGIN: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION";

/// `kind` values of the holds table.
const GATE: i8 = 0;
const READ: i8 = 1;
const WRITE: i8 = 2;
const WAITING: i8 = 3;
const PERMIT: i8 = 4;

/// The holds table of lock table `table`: `<table>_holds`, or, when that exceeds MySQL's 64
/// characters, the table's first 41 characters, `_`, 16 hex digits of its SHA-256, `_holds`.
pub(super) fn holds_table(table: &str) -> String {
    if table.len() + 6 <= 64 {
        return format!("{table}_holds");
    }
    format!(
        "{}_{}_holds",
        &table[..41],
        &sha256_hex(table.as_bytes())[..16]
    )
}

/// A kind's space and row kind (`Exclusive` never comes here: it is the lock table's).
fn codes(kind: Kind) -> (i8, i8) {
    match kind {
        Kind::Read => (1, READ),
        Kind::Write => (1, WRITE),
        Kind::Exclusive | Kind::Permit(_) => (2, PERMIT),
    }
}

/// The statements on the holds table and the local waiters of its keys.
#[derive(Debug)]
pub(super) struct Shared {
    table: String,
    sql: Arc<Sql>,
    /// Local acquires per `<space>:<lock_name>` (see [`Local`]).
    local: Mutex<HashMap<String, Local>>,
    /// The server refused a write under `READ COMMITTED` (error 1665: `binlog_format =
    /// STATEMENT`): decisions run under the session's level from then on (a decision may then
    /// also lock the next key's first row for its duration; the gate row is what makes it
    /// correct either way).
    statement_binlog: AtomicBool,
}

/// The acquires of one key in one Locker.
#[derive(Debug, Default)]
struct Local {
    /// What a local release wakes.
    notify: Arc<Notify>,
    /// Held around each decision: one decision of the key at a time per Locker.
    turn: Arc<Turn<()>>,
    /// How many acquires of the key are under way.
    count: usize,
}

#[derive(Debug)]
struct Sql {
    scan: String,
    gate: String,
    clear: String,
    insert: String,
    mark: String,
    release: String,
    extend: String,
    undo: String,
}

impl Shared {
    pub(super) fn new(table: &str) -> Self {
        let holds = holds_table(table);
        let h = quote(&holds);
        let sql = Sql {
            scan: format!(
                "SELECT secret_key, kind, permits, fence, \
                   TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expire_at) \
                 FROM {h} WHERE space = ? AND lock_name = ? FOR UPDATE"
            ),
            gate: format!(
                "INSERT IGNORE INTO {h} (space, lock_name, secret_key, kind, expire_at) \
                 VALUES (?, ?, '', {GATE}, '9999-12-31 23:59:59')"
            ),
            clear: format!(
                "DELETE FROM {h} WHERE space = ? AND lock_name = ? AND secret_key <> '' \
                 AND (expire_at < UTC_TIMESTAMP(6) OR secret_key = ?)"
            ),
            insert: format!(
                "INSERT INTO {h} \
                 (space, lock_name, secret_key, owner, lock_key, kind, permits, expire_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND)"
            ),
            mark: format!(
                "UPDATE {h} SET fence = ? WHERE space = ? AND lock_name = ? AND secret_key = ''"
            ),
            release: format!(
                "DELETE FROM {h} WHERE space = ? AND lock_name = ? AND secret_key = ? AND kind = ?"
            ),
            extend: format!(
                "UPDATE {h} SET expire_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND \
                 WHERE space = ? AND lock_name = ? AND secret_key = ? AND kind = ? \
                 AND expire_at >= UTC_TIMESTAMP(6)"
            ),
            undo: format!(
                "DELETE FROM {h} WHERE space = ? AND lock_name = ? AND secret_key = ? \
                 AND secret_key <> ''"
            ),
        };
        Shared {
            table: holds,
            sql: Arc::new(sql),
            local: Mutex::new(HashMap::new()),
            statement_binlog: AtomicBool::new(false),
        }
    }

    fn local(&self) -> MutexGuard<'_, HashMap<String, Local>> {
        // Every update is a single insert or removal: a poisoned lock is still consistent.
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn join<'a>(&'a self, id: &'a str) -> Place<'a> {
        let mut local = self.local();
        let entry = local.entry(id.to_owned()).or_default();
        entry.count += 1;
        Place {
            shared: self,
            id,
            notify: entry.notify.clone(),
            turn: entry.turn.clone(),
        }
    }

    fn leave(&self, id: &str) {
        let mut local = self.local();
        if let Some(entry) = local.get_mut(id) {
            entry.count -= 1;
            if entry.count == 0 {
                local.remove(id);
            }
        }
    }

    /// Wakes every local waiter of the key (a release may admit several).
    fn wake(&self, id: &str) {
        if let Some(local) = self.local().get(id) {
            local.notify.notify_waiters();
        }
    }

    /// Explains a missing or not granted holds table (errors 1146, 1142) with what to run, and
    /// a server refusing writes under `READ COMMITTED` (1665): retried under the session's level
    /// when the statement ran in a decision's own `READ COMMITTED` transaction (`ours_rc`), else
    /// an error naming the setting.
    fn explain(&self, e: sqlx::Error, ours_rc: bool) -> Failure {
        let number = e
            .as_database_error()
            .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
            .map(|d| d.number());
        let h = quote(&self.table);
        match number {
            Some(1146) => Failure::Fatal(backend_err(format!(
                "read-write locks and semaphores need the table {h}, which is missing (dlock \
                 creates it at connect when its user may); have an administrator run: CREATE \
                 TABLE IF NOT EXISTS {h} ({HOLDS_COLUMNS}) ENGINE=InnoDB ({e})"
            ))),
            Some(1665) if ours_rc => {
                self.statement_binlog.store(true, Ordering::Relaxed);
                Failure::Retry(e)
            }
            Some(1665) => Failure::Fatal(backend_err(format!(
                "the server refuses writes to {h} under the session's transaction isolation \
                 level (READ COMMITTED or READ UNCOMMITTED) because its binlog_format is \
                 STATEMENT; read-write locks and semaphores need binlog_format = ROW or MIXED, or \
                 the session's level REPEATABLE READ (transaction_isolation) ({e})"
            ))),
            Some(1142 | 1143) => Failure::Fatal(backend_err(format!(
                "read-write locks and semaphores need, for dlock's user: GRANT SELECT, INSERT, \
                 UPDATE, DELETE ON {h} TO <user> ({e})"
            ))),
            _ => Failure::classify(e),
        }
    }
}

/// An acquire's place among the local acquires of a key, left on drop.
struct Place<'a> {
    shared: &'a Shared,
    id: &'a str,
    notify: Arc<Notify>,
    turn: Arc<Turn<()>>,
}

impl Place<'_> {
    /// This acquire's turn to decide; `None` when its wait ran out first (a wait of zero still
    /// waits [`MIN_ANSWER_TIME`] for a local decision under way: a decision takes milliseconds).
    async fn turn(&self, deadline: Option<Instant>) -> Option<OwnedMutexGuard<()>> {
        let take = self.turn.clone().lock_owned();
        match remaining(deadline) {
            None => Some(take.await),
            Some(left) => tokio::time::timeout(left.max(MIN_ANSWER_TIME), take)
                .await
                .ok(),
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.shared.leave(self.id);
    }
}

impl MysqlBackend {
    /// One decision in a task that keeps its connection (and the key's local `turn`) until the
    /// server answered; when the caller is gone by then, or the decision failed, what the
    /// decision may have written is deleted on that connection, after it.
    async fn decide_shared(&self, request: Request, turn: OwnedMutexGuard<()>) -> Result<Look> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (pool, shared): (MySqlPool, Arc<Shared>) = (self.pool.clone(), self.shared.clone());
        tokio::spawn(async move {
            let mut conn = match tokio::time::timeout(STATEMENT_TIMEOUT, pool.acquire()).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    let _ = tx.send(Err(backend_err(e)));
                    return;
                }
                Err(_) => {
                    let _ = tx.send(Err(backend_err(format!(
                        "no pooled connection within {STATEMENT_TIMEOUT:?}"
                    ))));
                    return;
                }
            };
            let outcome = match tokio::time::timeout(
                INSERT_OUTCOME_WAIT,
                decide(&shared, &mut conn, &request),
            )
            .await
            {
                Ok(Ok(look)) => Ok(look),
                // A deadlock, a lock-wait timeout or a refused READ COMMITTED (1665) rolled the
                // decision back: look again soon.
                Ok(Err(Failure::Retry(e))) => {
                    tracing::debug!(target: "dlock", backend = NAME, error = %e, "a read-write or semaphore decision was rolled back; retrying");
                    Ok(Look::Busy(None))
                }
                Ok(Err(f)) => Err(f.into_error()),
                Err(_) => Err(backend_err(format!(
                    "the server did not answer a decision within {INSERT_OUTCOME_WAIT:?}"
                ))),
            };
            // What the decision may have left: a hold when granted, or when it failed (a
            // client-side timeout while its COMMIT reached the server), and a waiting writer's
            // row. The undo is token-checked: harmless when needless.
            let wrote = match &outcome {
                Ok(Look::NoGate) => false,
                Ok(Look::Busy(_)) => request.register,
                Ok(Look::Granted(_)) | Err(_) => true,
            };
            let failed = outcome.is_err();
            if (tx.send(outcome).is_err() || failed) && wrote {
                let undo = q(&shared.sql.undo)
                    .bind(request.space)
                    .bind(&request.name)
                    .bind(&request.id)
                    .execute(&mut *conn);
                if let Ok(Ok(done)) = tokio::time::timeout(STATEMENT_TIMEOUT, undo).await {
                    if done.rows_affected() > 0 {
                        shared.wake(&local_id(request.space, &request.name));
                    }
                }
            }
            drop(turn);
        });
        match tokio::time::timeout(STATEMENT_TIMEOUT, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(backend_err("the decision task ended without an answer")),
            Err(_) => Err(backend_err(format!(
                "the server did not answer within {STATEMENT_TIMEOUT:?}"
            ))),
        }
    }

    /// The gate row of a key's first acquire (`INSERT IGNORE`, committed on its own); `false`
    /// when a deadlock or lock-wait timeout rolled it back.
    async fn make_gate(&self, space: i8, name: &str) -> Result<bool> {
        let made = run(
            &self.shared,
            q(&self.shared.sql.gate)
                .bind(space)
                .bind(name)
                .execute(&self.pool),
        )
        .await;
        match made {
            Ok(_) => Ok(true),
            Err(Failure::Retry(_)) => Ok(false),
            Err(f) => Err(f.into_error()),
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
        let (space, row_kind) = codes(kind);
        let name = lock_name(key);
        let holder = Holder::new(key, &name, token);
        let local = local_id(space, &name);
        let place = self.shared.join(&local);
        // Whether a decision may have left this writer's waiting row.
        let mut registered = false;
        let mut gate_made = false;
        let mut pause = FIRST_RECHECK;
        loop {
            // Listening before each decision: a local release right after it is not missed.
            let notified = place.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = remaining(deadline).is_none_or(|l| !l.is_zero());
            let register = wait && kind == Kind::Write;
            registered |= register;
            let request = Request {
                space,
                row_kind,
                kind,
                name: name.to_string(),
                id: holder.id.to_owned(),
                owner: holder.owner.map(str::to_owned),
                key: holder.key.map(str::to_owned),
                ttl_us: micros(ttl),
                register,
            };
            let left = match place.turn(deadline).await {
                Some(turn) => {
                    let sent_at = Instant::now();
                    match within_wait(NAME, deadline, self.decide_shared(request, turn)).await? {
                        Look::Granted(fence) => return Ok(Some(Grant::new(fence, sent_at))),
                        // The key's first acquire: make its gate, then decide at once (once: a
                        // gate that still is not there, or an INSERT rolled back by a deadlock
                        // or lock-wait timeout, waits like a busy decision).
                        Look::NoGate => {
                            if self.make_gate(space, &name).await? && !gate_made {
                                gate_made = true;
                                continue;
                            }
                            None
                        }
                        Look::Busy(left) => left,
                    }
                }
                // The wait ran out behind another local decision of the key.
                None => None,
            };
            let mut sleep = jitter(pause / 2, pause);
            pause = (pause * 2).min(MAX_RECHECK);
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
            tokio::select! {
                _ = notified => pause = FIRST_RECHECK,
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Deletes `token`'s hold of `kind` (or a writer's waiting row) and wakes the key's local
    /// waiters; `true` when it was a hold.
    pub(super) async fn release_shared(&self, key: &str, kind: Kind, token: &str) -> Result<bool> {
        let (space, row_kind) = codes(kind);
        let name = lock_name(key);
        let id = token_parts(token).0;
        let delete = |row_kind: i8| {
            run(
                &self.shared,
                q(&self.shared.sql.release)
                    .bind(space)
                    .bind(&*name)
                    .bind(id)
                    .bind(row_kind)
                    .execute(&self.pool),
            )
        };
        let mut held = retrying(|| delete(row_kind)).await? > 0;
        let mut freed = held;
        if !held && kind == Kind::Write {
            freed = retrying(|| delete(WAITING)).await? > 0;
            held = false;
        }
        if freed {
            self.shared.wake(&local_id(space, &name));
        }
        Ok(held)
    }

    /// Moves the lease of `token`'s live hold of `kind` to `ttl` from now.
    pub(super) async fn extend_shared(
        &self,
        key: &str,
        kind: Kind,
        token: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let (space, row_kind) = codes(kind);
        let name = lock_name(key);
        let id = token_parts(token).0;
        let ttl_us = micros(ttl);
        let changed = retrying(|| {
            run(
                &self.shared,
                q(&self.shared.sql.extend)
                    .bind(ttl_us)
                    .bind(space)
                    .bind(&*name)
                    .bind(id)
                    .bind(row_kind)
                    .execute(&self.pool),
            )
        })
        .await?;
        Ok(changed > 0)
    }
}

/// Runs a token-checked statement, retrying deadlocks and lock-wait timeouts (a decision of
/// the key holds its rows for a moment); the rows it touched.
async fn retrying<F, Fut>(run: F) -> Result<u64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<sqlx::mysql::MySqlQueryResult, Failure>>,
{
    let mut attempt = 0u32;
    loop {
        match run().await {
            Ok(done) => return Ok(done.rows_affected()),
            Err(Failure::Retry(_)) if attempt < super::MAX_RETRIES => {
                attempt += 1;
                let pause = FIRST_RECHECK * (1 << attempt.min(4));
                tokio::time::sleep(jitter(pause / 2, pause)).await;
            }
            Err(f) => return Err(f.into_error()),
        }
    }
}

/// The local waiters' key of a `lock_name` in a space.
fn local_id(space: i8, name: &str) -> String {
    format!("{space}:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_table_names_fit_mysql() {
        assert_eq!(holds_table("distributed_lock"), "distributed_lock_holds");
        let long = "t".repeat(64);
        let name = holds_table(&long);
        assert_eq!(name.len(), 64);
        assert!(name.ends_with("_holds") && name.starts_with(&"t".repeat(41)));
        assert_ne!(holds_table(&"t".repeat(63)), name);
    }

    #[test]
    fn read_and_write_share_a_space_semaphores_have_their_own() {
        assert_eq!(codes(Kind::Read).0, codes(Kind::Write).0);
        assert_ne!(codes(Kind::Read).0, codes(Kind::Permit(2)).0);
    }
}
