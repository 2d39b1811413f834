//! The read-lock, write-lock and semaphore cycles against the mutex cycle on one backend (issue
//! 16): uncontended acquire + release, one key per task, the same lease and the same Locker.

use std::sync::Arc;
use std::time::Duration;

use crate::{compare, Op, Res};

const TTL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy)]
enum Cycle {
    Mutex,
    Read,
    Write,
    Permit,
}

fn op(locker: &dlock::Locker, run: &str, cycle: Cycle) -> Op {
    let (locker, run) = (locker.clone(), run.to_owned());
    Arc::new(move |t| {
        let locker = locker.clone();
        let key = format!("bench:{run}:{t}");
        Box::pin(async move {
            let request = match cycle {
                Cycle::Mutex => locker.lock(key),
                Cycle::Read => locker.read_lock(key),
                Cycle::Write => locker.write_lock(key),
                Cycle::Permit => locker.semaphore(key, 4),
            };
            // One attempt: the key is the task's own, so busy means the bench is wrong.
            let guard = request
                .ttl(TTL)
                .wait(Duration::ZERO)
                .await
                .map_err(|e| format!("{e}"))?;
            guard.release().await.map_err(|e| format!("{e}"))
        })
    })
}

/// Mutex vs read lock vs write lock vs one permit of a semaphore of 4, on `locker`.
pub async fn cycles(
    name: &str,
    locker: &dlock::Locker,
    tasks: usize,
    per_task: usize,
    rounds: usize,
) -> Res {
    let run = uuid::Uuid::new_v4().simple().to_string();
    compare(
        &format!("{name}: primitives, uncontended, {tasks} task(s), one key each"),
        vec![
            ("mutex (lock)", op(locker, &run, Cycle::Mutex)),
            ("read_lock", op(locker, &run, Cycle::Read)),
            ("write_lock", op(locker, &run, Cycle::Write)),
            ("semaphore (1 of 4)", op(locker, &run, Cycle::Permit)),
        ],
        "mutex (lock)",
        tasks,
        per_task,
        rounds,
    )
    .await
}
