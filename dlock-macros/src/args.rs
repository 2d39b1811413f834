//! The attribute's arguments: parsed into [`Args`] (one setter per argument, each rejecting a
//! repeat), then checked against the function's signature by [`Args::build`] into a [`Config`].

use std::time::Duration;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, LitBool, LitInt, LitStr, Signature, Token, UnOp};

use crate::key_template::KeyTemplate;

/// The argument names, in the order of DESIGN.md's table.
pub(crate) const ARGUMENTS: &[&str] = &[
    "key",
    "ttl",
    "watchdog",
    "wait",
    "backend",
    "on_busy",
    "guard",
    "abort_on_lost",
    "mode",
    "permits",
];

mod kw {
    syn::custom_keyword!(key);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(watchdog);
    syn::custom_keyword!(wait);
    syn::custom_keyword!(backend);
    syn::custom_keyword!(on_busy);
    syn::custom_keyword!(guard);
    syn::custom_keyword!(abort_on_lost);
    syn::custom_keyword!(mode);
    syn::custom_keyword!(permits);
}

/// A value with the span of the argument name it was given under (for "set multiple times").
#[derive(Debug)]
struct Arg<T> {
    name: Span,
    value: T,
}

/// The arguments as written, not yet checked against the function.
#[derive(Debug, Default)]
pub(crate) struct Args {
    key: Option<Arg<LitStr>>,
    ttl: Option<Arg<LitStr>>,
    watchdog: Option<Arg<LitBool>>,
    wait: Option<Arg<LitStr>>,
    backend: Option<Arg<LitStr>>,
    on_busy: Option<Arg<LitStr>>,
    guard: Option<Arg<Ident>>,
    abort_on_lost: Option<Arg<LitBool>>,
    mode: Option<Arg<LitStr>>,
    permits: Option<Arg<LitInt>>,
}

/// What to do when the lock is still busy after `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnBusy {
    /// Return `Err(dlock::Error::Busy { .. }.into())`.
    Error,
    /// Return `Ok(Default::default())` without running the body.
    Skip,
}

/// Which lock the function holds on `key`: each is its own key space (see dlock's `Locker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// `Locker::lock`: the default.
    Mutex,
    /// `mode = "read"`: `Locker::read_lock`, shared with other readers.
    Read,
    /// `mode = "write"`: `Locker::write_lock`, exclusive.
    Write,
    /// `permits = N`: one permit of `Locker::semaphore(key, N)`, N >= 1.
    Permits(u32),
}

/// The checked configuration the expander works from.
#[derive(Debug)]
pub(crate) struct Config {
    pub key: KeyTemplate,
    pub ttl: Option<Duration>,
    /// `Some(..)` only when given explicitly.
    pub watchdog: Option<bool>,
    pub wait: Option<Duration>,
    pub backend: LitStr,
    pub on_busy: OnBusy,
    /// The span of the `on_busy` value (where a missing `Default` impl is reported).
    pub on_busy_span: Span,
    pub guard: Option<Ident>,
    pub abort_on_lost: bool,
    pub lock: LockKind,
}

/// Stores `value` in `slot`, or fails when the argument was already given.
fn set<T>(slot: &mut Option<Arg<T>>, name: &Ident, value: T) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(
            name.span(),
            format!("`{name}` set multiple times; give each argument once"),
        ));
    }
    *slot = Some(Arg {
        name: name.span(),
        value,
    });
    Ok(())
}

/// The value after `name =`: a string literal.
fn parse_str(input: ParseStream, name: &Ident, example: &str) -> syn::Result<LitStr> {
    match parse_value(input, name, example)? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s),
        other => Err(syn::Error::new_spanned(
            other,
            format!("expected a string literal for `{name}`, like `{name} = {example}`"),
        )),
    }
}

/// The value after `name =`: `true` or `false`; a bare `name` means `true`.
fn parse_bool(input: ParseStream, name: &Ident) -> syn::Result<LitBool> {
    if input.is_empty() || input.peek(Token![,]) {
        return Ok(LitBool::new(true, name.span()));
    }
    match parse_value(input, name, "true")? {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b),
        other => Err(syn::Error::new_spanned(
            other,
            format!("expected `true` or `false` for `{name}`, like `{name} = true`"),
        )),
    }
}

/// The value after `name =`: an identifier.
fn parse_ident(input: ParseStream, name: &Ident, example: &str) -> syn::Result<Ident> {
    match parse_value(input, name, example)? {
        Expr::Path(p)
            if p.qself.is_none() && p.attrs.is_empty() && p.path.get_ident().is_some() =>
        {
            Ok(p.path.get_ident().cloned().expect("checked above"))
        }
        other => Err(syn::Error::new_spanned(
            other,
            format!("expected a variable name for `{name}`, like `{name} = {example}` (no quotes)"),
        )),
    }
}

/// The value after `name =`: an integer literal (its range is checked by [`Args::build`]).
fn parse_int(input: ParseStream, name: &Ident, example: &str) -> syn::Result<LitInt> {
    match parse_value(input, name, example)? {
        Expr::Lit(ExprLit {
            lit: Lit::Int(n), ..
        }) => Ok(n),
        negative @ Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        }) => Err(syn::Error::new_spanned(
            negative,
            format!("`{name}` must be at least 1, like `{name} = {example}`"),
        )),
        other => Err(syn::Error::new_spanned(
            other,
            format!(
                "expected an integer literal for `{name}`, like `{name} = {example}` (a number \
                 written out: no quotes, no constant or expression)"
            ),
        )),
    }
}

/// Fails when `mode` and `permits` are both given, at the one given last (`name`).
fn check_not_both(args: &Args, name: &Ident) -> syn::Result<()> {
    if args.mode.is_some() && args.permits.is_some() {
        let other = if name == "mode" { "permits" } else { "mode" };
        return Err(syn::Error::new(
            name.span(),
            format!(
                "`{name}` cannot be combined with `{other}`: `permits = N` takes one permit of a \
                 semaphore, which has no read or write mode; give `mode` for a read-write lock \
                 or `permits` for a semaphore, not both"
            ),
        ));
    }
    Ok(())
}

/// `= <expr>` after an argument name.
fn parse_value(input: ParseStream, name: &Ident, example: &str) -> syn::Result<Expr> {
    if !input.peek(Token![=]) {
        return Err(syn::Error::new(
            name.span(),
            format!("`{name}` needs a value, like `{name} = {example}`"),
        ));
    }
    input.parse::<Token![=]>()?;
    let mut value: Expr = input.parse()?;
    // A value passed through a `macro_rules!` fragment (`$backend:literal`) arrives wrapped in
    // an invisible group: look through it.
    while let Expr::Group(group) = value {
        value = *group.expr;
    }
    Ok(value)
}

/// Edit distance, for "did you mean".
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// The known argument closest to `unknown`, when it is close enough to be a typo, or the one
/// meant by a likely guess (`read`, `semaphore`, ...).
fn closest(unknown: &str) -> Option<&'static str> {
    let unknown = unknown.to_ascii_lowercase();
    match unknown.as_str() {
        "read" | "write" | "shared" | "exclusive" | "rw" | "read_write" | "rwlock" | "kind" => {
            return Some("mode")
        }
        "semaphore" | "concurrency" | "max_concurrent" | "max_concurrency" | "limit" => {
            return Some("permits")
        }
        _ => {}
    }
    ARGUMENTS
        .iter()
        .map(|known| (levenshtein(&unknown, known), *known))
        .filter(|(d, known)| *d <= 2.max(known.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

fn expected_one_of() -> String {
    ARGUMENTS
        .iter()
        .map(|a| format!("`{a}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            if !input.peek(Ident::peek_any) {
                return Err(syn::Error::new(
                    input.span(),
                    format!(
                        "expected an argument like `key = \"order:{{id}}\"`; arguments are {}",
                        expected_one_of()
                    ),
                ));
            }
            // The custom keywords pick the argument; `Ident::parse_any` keeps its name and span.
            let name = input.fork().call(Ident::parse_any)?;
            if input.peek(kw::key) {
                input.parse::<kw::key>()?;
                let v = parse_str(input, &name, "\"order:{id}\"")?;
                set(&mut args.key, &name, v)?;
            } else if input.peek(kw::ttl) {
                input.parse::<kw::ttl>()?;
                let v = parse_str(input, &name, "\"30s\"")?;
                set(&mut args.ttl, &name, v)?;
            } else if input.peek(kw::watchdog) {
                input.parse::<kw::watchdog>()?;
                let v = parse_bool(input, &name)?;
                set(&mut args.watchdog, &name, v)?;
            } else if input.peek(kw::wait) {
                input.parse::<kw::wait>()?;
                let v = parse_str(input, &name, "\"5s\"")?;
                set(&mut args.wait, &name, v)?;
            } else if input.peek(kw::backend) {
                input.parse::<kw::backend>()?;
                let v = parse_str(input, &name, "\"redis\"")?;
                set(&mut args.backend, &name, v)?;
            } else if input.peek(kw::on_busy) {
                input.parse::<kw::on_busy>()?;
                let v = parse_str(input, &name, "\"skip\"")?;
                set(&mut args.on_busy, &name, v)?;
            } else if input.peek(kw::guard) {
                input.parse::<kw::guard>()?;
                let v = parse_ident(input, &name, "lock")?;
                set(&mut args.guard, &name, v)?;
            } else if input.peek(kw::abort_on_lost) {
                input.parse::<kw::abort_on_lost>()?;
                let v = parse_bool(input, &name)?;
                set(&mut args.abort_on_lost, &name, v)?;
            } else if input.peek(kw::mode) {
                input.parse::<kw::mode>()?;
                let v = parse_str(input, &name, "\"read\"")?;
                set(&mut args.mode, &name, v)?;
                check_not_both(&args, &name)?;
            } else if input.peek(kw::permits) {
                input.parse::<kw::permits>()?;
                let v = parse_int(input, &name, "5")?;
                set(&mut args.permits, &name, v)?;
                check_not_both(&args, &name)?;
            } else {
                let unknown = input.call(Ident::parse_any)?;
                let text = unknown.to_string();
                let hint = match closest(&text) {
                    Some("mode") if text == "read" || text == "write" => {
                        format!("; did you mean `mode = \"{text}\"`?")
                    }
                    Some(known) => format!("; did you mean `{known}`?"),
                    None => ";".to_owned(),
                };
                return Err(syn::Error::new(
                    unknown.span(),
                    format!(
                        "unknown argument `{unknown}`{hint} expected one of: {}",
                        expected_one_of()
                    ),
                ));
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>().map_err(|_| {
                syn::Error::new(
                    input.span(),
                    "expected `,` between arguments, like `key = \"job\", ttl = \"30s\"`",
                )
            })?;
        }
        Ok(args)
    }
}

/// Parses a humantime duration at compile time.
fn duration(lit: &LitStr, name: &str) -> syn::Result<Duration> {
    let text = lit.value();
    humantime::parse_duration(text.trim()).map_err(|e| {
        syn::Error::new(
            lit.span(),
            format!(
                "`{name}` is not a duration: {text:?} ({e}); write a number with a unit, \
                 like \"30s\", \"500ms\", \"1m 30s\" or \"2h\""
            ),
        )
    })
}

/// The lock `mode` or `permits` asks for (at most one of them is given: see `check_not_both`).
fn lock_kind(mode: Option<Arg<LitStr>>, permits: Option<Arg<LitInt>>) -> syn::Result<LockKind> {
    if let Some(mode) = mode {
        return match mode.value.value().as_str() {
            "read" => Ok(LockKind::Read),
            "write" => Ok(LockKind::Write),
            other => Err(syn::Error::new(
                mode.value.span(),
                format!(
                    "unknown `mode` value {other:?}; expected \"read\" (a shared hold of the \
                     read-write lock `key`, together with other readers) or \"write\" (an \
                     exclusive hold: no reader or other writer); leave `mode` out for a plain \
                     mutex"
                ),
            )),
        };
    }
    let Some(permits) = permits else {
        return Ok(LockKind::Mutex);
    };
    match permits.value.base10_parse::<u32>() {
        Ok(0) => Err(syn::Error::new(
            permits.value.span(),
            "`permits` must be at least 1: a semaphore with 0 permits could never be acquired; \
             give the number of calls that may run at once, like `permits = 5`",
        )),
        Ok(n) => Ok(LockKind::Permits(n)),
        Err(_) => Err(syn::Error::new(
            permits.value.span(),
            format!(
                "`permits` must be at most {} (`u32::MAX`), like `permits = 5`",
                u32::MAX
            ),
        )),
    }
}

impl Args {
    /// Checks the arguments against the function's signature: `key` given, durations parse,
    /// every `{name}` in the key is a parameter, `abort_on_lost` only on an `async fn`.
    pub(crate) fn build(self, sig: &Signature) -> syn::Result<Config> {
        let Some(key) = self.key else {
            return Err(syn::Error::new(
                Span::call_site(),
                "missing `key`: name the lock, like \
                 `#[distributed_lock(key = \"order:{order_id}\")]`",
            ));
        };
        let key = KeyTemplate::parse(&key.value)?;
        key.check_names(sig)?;

        let ttl = self
            .ttl
            .map(|a| {
                let d = duration(&a.value, "ttl")?;
                if d < Duration::from_millis(1) {
                    return Err(syn::Error::new(
                        a.value.span(),
                        "`ttl` must be at least 1ms; leave `ttl` out for a watchdog-renewed \
                         lease of 30s",
                    ));
                }
                // dlock::MAX_TTL: a lease is a safety net for a crashed holder.
                if d > Duration::from_secs(365 * 24 * 3600) {
                    return Err(syn::Error::new(
                        a.value.span(),
                        "`ttl` must be at most 365 days (`dlock::MAX_TTL`); for a long job leave \
                         `ttl` out (a watchdog-renewed lease of 30s) or add `watchdog = true`",
                    ));
                }
                Ok(d)
            })
            .transpose()?;
        let wait = self.wait.map(|a| duration(&a.value, "wait")).transpose()?;

        let backend = match self.backend {
            Some(a) if a.value.value().trim().is_empty() => {
                return Err(syn::Error::new(
                    a.value.span(),
                    "`backend` must not be empty; use a registered name like \"redis\", or \
                     leave it out for \"default\"",
                ))
            }
            Some(a) => a.value,
            None => LitStr::new("default", Span::call_site()),
        };

        let (on_busy, on_busy_span) = match self.on_busy {
            None => (OnBusy::Error, Span::call_site()),
            Some(a) => match a.value.value().as_str() {
                "error" => (OnBusy::Error, a.value.span()),
                "skip" => (OnBusy::Skip, a.value.span()),
                other => {
                    return Err(syn::Error::new(
                        a.value.span(),
                        format!(
                            "unknown `on_busy` value {other:?}; expected \"error\" (return \
                             `Err(dlock::Error::Busy {{ .. }})`) or \"skip\" (return \
                             `Ok(Default::default())` without running the body)"
                        ),
                    ))
                }
            },
        };

        let abort_on_lost = match self.abort_on_lost {
            Some(a) if a.value.value && sig.asyncness.is_none() => {
                return Err(syn::Error::new(
                    a.name,
                    "`abort_on_lost` needs an `async fn`: a plain `fn` cannot be stopped while \
                     it runs; make the function `async`, or check `guard.is_held()` in the body",
                ))
            }
            Some(a) => a.value.value,
            None => false,
        };

        let lock = lock_kind(self.mode, self.permits)?;

        Ok(Config {
            key,
            ttl,
            watchdog: self.watchdog.map(|a| a.value.value),
            wait,
            backend,
            on_busy,
            on_busy_span,
            guard: self.guard.map(|a| a.value),
            abort_on_lost,
            lock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(closest("tll"), Some("ttl"));
        assert_eq!(closest("keys"), Some("key"));
        assert_eq!(closest("on_bussy"), Some("on_busy"));
        assert_eq!(closest("abort_on_loss"), Some("abort_on_lost"));
        assert_eq!(closest("timeout"), None);
        assert_eq!(closest("permit"), Some("permits"));
        assert_eq!(closest("semaphore"), Some("permits"));
        assert_eq!(closest("modes"), Some("mode"));
        assert_eq!(closest("read"), Some("mode"));
    }

    #[test]
    fn durations() {
        let d = |s: &str| duration(&LitStr::new(s, Span::call_site()), "ttl");
        assert_eq!(d("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(d("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(d("500ms").unwrap(), Duration::from_millis(500));
        assert!(d("30").is_err());
    }
}
