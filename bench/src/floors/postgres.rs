//! PostgreSQL: the raw statements a table lock needs (the floor: an `INSERT ... ON CONFLICT DO
//! UPDATE ... WHERE expired RETURNING nextval(..)` and a `DELETE` with its `pg_notify`, the same
//! shapes dlock sends) next to dlock, on dlock's own table.

use std::sync::Arc;

use sqlx::postgres::PgPoolOptions;

use crate::{compare, Op, Res};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub async fn uncontended(url: &str, tasks: usize, per_task: usize, rounds: usize) -> Res {
    let run = uuid::Uuid::new_v4().simple().to_string();
    // dlock first: its connect creates the table and sequence the floor uses.
    let locker = dlock::Locker::connect(url).await.map_err(|e| {
        format!("PostgreSQL at {url}: {e} (start it with `scripts/services.sh up`)")
    })?;
    let pool = PgPoolOptions::new()
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
                let fence: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO dlock_locks AS l (lock_name, secret_key, expire_at) \
                     VALUES ($1, $2, clock_timestamp() + interval '30 seconds') \
                     ON CONFLICT (lock_name) DO UPDATE SET secret_key = EXCLUDED.secret_key, \
                     expire_at = EXCLUDED.expire_at WHERE l.expire_at < clock_timestamp() \
                     RETURNING nextval('dlock_locks_fence')",
                )
                .bind(&key)
                .bind(&token)
                .fetch_optional(&pool)
                .await
                .map_err(err)?;
                if fence.is_none() {
                    return Err("floor: uncontended key busy".into());
                }
                let rows = sqlx::query(
                    "WITH d AS (DELETE FROM dlock_locks WHERE lock_name = $1 AND secret_key = $2 \
                     RETURNING lock_name) SELECT pg_notify('dlock_locks_released', lock_name) FROM d",
                )
                .bind(&key)
                .bind(&token)
                .fetch_all(&pool)
                .await
                .map_err(err)?;
                if rows.len() != 1 {
                    return Err("floor: delete matched nothing".into());
                }
                Ok(())
            })
        })
    };
    let dlock_op = crate::dlock_cycle(locker, &run);
    compare(
        &format!("PostgreSQL uncontended lock+release, {tasks} task(s)"),
        vec![
            ("floor (INSERT ON CONFLICT + DELETE)", floor),
            ("dlock postgres", dlock_op),
        ],
        "floor (INSERT ON CONFLICT + DELETE)",
        tasks,
        per_task,
        rounds,
    )
    .await?;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dlock_locks WHERE lock_name LIKE $1")
        .bind(format!("bench:{run}:%"))
        .fetch_one(&pool)
        .await
        .map_err(err)?;
    if left != 0 {
        return Err(format!("postgres bench left {left} rows behind"));
    }
    Ok(())
}
