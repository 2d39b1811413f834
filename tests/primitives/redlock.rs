//! Redlock: no read-write locks or semaphores (it answers `Error::Unsupported` naming the
//! backends that have them): its quorum cannot count holders safely (a permit counted on a
//! majority of nodes can be counted again after a node restarts empty), so a semaphore there
//! would over-admit. Leader election, a mutex, works.

use crate::scenarios;
use crate::support::{connect, unique, RedisServer};

fn redlock_url(servers: &[RedisServer]) -> String {
    let hosts: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    format!("redlock://{}", hosts.join(","))
}

#[tokio::test]
async fn has_no_read_write_locks_or_semaphores() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let locker = connect("redlock", &redlock_url(&servers)).await;
    scenarios::unsupported_kinds_say_where_to_go(&locker, &unique("redlock-unsupported")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elects_one_leader_at_a_time() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let mut lockers = Vec::new();
    for i in 0..5 {
        lockers.push(
            connect("redlock", &redlock_url(&servers))
                .await
                .with_owner(format!("redlock-{i}")),
        );
    }
    scenarios::five_candidates_one_leader_at_a_time(&lockers, &unique("redlock-elect")).await;
}
