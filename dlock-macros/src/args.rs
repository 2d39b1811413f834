//! The attribute's arguments: parsed into [`Args`] (one setter per argument, each rejecting a
//! repeat), then checked against the function's signature by [`Args::build`] into a [`Config`].

use std::time::Duration;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, ExprLit, Ident, Lit, LitBool, LitStr, Signature, Token};

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
}

/// What to do when the lock is still busy after `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnBusy {
    /// Return `Err(dlock::Error::Busy { .. }.into())`.
    Error,
    /// Return `Ok(Default::default())` without running the body.
    Skip,
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

/// The known argument closest to `unknown`, when it is close enough to be a typo.
fn closest(unknown: &str) -> Option<&'static str> {
    let unknown = unknown.to_ascii_lowercase();
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
            } else {
                let unknown = input.call(Ident::parse_any)?;
                let hint = match closest(&unknown.to_string()) {
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
