//! MySQL/MariaDB: the seed's table INSERT + DELETE (the floor) next to dlock, on the same table.

use std::sync::Arc;

use sqlx::mysql::MySqlPoolOptions;

use crate::{compare, Op, Res};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub async fn uncontended(url: &str, tasks: usize, per_task: usize, rounds: usize) -> Res {
    let run = uuid::Uuid::new_v4().simple().to_string();
    // dlock first: its connect creates the table the floor uses.
    let locker = dlock::Locker::connect(url)
        .await
        .map_err(|e| format!("MariaDB at {url}: {e} (start it with `scripts/services.sh up`)"))?;
    let pool = MySqlPoolOptions::new()
        .max_connections(16)
        .test_before_acquire(false)
        .connect(url)
        .await
        .map_err(err)?;
    let floor: Op = {
        let (pool, run) = (pool.clone(), run.clone());
        Arc::new(move |t| {
            let (pool, key) = (pool.clone(), format!("bench:{run}:floor:{t}"));
            Box::pin(async move {
                let token = uuid::Uuid::new_v4().simple().to_string();
                sqlx::query(
                    "INSERT INTO distributed_lock (lock_name, secret_key, expire_at) \
                     VALUES (?, ?, NOW(6) + INTERVAL 30 SECOND)",
                )
                .bind(&key)
                .bind(&token)
                .execute(&pool)
                .await
                .map_err(|e| format!("floor insert (uncontended key busy?): {e}"))?;
                let done = sqlx::query(
                    "DELETE FROM distributed_lock WHERE lock_name = ? AND secret_key = ?",
                )
                .bind(&key)
                .bind(&token)
                .execute(&pool)
                .await
                .map_err(err)?;
                if done.rows_affected() != 1 {
                    return Err("floor: delete matched nothing".into());
                }
                Ok(())
            })
        })
    };
    let dlock_op = crate::dlock_cycle(locker, &run);
    compare(
        &format!("MySQL (MariaDB) uncontended lock+release, {tasks} task(s)"),
        vec![
            ("floor (INSERT + DELETE)", floor),
            ("dlock mysql", dlock_op),
        ],
        "floor (INSERT + DELETE)",
        tasks,
        per_task,
        rounds,
    )
    .await?;
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM distributed_lock WHERE lock_name LIKE ?")
            .bind(format!("bench:{run}:%"))
            .fetch_one(&pool)
            .await
            .map_err(err)?;
    if left != 0 {
        return Err(format!("mysql bench left {left} rows behind"));
    }
    Ok(())
}
