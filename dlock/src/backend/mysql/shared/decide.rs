//! One decision of a read-write lock or semaphore grant: a transaction that locks the key's
//! rows, gate first, decides by the rule of the [parent module](super), and writes the hold
//! (or a waiting writer's row).

use std::time::Duration;

use sqlx::mysql::MySqlConnection;
use sqlx::{AssertSqlSafe, Connection};

use super::super::{backend_err, micros, Failure, STATEMENT_TIMEOUT};
use super::{Shared, BEGIN, GATE, PERMIT, READ, WAITING, WAITING_LEASE, WRITE};
use crate::backend::{permit_mismatch, Kind};

/// One acquire's request, owned (it goes to the decision task).
pub(super) struct Request {
    pub(super) space: i8,
    pub(super) row_kind: i8,
    pub(super) kind: Kind,
    pub(super) name: String,
    pub(super) id: String,
    pub(super) owner: Option<String>,
    pub(super) key: Option<String>,
    pub(super) ttl_us: i64,
    /// A writer not granted writes (or rewrites) its waiting row.
    pub(super) register: bool,
}

/// What one decision found.
pub(super) enum Look {
    Granted(Option<u64>),
    /// Not granted; how long the first blocking row lives yet (none: not known).
    Busy(Option<Duration>),
    /// The key has no gate row yet.
    NoGate,
}

/// A scanned row: `secret_key`, kind, permits, fence, µs of lease left.
type Row = (String, i8, Option<u32>, Option<i64>, i64);

/// Runs one statement on the holds table (outside a decision) with [`STATEMENT_TIMEOUT`],
/// explaining table errors.
pub(super) async fn run<T>(
    shared: &Shared,
    fut: impl std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
) -> std::result::Result<T, Failure> {
    run_in(shared, false, fut).await
}

/// [`run`] for a statement of a decision; `ours_rc`: in the decision's own `READ COMMITTED`
/// transaction (a refusal of which is retried under the session's level).
async fn run_in<T>(
    shared: &Shared,
    ours_rc: bool,
    fut: impl std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
) -> std::result::Result<T, Failure> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(shared.explain(e, ours_rc)),
        Err(_) => Err(Failure::Fatal(backend_err(format!(
            "the server did not answer within {STATEMENT_TIMEOUT:?}"
        )))),
    }
}

pub(super) fn q(
    sql: &str,
) -> sqlx::query::Query<'static, sqlx::MySql, sqlx::mysql::MySqlArguments> {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
}

/// One decision (see the module docs), in a transaction on `conn`.
pub(super) async fn decide(
    shared: &Shared,
    conn: &mut MySqlConnection,
    r: &Request,
) -> std::result::Result<Look, Failure> {
    let sql = &shared.sql;
    let rc = !shared
        .statement_binlog
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut tx = if rc {
        run_in(shared, rc, conn.begin_with(BEGIN)).await?
    } else {
        run_in(shared, rc, conn.begin()).await?
    };
    let rows: Vec<Row> = run_in(
        shared,
        rc,
        sqlx::query_as(AssertSqlSafe(sql.scan.clone()))
            .bind(r.space)
            .bind(&r.name)
            .fetch_all(&mut *tx),
    )
    .await?;
    let Some(gate_fence) = rows.iter().find(|row| row.0.is_empty()).map(|row| row.3) else {
        let _ = run_in(shared, rc, tx.rollback()).await;
        return Ok(Look::NoGate);
    };
    let (mut expired, mut own, mut blocking) = (false, false, 0u32);
    let (mut first_expiry, mut mismatch) = (None::<i64>, None::<u32>);
    for (secret, kind, permits, _, left) in rows.iter().filter(|row| row.1 != GATE) {
        if *secret == r.id {
            own = true;
            continue;
        }
        if *left < 0 {
            expired = true;
            continue;
        }
        let blocks = match r.kind {
            Kind::Read => matches!(*kind, WRITE | WAITING),
            Kind::Write => matches!(*kind, READ | WRITE),
            Kind::Exclusive | Kind::Permit(_) => *kind == PERMIT,
        };
        if let (Kind::Permit(n), Some(p)) = (r.kind, *permits) {
            if p != n {
                mismatch = Some(p);
            }
        }
        if blocks {
            blocking += 1;
            first_expiry = Some(first_expiry.map_or(*left, |f| f.min(*left)));
        }
    }
    if let (Kind::Permit(n), Some(held)) = (r.kind, mismatch) {
        let _ = run_in(shared, rc, tx.rollback()).await;
        return Err(Failure::Fatal(permit_mismatch(n, Some(held))));
    }
    let granted = match r.kind {
        Kind::Permit(n) => blocking < n,
        _ => blocking == 0,
    };
    if !granted && !r.register && !expired {
        let _ = run_in(shared, rc, tx.rollback()).await;
        return Ok(Look::Busy(first_expiry.map(busy_for)));
    }
    if expired || own {
        run_in(
            shared,
            rc,
            q(&sql.clear)
                .bind(r.space)
                .bind(&r.name)
                .bind(&r.id)
                .execute(&mut *tx),
        )
        .await?;
    }
    let mut fence = None;
    if granted || r.register {
        let (row_kind, lease) = if granted {
            (r.row_kind, r.ttl_us)
        } else {
            (WAITING, micros(WAITING_LEASE))
        };
        let permits = match r.kind {
            Kind::Permit(n) if granted => Some(n),
            _ => None,
        };
        let inserted = run_in(
            shared,
            rc,
            q(&sql.insert)
                .bind(r.space)
                .bind(&r.name)
                .bind(&r.id)
                .bind(&r.owner)
                .bind(&r.key)
                .bind(row_kind)
                .bind(permits)
                .bind(lease)
                .execute(&mut *tx),
        )
        .await?;
        fence = Some(inserted.last_insert_id());
    }
    if granted && r.kind == Kind::Write {
        run_in(
            shared,
            rc,
            q(&sql.mark)
                .bind(fence.map(|f| f as i64))
                .bind(r.space)
                .bind(&r.name)
                .execute(&mut *tx),
        )
        .await?;
    }
    run_in(shared, rc, tx.commit()).await?;
    if !granted {
        return Ok(Look::Busy(first_expiry.map(busy_for)));
    }
    Ok(Look::Granted(match r.kind {
        Kind::Read => gate_fence.and_then(|f| u64::try_from(f).ok()),
        _ => fence,
    }))
}

fn busy_for(left_us: i64) -> Duration {
    Duration::from_micros(u64::try_from(left_us).unwrap_or(0))
}
