//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (cargo feature `metrics`):
//! whatever recorder the program installs (a Prometheus exporter, StatsD, ...) receives them.
//! Without the feature every function here is empty and compiles away.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `dlock_acquisitions_total` | counter | `backend`, `outcome` = `acquired` / `busy` / `error` |
//! | `dlock_wait_seconds` | histogram: time an acquire took | `backend`, `outcome` |
//! | `dlock_hold_seconds` | histogram: acquisition to release (or drop) | `backend` |
//! | `dlock_renewals_total` | counter: watchdog renewals | `backend`, `outcome` = `renewed` / `failed` |
//! | `dlock_losses_total` | counter: leases lost while held | `backend` |
//! | `dlock_force_releases_total` | counter: holders removed by `force_release` | `backend` |
//!
//! Labels are the backend and the outcome only, never the key: keys are unbounded (one per
//! order, per user), and a label per key would grow a time series per key.

#![cfg_attr(not(feature = "metrics"), allow(unused_variables))]

use std::time::{Duration, Instant};

/// How an acquire ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Acquired,
    Busy,
    Error,
}

#[cfg(feature = "metrics")]
impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Acquired => "acquired",
            Outcome::Busy => "busy",
            Outcome::Error => "error",
        }
    }
}

/// An acquire ended with `outcome` after `waited`.
#[inline]
pub(crate) fn acquire(backend: &'static str, outcome: Outcome, waited: Duration) {
    #[cfg(feature = "metrics")]
    {
        let labels = [("backend", backend), ("outcome", outcome.label())];
        metrics::counter!("dlock_acquisitions_total", &labels).increment(1);
        metrics::histogram!("dlock_wait_seconds", &labels).record(waited.as_secs_f64());
    }
}

/// A lock acquired at `acquired_at` was released or dropped. Takes the instant, not the time
/// held: without the `metrics` feature the clock is not read at all.
#[inline]
pub(crate) fn hold(backend: &'static str, acquired_at: Instant) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("dlock_hold_seconds", "backend" => backend)
        .record(acquired_at.elapsed().as_secs_f64());
}

/// A watchdog renewal succeeded (`true`) or failed and will be retried (`false`).
#[inline]
pub(crate) fn renewal(backend: &'static str, renewed: bool) {
    #[cfg(feature = "metrics")]
    {
        let outcome = if renewed { "renewed" } else { "failed" };
        metrics::counter!("dlock_renewals_total", "backend" => backend, "outcome" => outcome)
            .increment(1);
    }
}

/// A held lease was lost.
#[inline]
pub(crate) fn loss(backend: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("dlock_losses_total", "backend" => backend).increment(1);
}

/// `force_release` removed a holder.
#[inline]
pub(crate) fn force_release(backend: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("dlock_force_releases_total", "backend" => backend).increment(1);
}
