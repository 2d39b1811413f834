//! Requests the cluster could not answer, tried again: an endpoint gone, no leader, an
//! election under way, a connection that hangs (see "Connection" in the [module docs](super)).

use std::time::{Duration, Instant};

use super::{EtcdBackend, NAME};
use crate::{Error, Result};

/// How long a request is tried again while the cluster cannot answer it (a member died, an
/// election is on) when the caller gave no deadline: a few elections' worth.
pub(super) const UNREACHABLE_RETRY_FOR: Duration = Duration::from_secs(5);
/// The pause between such tries.
const UNREACHABLE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Whether `e` says the cluster could not answer now (the endpoint is gone, no leader, an
/// election timed the request out), so the same request may well succeed a moment later.
fn unreachable_now(e: &Error) -> bool {
    let Error::Backend { source, .. } = e else {
        return false;
    };
    match source.downcast_ref::<etcd_client::Error>() {
        Some(etcd_client::Error::TransportError(_)) => true,
        Some(etcd_client::Error::GRpcStatus(status)) => {
            let code = format!("{:?}", status.code());
            let message = status.message();
            matches!(
                code.as_str(),
                "Unavailable" | "Unknown" | "DeadlineExceeded"
            ) || message.contains("leader")
                || message.contains("request timed out")
        }
        _ => false,
    }
}

/// Whether `e` is a request the client gave up on after
/// [`REQUEST_TIMEOUT`](super::REQUEST_TIMEOUT) without an answer (tonic's gRPC `Cancelled`,
/// "Timeout expired"): what every request on a connection that hangs ends in, until HTTP/2
/// pings find it dead ([`KEEP_ALIVE_INTERVAL`](super::KEEP_ALIVE_INTERVAL)) and the next
/// request goes over a new one. Unlike a refused connection, the request may have reached the
/// server and been applied, so it is sent again only by operations for which that is safe.
fn timed_out(e: &Error) -> bool {
    let Error::Backend { source, .. } = e else {
        return false;
    };
    match source.downcast_ref::<etcd_client::Error>() {
        Some(etcd_client::Error::GRpcStatus(status)) => {
            format!("{:?}", status.code()) == "Cancelled"
                && status.message().contains("Timeout expired")
        }
        _ => false,
    }
}

/// Whether an operation may be sent again after a request of it timed out ([`timed_out`]),
/// when that request may have been applied.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterTimeout {
    /// Yes: doing it twice is doing it once (reads; an acquire, whose key is named by its
    /// token and found again; a keep-alive), or at worst reports a hold lost that was not (a
    /// release or a lease move that was applied, then not found on the second try: the
    /// caller sees `Lost`, no other holder is harmed).
    Retry,
    /// No: a second try could act on something else (`force_release` would release the next
    /// holder).
    Fail,
}

impl EtcdBackend {
    /// `op`, logged in; again (logged in anew) after an expired auth token, and again every
    /// 100 ms until `until` while the cluster cannot answer (and after a timed-out request,
    /// when `after_timeout` allows). `until: None` allows [`UNREACHABLE_RETRY_FOR`] from the
    /// first failure (an acquire without a deadline may wait long before its first failure:
    /// a window counted from its start would have closed by then).
    pub(super) async fn retrying<T, F, Fut>(
        &self,
        until: Option<Instant>,
        after_timeout: AfterTimeout,
        op: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.logged_in().await?;
        let mut relogged = false;
        let mut until = until;
        loop {
            let answer = op().await;
            if answer.is_err() && until.is_none() {
                until = Some(Instant::now() + UNREACHABLE_RETRY_FOR);
            }
            let until = until.unwrap_or_else(Instant::now);
            match answer {
                Err(_) if self.token_expired() && !relogged => {
                    relogged = true;
                    self.logged_in().await?;
                }
                Err(e)
                    if (unreachable_now(&e)
                        || (after_timeout == AfterTimeout::Retry && timed_out(&e)))
                        && Instant::now() + UNREACHABLE_RETRY_PAUSE < until =>
                {
                    tracing::debug!(target: "dlock", backend = NAME, error = %e, "etcd cannot answer now; trying again");
                    tokio::time::sleep(UNREACHABLE_RETRY_PAUSE).await;
                }
                done => return done,
            }
        }
    }
}
