//! Inspection: the holder of a key, the locks under a prefix (two byte ranges of the primary
//! key's index), and a force release (see the module docs, "Inspection").

use std::time::Duration;

use sqlx::AssertSqlSafe;

use super::{bounded, lock_name, readable, PostgresBackend, MAPPED, PREFIX_LEN};
use crate::{LockInfo, Result};

/// A live row as `inspect` reads it: owner, fence, microseconds of lease left.
type InspectedRow = (Option<String>, Option<i64>, i64);
/// A live row as `list` reads it: `lock_name`, `lock_key`, then as [`InspectedRow`].
type ListedRow = (String, Option<Vec<u8>>, Option<String>, Option<i64>, i64);

/// The two ranges `[from, to)` of `lock_name`, in byte order, that hold every name of a key
/// starting with `prefix`: keys stored as they are start with the prefix itself, mapped ones
/// with U+0001 and the prefix's first [`PREFIX_LEN`] characters mapped. `None` when there is
/// no such bound (`""`, or a prefix of U+10FFFF characters only): then every row is read.
fn name_ranges(prefix: &str) -> Option<[(String, String); 2]> {
    if prefix.is_empty() {
        return None;
    }
    let mut mapped = String::from(MAPPED);
    mapped.extend(prefix.chars().take(PREFIX_LEN).map(readable));
    let mapped_end = successor(&mapped)?;
    let plain = if prefix.contains('\0') {
        // No key with NUL is stored as is (and a TEXT parameter cannot hold NUL).
        (mapped.clone(), mapped_end.clone())
    } else {
        (prefix.to_owned(), successor(prefix)?)
    };
    Some([plain, (mapped, mapped_end)])
}

/// The least string above every string that starts with `s`, in byte (code point) order: `s`
/// with its last character incremented, dropping trailing U+10FFFF; `None` if nothing is left.
fn successor(s: &str) -> Option<String> {
    let mut chars: Vec<char> = s.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'), // past the surrogates
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn info(key: String, owner: Option<String>, fence: Option<i64>, left_us: i64) -> LockInfo {
    LockInfo {
        key,
        owner,
        fence: fence.and_then(|f| u64::try_from(f).ok()),
        expires_in: Some(Duration::from_micros(u64::try_from(left_us).unwrap_or(0))),
    }
}

impl PostgresBackend {
    /// The live holder of `key`, if any.
    pub(super) async fn inspect_inner(&self, key: &str) -> Result<Option<LockInfo>> {
        let name = lock_name(key);
        let row: Option<InspectedRow> = bounded(
            sqlx::query_as(AssertSqlSafe(self.sql.inspect.clone()))
                .bind(&*name)
                .fetch_optional(&self.pool),
        )
        .await?;
        Ok(row.map(|(owner, fence, left)| info(key.to_owned(), owner, fence, left)))
    }

    /// Every live lock whose key starts with `prefix`: the index ranges of [`name_ranges`],
    /// then the exact comparison on the key as written (`lock_key`, else `lock_name`).
    pub(super) async fn list_inner(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        let rows: Vec<ListedRow> = match name_ranges(prefix) {
            Some([(from, to), (mapped_from, mapped_to)]) => {
                bounded(
                    sqlx::query_as(AssertSqlSafe(self.sql.list_ranges.clone()))
                        .bind(from)
                        .bind(to)
                        .bind(mapped_from)
                        .bind(mapped_to)
                        .fetch_all(&self.pool),
                )
                .await?
            }
            None => {
                bounded(
                    sqlx::query_as(AssertSqlSafe(self.sql.list_all.clone())).fetch_all(&self.pool),
                )
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(name, key, owner, fence, left)| {
                // No `lock_key`: a name stored as is (the key itself), or a mapped one written
                // by an older dlock, which kept no key.
                let key = match key {
                    Some(bytes) => String::from_utf8(bytes)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                    None => name,
                };
                key.starts_with(prefix)
                    .then(|| info(key, owner, fence, left))
            })
            .collect())
    }

    /// Runs the live holder's own release (token-checked, with its notice): a holder that took
    /// the key meanwhile has another `secret_key` and is left alone.
    pub(super) async fn force_release_inner(&self, key: &str) -> Result<bool> {
        let name = lock_name(key);
        let secret: Option<String> = bounded(
            sqlx::query_scalar(AssertSqlSafe(self.sql.holder.clone()))
                .bind(&*name)
                .fetch_optional(&self.pool),
        )
        .await?;
        let Some(secret) = secret else {
            return Ok(false);
        };
        let released = bounded(
            sqlx::query(AssertSqlSafe(self.sql.release.clone()))
                .bind(&*name)
                .bind(&secret)
                .fetch_all(&self.pool),
        )
        .await?;
        Ok(!released.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successors_bound_every_string_with_the_prefix() {
        assert_eq!(successor("ab").as_deref(), Some("ac"));
        assert_eq!(successor("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(successor("\u{10FFFF}"), None);
        assert!("ab\u{10FFFF}\u{10FFFF}" < "ac");
    }

    #[test]
    fn every_name_of_a_key_under_a_prefix_is_in_a_range() {
        let keys = [
            "order:42".to_owned(),
            "Order 43 ünïcode/%{x}*?[".to_owned(),
            "ops/long-".to_owned() + &"long-".repeat(200),
            "nul\0byte".to_owned(),
            "one\u{1}two".to_owned(),
            "ключ 🔒\n".to_owned(),
        ];
        for key in &keys {
            let name = lock_name(key);
            for end in key.char_indices().map(|(i, _)| i).chain([key.len()]) {
                let prefix = &key[..end];
                match name_ranges(prefix) {
                    None => assert!(prefix.is_empty()),
                    Some(ranges) => assert!(
                        ranges
                            .iter()
                            .any(|(from, to)| **from <= *name && *name < **to),
                        "{name:?} outside {ranges:?}"
                    ),
                }
            }
        }
        for (from, to) in name_ranges("a\0b").unwrap() {
            assert!(!from.contains('\0') && !to.contains('\0'));
        }
    }
}
