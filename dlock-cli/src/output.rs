//! How locks are shown: a table for people, JSON for programs, durations like `29.5s`.

use std::fmt::Write as _;
use std::time::Duration;

use dlock::LockInfo;
use serde_json::Value;

/// The table's header.
const HEADER: [&str; 4] = ["KEY", "OWNER", "FENCE", "EXPIRES IN"];

/// `held` as an aligned table with a header line, one lock per line; `-` where a value is
/// unknown. Numbers are right-aligned. Control characters in keys and owners are escaped, so a
/// key cannot break the table or send terminal escapes.
pub fn table(held: &[LockInfo]) -> String {
    let rows: Vec<[String; 4]> = held
        .iter()
        .map(|info| {
            [
                printable(&info.key),
                info.owner.as_deref().map_or_else(|| "-".into(), printable),
                info.fence.map_or_else(|| "-".into(), |f| f.to_string()),
                info.expires_in.map_or_else(|| "-".into(), human),
            ]
        })
        .collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(String::from);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = width - cell.chars().count();
            // KEY and OWNER to the left, FENCE and EXPIRES IN to the right.
            if i < 2 {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            } else {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// What `list` and `watch` say when nothing is held under `prefix`.
pub fn none_held(prefix: &str) -> String {
    if prefix.is_empty() {
        "no locks held\n".into()
    } else {
        format!("no locks held under `{}`\n", printable(prefix))
    }
}

/// One lock as a JSON object: `key`, `owner`, `fence`, `expires_in_ms`, `null` where unknown.
pub fn json_object(info: &LockInfo) -> String {
    let string = |s: &str| Value::String(s.to_owned()).to_string();
    let or_null = |v: Option<String>| v.unwrap_or_else(|| "null".into());
    format!(
        "{{\"key\": {}, \"owner\": {}, \"fence\": {}, \"expires_in_ms\": {}}}",
        string(&info.key),
        or_null(info.owner.as_deref().map(string)),
        or_null(info.fence.map(|f| f.to_string())),
        or_null(
            info.expires_in
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).to_string())
        ),
    )
}

/// The locks as one JSON array, one object a line.
pub fn json_array(held: &[LockInfo]) -> String {
    if held.is_empty() {
        return "[]\n".into();
    }
    let objects: Vec<String> = held
        .iter()
        .map(|info| format!("  {}", json_object(info)))
        .collect();
    format!("[\n{}\n]\n", objects.join(",\n"))
}

/// A duration the way a person reads it: `850ms`, `29.5s`, `4m05s`, `2h03m`, `3d04h`.
pub fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    if d < Duration::from_millis(59_950) {
        return format!("{:.1}s", d.as_secs_f64());
    }
    // Whole seconds from here on, rounded.
    let secs = u64::try_from((d.as_millis() + 500) / 1000).unwrap_or(u64::MAX);
    if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600)
    }
}

/// `text` with control characters escaped (`\n`, `\u{1b}`), everything else as it is.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `url` with its passwords masked as the library masks its own messages, control characters
/// escaped for the terminal.
pub fn mask_password(url: &str) -> String {
    printable(&dlock::mask_password(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(key: &str, owner: Option<&str>, fence: Option<u64>, ms: Option<u64>) -> LockInfo {
        let mut info = LockInfo::new(key);
        info.owner = owner.map(String::from);
        info.fence = fence;
        info.expires_in = ms.map(Duration::from_millis);
        info
    }

    #[test]
    fn durations_read_like_a_person_writes_them() {
        let ms = Duration::from_millis;
        assert_eq!(human(ms(0)), "0ms");
        assert_eq!(human(ms(850)), "850ms");
        assert_eq!(human(ms(1000)), "1.0s");
        assert_eq!(human(ms(29_460)), "29.5s");
        assert_eq!(human(ms(59_949)), "59.9s");
        assert_eq!(human(ms(59_960)), "1m00s");
        assert_eq!(human(ms(245_000)), "4m05s");
        assert_eq!(human(ms(7_380_000)), "2h03m");
        assert_eq!(human(ms(273_600_000)), "3d04h");
    }

    #[test]
    fn tables_align_and_escape() {
        let held = [
            info("order:42", Some("web-1:4242"), Some(7), Some(29_500)),
            info("order:7\n", None, None, None),
        ];
        assert_eq!(
            table(&held),
            "KEY        OWNER       FENCE  EXPIRES IN\n\
             order:42   web-1:4242      7       29.5s\n\
             order:7\\n  -               -           -\n"
        );
        assert_eq!(none_held(""), "no locks held\n");
        assert_eq!(none_held("a:"), "no locks held under `a:`\n");
    }

    #[test]
    fn json_has_every_field_and_null_where_unknown() {
        let held = [
            info("a\"b", Some("me"), Some(3), Some(1500)),
            info("c", None, None, None),
        ];
        let parsed: Value = serde_json::from_str(&json_array(&held)).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([
                {"key": "a\"b", "owner": "me", "fence": 3, "expires_in_ms": 1500},
                {"key": "c", "owner": null, "fence": null, "expires_in_ms": null},
            ])
        );
        assert_eq!(json_array(&[]), "[]\n");
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password("redis://u:secret@h:1/0?password=x&a=b"),
            "redis://u:***@h:1/0?password=***&a=b"
        );
        assert_eq!(
            mask_password("etcd://a:p@h1:1,b:q@h2:2/r"),
            "etcd://a:***@h1:1,b:***@h2:2/r"
        );
        assert_eq!(
            mask_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(mask_password("nonsense"), "nonsense");
    }
}
