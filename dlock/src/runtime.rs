//! Where dlock's own work runs, so that a [`Locker`](crate::Locker) outlives the runtime it was
//! made on.
//!
//! Client crates spawn tasks and register sockets and timers on the runtime that is current when
//! they connect (redis-rs drives each connection from a task, sqlx registers its sockets with the
//! current reactor, zookeeper-client runs its session in a task). When that runtime shuts down,
//! the connection dies with it. dlock therefore gives every connection a [`Home`]:
//!
//! - made on a multi-thread runtime, the connection lives there: its driver runs on the same
//!   workers as the callers, so the uncontended cycle pays no hop between threads;
//! - made on a current-thread runtime (every `#[tokio::test]`) or outside any runtime, it lives on
//!   dlock's background runtime (one worker thread, started on first use, never shut down): a
//!   current-thread runtime drives I/O only while its one thread polls it, and it is the kind that
//!   comes and goes;
//! - every backend call is polled with its home *entered*, so whatever the client crate spawns or
//!   registers mid-call (a reconnect, a new pooled connection) lands there too, whichever runtime
//!   the caller is on;
//! - a home that shut down is noticed (a sentinel task flips a flag when its runtime drops it)
//!   and the next call reopens the backend from its URL, homed by the same rule from the caller's
//!   side (see [`crate::reopen`]).
//!
//! Work that must outlive any caller's runtime runs on the background runtime: lease timers
//! (watchdog renewals) and the releases of dropped guards.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};
use tokio::task::AbortHandle;

use crate::{Error, Result};

static BACKGROUND: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// The process-wide background runtime: one worker thread, started on first use.
fn background() -> Result<&'static Runtime> {
    BACKGROUND
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("dlock-runtime")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            Error::backend(
                "runtime",
                format!("cannot start dlock's background runtime: {e}"),
            )
        })
}

/// Runs `fut` to completion on the calling thread: the blocking API.
///
/// | called from | does |
/// |---|---|
/// | a thread without a runtime | runs `fut` on the background runtime and waits |
/// | a `spawn_blocking` thread (any runtime) | the same |
/// | an async task of a multi-thread runtime | the same, inside [`tokio::task::block_in_place`] so the worker's other tasks move to another thread |
/// | an async task of a current-thread runtime | [`Error::BlockingInAsync`]: blocking its only thread could deadlock (a holder on that runtime could never release) |
///
/// "Async task" is told apart from a `spawn_blocking` thread by tokio's cooperative budget:
/// tokio gives every task poll a budget and switches it off for blocking tasks.
///
/// # Errors
/// [`Error::BlockingInAsync`] on a current-thread runtime's own thread.
pub(crate) fn block_on<F>(fut: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = background()?;
    let Ok(handle) = Handle::try_current() else {
        return Ok(rt.block_on(fut));
    };
    if !polled_by_scheduler() {
        return wait_on_background(rt, fut);
    }
    match handle.runtime_flavor() {
        RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| wait_on_background(rt, fut)),
        _ => Err(Error::BlockingInAsync),
    }
}

/// Spawns `fut` on the background runtime and blocks this thread (not a runtime's) until it ends.
fn wait_on_background<F>(rt: &Runtime, fut: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| {
        Error::backend(
            "runtime",
            "dlock's background runtime dropped a blocking call",
        )
    })
}

/// True when the caller is being polled as a task by a tokio scheduler (an async context), false
/// on a `spawn_blocking` thread or a thread that merely entered a runtime. Tokio budgets every
/// task poll and turns the budget off for blocking tasks; the probe consumes budget until tokio
/// says "yield" (constrained) or clearly never will, then restores it exactly (each
/// `RestoreOnPending` puts back the budget it saw, dropped newest first).
fn polled_by_scheduler() -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut taken = Vec::new();
    let constrained = loop {
        match tokio::task::coop::poll_proceed(&mut cx) {
            Poll::Ready(restore) => {
                taken.push(restore);
                // Tokio's per-poll budget is 128; far more means there is none.
                if taken.len() > 512 {
                    break false;
                }
            }
            Poll::Pending => break true,
        }
    };
    while let Some(restore) = taken.pop() {
        drop(restore);
    }
    constrained
}

/// Spawns `fut` on the background runtime (it outlives every caller's runtime). Never blocks and
/// never panics; `None` (logged) when the background runtime cannot start.
pub(crate) fn spawn_background<F>(fut: F) -> Option<AbortHandle>
where
    F: Future<Output = ()> + Send + 'static,
{
    match background() {
        Ok(rt) => Some(rt.spawn(fut).abort_handle()),
        Err(e) => {
            tracing::error!(target: "dlock", error = %e, "cannot run dlock's background work");
            None
        }
    }
}

/// The runtime a connection lives on (see the module docs), and whether it still runs.
#[derive(Debug, Clone)]
pub(crate) struct Home {
    handle: Handle,
    /// The home runtime's id: a caller already on it needs no entering.
    id: tokio::runtime::Id,
    /// `None`: the background runtime, which never shuts down.
    alive: Option<Arc<AtomicBool>>,
}

/// Flips a home's flag when its runtime drops the sentinel task (at shutdown).
struct MarkDeadOnDrop(Arc<AtomicBool>);

impl Drop for MarkDeadOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Home {
    /// The home for a connection made now, by the caller's context: the current multi-thread
    /// runtime, else the background runtime.
    ///
    /// # Errors
    /// [`Error::Backend`] when the background runtime cannot start.
    pub(crate) fn here() -> Result<Home> {
        match Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
                let alive = Arc::new(AtomicBool::new(true));
                let mark = MarkDeadOnDrop(alive.clone());
                // Never completes: the runtime drops it only when it shuts down.
                handle.spawn(async move {
                    let _mark = mark;
                    std::future::pending::<()>().await
                });
                Ok(Home {
                    id: handle.id(),
                    handle,
                    alive: Some(alive),
                })
            }
            _ => {
                let handle = background()?.handle().clone();
                Ok(Home {
                    id: handle.id(),
                    handle,
                    alive: None,
                })
            }
        }
    }

    /// False once the home runtime has shut down.
    pub(crate) fn is_alive(&self) -> bool {
        self.alive
            .as_ref()
            .is_none_or(|alive| alive.load(Ordering::Acquire))
    }

    /// Polls `fut` with this home entered: what it spawns or registers (tasks, sockets, timers)
    /// belongs to the home runtime, while the caller's task is the one woken.
    ///
    /// A home that shuts down while `fut` is in flight ends it with an error instead of polling
    /// it again: its timers and sockets belong to a runtime whose drivers are going, and tokio
    /// panics when such a timer is touched. The check runs before every poll; a panic from the
    /// narrow race left (the drivers stopping during a poll) is caught, the home marked dead and
    /// the call failed, so the next call reopens the backend.
    pub(crate) async fn run<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        // Already on the home runtime (the common case: connections live on the caller's
        // multi-thread runtime): entering it on every poll would only cost time.
        if Handle::try_current().is_ok_and(|h| h.id() == self.id) {
            return fut.await;
        }
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if !self.is_alive() {
                return Poll::Ready(Err(home_gone()));
            }
            let _entered = self.handle.enter();
            let polled =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx)));
            polled.unwrap_or_else(|_| {
                if let Some(alive) = &self.alive {
                    alive.store(false, Ordering::Release);
                }
                Poll::Ready(Err(home_gone()))
            })
        })
        .await
    }
}

fn home_gone() -> Error {
    Error::backend(
        "runtime",
        "the runtime this connection lived on shut down mid-request; the next call reconnects",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_thread_is_not_an_async_context() {
        assert!(!polled_by_scheduler());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_task_is_an_async_context_and_its_budget_is_restored() {
        assert!(polled_by_scheduler());
        // The probe gave the budget back: a second probe still finds it constrained, not spent.
        assert!(polled_by_scheduler());
        assert!(tokio::task::coop::has_budget_remaining());
        let on_blocking_thread = tokio::task::spawn_blocking(polled_by_scheduler)
            .await
            .unwrap();
        assert!(!on_blocking_thread);
    }

    #[test]
    fn a_home_made_on_a_runtime_that_shut_down_is_dead() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let home = rt.block_on(async { Home::here() }).unwrap();
        assert!(home.is_alive());
        drop(rt);
        assert!(!home.is_alive());
        // Made on a current-thread runtime: the background runtime, alive for good.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let home = rt.block_on(async { Home::here() }).unwrap();
        drop(rt);
        assert!(home.is_alive());
    }
}
