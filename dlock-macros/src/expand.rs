//! Code generation: one generator for `async fn` and plain `fn` (after tracing-attributes'
//! `gen_block`), switching only the few places where the two differ.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, ItemFn, ReturnType, Type};

use crate::args::{Args, Config, LockKind, OnBusy};

/// The attribute's entry point. On any error the function is emitted unchanged next to the
/// error, so one mistake gives one message and no follow-on errors.
pub(crate) fn distributed_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    match try_expand(args, item.clone()) {
        Ok(out) => out,
        Err(err) => {
            let mut out = item;
            out.extend(err.into_compile_error());
            out
        }
    }
}

fn try_expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let func: ItemFn = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "`#[distributed_lock]` goes on a function with a body: \
             an `async fn` or a plain `fn` returning `Result<T, E>`",
        )
    })?;
    let args: Args = syn::parse2(args)?;
    if let Some(c) = &func.sig.constness {
        return Err(syn::Error::new_spanned(
            c,
            "`#[distributed_lock]` cannot go on a `const fn`: taking a lock happens at run time; \
             remove `const`",
        ));
    }
    let (ret, shape) = result_type(&func)?;
    let config = args.build(&func.sig)?;
    Ok(gen_function(&func, &config, ret, shape))
}

/// How the return type is known to be a `Result`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ResultShape {
    /// Written as `...Result<..>` (`Result`, `io::Result`, `anyhow::Result`): errors convert
    /// with `From::from`, and a missing `From<dlock::Error>` is reported at the type.
    Written,
    /// Any other path, such as an alias `AppResult<T>`: the compiler checks through
    /// `dlock::macro_support::LockResult` that it is a `Result` after all.
    Alias,
}

/// The return type, which must be a `Result`: any path whose last segment is `Result` (so
/// `io::Result<T>` and `anyhow::Result<T>` are accepted), or any other path (a type alias),
/// checked by the compiler to be one.
fn result_type(func: &ItemFn) -> syn::Result<(&Type, ResultShape)> {
    const HOW: &str = "`E: From<dlock::Error>`, so a lock failure can be returned as `Err(..)`";
    let ty = match &func.sig.output {
        ReturnType::Default => {
            return Err(syn::Error::new(
                func.sig.paren_token.span.close(),
                format!(
                    "`#[distributed_lock]` needs a function returning `Result<T, E>` with {HOW}; \
                     add a return type, like `-> Result<(), dlock::Error>`"
                ),
            ))
        }
        ReturnType::Type(_, ty) => ty.as_ref(),
    };
    let mut inner = ty;
    loop {
        match inner {
            Type::Group(g) => inner = &g.elem,
            Type::Paren(p) => inner = &p.elem,
            _ => break,
        }
    }
    const PRIMITIVES: &[&str] = &[
        "bool", "char", "str", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32",
        "i64", "i128", "isize", "f32", "f64",
    ];
    let shape = match inner {
        Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last().map(|s| s.ident.to_string());
            match last.as_deref() {
                Some("Result") => Some(ResultShape::Written),
                Some(name) if p.path.segments.len() == 1 && PRIMITIVES.contains(&name) => None,
                Some(_) => Some(ResultShape::Alias),
                None => None,
            }
        }
        _ => None,
    };
    let Some(shape) = shape else {
        return Err(syn::Error::new_spanned(
            ty,
            format!(
                "`#[distributed_lock]` needs a function returning `Result<T, E>` with {HOW}; \
                 change the return type to `Result<{}, dlock::Error>` or your own error type",
                quote!(#ty)
            ),
        ));
    };
    Ok((ty, shape))
}

/// `#attrs #vis #sig { lock; run the body; release }`.
fn gen_function(func: &ItemFn, cfg: &Config, ret: &Type, shape: ResultShape) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = func;
    let async_context = sig.asyncness.is_some();
    // Local names that the body cannot see or shadow (mixed-site hygiene).
    let local = |name: &str| Ident::new(name, Span::mixed_site());
    let (key, locker, guard, body, result, err) = (
        local("__dlock_key"),
        local("__dlock_locker"),
        local("__dlock_guard"),
        local("__dlock_body"),
        local("__dlock_result"),
        // At the return type (no local of the body is in scope where it is bound), so that a
        // missing `From<dlock::Error>` for the error type is reported at the user's type.
        Ident::new("__dlock_err", ret.span()),
    );
    let ret_span = ret.span();
    // `Err(From::from(err))` (what `?` does), spanned at the return type: a missing
    // `From<dlock::Error>` is reported there.
    // For an alias, the conversion goes through `LockResult`, whose diagnostic names the type
    // when it is not a `Result` at all.
    let fail = |e: &Ident| match shape {
        ResultShape::Written => quote_spanned! {ret_span=>
            ::core::result::Result::Err(::core::convert::From::from(#e))
        },
        ResultShape::Alias => quote_spanned! {ret_span=>
            <#ret as ::dlock::macro_support::LockResult>::from_lock_error(#e)
        },
    };

    let key_expr = cfg.key.to_expr();
    let backend = &cfg.backend;
    let lookup = if async_context {
        quote!(::dlock::lookup(#backend).await)
    } else {
        quote!(::dlock::lookup_blocking(#backend))
    };

    let duration = |d: std::time::Duration| {
        let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
        quote!(::core::time::Duration::new(#secs, #nanos))
    };
    let ttl = cfg.ttl.map(|d| {
        let d = duration(d);
        quote!(.ttl(#d))
    });
    // `skip` without `wait` makes one attempt: waiting until acquired would never be busy.
    let wait = match (cfg.wait, cfg.on_busy) {
        (Some(d), _) => Some(duration(d)),
        (None, OnBusy::Skip) => Some(quote!(::core::time::Duration::ZERO)),
        (None, OnBusy::Error) => None,
    }
    .map(|d| quote!(.wait(#d)));
    let watchdog = cfg.watchdog.map(|w| quote!(.watchdog(#w)));
    // Each kind is a `Locker` method returning the same `LockRequest`.
    let request = match cfg.lock {
        LockKind::Mutex => quote!(#locker.lock(#key)),
        LockKind::Read => quote!(#locker.read_lock(#key)),
        LockKind::Write => quote!(#locker.write_lock(#key)),
        LockKind::Permits(n) => quote!(#locker.semaphore(#key, #n)),
    };
    let acquire = if async_context {
        quote!(.await)
    } else {
        quote!(.blocking())
    };

    let fail_lookup = fail(&err);
    let fail_acquire = fail(&err);
    let skip = match cfg.on_busy {
        OnBusy::Error => None,
        OnBusy::Skip => {
            let default = match shape {
                ResultShape::Written => quote_spanned! {cfg.on_busy_span=>
                    ::core::result::Result::Ok(::core::default::Default::default())
                },
                ResultShape::Alias => quote_spanned! {cfg.on_busy_span=>
                    <#ret as ::dlock::macro_support::LockResult>::skipped()
                },
            };
            Some(quote! {
                ::core::result::Result::Err(#err) if #err.is_busy() => return #default,
            })
        }
    };

    let bind_guard = cfg.guard.as_ref().map(|g| {
        quote! {
            #[allow(unused_variables)]
            let #g: &::dlock::LockGuard = &#guard;
        }
    });

    // The body runs in an inner async block or closure, so its `return` and `?` come back here
    // and the lock is released on every path (on unwinding, by the guard's `Drop`).
    let stmts = &block.stmts;
    let make_body = if async_context {
        // The never-taken `return` fixes the async block's output type, so `?` in the body
        // converts into the function's error type (tracing-attributes' "fake return edge").
        quote_spanned! {block.span()=>
            async move {
                #[allow(
                    unknown_lints, unreachable_code, clippy::diverging_sub_expression,
                    clippy::let_unit_value, clippy::unreachable, clippy::empty_loop,
                    clippy::needless_return
                )]
                if false {
                    let __dlock_fake_return: #ret = loop {};
                    return __dlock_fake_return;
                }
                // The body's statements, not its block: a block as the tail of this one would
                // warn `unused_braces` on one-line bodies.
                #(#stmts)*
            }
        }
    } else {
        quote_spanned! {block.span()=>
            move || -> #ret #block
        }
    };

    // `#[allow(clippy::useless_conversion)]` on the error arms: the conversion is spanned at the
    // user's return type, where clippy would flag `From::from` when the error is `dlock::Error`.
    let run_body = match (async_context, cfg.abort_on_lost) {
        (true, false) => quote!(#body.await),
        (true, true) => {
            let lost = fail(&err);
            quote! {
                match ::dlock::macro_support::race_lost(&#guard, #body).await {
                    ::core::result::Result::Ok(#result) => #result,
                    #[allow(clippy::useless_conversion)]
                    ::core::result::Result::Err(#err) => #lost,
                }
            }
        }
        (false, _) => quote!(#body()),
    };
    let release = if async_context {
        quote!(::dlock::macro_support::release(#guard).await;)
    } else {
        quote!(::dlock::macro_support::release_blocking(#guard);)
    };

    quote! {
        #(#attrs)*
        #vis #sig {
            let #key: ::std::string::String = #key_expr;
            let #locker = match #lookup {
                ::core::result::Result::Ok(#locker) => #locker,
                #[allow(clippy::useless_conversion)]
                ::core::result::Result::Err(#err) => return #fail_lookup,
            };
            let #guard = match #request #ttl #wait #watchdog #acquire {
                ::core::result::Result::Ok(#guard) => #guard,
                #skip
                #[allow(clippy::useless_conversion)]
                ::core::result::Result::Err(#err) => return #fail_acquire,
            };
            let #result: #ret = {
                #bind_guard
                #[allow(unused_mut)]
                let mut #body = #make_body;
                #run_body
            };
            #release
            #result
        }
    }
}
