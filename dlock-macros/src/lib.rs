//! The `#[distributed_lock]` attribute of [dlock](https://docs.rs/dlock): hold a distributed lock
//! while a function runs. Use it through `dlock::distributed_lock` (dlock's `macros` feature);
//! see [`distributed_lock`] for the arguments.
//!
//! Layout, after tracing-attributes and tokio-macros: `args.rs` parses and checks the arguments,
//! `key_template.rs` parses the `key` template, `expand.rs` generates the code.

use proc_macro::TokenStream;

mod args;
mod expand;
mod key_template;

/// Holds a distributed lock while the function runs.
///
/// ```
/// use dlock::distributed_lock;
///
/// #[derive(Debug)]
/// enum AppError {
///     Lock(dlock::Error),
/// }
/// impl From<dlock::Error> for AppError {
///     fn from(e: dlock::Error) -> Self {
///         AppError::Lock(e)
///     }
/// }
///
/// #[distributed_lock(key = "order:{order_id}", ttl = "30s", wait = "5s", backend = "memory")]
/// async fn settle(order_id: u64, amount: u64) -> Result<u64, AppError> {
///     // Runs only while `order:<order_id>` is held; the lock is released when it returns.
///     Ok(order_id * amount)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// assert_eq!(settle(42, 2).await.unwrap(), 84);
/// # }
/// ```
///
/// The function runs only while the lock is held. The lock is taken before the body runs and
/// released after it, on every path: a normal return, an early `return`, `?`, and a panic (the
/// guard's `Drop` releases it then). A failure to take the lock is returned as
/// `Err(dlock::Error::… .into())`, so the error type must implement `From<dlock::Error>`
/// (`dlock::Error` itself, `anyhow::Error`, `Box<dyn Error>`, or your own).
///
/// # Arguments
///
/// | argument | meaning | default |
/// |---|---|---|
/// | `key = "..."` | the lock's key; `{arg}`, `{arg.field}`, `{self.field}` are formatted with `Display` | required |
/// | `ttl = "30s"` | a fixed lease (humantime syntax: `"500ms"`, `"30s"`, `"1m 30s"`, `"2h"`), 1 ms to 365 days (`dlock::MAX_TTL`), checked at compile time | a 30 s lease renewed every 10 s |
/// | `watchdog = true` | renew the lease every ttl/3 even though `ttl` is given | false when `ttl` is given |
/// | `wait = "5s"` | how long to wait for the lock, then `Error::Busy`; `"0s"` = one attempt | wait until acquired |
/// | `backend = "redis"` | the registered name of the lock service (`dlock::register`, `DLOCK_URL_<NAME>`, `"memory"`) | `"default"` |
/// | `on_busy = "skip"` | when busy, return `Ok(Default::default())` without running the body; `"error"` returns `Err` | `"error"` |
/// | `guard = g` | binds `g: &dlock::LockGuard` in the body (`fence()`, `is_held()`, `lost()`) | not bound |
/// | `abort_on_lost = true` | `async fn` only: drop the body and return `Err(Error::Lost { key })` when the lease is lost | false: a loss is logged and the body runs on |
/// | `mode = "read"` or `"write"` | a shared (read) or exclusive (write) hold of the read-write lock `key`: readers run together, a writer alone (`Locker::read_lock`, `write_lock`) | a mutex |
/// | `permits = 5` | one permit of the semaphore `key` with 5 permits: at most 5 calls run at once (`Locker::semaphore`); an integer literal, at least 1 | a mutex |
///
/// Durations and key templates are checked at compile time. The examples below use the
/// in-memory backend, `backend = "memory"`; in production leave `backend` out and
/// `dlock::register("default", locker)` at start-up, or name a registered service.
///
/// ## `key`
/// Placeholders name parameters, fields of parameters (any depth), or fields of `self`; `{{`
/// and `}}` are literal braces. The key is formatted before the body runs.
/// ```
/// # use dlock::distributed_lock;
/// struct Order { id: u64, shop: Shop }
/// struct Shop { name: String }
///
/// #[distributed_lock(key = "shop:{order.shop.name}/order:{order.id}", backend = "memory")]
/// async fn ship(order: &Order) -> Result<(), dlock::Error> {
///     Ok(())
/// }
///
/// struct Inventory { region: String }
/// impl Inventory {
///     #[distributed_lock(key = "inventory:{self.region}:{{sku}}:{sku}", backend = "memory")]
///     async fn reserve(&mut self, sku: &str) -> Result<(), dlock::Error> {
///         Ok(())
///     }
/// }
/// ```
///
/// ## `ttl`, `watchdog`, `wait`
/// ```
/// # use dlock::distributed_lock;
/// // A fixed 10-minute lease, given up after waiting 5 s for the lock (`Error::Busy`).
/// #[distributed_lock(key = "report", ttl = "10m", wait = "5s", backend = "memory")]
/// async fn report() -> Result<(), dlock::Error> {
///     Ok(())
/// }
///
/// // A 1-minute lease renewed every 20 s while the function runs.
/// #[distributed_lock(key = "migrate", ttl = "1m", watchdog = true, backend = "memory")]
/// async fn migrate() -> Result<(), dlock::Error> {
///     Ok(())
/// }
/// ```
///
/// ## `backend`
/// ```no_run
/// # use dlock::distributed_lock;
/// // The locker registered as "redis", or connected from DLOCK_URL_REDIS on first use.
/// #[distributed_lock(key = "payout:{user_id}", backend = "redis")]
/// async fn payout(user_id: u64) -> std::io::Result<()> {
///     Ok(())
/// }
/// ```
///
/// ## Return types
/// `Result<T, E>` with `E: From<dlock::Error>`, written out (`Result`, `io::Result`,
/// `anyhow::Result`) or behind an alias, as applications usually write it:
/// ```
/// # use dlock::distributed_lock;
/// #[derive(Debug)]
/// struct AppError;
/// impl From<dlock::Error> for AppError {
///     fn from(_: dlock::Error) -> Self { AppError }
/// }
/// type AppResult<T> = Result<T, AppError>;
///
/// #[distributed_lock(key = "settle:{id}", backend = "memory")]
/// async fn settle(id: u64) -> AppResult<u64> { Ok(id) }
/// ```
///
/// ## `on_busy`
/// For scheduled jobs that run on many instances: whoever gets the lock runs the job, the others
/// skip it. Without `wait`, `skip` makes a single attempt.
/// ```
/// # use dlock::distributed_lock;
/// #[distributed_lock(key = "nightly-cleanup", on_busy = "skip", backend = "memory")]
/// async fn nightly_cleanup() -> Result<usize, dlock::Error> {
///     Ok(17) // rows deleted; `Ok(0)` (the default) when another instance holds the lock
/// }
/// ```
///
/// ## `guard`
/// ```
/// # use dlock::distributed_lock;
/// #[distributed_lock(key = "ledger", guard = lock, backend = "memory")]
/// async fn append(entry: &str) -> Result<(), dlock::Error> {
///     // Pass the fencing token to the storage so it can refuse writes from a stale holder.
///     let fence: Option<u64> = lock.fence();
///     assert!(lock.is_held());
///     Ok(())
/// }
/// ```
///
/// ## `abort_on_lost`
/// ```
/// # use dlock::distributed_lock;
/// #[distributed_lock(key = "import", ttl = "30s", abort_on_lost = true, backend = "memory")]
/// async fn import() -> Result<(), dlock::Error> {
///     // Dropped at its next `.await` if the lease is lost; the call then returns
///     // `Err(dlock::Error::Lost { key: "import".into() })`.
///     Ok(())
/// }
/// ```
///
/// ## `mode`
/// A read-write lock: any number of `mode = "read"` calls hold `key` at once, a `mode = "write"`
/// call holds it alone. Writers are preferred: once a writer waits, new readers wait behind it.
/// A reader's `fence()` is the fence of the last write. The mutex, the read-write lock and the
/// semaphore of one key are three different locks: a `mode = "write"` call does not exclude a
/// call without `mode` on the same key.
/// ```
/// # use dlock::distributed_lock;
/// #[distributed_lock(key = "doc:{id}", mode = "read", backend = "memory")]
/// async fn show(id: u64) -> Result<String, dlock::Error> {
///     Ok(format!("document {id}")) // runs alongside other `show(id)` calls
/// }
///
/// #[distributed_lock(key = "doc:{id}", mode = "write", wait = "5s", backend = "memory")]
/// async fn edit(id: u64, text: &str) -> Result<(), dlock::Error> {
///     Ok(()) // runs while no `show(id)` or other `edit(id)` call does
/// }
/// ```
///
/// ## `permits`
/// A semaphore: at most `permits` calls hold `key` at once, each with its own lease (a crashed
/// holder frees only its permit). Every user of the key must name the same number: a different
/// count while the semaphore is held is `Err(dlock::Error::InvalidArgument { .. })` (never a
/// skip with `on_busy = "skip"`).
/// ```
/// # use dlock::distributed_lock;
/// #[distributed_lock(key = "crawler", permits = 5, backend = "memory")]
/// async fn crawl(url: &str) -> Result<usize, dlock::Error> {
///     Ok(url.len()) // at most 5 crawls run at once, across every process of the service
/// }
/// ```
/// Read-write locks and semaphores are offered by memory, Redis, MySQL, PostgreSQL, ZooKeeper and
/// etcd; on Redlock the call returns `Err(dlock::Error::Unsupported { .. }.into())`. As with
/// the mutex, a task takes one hold of a key at a time: an attributed call nested in another on
/// the same key (say a `mode = "write"` call inside a `mode = "read"` one, or two permits of one
/// semaphore) fails at once with `dlock::Error::AlreadyHeld` (busy with `wait = "0s"`) instead
/// of waiting for itself.
///
/// ## Plain functions
/// A plain `fn` takes the lock with the blocking API, so it works from plain threads, from
/// `tokio::task::spawn_blocking` and from a multi-thread runtime's tasks (through
/// `block_in_place`); called from an async task of a current-thread runtime it returns
/// `Err(dlock::Error::BlockingInAsync.into())` instead of blocking the runtime's only thread.
/// ```
/// # use dlock::distributed_lock;
/// #[distributed_lock(key = "file:{path}", wait = "1s", backend = "memory")]
/// fn rewrite(path: &str) -> std::io::Result<()> {
///     Ok(())
/// }
/// rewrite("/tmp/data.json").unwrap();
/// ```
///
/// # Compile errors
/// A missing `key`, an unknown or repeated argument, a value of the wrong type, a duration that
/// does not parse, a `ttl` outside 1 ms..365 days, an unclosed or stray brace in `key`, a `{name}`
/// that is not a parameter, an `on_busy` other than `"error"`/`"skip"`, a return type that is
/// not a `Result` (also behind an alias: the compiler's message names the type),
/// `abort_on_lost` on a plain `fn`, a `mode` other than `"read"`/`"write"`, a `permits` that is
/// not an integer literal from 1 to `u32::MAX`, and `mode` together with `permits` are compile
/// errors pointing at the offending token.
#[proc_macro_attribute]
pub fn distributed_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::distributed_lock(args.into(), item.into()).into()
}
