//! Query parameters of lock-service URLs that dlock reads itself (and removes before handing
//! the URL to the client crate, which may not know them).

/// Removes `name=value` from the query of `url`; returns the URL without it and the value (the
/// last one when repeated). Parameters are matched case-sensitively, values taken as written.
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

#[cfg(test)]
mod tests {
    use super::take_param;

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
