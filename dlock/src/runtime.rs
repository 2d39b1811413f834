//! The internal runtime thread that serves the blocking API and releases guards dropped outside
//! any runtime.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};

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

/// Runs `fut` to completion on the calling thread, which must not be inside an async runtime.
///
/// # Errors
/// [`Error::BlockingInAsync`] when called from inside a runtime (it would block a worker).
pub(crate) fn block_on<F: Future>(fut: F) -> Result<F::Output> {
    if Handle::try_current().is_ok() {
        return Err(Error::BlockingInAsync);
    }
    Ok(background()?.block_on(fut))
}

/// Spawns `fut` and forgets it: on the current runtime when there is one, else on the background
/// runtime. Never blocks and never panics; a runtime that is shutting down drops the task.
pub(crate) fn spawn_detached<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    match Handle::try_current() {
        Ok(handle) => {
            handle.spawn(fut);
        }
        Err(_) => match background() {
            Ok(rt) => {
                rt.spawn(fut);
            }
            Err(e) => {
                tracing::warn!(target: "dlock", error = %e, "cannot release in the background")
            }
        },
    }
}
