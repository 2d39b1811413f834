//! Query parameters of lock-service URLs that dlock reads itself (and removes before handing
//! the URL to the client crate, which may not know them).

/// Removes `name=value` from the query of `url`; returns the URL without it and the value (the
/// last one when repeated). Parameters are matched case-sensitively, values taken as written.
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
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

/// A duration as URL parameters write it: a number and a unit (`500ms`, `10s`, `1.5s`, `2m`,
/// `1h`; no unit means seconds).
#[cfg_attr(not(any(feature = "redis", feature = "zookeeper")), allow(dead_code))]
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

#[cfg(test)]
mod tests {
    use super::{parse_duration, take_param};
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
}
