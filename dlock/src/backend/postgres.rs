//! The PostgreSQL backend: a lock table with a lease in server time, a fence from a sequence,
//! and waiting by `LISTEN`/`NOTIFY`.
//!
//! Enabled by the cargo feature `postgres` (sqlx, PostgreSQL driver, on tokio).
//!
//! # Why a table and not advisory locks
//! Advisory locks (`pg_advisory_lock`) live in a session: they need one server connection held
//! per lock for as long as it is held (a pool of 16 connections then holds at most 16 locks),
//! they vanish silently with a dropped connection or a PgBouncer in transaction mode, they have
//! no lease (a stalled holder keeps the lock for ever) and no fence. A row is held by nobody's
//! connection: any number of locks over a small pool, a lease the server measures, a token
//! that checks every release and renewal, and a fence.
//!
//! # The table
//! Created at [`connect`](PostgresBackend::connect) when missing (the name is set with
//! `?table=`; letters, digits and `_`, at most 57):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS dlock_locks (
//!   lock_name  TEXT COLLATE "C" PRIMARY KEY,  -- the mapped key (see Keys); byte order
//!   secret_key TEXT NOT NULL,          -- the holder's token id (32 hex digits)
//!   owner      TEXT,                   -- who holds it (Locker::owner)
//!   lock_key   BYTEA,                  -- the key (UTF-8), when lock_name is its digest
//!   fence      BIGINT,                 -- the holder's fence
//!   expire_at  TIMESTAMPTZ NOT NULL    -- lease end, server time
//! );
//! CREATE SEQUENCE IF NOT EXISTS dlock_locks_fence;   -- the fences
//! ```
//!
//! `lock_name` is compared byte by byte (`COLLATE "C"`), so that a prefix of keys is one range
//! of the primary key's index (see Inspection). A table made by an older dlock, without
//! `owner`, `lock_key` and `fence` and with the database's collation, is brought up to this at
//! `connect` by its owner's `ALTER TABLE dlock_locks ADD COLUMN IF NOT EXISTS owner TEXT,
//! ADD COLUMN IF NOT EXISTS lock_key BYTEA, ADD COLUMN IF NOT EXISTS fence BIGINT, ALTER COLUMN
//! lock_name TYPE TEXT COLLATE "C"` (nullable columns: that version's clients and rows go on
//! working). A user who may not alter the table gets an [`Error::Backend`] naming the statement
//! for an administrator to run; when only the collation is left to change, it gets a warning
//! instead (locks work, `list` then reads the whole table).
//!
//! # Statements (all parameterized; lease arithmetic by the server's `clock_timestamp()`)
//!
//! | step | statement | round trips |
//! |---|---|---|
//! | acquire | `WITH turn AS (SELECT pg_advisory_xact_lock(..)), drawn AS (SELECT nextval(fence sequence) FROM turn) INSERT ... SELECT ... FROM drawn ON CONFLICT (lock_name) DO UPDATE SET secret_key, owner, lock_key, fence, expire_at WHERE the row's expire_at < clock_timestamp() RETURNING fence`: a free key and an expired holder are taken in one statement; a live holder returns no row | one |
//! | busy | the holder's remaining lease, to bound the fallback poll | one per poll |
//! | release | `WITH d AS (DELETE ... WHERE lock_name = $1 AND secret_key = $2 RETURNING lock_name) SELECT pg_notify(channel, lock_name) FROM d` | one |
//! | extend | `UPDATE ... SET expire_at = clock_timestamp() + ttl WHERE lock_name, secret_key match AND expire_at >= clock_timestamp()` | one |
//! | inspect | `SELECT owner, fence, <lease left> WHERE lock_name = $1 AND expire_at > clock_timestamp()` | one |
//! | list | `SELECT ... WHERE (lock_name in one byte range OR in another) AND expire_at > clock_timestamp()` (see Inspection) | one |
//! | force release | the live holder's `secret_key`, then that holder's own release (with its notice) | two |
//!
//! Tokens are `<32 hex digits>.<owner>` ([`token_parts`]): `secret_key` keeps the id, which
//! alone identifies the holder, and the acquire statement writes the owner into `owner`, so
//! recording it costs no round trip.
//!
//! **Fence.** `nextval` of the table's sequence, stored in the row's `fence` and returned by the
//! acquire statement. It is drawn while the statement holds a transaction-scoped advisory lock
//! on the key (`pg_advisory_xact_lock(<table's class>, hashtext(lock_name))`, released at the
//! statement's commit): every acquire of a key draws only after the previous one of that key
//! committed, so fences strictly increase per key, whether the key was free or taken over. (Drawn
//! without it, a statement stalled between its draw and its insert could let a whole other
//! tenure pass and then write a smaller fence.) The advisory lock lives for one statement, not
//! for the lock's tenure (see above why a lock is not an advisory lock); keys sharing a hash
//! merely take turns drawing. A sequence never hands a value out twice and never goes back, also
//! across a server restart or crash (values may be skipped, which fences allow). An older dlock
//! draws without the advisory lock (after its insert, storing nothing), so the guarantee holds
//! once every client of a table runs this version.
//!
//! # Waiting
//! Each Locker keeps one `LISTEN` connection on the channel `<table>_released`; a release's
//! `pg_notify` (delivered at commit) wakes one local waiter of that key. A waiter also polls,
//! jittered, bounded by the holder's remaining lease (an expired holder sends no notice) and
//! backing off to 250 ms, so a lost notice costs little. Behind PgBouncer in transaction
//! mode notices do not arrive (`LISTEN` needs a session): locks still work, by polling alone
//! (not tested here: no PgBouncer on the test machine).
//!
//! # Keys
//! `lock_name` is the key as it is when it has at most 512 bytes and no control characters
//! NUL or U+0001; any other key becomes U+0001, a readable prefix (64 characters), `~` and the
//! hex SHA-256 of the key. Only mapped names start with U+0001, so distinct keys stay distinct.
//! A mapped key is also written whole, as UTF-8, into `lock_key` (`BYTEA`: a key may hold NUL,
//! which `TEXT` cannot; NULL when `lock_name` is the key itself), so inspection shows every key
//! as its holder wrote it.
//!
//! # Inspection
//! [`inspect`](Backend::inspect) and [`list`](Backend::list) report live rows only
//! (`expire_at` after `clock_timestamp()`), with the owner, the stored fence and the lease left
//! as the server counts it. `list(prefix)` reads two ranges of the primary key's index, in byte
//! order: names from the prefix up to the prefix with its last character incremented (keys
//! stored as they are), and the same for U+0001 and the prefix's first 64 characters mapped as
//! in a mapped name (mapped keys). Every key starting with the prefix lies in one of them; the
//! few other names they may hold are dropped by comparing the key itself (`lock_key`, else
//! `lock_name`) with the prefix. So a listing costs what the locks under its prefix cost, and
//! `""` reads all of them. Rows written by an older dlock show no owner and no fence, and a
//! mapped one shows its `lock_name` as its key (the key was not kept).
//!
//! [`force_release`](Backend::force_release) reads the live holder's `secret_key` and runs that
//! holder's own release: token-checked, so a holder that took the key meanwhile is left alone
//! (and `false` returned), and with its `pg_notify`, so a waiter is woken at once. The old
//! holder's next `extend` finds no row and reports the lock lost.
//!
//! # Cancellation
//! As on MySQL, the acquire statement runs in a task that keeps its connection until the server
//! answers: an acquire cut off while its `INSERT` waits on a row lock has the row deleted on that
//! connection once the `INSERT` committed, so no row outlives an acquire that gave up. The same
//! when the task stops waiting for the answer (after 60 s) while the statement may still
//! commit; and an acquire gone before its statement ran has none run.
//!
//! # Read-write locks and semaphores
//! A second table, `<table>_holds`, with a row per hold (and per waiting writer), decided under a
//! per-key transaction-scoped advisory lock and woken by the same notices: see `shared.rs`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use tokio::sync::Notify;

use super::digest::{sha256, sha256_hex};
use super::{
    jitter, remaining, token_parts, within_wait, Backend, BoxFuture, Grant, Kind, LockInfo,
};
use crate::backend::tls::TlsParams;
use crate::backend::url_params::mask_password;
use crate::{Error, Result, MAX_OWNER_LEN};

mod inspect;
mod schema;
mod shared;

const NAME: &str = "postgres";
/// The table used when the URL has no `?table=`.
pub const DEFAULT_TABLE: &str = "dlock_locks";
/// Keys of at most this many bytes (and no NUL or U+0001) are stored as they are.
const MAX_PLAIN_LEN: usize = 512;
const PREFIX_LEN: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the task running an acquire statement waits for its outcome.
const INSERT_OUTCOME_WAIT: Duration = Duration::from_secs(60);
const MIN_POLL: Duration = Duration::from_millis(5);
const MAX_POLL: Duration = Duration::from_millis(250);
/// Longest lease the server is asked for.
const MAX_TTL: Duration = Duration::from_secs(1000 * 365 * 24 * 3600);
/// Run on every connection dlock opens. Server-side lock waits shorter than the client's
/// statement bound (see MySQL's reason). READ COMMITTED whatever the role's or database's
/// default: a read-write or semaphore decision is a second statement after its advisory lock
/// and must see what committed while it waited for that lock (a fresh snapshot per statement);
/// under REPEATABLE READ or SERIALIZABLE it would keep the snapshot of before the wait, and two
/// writers could both be granted (see `shared.rs`).
const SESSION_SETTINGS: &str =
    "SET lock_timeout = '5s'; SET default_transaction_isolation = 'read committed'";

/// The PostgreSQL [`Backend`]; see the [module docs](self).
#[derive(Debug)]
pub struct PostgresBackend {
    pool: PgPool,
    table: String,
    sql: Arc<Statements>,
    waiters: Arc<Waiters>,
    /// Dropped with the backend (or sent to by `close`): ends the `LISTEN` task.
    listening: tokio::sync::watch::Sender<()>,
}

/// The statements, with the quoted table name in them (built once at connect).
#[derive(Debug)]
struct Statements {
    acquire: String,
    probe: String,
    release: String,
    extend: String,
    /// The live holder's owner, fence and lease left, by `lock_name`.
    inspect: String,
    /// Every live row in two byte ranges of `lock_name` (see the module docs, "Inspection").
    list_ranges: String,
    /// Every live row (`list("")`).
    list_all: String,
    /// The live holder's `secret_key`, for a force release.
    holder: String,
    channel: String,
}

/// The lease left on a row in microseconds, as the server counts it.
const LEFT_US: &str = "(extract(epoch FROM (expire_at - clock_timestamp())) * 1000000)::bigint";

impl Statements {
    fn new(table: &str) -> Self {
        let t = quote(table);
        let seq = quote(&format!("{table}_fence"));
        let channel = format!("{table}_released");
        let class = lock_class(table);
        let ranges = "(lock_name COLLATE \"C\" >= $1 AND lock_name COLLATE \"C\" < $2) \
                      OR (lock_name COLLATE \"C\" >= $3 AND lock_name COLLATE \"C\" < $4)";
        let listed = "lock_name, lock_key, owner, fence";
        Statements {
            acquire: format!(
                "WITH turn AS (SELECT pg_advisory_xact_lock({class}, hashtext($1::text))), \
                      drawn AS (SELECT nextval('{seq}') AS fence FROM turn) \
                 INSERT INTO {t} AS l (lock_name, secret_key, owner, lock_key, fence, expire_at) \
                 SELECT $1::text, $2::text, $3::text, $4::bytea, drawn.fence, \
                        clock_timestamp() + ($5::bigint * interval '1 microsecond') FROM drawn \
                 ON CONFLICT (lock_name) DO UPDATE \
                 SET secret_key = EXCLUDED.secret_key, owner = EXCLUDED.owner, \
                     lock_key = EXCLUDED.lock_key, fence = EXCLUDED.fence, \
                     expire_at = EXCLUDED.expire_at \
                 WHERE l.expire_at < clock_timestamp() \
                 RETURNING l.fence"
            ),
            probe: format!(
                "SELECT (extract(epoch FROM (expire_at - clock_timestamp())) * 1000000)::bigint \
                 FROM {t} WHERE lock_name = $1"
            ),
            release: format!(
                "WITH d AS (DELETE FROM {t} WHERE lock_name = $1 AND secret_key = $2 \
                 RETURNING lock_name) SELECT pg_notify('{channel}', lock_name) FROM d"
            ),
            extend: format!(
                "UPDATE {t} SET expire_at = clock_timestamp() + ($1::bigint * interval '1 microsecond') \
                 WHERE lock_name = $2 AND secret_key = $3 AND expire_at >= clock_timestamp()"
            ),
            inspect: format!(
                "SELECT owner, fence, {LEFT_US} FROM {t} \
                 WHERE lock_name = $1 AND expire_at > clock_timestamp()"
            ),
            list_ranges: format!(
                "SELECT {listed}, {LEFT_US} FROM {t} \
                 WHERE ({ranges}) AND expire_at > clock_timestamp()"
            ),
            list_all: format!(
                "SELECT {listed}, {LEFT_US} FROM {t} WHERE expire_at > clock_timestamp()"
            ),
            holder: format!(
                "SELECT secret_key FROM {t} WHERE lock_name = $1 AND expire_at > clock_timestamp()"
            ),
            channel,
        }
    }
}

/// The table name between double quotes (only called on names that passed [`valid_table`]).
fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

fn valid_table(table: &str) -> bool {
    // 63 bytes is PostgreSQL's identifier limit; the sequence adds "_fence".
    (1..=57).contains(&table.len())
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !table.as_bytes()[0].is_ascii_digit()
}

/// The first key of the acquire statement's advisory lock: the table's own class (from its name,
/// so tables do not share turns), positive.
fn lock_class(table: &str) -> i32 {
    let digest = sha256(format!("dlock:{table}").as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) & i32::MAX
}

/// A pooled connection within [`STATEMENT_TIMEOUT`] (for the tasks that run a decision and
/// keep the connection until the server answered).
async fn pooled(pool: &PgPool) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, pool.acquire()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(backend_err(e)),
        Err(_) => Err(backend_err(format!(
            "no pooled connection within {STATEMENT_TIMEOUT:?}"
        ))),
    }
}

fn backend_err(e: impl Into<crate::BoxError>) -> Error {
    Error::backend(NAME, e)
}

fn micros(d: Duration) -> i64 {
    d.min(MAX_TTL).as_micros() as i64
}

/// Local waiters per lock name: a notice wakes one of them.
#[derive(Debug, Default)]
struct Waiters {
    by_name: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Waiters {
    fn join(&self, name: &str) -> Arc<Notify> {
        let mut by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        by_name.entry(name.to_owned()).or_default().clone()
    }

    /// Forgets `name` when no waiter holds its Notify any more.
    fn leave(&self, name: &str, notify: Arc<Notify>) {
        let mut by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        drop(notify);
        if by_name.get(name).is_some_and(|n| Arc::strong_count(n) == 1) {
            by_name.remove(name);
        }
    }

    fn wake_one(&self, name: &str) {
        let by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_name.get(name) {
            if shared::wakes_all(name) {
                // A read-write or semaphore release may admit several waiters.
                n.notify_waiters();
            } else {
                n.notify_one();
            }
        }
    }

    /// After the notice connection dropped: notices may have been lost.
    fn wake_all(&self) {
        let by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        for n in by_name.values() {
            n.notify_waiters();
            n.notify_one();
        }
    }
}

/// A place among the local waiters of a name, left on drop (also when the acquire is dropped).
struct WaitPlace<'a> {
    waiters: &'a Waiters,
    name: &'a str,
    notify: Option<Arc<Notify>>,
}

impl Drop for WaitPlace<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.notify.take() {
            self.waiters.leave(self.name, n);
        }
    }
}

/// Receives release notices until the backend is dropped; a dropped connection wakes every
/// waiter (a notice may have been lost) and is reopened by `PgListener`.
async fn listen(
    mut listener: PgListener,
    waiters: Weak<Waiters>,
    mut closed: tokio::sync::watch::Receiver<()>,
) {
    loop {
        let next = tokio::select! {
            n = listener.try_recv() => n,
            _ = closed.changed() => return,
        };
        let Some(waiters) = waiters.upgrade() else {
            return;
        };
        match next {
            Ok(Some(notice)) => waiters.wake_one(notice.payload()),
            Ok(None) => waiters.wake_all(), // reconnected: notices may be lost
            Err(e) => {
                tracing::debug!(target: "dlock", backend = NAME, error = %e, "notice connection failed; retrying");
                waiters.wake_all();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// What the acquire statement records of its holder besides the name and the lease.
#[derive(Debug, Clone)]
struct Holder {
    /// The token's id, the `secret_key` that release and extend compare.
    id: String,
    /// The owner the token carries: at most [`MAX_OWNER_LEN`] characters, NUL (which `TEXT`
    /// cannot hold) as `?`.
    owner: Option<String>,
    /// The key as written, when `lock_name` is its digest (`lock_key`).
    key: Option<Vec<u8>>,
}

impl Holder {
    fn new(key: &str, name: &str, token: &str) -> Self {
        let (id, owner) = token_parts(token);
        Holder {
            id: id.to_owned(),
            owner: owner.map(|o| {
                o.chars()
                    .take(MAX_OWNER_LEN)
                    .map(|c| if c == '\0' { '?' } else { c })
                    .collect()
            }),
            key: (name != key).then(|| key.as_bytes().to_vec()),
        }
    }
}

/// What one look at the key found.
enum Look {
    Won(u64),
    Held(Option<Duration>),
}

impl PostgresBackend {
    /// Connects to `postgres://user[:password]@host[:port]/database[?table=name]` (also
    /// `postgresql://`), and creates the lock table and its fence sequence if missing. Other
    /// query parameters are sqlx's (`sslmode`, ...).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL sqlx cannot parse or a bad table name;
    /// [`Error::Backend`] when the server cannot be reached (the message says whether the
    /// connection was refused or the server did not answer like PostgreSQL).
    pub async fn connect(url: &str) -> Result<Self> {
        let (without_tls, tls) = TlsParams::take(url)?;
        let (mut options, table) = parse_url(&without_tls, url)?;
        if tls.any() {
            super::tls::require_feature(url, true)?;
            let files = tls.read(url).await?;
            if let Some(ca) = files.ca {
                options = options.ssl_root_cert_from_pem(ca);
                if !super::url_params::has_param(url, &["sslmode", "ssl-mode"]) {
                    // A CA given means: check the server against it, name included.
                    options = options.ssl_mode(PgSslMode::VerifyFull);
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
                PgSslMode::Disable | PgSslMode::Allow | PgSslMode::Prefer
            ),
        )?;
        let host = format!("{}:{}", options.get_host(), options.get_port());
        let mut conn = super::sqlx_connect(
            NAME,
            "PostgreSQL",
            url,
            &host,
            CONNECT_TIMEOUT,
            options.connect(),
        )
        .await?;
        let sql = Arc::new(Statements::new(&table));
        let checked = schema::ensure_table(&mut conn, &table).await;
        let _ = conn.close().await;
        checked?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(0)
            .acquire_timeout(CONNECT_TIMEOUT)
            .test_before_acquire(false)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::raw_sql(SESSION_SETTINGS)
                        .execute(conn)
                        .await
                        .map(|_| ())
                })
            })
            .connect_lazy_with(options);
        let waiters = Arc::new(Waiters::default());
        let (closed_tx, closed_rx) = tokio::sync::watch::channel(());
        let mut listener = PgListener::connect_with(&pool)
            .await
            .map_err(|e| backend_err(format!("opening the notice connection: {e}")))?;
        listener
            .listen(&sql.channel)
            .await
            .map_err(|e| backend_err(format!("LISTEN {}: {e}", sql.channel)))?;
        tokio::spawn(listen(listener, Arc::downgrade(&waiters), closed_rx));
        Ok(PostgresBackend {
            pool,
            table,
            sql,
            waiters,
            listening: closed_tx,
        })
    }

    /// The name of the lock table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The acquire statement in a task that keeps its connection until answered (see the
    /// module docs, "Cancellation"): the fence when won, `None` when held. Skipped when the
    /// caller is gone before it runs; the row is deleted on that connection when the caller is
    /// gone by the answer or no answer came within [`INSERT_OUTCOME_WAIT`] (the statement may
    /// still commit: the connection finishes it before the `DELETE`).
    async fn try_take(&self, name: &str, holder: &Holder, ttl_us: i64) -> Result<Option<u64>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (pool, sql) = (self.pool.clone(), self.sql.clone());
        let (name, holder) = (name.to_owned(), holder.clone());
        tokio::spawn(async move {
            let mut conn = match pooled(&pool).await {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            if tx.is_closed() {
                return; // the acquire is gone: nothing to take for it
            }
            let run = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.acquire.clone()))
                .bind(&name)
                .bind(&holder.id)
                .bind(&holder.owner)
                .bind(&holder.key)
                .bind(ttl_us)
                .fetch_optional(&mut *conn);
            let answer = tokio::time::timeout(INSERT_OUTCOME_WAIT, run).await;
            let unanswered = answer.is_err();
            let outcome = match answer {
                Ok(Ok(fence)) => Ok(fence.and_then(|f| u64::try_from(f).ok())),
                // A lock wait timed out on the server (55P03) or a deadlock was broken (40P01):
                // the statement was rolled back; the key counts as held and is looked at again.
                Ok(Err(sqlx::Error::Database(e)))
                    if matches!(e.code().as_deref(), Some("55P03" | "40P01")) =>
                {
                    Ok(None)
                }
                Ok(Err(e)) => Err(backend_err(e)),
                Err(_) => Err(backend_err("the server did not answer the acquire")),
            };
            let won = matches!(outcome, Ok(Some(_)));
            // Unanswered: the statement may yet commit a row that nobody holds; the caller's
            // own release would run on another connection, possibly before that commit.
            if (tx.send(outcome).is_err() && won) || unanswered {
                let undo = sqlx::query(AssertSqlSafe(sql.release.clone()))
                    .bind(&name)
                    .bind(&holder.id)
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

    async fn look(&self, name: &str, holder: &Holder, ttl_us: i64) -> Result<Look> {
        if let Some(fence) = self.try_take(name, holder, ttl_us).await? {
            return Ok(Look::Won(fence));
        }
        let left: Option<i64> = bounded(
            sqlx::query_scalar(AssertSqlSafe(self.sql.probe.clone()))
                .bind(name)
                .fetch_optional(&self.pool),
        )
        .await?;
        Ok(Look::Held(left.map(|us| {
            Duration::from_micros(u64::try_from(us).unwrap_or(0))
        })))
    }

    async fn acquire_inner(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> Result<Option<Grant>> {
        let name = lock_name(key);
        let holder = Holder::new(key, &name, token);
        let ttl_us = micros(ttl);
        let sent_at = Instant::now();
        let first = within_wait(NAME, deadline, self.look(&name, &holder, ttl_us)).await?;
        let mut left = match first {
            Look::Won(fence) => return Ok(Some(Grant::new(Some(fence), sent_at))),
            Look::Held(left) => left,
        };
        if remaining(deadline).is_some_and(|l| l.is_zero()) {
            return Ok(None);
        }
        // Queue locally, then look again (a release between the first look and joining would
        // otherwise be missed), then wait for a notice or the poll.
        let mut place = WaitPlace {
            waiters: &self.waiters,
            name: &name,
            notify: None,
        };
        let notify = place.notify.insert(self.waiters.join(&name)).clone();
        let mut poll = MIN_POLL;
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let sent_at = Instant::now();
            match within_wait(NAME, deadline, self.look(&name, &holder, ttl_us)).await? {
                Look::Won(fence) => return Ok(Some(Grant::new(Some(fence), sent_at))),
                Look::Held(l) => left = l.or(left),
            }
            // Wake no later than the holder's expiry (+1 ms: `expire_at < now` must hold).
            let mut sleep = jitter(poll / 2, poll);
            if let Some(l) = left.take() {
                sleep = sleep.min(l + Duration::from_millis(1));
            }
            match remaining(deadline) {
                Some(l) if l.is_zero() => return Ok(None),
                Some(l) => sleep = sleep.min(l),
                None => {}
            }
            tokio::select! {
                _ = notified => poll = MIN_POLL,
                _ = tokio::time::sleep(sleep) => poll = (poll * 2).min(MAX_POLL),
            }
        }
    }
}

/// Runs one statement with [`STATEMENT_TIMEOUT`].
async fn bounded<T>(
    fut: impl std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
) -> Result<T> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, fut).await {
        Ok(r) => r.map_err(backend_err),
        Err(_) => Err(backend_err(format!(
            "the server did not answer within {STATEMENT_TIMEOUT:?}"
        ))),
    }
}

impl Backend for PostgresBackend {
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
        Box::pin(async move {
            let name = lock_name(key);
            let rows = bounded(
                sqlx::query(AssertSqlSafe(self.sql.release.clone()))
                    .bind(&*name)
                    .bind(token_parts(token).0)
                    .fetch_all(&self.pool),
            )
            .await?;
            Ok(!rows.is_empty())
        })
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
            let done = bounded(
                sqlx::query(AssertSqlSafe(self.sql.extend.clone()))
                    .bind(micros(ttl))
                    .bind(&*name)
                    .bind(token_parts(token).0)
                    .execute(&self.pool),
            )
            .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // The LISTEN task holds a pooled connection: stop it first, or the pool's close
            // waits for that connection until the timeout.
            let _ = self.listening.send(());
            let _ = tokio::time::timeout(CONNECT_TIMEOUT, self.pool.close()).await;
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
fn parse_url(url: &str, shown: &str) -> Result<(PgConnectOptions, String)> {
    let bad = |reason: String| Error::InvalidUrl {
        url: mask_password(shown),
        reason,
    };
    let (sqlx_url, table) = super::url_params::take_param(url, "table");
    let table = table.unwrap_or_else(|| DEFAULT_TABLE.to_owned());
    if !valid_table(&table) {
        return Err(bad(format!(
            "table name {table:?} is not accepted: use 1 to 57 ASCII letters, digits or `_`, \
             not starting with a digit, e.g. `?table={DEFAULT_TABLE}`"
        )));
    }
    let options = PgConnectOptions::from_str(&sqlx_url).map_err(|e| {
        bad(format!(
            "{e}; expected postgres://user[:password]@host[:port]/database[?table=name]"
        ))
    })?;
    Ok((options, table))
}

/// The `lock_name` stored for `key` (see the module docs, "Keys").
#[doc(hidden)]
pub fn lock_name(key: &str) -> Cow<'_, str> {
    if key.len() <= MAX_PLAIN_LEN && !key.contains(['\0', '\u{1}']) {
        return Cow::Borrowed(key);
    }
    let mut name = String::from(MAPPED);
    name.extend(key.chars().take(PREFIX_LEN).map(readable));
    name.push('~');
    name.push_str(&sha256_hex(key.as_bytes()));
    Cow::Owned(name)
}

/// The first character of every mapped name, and of no name stored as is.
const MAPPED: char = '\u{1}';

/// How a character appears in the readable prefix of a mapped name.
fn readable(c: char) -> char {
    if c.is_control() {
        '_'
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_distinct_storable_names() {
        assert_eq!(lock_name("order:42"), "order:42");
        let long = "k".repeat(600);
        let mapped = lock_name(&long);
        assert!(mapped.starts_with('\u{1}') && mapped.len() < 200);
        assert_ne!(lock_name("a\0b"), lock_name("a\0c"));
        assert!(!lock_name("a\0b").contains('\0'));
        // A plain key cannot look like a mapped one: those start with U+0001.
        assert_ne!(lock_name(&mapped), mapped);
    }

    #[test]
    fn table_names() {
        assert!(valid_table("dlock_locks"));
        assert!(!valid_table("1abc"));
        assert!(!valid_table("a-b"));
        assert!(!valid_table(""));
        assert!(!valid_table(&"x".repeat(58)));
    }
}
