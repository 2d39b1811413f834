//! Inspection: the holder of a key, the locks under a prefix (one range of the unique index on
//! `lock_name`), and a force release (see the module docs, "Inspection").

use std::time::Duration;

use sqlx::AssertSqlSafe;

use super::{bounded, lock_name, query, readable, Failure, MysqlBackend, PREFIX_LEN};
use crate::{LockInfo, Result};

/// A live row as `inspect` reads it: owner, id (the fence), microseconds of lease left.
type InspectedRow = (Option<String>, i64, i64);
/// A live row as `list` reads it: `lock_name`, `lock_key`, then as [`InspectedRow`].
type ListedRow = (String, Option<String>, Option<String>, i64, i64);

/// The `LIKE` pattern (escape character `!`) that every `lock_name` of a key starting with
/// `prefix` matches: the prefix's first [`PREFIX_LEN`] characters mapped as in a hashed name,
/// then `%`. A key stored as is has only characters the mapping keeps, and a hashed name starts
/// with its key's first [`PREFIX_LEN`] characters mapped, so both kinds fall in the range; the
/// caller drops the other names the pattern lets through.
fn name_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len().min(PREFIX_LEN) * 2 + 1);
    for c in prefix.chars().take(PREFIX_LEN).map(readable) {
        if matches!(c, '%' | '_' | '!') {
            pattern.push('!');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

fn info(key: String, owner: Option<String>, id: i64, left_us: i64) -> LockInfo {
    LockInfo {
        key,
        owner,
        fence: u64::try_from(id).ok(),
        expires_in: Some(Duration::from_micros(u64::try_from(left_us).unwrap_or(0))),
    }
}

impl MysqlBackend {
    /// The live holder of `key`, if any.
    pub(super) async fn inspect_inner(&self, key: &str) -> Result<Option<LockInfo>> {
        let name = lock_name(key);
        let row: Option<InspectedRow> = bounded(
            sqlx::query_as(AssertSqlSafe(self.sql.inspect.clone()))
                .bind(&*name)
                .fetch_optional(&self.pool),
        )
        .await
        .map_err(Failure::into_error)?;
        Ok(row.map(|(owner, id, left)| info(key.to_owned(), owner, id, left)))
    }

    /// Every live lock whose key starts with `prefix`: the index range of [`name_pattern`],
    /// then the exact comparison on the key as written (`lock_key`, else `lock_name`).
    pub(super) async fn list_inner(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        let rows: Vec<ListedRow> = bounded(
            sqlx::query_as(AssertSqlSafe(self.sql.list.clone()))
                .bind(name_pattern(prefix))
                .fetch_all(&self.pool),
        )
        .await
        .map_err(Failure::into_error)?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, key, owner, id, left)| {
                // No `lock_key`: a plain name (the key itself), or a hashed one written by an
                // older dlock, which kept no key.
                let key = key.unwrap_or(name);
                key.starts_with(prefix).then(|| info(key, owner, id, left))
            })
            .collect())
    }

    /// Deletes the live holder's row by its `secret_key`, as its own release would: a holder
    /// that took the key meanwhile has another one and is left alone.
    pub(super) async fn force_release_inner(&self, key: &str) -> Result<bool> {
        let name = lock_name(key);
        let secret: Option<String> = bounded(
            sqlx::query_scalar(AssertSqlSafe(self.sql.holder.clone()))
                .bind(&*name)
                .fetch_optional(&self.pool),
        )
        .await
        .map_err(Failure::into_error)?;
        let Some(secret) = secret else {
            return Ok(false);
        };
        let freed = self
            .checked("force release", || {
                query(&self.sql.release).bind(&*name).bind(&secret)
            })
            .await?;
        if freed {
            // A holder of this Locker: its turn and its local waiters move on as after its release.
            self.waiting.freed(&name, &secret).await;
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `LIKE` as the server applies it to these patterns (`%` anywhere, `_` one character, `!`
    /// escaping), case-sensitive: stricter than a case-insensitive collation.
    fn like(text: &str, pattern: &str) -> bool {
        fn go(t: &[char], p: &[char]) -> bool {
            match p.split_first() {
                None => t.is_empty(),
                Some(('%', rest)) => (0..=t.len()).any(|i| go(&t[i..], rest)),
                Some(('_', rest)) => !t.is_empty() && go(&t[1..], rest),
                Some(('!', rest)) => match (rest.split_first(), t.split_first()) {
                    (Some((pc, rest)), Some((tc, t))) => pc == tc && go(t, rest),
                    _ => false,
                },
                Some((pc, rest)) => t
                    .split_first()
                    .is_some_and(|(tc, t)| tc == pc && go(t, rest)),
            }
        }
        let t: Vec<char> = text.chars().collect();
        let p: Vec<char> = pattern.chars().collect();
        go(&t, &p)
    }

    #[test]
    fn every_name_of_a_key_under_a_prefix_is_in_its_range() {
        let keys = [
            "order:42".to_owned(),
            "Order 43 ünïcode/%{x}*?[".to_owned(),
            "ops/long-".to_owned() + &"long-".repeat(80),
            "a_b".to_owned(),
            "a%b!c".to_owned(),
            "x".repeat(300),
            "ключ 🔒".to_owned(),
        ];
        for key in &keys {
            let name = lock_name(key);
            for end in key.char_indices().map(|(i, _)| i).chain([key.len()]) {
                let prefix = &key[..end];
                let pattern = name_pattern(prefix);
                assert!(like(&name, &pattern), "{name:?} !~ {pattern:?}");
            }
        }
        // Wildcards in a prefix are literal: `a_` does not reach `ab`.
        assert_eq!(name_pattern("a_"), "a!_%");
        assert!(!like(&lock_name("abc"), &name_pattern("a_")));
        assert_eq!(name_pattern(""), "%");
        assert_eq!(name_pattern(&"y".repeat(100)), "y".repeat(64) + "%");
    }
}
