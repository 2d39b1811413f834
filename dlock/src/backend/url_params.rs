//! Lock-service URLs: the query parameters dlock reads itself (and removes before handing the
//! URL to the client crate, which may not know them), and password masking for every message
//! that shows a URL.

/// Removes `name=value` from the query of `url`; returns the URL without it and the value (the
/// last one when repeated). Parameters are matched case-sensitively, values taken as written.
#[allow(dead_code)] // unused when only the memory backend is compiled
pub(crate) fn take_param(url: &str, name: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (key, v) = pair.split_once('=').unwrap_or((pair, ""));
            if key == name {
                value = Some(v.to_owned());
                false
            } else {
                !pair.is_empty()
            }
        })
        .collect();
    if kept.is_empty() {
        (base.to_owned(), value)
    } else {
        (format!("{base}?{}", kept.join("&")), value)
    }
}

#[allow(dead_code)] // unused when only the memory backend is compiled
/// Percent-decodes a user name or password from the URL (`%40` for `@`, ...); bytes that do
/// not decode are kept as written.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// Whether the query of `url` has a parameter named one of `names`.
#[allow(dead_code)] // unused when only the memory backend is compiled
pub(crate) fn has_param(url: &str, names: &[&str]) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| names.contains(&pair.split_once('=').map_or(pair, |(k, _)| k)))
    })
}

/// A duration as URL parameters write it: a number and a unit (`500ms`, `10s`, `1.5s`, `2m`,
/// `1h`; no unit means seconds).
#[allow(dead_code)] // unused when only the memory backend is compiled
pub(crate) fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    std::time::Duration::try_from_secs_f64(number * scale).ok()
}

/// `url` with every password in it replaced by `***`, for error messages, logs and `Debug`:
/// the password of each `user:password@` (Redlock and etcd URLs carry several hosts) and the
/// value of a `password=` query parameter (sqlx reads one). dlock's own messages are masked
/// this way; use it to show a lock service URL yourself.
///
/// ```
/// assert_eq!(
///     dlock::mask_password("redis://app:s3cret@cache:6379/0?password=x"),
///     "redis://app:***@cache:6379/0?password=***"
/// );
/// ```
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (location, query) = match rest.split_once('?') {
        Some((l, q)) => (l, Some(q)),
        None => (rest, None),
    };
    let authority_end = location.find('/').unwrap_or(location.len());
    let (authority, path) = location.split_at(authority_end);
    let authority = authority
        .split(',')
        .map(|host| match host.rsplit_once('@') {
            Some((userinfo, at)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{at}"),
                None => host.to_owned(),
            },
            None => host.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut masked = format!("{scheme}://{authority}{path}");
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        masked.push('?');
        masked.push_str(&pairs.join("&"));
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::{mask_password, parse_duration, take_param};
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn takes_one_parameter_and_keeps_the_rest() {
        assert_eq!(
            take_param("redis://h:1/0?replicas=2&protocol=resp3", "replicas"),
            ("redis://h:1/0?protocol=resp3".into(), Some("2".into()))
        );
        assert_eq!(
            take_param("redis://h:1?replicas=1", "replicas"),
            ("redis://h:1".into(), Some("1".into()))
        );
        assert_eq!(
            take_param("redis://h:1", "replicas"),
            ("redis://h:1".into(), None)
        );
        assert_eq!(
            take_param("redis://h:1?a=1", "replicas"),
            ("redis://h:1?a=1".into(), None)
        );
    }

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_password("redis://u:secret@h:1/0"),
            "redis://u:***@h:1/0"
        );
        assert_eq!(mask_password("redis://h:1"), "redis://h:1");
        assert_eq!(mask_password("mysql://root@h/test"), "mysql://root@h/test");
        assert_eq!(
            mask_password("redlock://:p1@h:1,u:p2@h:2,h:3?x=1"),
            "redlock://:***@h:1,u:***@h:2,h:3?x=1"
        );
        assert_eq!(
            mask_password("postgres://h/db?user=u&password=secret&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            mask_password("etcd://u:p@ss:w@rd@h:2379/x"),
            "etcd://u:***@h:2379/x"
        );
        assert_eq!(mask_password("not a url"), "not a url");
    }
}
