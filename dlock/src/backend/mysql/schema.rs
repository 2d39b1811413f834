//! The lock table: created when missing, checked when present, and given the inspection columns
//! (`owner`, `lock_key`) when it was made by an older dlock (see the module docs, "The table");
//! and the holds table of read-write locks and semaphores, created when missing and checked for
//! its primary key when present (see [`shared`](super::shared)).

use sqlx::mysql::MySqlConnection;
use sqlx::AssertSqlSafe;

use super::shared::{holds_table, HOLDS_COLUMNS};
use super::{backend_err, quote, MAX_PLAIN_LEN, SESSION_LOCK_WAITS};
use crate::Result;

/// Column definition of `expire_at`, in the DDL and in the `ALTER TABLE` advice.
const EXPIRE_AT_DEF: &str = "DATETIME(6) NOT NULL DEFAULT '1000-01-01 00:00:00'";
/// Column definition of `owner` (sized for [`MAX_OWNER_LEN`](crate::MAX_OWNER_LEN)).
const OWNER_DEF: &str = "VARCHAR(128) CHARACTER SET utf8mb4 NULL";
/// Column definition of `lock_key`: any key a hashed `lock_name` stands for.
const LOCK_KEY_DEF: &str = "MEDIUMTEXT CHARACTER SET utf8mb4 NULL";

/// One row of `information_schema.COLUMNS`: name, data type, datetime precision, character
/// length, extra, nullable, character set.
type Column = (String, String, i64, i64, String, String, String);

/// Creates the lock table when missing; checks an existing one has what dlock needs, and adds
/// the inspection columns a table of an older dlock lacks (or says which `ALTER TABLE` to run).
/// Then creates the holds table when missing (see [`ensure_holds`]).
pub(super) async fn ensure_table(conn: &mut MySqlConnection, table: &str) -> Result<()> {
    ensure_lock_table(conn, table).await?;
    ensure_holds(conn, table).await
}

/// Creates the holds table of read-write locks and semaphores when the user sees none, and checks
/// the primary key of one it sees ([`check_holds_key`]). A user
/// granted only the four statements on both tables sees both (`information_schema` shows the
/// tables a user has a privilege on), so `CREATE` is never sent for it. Mutexes work without
/// the table: a user who may not create it is told in the log, and a read-write lock or
/// semaphore then fails naming the statement to run (or the `GRANT` missing).
async fn ensure_holds(conn: &mut MySqlConnection, table: &str) -> Result<()> {
    let holds = holds_table(table);
    let seen: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(&holds)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend_err)?;
    if seen.is_some() {
        return check_holds_key(conn, &holds).await;
    }
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {} ({HOLDS_COLUMNS}) ENGINE=InnoDB",
        quote(&holds)
    );
    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(ddl.clone()))
        .execute(&mut *conn)
        .await
    {
        tracing::info!(target: "dlock", backend = super::NAME, statement = %ddl, error = %e, "could not create the table of read-write locks and semaphores; mutexes work, read-write locks and semaphores fail until an administrator runs the statement");
    }
    Ok(())
}

/// Checks that an existing holds table has `PRIMARY KEY (space, lock_name, secret_key)` (whole
/// columns) with binary collations: a decision's locking read of a key's rows must find and
/// lock the key's gate row (`secret_key = ''`, first in that order) before the others, and
/// tell tokens and keys apart byte for byte. A table keyed otherwise is refused at connect,
/// naming what is wrong.
async fn check_holds_key(conn: &mut MySqlConnection, holds: &str) -> Result<()> {
    let key: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT CAST(LOWER(COLUMN_NAME) AS CHAR), CAST(SUB_PART AS SIGNED) \
         FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' \
         ORDER BY SEQ_IN_INDEX",
    )
    .bind(holds)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend_err)?;
    let collations: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(LOWER(COLUMN_NAME) AS CHAR), \
                CAST(LOWER(COALESCE(COLLATION_NAME, '')) AS CHAR) \
         FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
           AND LOWER(COLUMN_NAME) IN ('lock_name', 'secret_key')",
    )
    .bind(holds)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend_err)?;
    let mut wrong = Vec::new();
    let columns: Vec<&str> = key.iter().map(|(c, _)| c.as_str()).collect();
    if columns != ["space", "lock_name", "secret_key"] {
        wrong.push(if columns.is_empty() {
            "it has no primary key".to_owned()
        } else {
            format!("its primary key is ({})", columns.join(", "))
        });
    } else if key.iter().any(|(_, prefix)| prefix.is_some()) {
        wrong.push("its primary key indexes column prefixes, not whole columns".to_owned());
    }
    for (column, collation) in &collations {
        if !(collation.ends_with("_bin") || collation == "binary") {
            wrong.push(format!(
                "its column `{column}` has the collation {collation}, not a binary one"
            ));
        }
    }
    if wrong.is_empty() {
        return Ok(());
    }
    let h = quote(holds);
    Err(backend_err(format!(
        "the table {h} of read-write locks and semaphores exists but {}: dlock needs PRIMARY \
         KEY (space, lock_name, secret_key) over whole columns, with `lock_name` and \
         `secret_key` in CHARACTER SET ascii COLLATE ascii_bin, so that a decision locks a \
         key's gate row (secret_key '') first; have an administrator make it match ({}) \
         keeping its AUTO_INCREMENT counter (the fences), or give dlock its own tables with \
         `?table=name` in the URL",
        wrong.join(", "),
        HOLDS_COLUMNS
    )))
}

async fn ensure_lock_table(conn: &mut MySqlConnection, table: &str) -> Result<()> {
    let columns: Vec<Column> = sqlx::query_as(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(LOWER(DATA_TYPE) AS CHAR), \
                CAST(COALESCE(DATETIME_PRECISION, 0) AS SIGNED), \
                CAST(COALESCE(CHARACTER_MAXIMUM_LENGTH, 0) AS SIGNED), \
                CAST(LOWER(EXTRA) AS CHAR), CAST(IS_NULLABLE AS CHAR), \
                CAST(LOWER(COALESCE(CHARACTER_SET_NAME, '')) AS CHAR) \
         FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend_err)?;

    let t = quote(table);
    if columns.is_empty() {
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {t} (\
               id BIGINT NOT NULL AUTO_INCREMENT, \
               lock_name VARCHAR(255) NOT NULL, \
               secret_key VARCHAR(64) NOT NULL, \
               create_time DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, \
               expire_at {EXPIRE_AT_DEF}, \
               owner {OWNER_DEF}, \
               lock_key {LOCK_KEY_DEF}, \
               PRIMARY KEY (id), \
               UNIQUE KEY uk_lock_name (lock_name)\
             ) ENGINE=InnoDB"
        );
        sqlx::raw_sql(AssertSqlSafe(ddl))
            .execute(&mut *conn)
            .await
            .map_err(|e| backend_err(format!("creating the lock table {t}: {e}")))?;
        return Ok(());
    }

    let find = |name: &str| columns.iter().find(|c| c.0.eq_ignore_ascii_case(name));
    let text_len_at_least = |name: &str, len: i64| {
        find(name).map(|c| matches!(c.1.as_str(), "varchar" | "char") && c.3 >= len)
    };
    let mut missing = Vec::new();
    let mut fixes = Vec::new();
    match find("id") {
        None => {
            missing.push("column `id` (the fence)".to_owned());
            fixes.push("ADD COLUMN `id` BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY".to_owned());
        }
        Some(c) if !c.4.contains("auto_increment") || c.1 != "bigint" => {
            missing.push("column `id` as BIGINT AUTO_INCREMENT (the fence)".to_owned());
            fixes.push("MODIFY COLUMN `id` BIGINT NOT NULL AUTO_INCREMENT".to_owned());
        }
        Some(_) => {}
    }
    match text_len_at_least("lock_name", MAX_PLAIN_LEN as i64) {
        None => {
            missing.push("column `lock_name` (the key)".to_owned());
            fixes.push("ADD COLUMN `lock_name` VARCHAR(255) NOT NULL".to_owned());
        }
        Some(false) => {
            missing.push(format!(
                "column `lock_name` as VARCHAR of at least {MAX_PLAIN_LEN} characters"
            ));
            fixes.push("MODIFY COLUMN `lock_name` VARCHAR(255) NOT NULL".to_owned());
        }
        Some(true) => {}
    }
    match text_len_at_least("secret_key", 32) {
        None => {
            missing.push("column `secret_key` (the holder's token)".to_owned());
            fixes.push("ADD COLUMN `secret_key` VARCHAR(64) NOT NULL".to_owned());
        }
        Some(false) => {
            missing.push("column `secret_key` as VARCHAR of at least 32 characters".to_owned());
            fixes.push("MODIFY COLUMN `secret_key` VARCHAR(64) NOT NULL".to_owned());
        }
        Some(true) => {}
    }
    match find("expire_at") {
        None => {
            missing.push("column `expire_at` (the lease end, server time)".to_owned());
            fixes.push(format!("ADD COLUMN `expire_at` {EXPIRE_AT_DEF}"));
        }
        Some(c) if c.1 != "datetime" || c.2 < 6 || c.5.eq_ignore_ascii_case("yes") => {
            missing.push("column `expire_at` as DATETIME(6) NOT NULL".to_owned());
            fixes.push(format!("MODIFY COLUMN `expire_at` {EXPIRE_AT_DEF}"));
        }
        Some(_) => {}
    }
    // The inspection columns: nullable utf8mb4 text (NULL for a plain key, or a token without
    // an owner; any character a key or an owner may hold). Missing ones are added below.
    let mut additions = Vec::new();
    let mut absent = Vec::new();
    let texts: &[(&str, &str, &str, &[&str])] = &[
        (
            "owner",
            "the holder's owner",
            OWNER_DEF,
            &["varchar", "char", "text", "mediumtext", "longtext"],
        ),
        (
            "lock_key",
            "the key of a hashed `lock_name`",
            LOCK_KEY_DEF,
            &["mediumtext", "longtext"],
        ),
    ];
    for &(name, what, def, types) in texts {
        match find(name) {
            None => {
                absent.push(format!("column `{name}` ({what})"));
                additions.push(format!("ADD COLUMN `{name}` {def}"));
            }
            Some(c)
                if !types.contains(&c.1.as_str())
                    || c.3 < 128
                    || c.6 != "utf8mb4"
                    || !c.5.eq_ignore_ascii_case("yes") =>
            {
                missing.push(format!("column `{name}` as {def}"));
                fixes.push(format!("MODIFY COLUMN `{name}` {def}"));
            }
            Some(_) => {}
        }
    }
    // A unique index on `lock_name` alone is what makes a second holder's INSERT fail.
    let unique: Option<String> = sqlx::query_scalar(
        "SELECT CAST(INDEX_NAME AS CHAR) FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
           AND (SUB_PART IS NULL OR SUB_PART >= 190) \
         GROUP BY INDEX_NAME \
         HAVING COUNT(*) = 1 AND LOWER(MAX(COLUMN_NAME)) = 'lock_name' \
         LIMIT 1",
    )
    .bind(table)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend_err)?;
    if unique.is_none() {
        missing.push("a UNIQUE index on `lock_name` alone".to_owned());
        fixes.push("ADD UNIQUE KEY `uk_lock_name` (`lock_name`)".to_owned());
    }
    if !missing.is_empty() {
        missing.extend(absent);
        fixes.extend(additions);
        return Err(backend_err(format!(
            "the lock table {t} exists but lacks {}; fix it with: ALTER TABLE {t} {}; \
             (or give dlock its own table with `?table=name` in the URL)",
            missing.join(", "),
            fixes.join(", ")
        )));
    }
    if additions.is_empty() {
        return Ok(());
    }
    add_columns(conn, &t, &absent, &additions).await
}

/// Adds the inspection columns a table made by an older dlock lacks: nullable, so that
/// version's clients and rows go on working. A user who may not alter the table gets the
/// statement to hand to an administrator.
async fn add_columns(
    conn: &mut MySqlConnection,
    t: &str,
    absent: &[String],
    additions: &[String],
) -> Result<()> {
    let alter = format!("ALTER TABLE {t} {}", additions.join(", "));
    // Bounded waits for the metadata lock (a long transaction on the table would otherwise
    // hold the ALTER, and every lock behind it).
    let altered = match sqlx::raw_sql(AssertSqlSafe(SESSION_LOCK_WAITS))
        .execute(&mut *conn)
        .await
    {
        Ok(_) => sqlx::raw_sql(AssertSqlSafe(alter.clone()))
            .execute(&mut *conn)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match altered {
        Ok(()) => {
            tracing::info!(target: "dlock", backend = super::NAME, statement = %alter, "added the inspection columns to a lock table made by an older dlock");
            Ok(())
        }
        // Error 1060, duplicate column: another client added it meanwhile.
        Err(e) if duplicate_column(&e) => Ok(()),
        Err(e) => Err(backend_err(format!(
            "the lock table {t} lacks {} (where dlock records each lock's owner and key, for \
             inspection), and adding them failed ({e}); have an administrator run: {alter}",
            absent.join(", ")
        ))),
    }
}

fn duplicate_column(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|d| d.number() == 1060)
}
