//! `#[distributed_lock]` on real functions, over in-memory lockers registered under a name per
//! test (so tests running in one process never share a lock space).

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dlock::{distributed_lock, Error, LockGuard, Locker};

const SECOND: Duration = Duration::from_secs(1);

/// Registers a fresh in-memory lock space under `name` and returns it (to hold keys from the
/// test while annotated functions run).
fn fresh(name: &str) -> Locker {
    let locker = Locker::memory();
    dlock::register(name, locker.clone());
    locker
}

/// Runs `f` on a plain thread outside any runtime, where a plain `fn`'s blocking lock works.
/// (`spawn_blocking` works too; tests/runtimes.rs covers it.)
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// `key` locked by another task, as another caller would hold it (the test's own task locking
/// it and then calling an attributed function on it would be refused as `AlreadyHeld`).
async fn held_by_another_task(locker: &Locker, key: &'static str) -> dlock::LockGuard {
    let locker = locker.clone();
    tokio::spawn(async move { locker.lock(key).await.unwrap() })
        .await
        .unwrap()
}

/// A critical section that notices overlap: a non-atomic read-yield-write counter plus the
/// number of callers inside at once.
#[derive(Default)]
struct Section {
    counter: AtomicU64,
    inside: AtomicUsize,
    max_inside: AtomicUsize,
}

impl Section {
    fn enter(&self) -> u64 {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_inside.fetch_max(now, Ordering::SeqCst);
        self.counter.load(Ordering::SeqCst)
    }

    fn leave(&self, seen: u64) {
        self.counter.store(seen + 1, Ordering::SeqCst);
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

#[distributed_lock(key = "counter:{name}", backend = "serial-async", wait = "30s")]
async fn bump(name: &'static str, n: u64, section: Arc<Section>) -> Result<u64, Error> {
    let seen = section.enter();
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    section.leave(seen);
    Ok(n * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_four_concurrent_async_calls_run_one_at_a_time() {
    fresh("serial-async");
    let section = Arc::new(Section::default());
    let calls: Vec<_> = (0..24)
        .map(|n| tokio::spawn(bump("shared", n, section.clone()))) // also proves the future is Send
        .collect();
    for (n, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), n as u64 * 10);
    }
    assert_eq!(section.counter.load(Ordering::SeqCst), 24);
    assert_eq!(section.max_inside.load(Ordering::SeqCst), 1);
}

#[distributed_lock(key = "sync-counter", backend = "serial-sync", wait = "30s")]
fn bump_sync(section: &Section, n: u64) -> Result<u64, Error> {
    let seen = section.enter();
    std::thread::sleep(Duration::from_millis(5));
    section.leave(seen);
    Ok(n + 100)
}

#[test]
fn a_sync_fn_called_from_six_threads_is_serialized() {
    fresh("serial-sync");
    let section = Section::default();
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..6)
            .map(|n| {
                let section = &section;
                s.spawn(move || {
                    (0..4)
                        .map(|_| bump_sync(section, n).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (n, t) in threads.into_iter().enumerate() {
            assert_eq!(t.join().unwrap(), vec![n as u64 + 100; 4]);
        }
    });
    assert_eq!(section.counter.load(Ordering::SeqCst), 24);
    assert_eq!(section.max_inside.load(Ordering::SeqCst), 1);
}

struct Account {
    id: u64,
    region: String,
    balance: u64,
}

impl Account {
    #[distributed_lock(key = "account:{self.region}/{self.id}", backend = "methods", guard = g, wait = "0s")]
    async fn held_key(&self) -> Result<String, Error> {
        Ok(g.key().to_owned())
    }

    /// Deposits.
    #[distributed_lock(
        key = "account:{self.region}/{self.id}",
        backend = "methods",
        wait = "0s"
    )]
    pub async fn deposit(&mut self, amount: u64) -> Result<u64, Error> {
        self.balance += amount;
        Ok(self.balance)
    }

    #[distributed_lock(
        key = "account:{self.region}/{self.id}",
        backend = "methods",
        wait = "0s"
    )]
    fn withdraw(&mut self, amount: u64) -> Result<u64, Error> {
        self.balance -= amount;
        Ok(self.balance)
    }
}

#[tokio::test]
async fn methods_lock_keys_built_from_self_fields() {
    let locker = fresh("methods");
    let mut account = Account {
        id: 7,
        region: "eu".into(),
        balance: 10,
    };
    assert_eq!(account.held_key().await.unwrap(), "account:eu/7");
    assert_eq!(account.deposit(5).await.unwrap(), 15);

    let held = held_by_another_task(&locker, "account:eu/7").await;
    assert!(account.deposit(5).await.unwrap_err().is_busy());
    held.release().await.unwrap();

    let region = account.region.clone();
    let balance = off_runtime(move || {
        let mut account = account;
        account.withdraw(3)
    });
    assert_eq!(balance.unwrap(), 12, "withdraw in region {region}");
}

static JOB_RUNS: AtomicU64 = AtomicU64::new(0);

#[distributed_lock(key = "nightly-job", backend = "skip", on_busy = "skip")]
async fn nightly_job() -> Result<u64, Error> {
    Ok(JOB_RUNS.fetch_add(1, Ordering::SeqCst) + 100)
}

#[tokio::test]
async fn on_busy_skip_returns_the_default_while_held_and_runs_once_free() {
    let locker = fresh("skip");
    let held = held_by_another_task(&locker, "nightly-job").await;
    let started = Instant::now();
    assert_eq!(
        nightly_job().await.unwrap(),
        0,
        "skipped: Default::default()"
    );
    assert!(
        started.elapsed() < SECOND,
        "skip without `wait` makes one attempt"
    );
    assert_eq!(JOB_RUNS.load(Ordering::SeqCst), 0, "the body must not run");
    held.release().await.unwrap();
    assert_eq!(nightly_job().await.unwrap(), 100);
    assert_eq!(JOB_RUNS.load(Ordering::SeqCst), 1);
}

#[derive(Debug)]
enum AppError {
    Lock(Error),
    #[allow(dead_code)]
    Invalid(&'static str),
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Lock(e)
    }
}

#[distributed_lock(key = "order:{order_id}", backend = "busy", wait = "0s")]
async fn settle(order_id: u64, amount: u64) -> Result<u64, AppError> {
    Ok(order_id + amount)
}

#[tokio::test]
async fn wait_zero_when_busy_is_an_err_converted_into_the_users_error_type() {
    let locker = fresh("busy");
    let held = held_by_another_task(&locker, "order:42").await;
    match settle(42, 1).await {
        Err(AppError::Lock(Error::Busy { key, waited })) => {
            assert_eq!(key, "order:42");
            assert!(waited < SECOND);
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(settle(43, 1).await.unwrap(), 44, "other keys are free");
    held.release().await.unwrap();
    assert_eq!(settle(42, 1).await.unwrap(), 43);
}

#[distributed_lock(key = "fenced", backend = "guard", guard = lock)]
async fn fenced() -> Result<(Option<u64>, bool, String), Error> {
    Ok((lock.fence(), lock.is_held(), lock.key().to_owned()))
}

#[distributed_lock(key = "fenced", backend = "guard", guard = lock)]
fn fenced_sync() -> Result<(Option<u64>, bool), Error> {
    let lock: &LockGuard = lock;
    Ok((lock.fence(), lock.is_held()))
}

#[tokio::test]
async fn guard_binds_the_lock_guard_with_fence_and_is_held() {
    fresh("guard");
    let (first, held, key) = fenced().await.unwrap();
    assert!(held);
    assert_eq!(key, "fenced");
    let (second, _, _) = fenced().await.unwrap();
    let (third, held) = off_runtime(fenced_sync).unwrap();
    assert!(held);
    assert!(first.unwrap() < second.unwrap() && second.unwrap() < third.unwrap());
}

static FINISHED: AtomicBool = AtomicBool::new(false);

#[distributed_lock(key = "import", backend = "lost", ttl = "150ms", abort_on_lost = true)]
async fn import() -> Result<(), AppError> {
    tokio::time::sleep(10 * SECOND).await;
    FINISHED.store(true, Ordering::SeqCst);
    Ok(())
}

#[distributed_lock(key = "import-on", backend = "lost", ttl = "100ms", guard = g)]
async fn import_runs_on() -> Result<bool, AppError> {
    tokio::time::sleep(Duration::from_millis(400)).await;
    Ok(g.is_held())
}

#[tokio::test]
async fn abort_on_lost_stops_a_body_whose_lease_is_lost() {
    let locker = fresh("lost");
    let started = Instant::now();
    match import().await {
        Err(AppError::Lock(e)) => {
            assert!(e.is_lost(), "{e}");
            assert!(e.to_string().contains("import"), "{e}");
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    assert!(
        started.elapsed() < 5 * SECOND,
        "aborted at the loss, not after the body"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!FINISHED.load(Ordering::SeqCst), "the body was dropped");
    // The key is free again: the lease ran out.
    assert!(locker.try_lock("import").await.unwrap().is_some());

    // Without `abort_on_lost` the body runs on past the loss (and a warning is logged).
    assert!(
        !import_runs_on().await.unwrap(),
        "lease lost during the body"
    );
}

#[distributed_lock(key = "panics:{which}", backend = "panic")]
async fn panics(which: u32) -> Result<(), Error> {
    if which < 100 {
        panic!("boom {which}");
    }
    Ok(())
}

#[distributed_lock(key = "panics-sync", backend = "panic")]
fn panics_sync() -> Result<(), Error> {
    panic!("boom");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_body_still_releases_the_lock() {
    let locker = fresh("panic");
    let err = tokio::spawn(panics(1)).await.unwrap_err();
    assert!(err.is_panic());
    let guard = locker.lock("panics:1").wait(5 * SECOND).await;
    assert!(guard.is_ok(), "the panicking call's lock was released");

    let err = std::thread::spawn(panics_sync).join().unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"boom"));
    assert!(locker.lock("panics-sync").wait(5 * SECOND).await.is_ok());
}

fn parse_amount(text: &str) -> Result<u64, AppError> {
    text.parse().map_err(|_| AppError::Invalid("not a number"))
}

#[distributed_lock(key = "early:{text}", backend = "early")]
async fn early(text: &str) -> Result<u64, AppError> {
    if text.is_empty() {
        return Err(AppError::Invalid("empty"));
    }
    if text == "zero" {
        return Ok(0);
    }
    let amount = parse_amount(text)?;
    Ok(amount * 2)
}

#[distributed_lock(key = "early-sync:{text}", backend = "early")]
fn early_sync(text: &str) -> Result<u64, AppError> {
    if text == "zero" {
        return Ok(0);
    }
    Ok(parse_amount(text)? * 2)
}

#[tokio::test]
async fn early_return_and_question_mark_release_the_lock() {
    let locker = fresh("early");
    let free = |key: &'static str| {
        let locker = locker.clone();
        async move { locker.try_lock(key).await.unwrap().is_some() }
    };
    assert!(matches!(early("").await, Err(AppError::Invalid("empty"))));
    assert!(free("early:").await);
    assert_eq!(early("zero").await.unwrap(), 0);
    assert!(free("early:zero").await);
    assert!(matches!(
        early("x").await,
        Err(AppError::Invalid("not a number"))
    ));
    assert!(free("early:x").await);
    assert_eq!(early("21").await.unwrap(), 42);
    assert!(free("early:21").await);

    let results = off_runtime(|| (early_sync("zero"), early_sync("y")));
    assert_eq!(results.0.unwrap(), 0);
    assert!(matches!(results.1, Err(AppError::Invalid(_))));
    assert!(free("early-sync:zero").await);
    assert!(free("early-sync:y").await);
}

#[tokio::test]
async fn a_cancelled_call_releases_the_lock() {
    let locker = fresh("cancel");
    #[distributed_lock(key = "slow", backend = "cancel")]
    async fn slow() -> Result<(), Error> {
        tokio::time::sleep(10 * SECOND).await;
        Ok(())
    }
    assert!(tokio::time::timeout(Duration::from_millis(50), slow())
        .await
        .is_err());
    assert!(locker.lock("slow").wait(5 * SECOND).await.is_ok());
}

#[distributed_lock(key = "io:{path}", backend = "aliases", wait = "0s")]
async fn read_config(path: &str) -> std::io::Result<usize> {
    Ok(path.len())
}

#[distributed_lock(key = "anyhow:{n}", backend = "aliases", wait = "0s")]
async fn compute(n: u32) -> anyhow::Result<u32> {
    anyhow::ensure!(n < 1000, "too big");
    Ok(n + 1)
}

#[tokio::test]
async fn io_and_anyhow_result_aliases_work() {
    let locker = fresh("aliases");
    assert_eq!(read_config("a.toml").await.unwrap(), 6);
    assert_eq!(compute(1).await.unwrap(), 2);
    assert!(compute(5000).await.is_err());

    // Held by another task (this one locking them again would be refused as `AlreadyHeld`).
    let _held = tokio::spawn(async move {
        (
            locker.lock("io:b.toml").await.unwrap(),
            locker.lock("anyhow:7").await.unwrap(),
        )
    })
    .await
    .unwrap();
    let io = read_config("b.toml").await.unwrap_err();
    assert_eq!(io.kind(), std::io::ErrorKind::WouldBlock);
    let any = compute(7).await.unwrap_err();
    assert!(any.downcast_ref::<Error>().unwrap().is_busy());
}

#[distributed_lock(key = "blocking", backend = "in-async")]
fn plain_fn() -> Result<(), Error> {
    Ok(())
}

#[tokio::test]
async fn a_sync_fn_called_inside_a_runtime_returns_blocking_in_async() {
    fresh("in-async");
    assert!(matches!(plain_fn(), Err(Error::BlockingInAsync)));
}

#[tokio::test]
async fn an_unknown_backend_name_is_not_configured() {
    #[distributed_lock(key = "x", backend = "nobody-registered-this")]
    async fn f() -> Result<(), Error> {
        Ok(())
    }
    match f().await {
        Err(Error::NotConfigured { name, env_var }) => {
            assert_eq!(name, "nobody-registered-this");
            assert_eq!(env_var, "DLOCK_URL_NOBODY_REGISTERED_THIS");
        }
        other => panic!("expected NotConfigured, got {other:?}"),
    }
}

mod shapes {
    use super::*;

    pub struct Point {
        pub x: i32,
        pub y: i32,
    }

    pub struct Order {
        pub id: u64,
        pub shop: Shop,
    }

    pub struct Shop {
        pub name: String,
    }

    /// Generics, a where clause, a pattern parameter and an `impl Trait` parameter.
    #[distributed_lock(key = "g:{item}:{a}-{b}:{label}:{x},{y}", backend = "shapes", guard = g)]
    pub async fn generic<T, E>(
        item: T,
        (a, b): (u32, u32),
        label: impl Display + Send,
        Point { x, y }: Point,
    ) -> Result<String, E>
    where
        T: Display + Send,
        E: From<Error>,
    {
        Ok(format!("{}|{item}|{}|{label}|{x}", g.key(), a + b))
    }

    #[distributed_lock(key = "{{literal}}:{order.shop.name}/{order.id}", backend = "shapes", guard = g)]
    pub fn nested(order: &Order) -> Result<String, Error> {
        Ok(g.key().to_owned())
    }
}

#[tokio::test]
async fn generics_patterns_impl_trait_and_nested_fields() {
    fresh("shapes");
    let out = shapes::generic::<_, AppError>("it", (1, 2), 'L', shapes::Point { x: 5, y: 6 })
        .await
        .unwrap();
    assert_eq!(out, "g:it:1-2:L:5,6|it|3|L|5");
    let order = shapes::Order {
        id: 9,
        shop: shapes::Shop {
            name: "acme".into(),
        },
    };
    let key = off_runtime(move || shapes::nested(&order)).unwrap();
    assert_eq!(key, "{literal}:acme/9");
}

/// Issue 20, items 3 and 4: result type aliases work, and the expansion adds no warning to the
/// user's code under `deny(warnings)` (rustc) and clippy's lints, pedantic ones included (the
/// suite's clippy run uses `-D warnings`). One-line bodies were the case that warned.
#[deny(warnings, clippy::all, clippy::pedantic)]
mod strict {
    use dlock::distributed_lock;

    #[derive(Debug)]
    pub struct AppError(pub dlock::Error);

    impl From<dlock::Error> for AppError {
        fn from(e: dlock::Error) -> Self {
            AppError(e)
        }
    }

    pub type AppResult<T> = Result<T, AppError>;

    #[distributed_lock(key = "strict:{x}", backend = "memory")]
    pub async fn one_line(x: u64) -> Result<u64, AppError> {
        Ok(x)
    }

    #[distributed_lock(key = "strict:{x}", backend = "memory")]
    pub fn one_line_sync(x: u64) -> Result<u64, AppError> {
        Ok(x)
    }

    #[distributed_lock(key = "strict:{x}", backend = "memory")]
    pub async fn aliased(x: u64) -> AppResult<u64> {
        Ok(x + 1)
    }

    #[distributed_lock(key = "strict:{x}", backend = "memory")]
    pub fn aliased_sync(x: u64) -> AppResult<u64> {
        Ok(x + 2)
    }

    #[distributed_lock(key = "strict-skip", backend = "memory", on_busy = "skip")]
    pub async fn aliased_skip(x: u64) -> AppResult<u64> {
        Ok(x)
    }

    #[distributed_lock(key = "strict-busy", wait = "0s", backend = "memory")]
    pub async fn aliased_busy() -> AppResult<u64> {
        Ok(1)
    }
}

#[tokio::test]
async fn result_aliases_work_and_the_expansion_adds_no_warnings() {
    assert_eq!(strict::one_line(1).await.unwrap(), 1);
    assert_eq!(strict::aliased(1).await.unwrap(), 2);
    let (a, b) = off_runtime(|| (strict::one_line_sync(3), strict::aliased_sync(3)));
    assert_eq!((a.unwrap(), b.unwrap()), (3, 5));
    // Busy: skipped with Ok(Default::default()), or the error converted into AppError.
    let memory = dlock::lookup("memory").await.unwrap();
    let held = held_by_another_task(&memory, "strict-skip").await;
    assert_eq!(strict::aliased_skip(7).await.unwrap(), 0);
    drop(held);
    let held = held_by_another_task(&memory, "strict-busy").await;
    let err = strict::aliased_busy().await.unwrap_err();
    assert!(err.0.is_busy(), "{:?}", err.0);
    drop(held);
}

#[distributed_lock(key = "nested:{id}", backend = "nested", wait = "5s")]
async fn outer(id: u64) -> Result<u64, Error> {
    inner(id).await
}

#[distributed_lock(key = "nested:{id}", backend = "nested", wait = "5s")]
async fn inner(id: u64) -> Result<u64, Error> {
    Ok(id)
}

/// Issue 20, item 2: nested attributed functions on one key fail at once with `AlreadyHeld`
/// (not after the 5 s wait with "busy ... raise `.wait(..)`").
#[tokio::test]
async fn nested_attributed_functions_on_one_key_fail_at_once() {
    fresh("nested");
    let started = std::time::Instant::now();
    let err = outer(1).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyHeld { .. }), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(inner(2).await.unwrap(), 2);
}

// Read-write locks and semaphores (issue 16): `mode = "read" | "write"` and `permits = N`.

/// Waits until `count` callers are inside (each caller has added itself), or until 5 s have
/// passed; true when they all were. Holders that exclude each other never meet, so a broken
/// lock fails the test in 5 s instead of hanging it (the bound is generous: meeting takes
/// microseconds once both are granted).
async fn meet(inside: &AtomicUsize, count: usize) -> bool {
    let deadline = Instant::now() + 5 * SECOND;
    while inside.load(Ordering::SeqCst) < count {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// [`meet`] for a plain `fn`'s thread.
fn meet_blocking(inside: &AtomicUsize, count: usize) -> bool {
    let deadline = Instant::now() + 5 * SECOND;
    while inside.load(Ordering::SeqCst) < count {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

#[distributed_lock(key = "doc:{id}", backend = "rw-readers", mode = "read", wait = "10s")]
async fn read_together(id: u64, inside: Arc<AtomicUsize>) -> Result<bool, Error> {
    inside.fetch_add(1, Ordering::SeqCst);
    let met = meet(&inside, 2).await;
    Ok(met && id == 7)
}

#[distributed_lock(key = "doc:{id}", backend = "rw-readers", mode = "read", wait = "10s")]
fn read_together_sync(id: u64, inside: &AtomicUsize) -> Result<bool, Error> {
    inside.fetch_add(1, Ordering::SeqCst);
    Ok(meet_blocking(inside, 2) && id == 8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_read_calls_hold_the_key_together() {
    let locker = fresh("rw-readers");
    // Each call returns only once both are inside: they held the read lock at the same time.
    let inside = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..2)
        .map(|_| tokio::spawn(read_together(7, inside.clone())))
        .collect();
    for call in calls {
        assert!(
            call.await.unwrap().unwrap(),
            "both readers were inside at once"
        );
    }
    // The read-write lock, not the mutex: a writer of the key is free again, and the mutex of
    // the same key was never taken.
    assert!(locker.try_write_lock("doc:7").await.unwrap().is_some());

    // Plain fns on two threads take the read lock through the blocking API.
    let inside = AtomicUsize::new(0);
    let (a, b) = off_runtime(|| {
        std::thread::scope(|s| {
            let a = s.spawn(|| read_together_sync(8, &inside));
            let b = s.spawn(|| read_together_sync(8, &inside));
            (a.join().unwrap(), b.join().unwrap())
        })
    });
    assert!(
        a.unwrap() && b.unwrap(),
        "both sync readers were inside at once"
    );
}

#[distributed_lock(key = "doc:{id}", backend = "rw-writer", mode = "write", guard = g)]
async fn write_doc(
    id: u64,
    entered: tokio::sync::oneshot::Sender<Option<u64>>,
    finish: tokio::sync::oneshot::Receiver<()>,
) -> Result<u64, Error> {
    entered.send(g.fence()).unwrap();
    finish.await.unwrap();
    Ok(id)
}

#[distributed_lock(key = "doc:{id}", backend = "rw-writer", mode = "read", wait = "0s", guard = g)]
async fn read_doc_now(id: u64) -> Result<Option<u64>, Error> {
    Ok(g.fence().filter(|_| id > 0))
}

#[distributed_lock(key = "doc:{id}", backend = "rw-writer", wait = "0s")]
async fn mutex_doc_now(id: u64) -> Result<u64, Error> {
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_write_excludes_readers_and_readers_see_its_fence() {
    let locker = fresh("rw-writer");
    let (entered, is_inside) = tokio::sync::oneshot::channel();
    let (finish, may_finish) = tokio::sync::oneshot::channel();
    let writer = tokio::spawn(write_doc(1, entered, may_finish));
    let write_fence = is_inside.await.unwrap();
    assert!(write_fence.is_some(), "a writer's guard has a fence");

    // While the writer runs: a reader is busy, so is a direct reader or writer of the key; the
    // mutex of the same key is another lock and free.
    let err = read_doc_now(1).await.unwrap_err();
    assert!(err.is_busy(), "{err}");
    let direct = locker.read_lock("doc:1").wait(Duration::ZERO).await;
    assert!(direct.unwrap_err().is_busy());
    assert_eq!(mutex_doc_now(1).await.unwrap(), 1);

    finish.send(()).unwrap();
    assert_eq!(writer.await.unwrap().unwrap(), 1);
    // Once the writer is done, a reader runs and sees the last write's fence.
    assert_eq!(read_doc_now(1).await.unwrap(), write_fence);

    // The other way round: a reader held elsewhere keeps the writer out (wait = "0s" here).
    let reader = tokio::spawn({
        let locker = locker.clone();
        async move { locker.read_lock("doc:2").await.unwrap() }
    })
    .await
    .unwrap();
    #[distributed_lock(key = "doc:{id}", backend = "rw-writer", mode = "write", wait = "0s")]
    async fn write_doc_now(id: u64) -> Result<u64, Error> {
        Ok(id)
    }
    assert!(write_doc_now(2).await.unwrap_err().is_busy());
    assert_eq!(
        read_doc_now(2).await.unwrap(),
        None,
        "readers share; no write yet"
    );
    reader.release().await.unwrap();
    assert_eq!(write_doc_now(2).await.unwrap(), 2);
}

#[distributed_lock(key = "pool", backend = "permits", permits = 2, wait = "30s")]
async fn pooled(section: Arc<Section>) -> Result<u64, Error> {
    let seen = section.enter();
    // Stay until two calls were inside at once (or 5 s passed), so the test sees the semaphore
    // fill up on any scheduling, then leave.
    let deadline = Instant::now() + 5 * SECOND;
    while section.max_inside.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    section.inside.fetch_sub(1, Ordering::SeqCst);
    Ok(seen)
}

#[distributed_lock(key = "pool-sync", backend = "permits", permits = 2, wait = "30s")]
fn pooled_sync(section: &Section) -> Result<(), Error> {
    section.enter();
    let deadline = Instant::now() + 5 * SECOND;
    while section.max_inside.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(5));
    section.inside.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permits_two_admits_two_calls_of_six_at_once() {
    fresh("permits");
    let section = Arc::new(Section::default());
    let calls: Vec<_> = (0..6)
        .map(|_| tokio::spawn(pooled(section.clone())))
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(
        section.max_inside.load(Ordering::SeqCst),
        2,
        "two at most, and two reached"
    );

    let section = Section::default();
    off_runtime(|| {
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..6).map(|_| s.spawn(|| pooled_sync(&section))).collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
        });
    });
    assert_eq!(
        section.max_inside.load(Ordering::SeqCst),
        2,
        "sync: two at most, and two reached"
    );
}

static CRAWLS: AtomicU64 = AtomicU64::new(0);

#[distributed_lock(
    key = "crawler",
    backend = "permits-skip",
    permits = 2,
    on_busy = "skip"
)]
async fn crawl_if_free() -> Result<u64, Error> {
    Ok(CRAWLS.fetch_add(1, Ordering::SeqCst) + 1)
}

#[tokio::test]
async fn on_busy_skip_with_permits_skips_only_when_every_permit_is_taken() {
    let locker = fresh("permits-skip");
    let take = |permits: u32| {
        let locker = locker.clone();
        async move {
            tokio::spawn(async move { locker.semaphore("crawler", permits).await.unwrap() })
                .await
                .unwrap()
        }
    };
    // One permit of two taken elsewhere: the call takes the other and runs.
    let first = take(2).await;
    assert_eq!(crawl_if_free().await.unwrap(), 1);
    // Both taken: skipped at once with Ok(Default::default()), the body does not run.
    let second = take(2).await;
    let started = Instant::now();
    assert_eq!(crawl_if_free().await.unwrap(), 0, "skipped");
    assert!(
        started.elapsed() < SECOND,
        "skip without `wait` makes one attempt"
    );
    assert_eq!(CRAWLS.load(Ordering::SeqCst), 1);
    // Released (not dropped: a drop releases in the background, and the count of 3 below
    // would race with it).
    first.release().await.unwrap();
    second.release().await.unwrap();

    // Held by callers naming another count: an error, never a skip.
    let other = take(3).await;
    let err = crawl_if_free().await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    other.release().await.unwrap();
    assert_eq!(crawl_if_free().await.unwrap(), 2);
}

/// The new arguments combine with the others (methods, generics, `ttl`, `watchdog`, `guard`,
/// `abort_on_lost`, `on_busy`, aliases) without a warning from rustc or clippy (pedantic included).
#[deny(warnings, clippy::all, clippy::pedantic)]
mod kinds {
    use std::fmt::Display;

    use dlock::distributed_lock;

    pub type AppResult<T> = Result<T, dlock::Error>;

    pub struct Shelf {
        pub name: String,
        pub books: Vec<String>,
    }

    impl Shelf {
        #[distributed_lock(
            key = "shelf:{self.name}",
            backend = "kinds",
            mode = "read",
            ttl = "10s",
            watchdog = true,
            guard = g
        )]
        pub async fn count(&self) -> AppResult<(usize, bool)> {
            Ok((self.books.len(), g.is_held()))
        }

        #[distributed_lock(
            key = "shelf:{self.name}",
            backend = "kinds",
            mode = "write",
            ttl = "10s",
            abort_on_lost = true
        )]
        pub async fn add(&mut self, book: &str) -> AppResult<usize> {
            self.books.push(book.to_owned());
            Ok(self.books.len())
        }

        #[distributed_lock(
            key = "shelf:{self.name}",
            backend = "kinds",
            mode = "write",
            wait = "1s"
        )]
        pub fn take(&mut self) -> AppResult<Option<String>> {
            Ok(self.books.pop())
        }
    }

    #[distributed_lock(
        key = "gen:{item}",
        backend = "kinds",
        permits = 3,
        guard = g,
        on_busy = "skip"
    )]
    pub async fn generic<T, E>(item: T) -> Result<String, E>
    where
        T: Display + Send,
        E: From<dlock::Error>,
    {
        Ok(format!("{item}:{}", g.fence().is_some()))
    }

    #[distributed_lock(key = "gen-sync:{item}", backend = "kinds", permits = 1, ttl = "5s")]
    pub fn generic_sync<T: Display>(item: T) -> AppResult<String> {
        Ok(item.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_and_permits_combine_with_the_other_arguments() {
    let locker = fresh("kinds");
    let mut shelf = kinds::Shelf {
        name: "a".into(),
        books: vec![],
    };
    assert_eq!(shelf.add("dune").await.unwrap(), 1);
    assert_eq!(shelf.count().await.unwrap(), (1, true));
    let (taken, shelf) = off_runtime(move || {
        let mut shelf = shelf;
        (shelf.take(), shelf)
    });
    assert_eq!(taken.unwrap().as_deref(), Some("dune"));
    assert_eq!(shelf.books.len(), 0);
    assert!(
        locker.try_write_lock("shelf:a").await.unwrap().is_some(),
        "all released"
    );

    assert_eq!(kinds::generic::<_, AppError>(5).await.unwrap(), "5:true");
    assert_eq!(off_runtime(|| kinds::generic_sync('x')).unwrap(), "x");
    assert!(locker
        .semaphore("gen-sync:x", 1)
        .wait(Duration::ZERO)
        .await
        .is_ok());
}

#[distributed_lock(
    key = "nest:{id}",
    backend = "nested-kinds",
    mode = "read",
    wait = "5s"
)]
async fn read_then_write(id: u64) -> Result<u64, Error> {
    write_inside(id).await
}

#[distributed_lock(
    key = "nest:{id}",
    backend = "nested-kinds",
    mode = "write",
    wait = "5s"
)]
async fn write_inside(id: u64) -> Result<u64, Error> {
    Ok(id)
}

#[distributed_lock(key = "nest:{id}", backend = "nested-kinds", permits = 3, wait = "5s")]
async fn permit_then_permit(id: u64, depth: u32) -> Result<u64, Error> {
    if depth == 0 {
        return Ok(id);
    }
    Box::pin(permit_then_permit(id, depth - 1)).await
}

/// A write nested in a read of one key, or a second permit of one semaphore, in one task: at
/// once `AlreadyHeld` (it would wait for itself), not after the 5 s wait.
#[tokio::test]
async fn nested_calls_of_one_read_write_lock_or_semaphore_fail_at_once() {
    fresh("nested-kinds");
    let started = Instant::now();
    let err = read_then_write(1).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyHeld { .. }), "{err}");
    let err = permit_then_permit(2, 1).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyHeld { .. }), "{err}");
    assert!(started.elapsed() < SECOND);
    assert_eq!(write_inside(1).await.unwrap(), 1);
    assert_eq!(permit_then_permit(2, 0).await.unwrap(), 2);
}
