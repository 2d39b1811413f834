//! The MySQL / MariaDB backend (feature `mysql`): one row per held lock in a table.
//!
//! ```text
//! mysql://user[:password]@host[:port]/database[?table=name&<sqlx options>]
//! mariadb://...                                   (the same)
//! ```
//!
//! **A database lock is the slowest backend.** Every acquire and every release is a committed
//! write, so each costs an fsync of the redo log (with the default
//! `innodb_flush_log_at_trx_commit = 1`). Use it when the database is the one shared service you
//! have, or when the lock should live next to the data it protects; prefer Redis or ZooKeeper for
//! high lock rates. Waiters are served in order and woken without polling (see
//! [Waiting](#waiting)).
//!
//! # The table
//!
//! The classic lock table that many existing lock implementations use, `distributed_lock` (an
//! auto-increment `id`, a unique `lock_name`, the holder's `secret_key`), plus the lease end
//! `expire_at` and, for [inspection](#inspection), the holder's `owner` and the key as written
//! (`lock_key`). Its name is set with `?table=` (letters, digits, `_` and `$`, at most 64, always
//! quoted with backticks). It is created at [`connect`](MysqlBackend::connect) when missing:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS `distributed_lock` (
//!   id          BIGINT       NOT NULL AUTO_INCREMENT,  -- the fence
//!   lock_name   VARCHAR(255) NOT NULL,                 -- the mapped key (see below)
//!   secret_key  VARCHAR(64)  NOT NULL,                 -- the holder's token id (32 hex digits)
//!   create_time DATETIME     NOT NULL DEFAULT CURRENT_TIMESTAMP,
//!   expire_at   DATETIME(6)  NOT NULL DEFAULT '1000-01-01 00:00:00',  -- lease end, UTC
//!   owner       VARCHAR(128) CHARACTER SET utf8mb4 NULL,  -- who holds it (Locker::owner)
//!   lock_key    MEDIUMTEXT   CHARACTER SET utf8mb4 NULL,  -- the key, when lock_name is a digest
//!   PRIMARY KEY (id),
//!   UNIQUE KEY uk_lock_name (lock_name)
//! ) ENGINE=InnoDB
//! ```
//!
//! When a table of that name exists but lacks something dlock needs (for example a lock table
//! from another implementation, which has no `expire_at`), `connect` fails with [`Error::Backend`] naming what is
//! missing and the exact `ALTER TABLE` that fixes it, e.g.
//! ``ALTER TABLE `distributed_lock` ADD COLUMN `expire_at` DATETIME(6) NOT NULL DEFAULT '1000-01-01 00:00:00'``
//! (rows written by code that knows no lease then count as expired, so they can be taken over).
//!
//! A table made by an older dlock, without `owner` and `lock_key`, gets them at `connect`
//! (``ALTER TABLE `distributed_lock` ADD COLUMN `owner` VARCHAR(128) CHARACTER SET utf8mb4 NULL,
//! ADD COLUMN `lock_key` MEDIUMTEXT CHARACTER SET utf8mb4 NULL``, nullable, so rows and clients
//! of the older version go on working). A user not allowed to alter the table gets an
//! [`Error::Backend`] that names that statement for an administrator to run.
//!
//! # Statements
//!
//! All SQL is parameterized; the only text put into statements is the validated table name.
//! Lease arithmetic is done by the server (`UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND`), never
//! with the client's clock; UTC rather than `NOW(6)` so that neither the session `time_zone` nor a
//! DST change can move a lease.
//!
//! | step | statement | round trips |
//! |---|---|---|
//! | acquire | `INSERT (lock_name, secret_key, owner, lock_key, expire_at)`; the unique key makes a second holder's `INSERT` fail (duplicate key, error 1062) | one, when free |
//! | busy | `SELECT TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expire_at), secret_key, id WHERE lock_name = ?`: the holder's remaining lease (and whether the row is this acquisition's own: a hand-off or an `INSERT` whose answer was lost) | one per look |
//! | takeover | `DELETE WHERE lock_name = ? AND expire_at < UTC_TIMESTAMP(6)`, then the acquire `INSERT` again | two |
//! | release | `DELETE WHERE lock_name = ? AND secret_key = ?`; no row deleted: not ours | one |
//! | hand-off (a release with a local waiter) | one transaction: the release `DELETE`, then the waiter's acquire `INSERT` (a new `id`), `COMMIT` | four, one fsync |
//! | wait for the turn | `SELECT GET_LOCK(?, ?)` on a turn connection; `SELECT RELEASE_LOCK(?)` to give it up | one each |
//! | extend | `UPDATE SET expire_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND WHERE lock_name = ? AND secret_key = ? AND expire_at >= UTC_TIMESTAMP(6)`; no row changed: not ours | one |
//! | inspect | `SELECT owner, id, <lease left> WHERE lock_name = ? AND expire_at > UTC_TIMESTAMP(6)` | one |
//! | list | `SELECT ... WHERE lock_name LIKE ? ESCAPE '!' AND expire_at > UTC_TIMESTAMP(6)`: a range of the unique index (see [Inspection](#inspection)) | one |
//! | force release | the live holder's `secret_key`, then that holder's own release `DELETE` | two |
//!
//! Tokens are `<32 hex digits>.<owner>` ([`token_parts`]): `secret_key` keeps the 32-digit id,
//! which alone identifies the holder, and the same `INSERT` writes the owner into `owner`, so
//! recording it costs no round trip.
//!
//! A release after the lease ran out but before anyone took the key over still deletes the row
//! and succeeds: nobody else held the key in between.
//!
//! **Takeover.** A row whose `expire_at` has passed (its holder crashed or stalled) is deleted by
//! a statement whose condition is the expiry itself, so it can never remove a live lease, and the
//! next `INSERT` races for the key like any acquire. It is not a single statement, but it needs
//! none: each step is atomic, the expired holder's `extend` requires `expire_at >= now` and its
//! `release` requires its own token, so once expired it can neither revive nor remove the next
//! holder's row. Deleting and re-inserting (rather than an `ON DUPLICATE KEY UPDATE` in place)
//! is what gives the new holder a new `id`.
//!
//! **Fence.** The row's `AUTO_INCREMENT` `id`, returned by the winning `INSERT` itself (no extra
//! round trip). Every acquisition inserts a new row, so every holder gets a new id from the
//! table's counter, which only grows: fences strictly increase per key (and across keys of the
//! table) and an id is never handed out twice. Two caveats of InnoDB: MySQL before 8.0 (and
//! MariaDB before 10.2.4) recomputes the counter as `MAX(id) + 1` at a server restart, so ids of
//! deleted rows can come back after a restart there; `connect` reads `VERSION()` and refuses
//! such a server unless the URL says `?allow_fence_reset=true`. And the id is drawn at the start of the `INSERT`, before the unique-key check, so
//! with `innodb_autoinc_lock_mode` 1 or 2 an `INSERT` stalled between the two for longer than a
//! whole other holder's tenure could win with a smaller id than that holder's.
//!
//! # Keys
//!
//! `lock_name` must be at most 255 characters and is compared with the table's collation, which
//! may ignore case and trailing spaces (a table created by dlock uses the database default). So a key is
//! stored **as is** only when it has at most 190 bytes, all of `a-z 0-9 : _ - . /` (no capitals,
//! no spaces: distinct under any collation). Any other key is stored as a readable prefix (its
//! first 64 characters, capitals lowered, any other character as `_`), a `~`, and the hex SHA-256
//! of the whole key: `Order:42` becomes `order:42~` followed by 64 hex digits, the same as
//! `CONCAT('order:42~', SHA2('Order:42', 256))` in SQL, so an operator can find a key's row. A
//! stored-as-is name never contains `~`, so the two forms never meet; two keys can share a row
//! only through a SHA-256 collision, and even then they would merely exclude each other.
//! A hashed key is also written whole into `lock_key` (NULL when `lock_name` is the key itself),
//! so inspection shows every key as its holder wrote it.
//!
//! # Inspection
//!
//! [`inspect`](Backend::inspect) and [`list`](Backend::list) report live rows only
//! (`expire_at` after the server's `UTC_TIMESTAMP(6)`), with the owner, the `id` as the fence
//! and the lease left as the server counts it. `list(prefix)` reads one range of the unique
//! index on `lock_name`: the prefix mapped the way keys are (its first 64 characters, capitals
//! lowered, other characters as `_`), `LIKE` wildcards escaped, then `%`. That range holds
//! every key starting with the prefix, whether stored as is or hashed; the few other names it
//! may hold are dropped by comparing the key itself (`lock_key`, else `lock_name`) with the
//! prefix. So a listing costs what the locks under its prefix cost, and `""` reads all of them.
//! Rows written by an older dlock show no owner, and a hashed one shows its `lock_name` as its
//! key (the key was not kept).
//!
//! [`force_release`](Backend::force_release) reads the live holder's `secret_key` and deletes
//! the row exactly as that holder's release would, token-checked: if the key changed hands in
//! between, the new holder is left alone (and `false` returned). The old holder's next `extend`
//! finds no row and reports the lock lost. Waiters of the same Locker are told at once; waiters
//! elsewhere find the key free at their next look at the row (the one with the turn within its
//! polling, one queued behind a local holder within half a second, one waiting for the turn
//! within its `GET_LOCK` wait of at most 2 s).
//!
//! # Waiting
//!
//! The row is the lock and the fence; waiting only decides who tries the row next, and when.
//! Two levels, so that a key under contention is fair (per-task turns within a small factor of
//! each other, the releasing task not taking the key straight back) and handed on in about one
//! commit, not a polling interval:
//!
//! - **Within one Locker** (one `MysqlBackend`): the waiters of a key queue FIFO in the shared
//!   local waiter queue (`backend/waiters.rs`). An acquire goes straight to the row only when
//!   this Locker has nobody queued for the key; otherwise, and after its `INSERT` found the key
//!   held, it queues. A release by this Locker with a waiter queued **hands the key over**: one
//!   transaction deletes the releasing token's row (token-checked: nothing happens if it is not
//!   ours) and inserts the waiter's, so the key is never free in between, and the waiter gets a
//!   new `AUTO_INCREMENT` id: fences keep strictly increasing per key, as with any acquire. At
//!   most 16 hand-offs in a row, then the release lets the key go (and gives up the turn, below)
//!   so that other Lockers get theirs. A waiter that gives up or is dropped leaves the queue and
//!   passes a wake-up it did not use to the next; one dropped while the key is on its way to it
//!   has the grant given back by the releasing side. Hand-offs and releases of a key with local
//!   waiters run in a task of their own, so a dropped release never leaves one half done.
//! - **Across Lockers**: a **turn** per key, the user lock `GET_LOCK('dlock:<56 hex digits of
//!   SHA-256 over database, table and lock_name>')` (user-lock names are server-wide; 64
//!   characters at most). It is a wake-up and a queue only, never the lock: the front waiter of
//!   each Locker asks for the turn (`GET_LOCK` with a wait of at most 2 s, on a turn connection);
//!   the server queues the asks of all Lockers in arrival order and grants the next one when the
//!   Locker holding the turn lets it go (`RELEASE_LOCK`, after its `DELETE` committed: when its
//!   last local holder released without a hand-off, or after 16 hand-offs in a row). With the
//!   turn, the front waiter tries the row; it keeps the turn while its Locker holds the key and
//!   hands it on locally. So across 4 Lockers the key goes round them in order, about 17
//!   critical sections each, and every hand-off is one commit away.
//! - **Polling remains a bounded fallback**, never the way a release is learnt in the common
//!   case: the front waiter with the turn polls the row (first after ~1 ms, doubling up to 50
//!   ms, jittered, and never later than the holder's lease end, so an expired holder is taken
//!   over at once) only while the row is held by someone who has not got the turn (a first
//!   acquire that found the key free, a holder of a process that lost its turn connection);
//!   a `GET_LOCK` that waited its 2 s (or up to the holder's lease end, if sooner) lets the
//!   front waiter look at the row itself, so a turn held by a stalled process (`SIGSTOP`) only
//!   slows waiting down, never blocks it; a waiter queued behind a holder of its own Locker looks
//!   at the row every 500 ms (a force release from elsewhere); and a Locker waiting for more
//!   than 8 keys at once (the turn connections) waits for the others by polling alone.
//! - Nothing of this changes what is exclusive: every grant is the row's `INSERT` (alone, or in
//!   the hand-off transaction), release and extend stay token-checked, an expired row is taken
//!   over as before. A crashed process's turn goes with its sessions; a turn connection whose
//!   state is unknown (an error, a cut-off `GET_LOCK`) is closed, never reused, which frees its
//!   user lock on the server. `GET_LOCK` needs no privilege (see the README's least privileges).
//!
//! InnoDB deadlocks (error 1213) and lock-wait timeouts (1205), which an `INSERT` racing a
//! `DELETE` on the same key can meet, roll back only the statement (or the hand-off, which then
//! becomes a plain release); they are retried, never surfaced.
//!
//! # Read-write locks and semaphores
//! A second table, `<table>_holds`, with a row per hold (and per waiting writer) and a gate row
//! per key; each grant is decided in a transaction that locks the gate first (writer
//! preference, permit counts checked, fences from the table's `AUTO_INCREMENT`); waiters poll
//! the decision, and a release wakes the same Locker's waiters at once: see `shared.rs`.
//!
//! # Connections
//!
//! A sqlx pool of up to 16 connections, opened lazily, with no test query before each checkout
//! (that would be a round trip per lock) and a 5 s acquire timeout, so a dead server is an error,
//! not a hang; every statement is bounded by 10 s the same way. `connect` opens one connection
//! directly first: a refused or unreachable server fails `connect` at once with its cause.
//! Besides the pool, up to 8 turn connections, opened when a key is first waited for and kept
//! for the next wait (a `GET_LOCK` blocks its connection, so they are not the pool's); an
//! uncontended lock never opens one.
//!
//! The acquire `INSERT` runs in a task that keeps its connection until the server answers: an
//! acquire cut off while its `INSERT` waits on a row lock (its wait ran out, its future was
//! dropped) has the row deleted on that same connection once the `INSERT` commits, so no row
//! outlives an acquire that gave up.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};

use super::digest::sha256_hex;
use super::{jitter, token_parts, Backend, BoxFuture, Grant, Kind, LockInfo};
use crate::backend::tls::TlsParams;
use crate::backend::url_params::mask_password;
use crate::{Error, Result, MAX_OWNER_LEN};

mod inspect;
mod schema;
mod shared;
mod waiting;

const NAME: &str = "mysql";
/// The table used when the URL has no `?table=`.
pub const DEFAULT_TABLE: &str = "distributed_lock";
/// Keys of at most this many bytes of safe characters are stored as they are.
const MAX_PLAIN_LEN: usize = 190;
/// Characters of the readable prefix of a hashed key.
const PREFIX_LEN: usize = 64;
/// First poll interval of a waiter, doubled per busy poll up to [`MAX_POLL`].
const MIN_POLL: Duration = Duration::from_millis(1);
const MAX_POLL: Duration = Duration::from_millis(50);
/// How long a checkout from the pool may wait (also bounds reconnecting to a dead server).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on opening the first connection in `connect`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on any one statement, so a server that stops answering is an error, not a hang.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the task running an acquire `INSERT` waits for its outcome (the acquirer itself
/// waits at most [`STATEMENT_TIMEOUT`]).
const INSERT_OUTCOME_WAIT: Duration = Duration::from_secs(60);
/// Lock waits on the server, shorter than [`STATEMENT_TIMEOUT`] (see the pool's `after_connect`).
const SESSION_LOCK_WAITS: &str = "SET SESSION innodb_lock_wait_timeout = 5, lock_wait_timeout = 5";
/// Retries of a release or extend that met a deadlock or lock-wait timeout.
const MAX_RETRIES: u32 = 8;
/// Longest lease the server is asked for (DATETIME ends in year 9999).
const MAX_TTL: Duration = Duration::from_secs(1000 * 365 * 24 * 3600);

/// The MySQL / MariaDB [`Backend`]: see the [module docs](self) for the table, the statements,
/// the fence and the key mapping.
#[derive(Debug)]
pub struct MysqlBackend {
    pool: MySqlPool,
    table: String,
    sql: Arc<Statements>,
    /// Local waiter queues, hand-offs and the cross-Locker turn (see "Waiting").
    waiting: Arc<waiting::Waiting>,
    /// Read-write locks and semaphores: the holds table's statements, local waiters.
    shared: Arc<shared::Shared>,
}

/// The statements, with the quoted table name in them (built once at connect).
#[derive(Debug)]
struct Statements {
    insert: Arc<str>,
    probe: Arc<str>,
    take_over: Arc<str>,
    release: Arc<str>,
    extend: Arc<str>,
    /// The live holder's owner, fence and lease left, by `lock_name`.
    inspect: Arc<str>,
    /// Every live row whose `lock_name` matches a `LIKE` pattern (an index range).
    list: Arc<str>,
    /// The live holder's `secret_key`, for a force release.
    holder: Arc<str>,
}

impl Statements {
    fn new(table: &str) -> Self {
        let t = quote(table);
        let s = |sql: String| Arc::<str>::from(sql);
        Statements {
            insert: s(format!(
                "INSERT INTO {t} (lock_name, secret_key, owner, lock_key, expire_at) \
                 VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND)"
            )),
            probe: s(format!(
                "SELECT TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expire_at), secret_key, id \
                 FROM {t} WHERE lock_name = ?"
            )),
            take_over: s(format!(
                "DELETE FROM {t} WHERE lock_name = ? AND expire_at < UTC_TIMESTAMP(6)"
            )),
            release: s(format!(
                "DELETE FROM {t} WHERE lock_name = ? AND secret_key = ?"
            )),
            extend: s(format!(
                "UPDATE {t} SET expire_at = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND \
                 WHERE lock_name = ? AND secret_key = ? AND expire_at >= UTC_TIMESTAMP(6)"
            )),
            inspect: s(format!(
                "SELECT owner, id, TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expire_at) \
                 FROM {t} WHERE lock_name = ? AND expire_at > UTC_TIMESTAMP(6)"
            )),
            list: s(format!(
                "SELECT lock_name, lock_key, owner, id, \
                        TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expire_at) \
                 FROM {t} WHERE lock_name LIKE ? ESCAPE '!' AND expire_at > UTC_TIMESTAMP(6)"
            )),
            holder: s(format!(
                "SELECT secret_key FROM {t} WHERE lock_name = ? AND expire_at > UTC_TIMESTAMP(6)"
            )),
        }
    }
}

/// The table name between backticks. Only called on names that passed [`valid_table`].
fn quote(table: &str) -> String {
    format!("`{}`", table.replace('`', "``"))
}

fn valid_table(table: &str) -> bool {
    (1..=64).contains(&table.len())
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
        && !table.bytes().all(|b| b.is_ascii_digit())
}

type Query = sqlx::query::Query<'static, sqlx::MySql, sqlx::mysql::MySqlArguments>;

/// A query over one of the prebuilt statements (the table name in it is validated and quoted).
fn query(sql: &Arc<str>) -> Query {
    sqlx::query(AssertSqlSafe(sql.clone()))
}

fn backend_err(e: impl Into<crate::BoxError>) -> Error {
    Error::backend(NAME, e)
}

/// Runs `fut` (one statement) with [`STATEMENT_TIMEOUT`].
async fn bounded<T>(
    fut: impl std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
) -> std::result::Result<T, Failure> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::classify(e)),
        Err(_) => Err(Failure::Fatal(backend_err(format!(
            "the server did not answer within {STATEMENT_TIMEOUT:?}"
        )))),
    }
}

/// How a statement failed.
enum Failure {
    /// Error 1062: the key is held (only expected from the acquire `INSERT`).
    Duplicate,
    /// Error 1213 (deadlock) or 1205 (lock wait timeout): the statement was rolled back; retry.
    Retry(sqlx::Error),
    /// Anything else.
    Fatal(Error),
}

impl Failure {
    fn classify(e: sqlx::Error) -> Self {
        let number = e
            .as_database_error()
            .and_then(|d| d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
            .map(|d| d.number());
        match number {
            Some(1062) => Failure::Duplicate,
            Some(1213 | 1205) => Failure::Retry(e),
            _ => Failure::Fatal(backend_err(e)),
        }
    }

    fn into_error(self) -> Error {
        match self {
            Failure::Duplicate => backend_err("unexpected duplicate key (error 1062)"),
            Failure::Retry(e) => backend_err(e),
            Failure::Fatal(e) => e,
        }
    }
}

fn micros(d: Duration) -> i64 {
    d.min(MAX_TTL).as_micros() as i64
}

/// What the acquire `INSERT` records of its holder besides the name and the lease.
#[derive(Debug, Clone, Copy)]
struct Holder<'a> {
    /// The token's id, the `secret_key` that release and extend compare.
    id: &'a str,
    /// The owner the token carries, cut to [`MAX_OWNER_LEN`] characters (the column's size).
    owner: Option<&'a str>,
    /// The key as written, when `lock_name` is its digest (`lock_key`).
    key: Option<&'a str>,
}

impl<'a> Holder<'a> {
    fn new(key: &'a str, name: &str, token: &'a str) -> Self {
        let (id, owner) = token_parts(token);
        let owner = owner.map(|o| match o.char_indices().nth(MAX_OWNER_LEN) {
            Some((end, _)) => &o[..end],
            None => o,
        });
        Holder {
            id,
            owner,
            key: (name != key).then_some(key),
        }
    }
}

/// What the waiter learnt from one look at the key.
enum Look {
    /// The acquire `INSERT` won: the fence.
    Won(u64),
    /// The row holds this acquisition's own token already (a hand-off or an `INSERT` whose
    /// answer was lost): the fence, and the lease left.
    Mine(u64, Duration),
    /// Free or expired (and the expired row deleted): try again at once.
    Free,
    /// Held by another token for this long yet.
    Held(Duration),
    /// Deadlock or lock-wait timeout: try again after a short pause.
    Retry,
}

impl MysqlBackend {
    /// Connects to `url` (`mysql://user[:password]@host[:port]/database[?table=name]`; the
    /// `mariadb://` scheme is the same), and creates the lock table if it is missing.
    ///
    /// Query parameters other than `table` and `allow_fence_reset=true` (accept a server that
    /// resets AUTO_INCREMENT at restart, see "Fence" in the module docs) are sqlx's
    /// (`ssl-mode`, `charset`, ...).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL sqlx cannot parse, one without a database, or a table name
    /// other than 1 to 64 letters, digits, `_` and `$`; [`Error::Backend`] when the server cannot
    /// be reached (at once, or after 5 s when it does not answer), and when the table exists
    /// without the columns dlock needs (the message gives the `ALTER TABLE` that adds them).
    pub async fn connect(url: &str) -> Result<Self> {
        let (without_tls, tls) = TlsParams::take(url)?;
        let (mut options, table, allow_fence_reset) = parse_url(&without_tls, url)?;
        if tls.any() {
            super::tls::require_feature(url, true)?;
            let files = tls.read(url).await?;
            if let Some(ca) = files.ca {
                options = options.ssl_ca_from_pem(ca);
                if !super::url_params::has_param(url, &["ssl-mode", "sslmode"]) {
                    // A CA given means: check the server against it, name included.
                    options = options.ssl_mode(MySqlSslMode::VerifyIdentity);
                }
            }
            if let Some((cert, key)) = files.identity {
                options = options
                    .ssl_client_cert_from_pem(cert)
                    .ssl_client_key_from_pem(key);
            }
        }
        super::tls::require_feature(
            url,
            !matches!(
                options.get_ssl_mode(),
                MySqlSslMode::Disabled | MySqlSslMode::Preferred
            ),
        )?;
        // One connection opened directly: the pool would retry a refused connection until its
        // acquire timeout and then report only "timed out", hiding the cause.
        let host = format!("{}:{}", options.get_host(), options.get_port());
        let mut conn = super::sqlx_connect(
            NAME,
            "MySQL/MariaDB",
            url,
            &host,
            CONNECT_TIMEOUT,
            options.connect(),
        )
        .await?;
        let version: std::result::Result<String, _> =
            bounded(sqlx::query_scalar("SELECT VERSION()").fetch_one(&mut conn)).await;
        if let Ok(version) = version {
            if !allow_fence_reset && !autoinc_survives_restart(&version) {
                let _ = conn.close().await;
                return Err(backend_err(format!(
                    "the server at {} runs {version}, which resets AUTO_INCREMENT counters to \
                     MAX(id)+1 when it restarts, so fences could repeat after a restart; use \
                     MySQL 8.0+ or MariaDB 10.2.4+, or accept it with `?allow_fence_reset=true`",
                    mask_password(url)
                )));
            }
        }
        let checked =
            tokio::time::timeout(STATEMENT_TIMEOUT, schema::ensure_table(&mut conn, &table))
                .await
                .unwrap_or_else(|_| {
                    Err(backend_err(format!(
                        "checking the lock table: no answer within {STATEMENT_TIMEOUT:?}"
                    )))
                });
        let _ = conn.close().await;
        checked?;
        // The connections that wait for and hold the cross-Locker turn (see "Waiting").
        let signal_options = options.clone();
        let pool = MySqlPoolOptions::new()
            .max_connections(16)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            // The server gives up waiting for row and metadata locks before the client's
            // statement timeout does, so a stalled INSERT is rolled back there (error 1205,
            // retried) instead of committing later, after the client gave up: a row nobody owns.
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::raw_sql(AssertSqlSafe(SESSION_LOCK_WAITS))
                        .execute(conn)
                        .await
                        .map(|_| ())
                })
            })
            .connect_lazy_with(options);
        let sql = Arc::new(Statements::new(&table));
        let waiting = Arc::new(waiting::Waiting::new(
            pool.clone(),
            sql.clone(),
            signal_options,
            &table,
        ));
        Ok(MysqlBackend {
            pool,
            shared: Arc::new(shared::Shared::new(&table)),
            table,
            sql,
            waiting,
        })
    }

    /// The name of the lock table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The acquire `INSERT`, run by a task of its own that keeps its connection until the
    /// server has answered: when the acquire is cut off meanwhile (its wait ran out, its future
    /// was dropped), an `INSERT` that still commits (it was waiting on a row lock) is deleted on
    /// that same connection, after it. An undo on another connection could run before it and
    /// find nothing, leaving a row nobody owns until `expire_at`.
    async fn insert(
        &self,
        name: &str,
        holder: Holder<'_>,
        ttl_us: i64,
    ) -> std::result::Result<u64, Failure> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (pool, insert, undo) = (
            self.pool.clone(),
            self.sql.insert.clone(),
            self.sql.release.clone(),
        );
        let (name, token) = (name.to_owned(), holder.id.to_owned());
        let (owner, key) = (
            holder.owner.map(str::to_owned),
            holder.key.map(str::to_owned),
        );
        tokio::spawn(async move {
            let mut conn = match bounded(pool.acquire()).await {
                Ok(conn) => conn,
                Err(f) => {
                    let _ = tx.send(Err(f));
                    return;
                }
            };
            // A long bound only: the server gives up lock waits after 5 s itself, and the
            // outcome must be known before the connection is let go.
            let execute = query(&insert)
                .bind(&name)
                .bind(&token)
                .bind(&owner)
                .bind(&key)
                .bind(ttl_us)
                .execute(&mut *conn);
            let outcome = match tokio::time::timeout(INSERT_OUTCOME_WAIT, execute).await {
                Ok(done) => done.map(|d| d.last_insert_id()).map_err(Failure::classify),
                Err(_) => Err(Failure::Fatal(backend_err(format!(
                    "the server did not answer the INSERT within {INSERT_OUTCOME_WAIT:?}"
                )))),
            };
            let won = outcome.is_ok();
            if tx.send(outcome).is_err() && won {
                let undone = query(&undo).bind(&name).bind(&token).execute(&mut *conn);
                match bounded(undone).await {
                    Ok(_) => {
                        tracing::debug!(target: "dlock", backend = NAME, key = %name, "undid the INSERT of an acquire cut off while it waited")
                    }
                    Err(f) => {
                        tracing::warn!(target: "dlock", backend = NAME, key = %name, error = %f.into_error(), "could not undo the INSERT of a cut-off acquire; its row expires with its lease")
                    }
                }
            }
        });
        match tokio::time::timeout(STATEMENT_TIMEOUT, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(Failure::Fatal(backend_err(
                "the INSERT task ended without an answer",
            ))),
            Err(_) => Err(Failure::Fatal(backend_err(format!(
                "the server did not answer within {STATEMENT_TIMEOUT:?}"
            )))),
        }
    }

    /// One look at the key: the `INSERT` if `try_insert`, else the busy probe; an expired holder
    /// is deleted on the way.
    async fn look(
        &self,
        key: &str,
        name: &str,
        holder: Holder<'_>,
        ttl_us: i64,
        try_insert: bool,
    ) -> Result<Look> {
        if try_insert {
            match self.insert(name, holder, ttl_us).await {
                Ok(fence) => return Ok(Look::Won(fence)),
                Err(Failure::Duplicate) => {}
                Err(Failure::Retry(_)) => return Ok(Look::Retry),
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
        let probe = sqlx::query_as::<_, (i64, String, i64)>(AssertSqlSafe(self.sql.probe.clone()))
            .bind(name)
            .fetch_optional(&self.pool);
        let (left_us, secret, id) = match bounded(probe).await {
            Ok(Some(row)) => row,
            Ok(None) => return Ok(Look::Free),
            Err(Failure::Retry(_)) => return Ok(Look::Retry),
            Err(f) => return Err(f.into_error()),
        };
        if secret == holder.id && left_us > 0 {
            return Ok(Look::Mine(id as u64, Duration::from_micros(left_us as u64)));
        }
        if left_us > 0 {
            return Ok(Look::Held(Duration::from_micros(left_us as u64)));
        }
        let take_over = query(&self.sql.take_over).bind(name).execute(&self.pool);
        match bounded(take_over).await {
            Ok(done) => {
                if done.rows_affected() > 0 {
                    tracing::debug!(target: "dlock", key, backend = NAME, "took over an expired lease (deleted its row)");
                }
                Ok(Look::Free)
            }
            Err(Failure::Retry(_)) => Ok(Look::Retry),
            Err(f) => Err(f.into_error()),
        }
    }

    /// Runs a token-checked statement, retrying deadlocks and lock-wait timeouts; `true` when it
    /// touched a row.
    async fn checked(&self, what: &str, run: impl Fn() -> Query) -> Result<bool> {
        checked(&self.pool, what, run).await
    }
}

/// Runs a token-checked statement on `pool`, retrying deadlocks and lock-wait timeouts; `true`
/// when it touched a row.
async fn checked(pool: &MySqlPool, what: &str, run: impl Fn() -> Query) -> Result<bool> {
    let mut attempt = 0;
    loop {
        match bounded(run().execute(pool)).await {
            Ok(done) => return Ok(done.rows_affected() > 0),
            Err(Failure::Retry(e)) if attempt < MAX_RETRIES => {
                attempt += 1;
                tracing::debug!(target: "dlock", backend = NAME, error = %e, "{what} met a deadlock or lock wait timeout; retrying");
                tokio::time::sleep(jitter(MIN_POLL, MIN_POLL * (1 << attempt.min(6)))).await;
            }
            Err(f) => return Err(f.into_error()),
        }
    }
}

impl Backend for MysqlBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn acquire<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> BoxFuture<'a, Result<Option<Grant>>> {
        if kind != Kind::Exclusive {
            return Box::pin(self.acquire_shared(key, kind, token, ttl, deadline));
        }
        Box::pin(self.acquire_inner(key, token, ttl, deadline))
    }

    fn release<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        if kind != Kind::Exclusive {
            return Box::pin(self.release_shared(key, kind, token));
        }
        Box::pin(self.release_inner(key, token))
    }

    fn extend<'a>(
        &'a self,
        key: &'a str,
        kind: Kind,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        if kind != Kind::Exclusive {
            return Box::pin(self.extend_shared(key, kind, token, ttl));
        }
        Box::pin(async move {
            let name = lock_name(key);
            let id = token_parts(token).0;
            let ttl_us = micros(ttl);
            let extended = self
                .checked("extend", || {
                    query(&self.sql.extend).bind(ttl_us).bind(&*name).bind(id)
                })
                .await?;
            self.waiting.extended(&name, id, ttl, extended).await;
            Ok(extended)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Bounded: a server that stopped answering must not hold the program's exit.
            let _ = tokio::time::timeout(CONNECT_TIMEOUT, self.pool.close()).await;
            self.waiting.close();
        })
    }

    fn inspect<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<LockInfo>>> {
        Box::pin(self.inspect_inner(key))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<LockInfo>>> {
        Box::pin(self.list_inner(prefix))
    }

    fn force_release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.force_release_inner(key))
    }
}

/// Splits `?table=` off `url` and parses the rest with sqlx; `shown` is the URL as the user
/// wrote it, for messages.
fn parse_url(url: &str, shown: &str) -> Result<(MySqlConnectOptions, String, bool)> {
    let bad = |reason: String| Error::InvalidUrl {
        url: mask_password(shown),
        reason,
    };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut table = None;
    let mut allow_fence_reset = false;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("table", name)) => table = Some(name.to_owned()),
            Some(("allow_fence_reset", v)) => allow_fence_reset = v == "true",
            _ => rest.push(pair),
        }
    }
    let table = table.unwrap_or_else(|| DEFAULT_TABLE.to_owned());
    if !valid_table(&table) {
        return Err(bad(format!(
            "table name {table:?} is not accepted: use 1 to 64 ASCII letters, digits, `_` or `$`, \
             e.g. `?table={DEFAULT_TABLE}`"
        )));
    }
    let sqlx_url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let options = MySqlConnectOptions::from_str(&sqlx_url).map_err(|e| {
        bad(format!(
            "{e}; expected mysql://user[:password]@host[:port]/database[?table=name]"
        ))
    })?;
    if options.get_database().is_none() {
        return Err(bad(
            "no database given; name the one holding the lock table, e.g. \
             mysql://root@127.0.0.1:3306/test"
                .into(),
        ));
    }
    Ok((options, table, allow_fence_reset))
}

/// Whether the server keeps its AUTO_INCREMENT counters across a restart: MySQL 8.0+ and
/// MariaDB 10.2.4+ persist them; older servers recompute `MAX(id) + 1` at start-up, so the ids
/// (the fences) of deleted rows come back. `version` is `SELECT VERSION()`.
fn autoinc_survives_restart(version: &str) -> bool {
    // MariaDB may report a "5.5.5-" prefix for old clients' sake.
    let version = version.strip_prefix("5.5.5-").unwrap_or(version);
    let numbers: Vec<u32> = version
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    let v = |i: usize| numbers.get(i).copied().unwrap_or(0);
    let triple = (v(0), v(1), v(2));
    if version.to_ascii_lowercase().contains("mariadb") {
        triple >= (10, 2, 4)
    } else {
        triple >= (8, 0, 0)
    }
}

/// The `lock_name` stored for `key` (see the module docs, "Keys").
pub fn lock_name(key: &str) -> Cow<'_, str> {
    if !key.is_empty() && key.len() <= MAX_PLAIN_LEN && key.chars().all(safe) {
        return Cow::Borrowed(key);
    }
    let mut name: String = key.chars().take(PREFIX_LEN).map(readable).collect();
    name.push('~');
    name.push_str(&sha256_hex(key.as_bytes()));
    Cow::Owned(name)
}

/// The characters a key stored as is may have: distinct under any collation.
fn safe(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | ':' | '_' | '-' | '.' | '/')
}

/// How a character appears in the readable prefix of a hashed name.
fn readable(c: char) -> char {
    let c = c.to_ascii_lowercase();
    if safe(c) {
        c
    } else {
        '_'
    }
}

#[cfg(test)]
mod tests {
    use super::autoinc_survives_restart;

    #[test]
    fn servers_that_keep_auto_increment_across_a_restart() {
        for (version, keeps) in [
            ("10.11.6-MariaDB-0+deb12u1", true),
            ("5.5.5-10.11.6-MariaDB", true),
            ("10.2.4-MariaDB", true),
            ("10.2.3-MariaDB-log", false),
            ("10.1.48-MariaDB", false),
            ("8.0.36", true),
            ("8.4.0-commercial", true),
            ("5.7.44-log", false),
            ("5.6.51", false),
        ] {
            assert_eq!(autoinc_survives_restart(version), keeps, "{version}");
        }
    }
}
