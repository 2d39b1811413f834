//! etcd: the raw requests a lock needs with the same client crate (the floor: grant a lease,
//! put the key if absent in a transaction, list the lock's prefix, delete the key, revoke the
//! lease) next to dlock.

use std::sync::Arc;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};

use crate::{compare, Op, Res};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub async fn uncontended(url: &str, tasks: usize, per_task: usize, rounds: usize) -> Res {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let locker = dlock::Locker::connect(url)
        .await
        .map_err(|e| format!("etcd at {url}: {e} (start it with `scripts/services.sh up`)"))?;
    let endpoint = url
        .trim_start_matches("etcd://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:2379")
        .to_owned();
    let client = Client::connect([endpoint], None).await.map_err(err)?;
    let floor: Op = {
        let (client, run) = (client.clone(), run.clone());
        Arc::new(move |t| {
            let mut client = client.clone();
            let prefix = format!("/bench/{run}/floor{t}/");
            Box::pin(async move {
                let key = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
                let lease = client.lease_grant(30, None).await.map_err(err)?.id();
                let txn = Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.as_str(),
                        Vec::new(),
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                if !client.txn(txn).await.map_err(err)?.succeeded() {
                    return Err("floor: key exists".into());
                }
                let listing = client
                    .get(
                        prefix.as_str(),
                        Some(GetOptions::new().with_prefix().with_keys_only()),
                    )
                    .await
                    .map_err(err)?;
                if listing.kvs().len() != 1 {
                    return Err("floor: uncontended key busy".into());
                }
                client.delete(key.as_str(), None).await.map_err(err)?;
                client.lease_revoke(lease).await.map_err(err)?;
                Ok(())
            })
        })
    };
    let dlock_op = crate::dlock_cycle(locker, &run);
    compare(
        &format!("etcd uncontended lock+release, {tasks} task(s)"),
        vec![
            ("floor (lease, txn put, list, delete, revoke)", floor),
            ("dlock etcd", dlock_op),
        ],
        "floor (lease, txn put, list, delete, revoke)",
        tasks,
        per_task,
        rounds,
    )
    .await
}
