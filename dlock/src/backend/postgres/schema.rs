//! The lock table, its fence sequence and the holds table of read-write locks and semaphores:
//! created when missing, and brought up to date when an older dlock made them (see the module
//! docs, "The table", and [`shared`](super::shared)).

use sqlx::postgres::PgConnection;
use sqlx::AssertSqlSafe;

use super::shared::{holds_table, HOLDS_COLUMNS};
use super::{backend_err, quote, NAME, SESSION_SETTINGS, STATEMENT_TIMEOUT};
use crate::Result;

/// The table's columns, in the DDL.
const COLUMNS: &str = "lock_name TEXT COLLATE \"C\" PRIMARY KEY, secret_key TEXT NOT NULL, \
                       owner TEXT, lock_key BYTEA, fence BIGINT, \
                       expire_at TIMESTAMPTZ NOT NULL";
/// The inspection columns an older dlock's table lacks, with their types: nullable, so that
/// version's clients and rows go on working.
const ADDED: [(&str, &str); 3] = [
    ("owner", "TEXT"),
    ("lock_key", "BYTEA"),
    ("fence", "BIGINT"),
];

/// Creates the tables and the sequence when missing, and adds to an older dlock's table what
/// inspection needs (or says which `ALTER TABLE` an administrator must run), within
/// [`STATEMENT_TIMEOUT`].
pub(super) async fn ensure_table(conn: &mut PgConnection, table: &str) -> Result<()> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, ensure(conn, table)).await {
        Ok(done) => done,
        Err(_) => Err(backend_err(format!(
            "checking the lock table: no answer within {STATEMENT_TIMEOUT:?}"
        ))),
    }
}

async fn ensure(conn: &mut PgConnection, table: &str) -> Result<()> {
    let t = quote(table);
    let seq = quote(&format!("{table}_fence"));
    let holds = quote(&holds_table(table));
    // Lock waits bounded on the server: a long transaction on the table fails an ALTER in 5 s
    // instead of holding it, and every acquire queued behind it.
    sqlx::raw_sql(SESSION_SETTINGS)
        .execute(&mut *conn)
        .await
        .map_err(backend_err)?;
    // PostgreSQL checks the right to create in the schema before `IF NOT EXISTS`, so a user
    // granted only the tables and the sequence (see the README's "Security") would be refused
    // the DDL: skip it when they exist (`to_regclass` needs no privilege on them).
    let (has_table, has_seq, has_holds): (bool, bool, bool) = sqlx::query_as(
        "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL, \
         to_regclass($3) IS NOT NULL",
    )
    .bind(&t)
    .bind(&seq)
    .bind(&holds)
    .fetch_one(&mut *conn)
    .await
    .map_err(backend_err)?;
    let holds_ddl = format!("CREATE TABLE IF NOT EXISTS {holds} ({HOLDS_COLUMNS})");
    if !(has_table && has_seq) {
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {t} ({COLUMNS}); CREATE SEQUENCE IF NOT EXISTS {seq}; \
             {holds_ddl}"
        );
        create(conn, ddl, &t).await?;
    } else if !has_holds {
        // Mutexes work without it: a user who may not create it is told here (mutex-only
        // deployments made before it existed need nothing), and a read-write lock or semaphore
        // then fails naming the statement to run.
        if let Err(e) = create(conn, holds_ddl.clone(), &holds).await {
            tracing::info!(target: "dlock", backend = NAME, statement = %holds_ddl, error = %e, "could not create the table of read-write locks and semaphores; mutexes work, read-write locks and semaphores fail until an administrator runs the statement");
        }
    }

    // The catalog is readable without any privilege on the table.
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.attname::text, coalesce(c.collname::text, '') FROM pg_attribute a \
         LEFT JOIN pg_collation c ON c.oid = a.attcollation \
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind(&t)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend_err)?;
    let mut absent = Vec::new();
    let mut changes = Vec::new();
    for (name, type_) in ADDED {
        if !columns.iter().any(|c| c.0 == name) {
            absent.push(format!("`{name}`"));
            changes.push(format!("ADD COLUMN IF NOT EXISTS {name} {type_}"));
        }
    }
    // Byte order on `lock_name` makes a prefix one range of its index (for `list`).
    if !columns.iter().any(|c| c.0 == "lock_name" && c.1 == "C") {
        changes.push("ALTER COLUMN lock_name TYPE TEXT COLLATE \"C\"".to_owned());
    }
    if changes.is_empty() {
        return Ok(());
    }
    let alter = format!("ALTER TABLE {t} {}", changes.join(", "));
    match sqlx::raw_sql(AssertSqlSafe(alter.clone()))
        .execute(&mut *conn)
        .await
    {
        Ok(_) => {
            tracing::info!(target: "dlock", backend = NAME, statement = %alter, "brought a lock table made by an older dlock up to date");
            Ok(())
        }
        // Only the collation is left: locks and inspection work, a listing reads the table.
        Err(e) if absent.is_empty() => {
            tracing::warn!(target: "dlock", backend = NAME, statement = %alter, error = %e, "could not give the lock table's `lock_name` byte order (`COLLATE \"C\"`); `list` reads the whole table until its owner runs the statement");
            Ok(())
        }
        Err(e) => Err(backend_err(format!(
            "the lock table {t} lacks the column(s) {} (where dlock records each lock's owner, \
             key and fence, for inspection), and adding them failed ({e}); have the table's \
             owner run: {alter}",
            absent.join(", ")
        ))),
    }
}

/// Runs `ddl` (creating `what`), a concurrent creation counting as done.
async fn create(conn: &mut PgConnection, ddl: String, what: &str) -> Result<()> {
    match sqlx::raw_sql(AssertSqlSafe(ddl)).execute(&mut *conn).await {
        Ok(_) => Ok(()),
        // Two Lockers creating the table at once: one of them meets a unique violation in the
        // catalog; the table is there either way.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => Ok(()),
        Err(e) => Err(backend_err(format!("creating the lock table {what}: {e}"))),
    }
}
