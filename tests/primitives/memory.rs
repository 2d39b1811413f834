//! The in-process backend.

use std::time::Duration;

use dlock::Locker;

use crate::scenarios;
use crate::support::unique;

fn lockers(n: usize) -> Vec<Locker> {
    let one = Locker::memory();
    (0..n)
        .map(|i| one.with_owner(format!("memory-{i}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_overlap_and_writers_exclude() {
    scenarios::readers_overlap_and_writers_exclude(&lockers(4), &unique("rw")).await;
}

#[tokio::test]
async fn a_reader_sees_the_last_write_fence() {
    scenarios::a_reader_sees_the_last_write_fence(&Locker::memory(), &unique("rwf")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_writer_is_not_starved_by_new_readers() {
    scenarios::a_waiting_writer_is_not_starved_by_new_readers(&lockers(2), &unique("starve")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semaphore_of_3_admits_3() {
    scenarios::a_semaphore_of_3_admits_3(&lockers(4), &unique("sem")).await;
}

#[tokio::test]
async fn a_permit_count_mismatch_is_an_error() {
    scenarios::a_permit_count_mismatch_is_an_error(&Locker::memory(), &unique("semx")).await;
}

#[tokio::test]
async fn kinds_have_their_own_key_spaces() {
    scenarios::kinds_have_their_own_key_spaces(&Locker::memory(), &unique("spaces")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_candidates_one_leader_at_a_time() {
    scenarios::five_candidates_one_leader_at_a_time(&lockers(5), &unique("elect")).await;
}

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
