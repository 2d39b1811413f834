//! The in-process backend.

use std::time::Duration;

use dlock::Locker;

use crate::scenarios;
use crate::support::unique;

/// `n` handles on one in-process lock space, with distinct owners.
async fn lockers(n: usize) -> Vec<Locker> {
    let one = Locker::memory();
    (0..n)
        .map(|i| one.with_owner(format!("memory-{i}")))
        .collect()
}

common_scenarios!(lockers, "memory");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_cancels_the_work_when_leadership_is_lost() {
    // In process nothing can be paused: another handle force-releases the term.
    let locker = Locker::memory();
    let name = unique("lead");
    let (admin, key) = (
        locker.clone(),
        format!("{}{name}", dlock::LEADER_KEY_PREFIX),
    );
    let lose = async move {
        assert!(admin.force_release(&key).await.expect("force_release"));
    };
    // A 3 s watchdog lease renews every second; the loss is found at the next renewal.
    let campaign = locker
        .campaign(&name)
        .ttl(Duration::from_secs(3))
        .watchdog(true);
    scenarios::lead_cancels_the_work_when_leadership_is_lost(campaign, lose).await;
}
