//! The `key` template: `"order:{order_id}"`, `"{user.id}/{self.region}"`, `{{` and `}}` for
//! literal braces. Parsed and checked against the function's parameters at compile time;
//! formatted with `Display` at call time.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{FnArg, Ident, LitStr, Pat, Signature};

/// One piece of a key template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text copied into the key as is (braces already unescaped).
    Text(String),
    /// `{a.b.c}`: a parameter (or `self`) and a path of fields, formatted with `Display`.
    Field(Vec<String>),
}

/// A parsed key template.
#[derive(Debug)]
pub(crate) struct KeyTemplate {
    lit: LitStr,
    parts: Vec<Part>,
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
        && s != "_"
}

fn is_index(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
        && s.parse::<u32>().is_ok()
}

/// Parses the text of a template; the error is a message (the caller adds the span).
fn parse_parts(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                chars.next();
                lit.push('}');
            }
            '}' => {
                return Err(format!(
                    "unmatched `}}` at position {at} of key {text:?}; write `}}}}` for a literal \
                     `}}`, or open the placeholder with `{{`"
                ))
            }
            '{' => {
                let rest = &text[at + 1..];
                let Some(end) = rest.find('}') else {
                    return Err(format!(
                        "unclosed `{{` at position {at} of key {text:?}; close the placeholder \
                         with `}}`, like `{{order_id}}`, or write `{{{{` for a literal `{{`"
                    ));
                };
                let inner = &rest[..end];
                if inner.contains('{') {
                    return Err(format!(
                        "unclosed `{{` at position {at} of key {text:?}; close the placeholder \
                         with `}}`, like `{{order_id}}`, or write `{{{{` for a literal `{{`"
                    ));
                }
                let name = inner.trim();
                if name.is_empty() {
                    return Err(format!(
                        "empty `{{}}` at position {at} of key {text:?}; name a parameter, like \
                         `{{order_id}}`, or write `{{{{}}}}` for literal braces"
                    ));
                }
                if let Some((_, spec)) = name.split_once(':') {
                    return Err(format!(
                        "format spec `:{spec}` in key {text:?} is not supported; placeholders \
                         are formatted with `Display`: write `{{{}}}`",
                        name.split_once(':').map_or(name, |(n, _)| n.trim())
                    ));
                }
                let path: Vec<String> = name.split('.').map(|s| s.trim().to_owned()).collect();
                let valid = is_ident(&path[0])
                    && path[1..].iter().all(|s| is_ident(s) || is_index(s))
                    && path[1..].iter().all(|s| s != "self");
                if !valid {
                    return Err(format!(
                        "`{{{name}}}` in key {text:?} is not a parameter name or field path; \
                         write a parameter, a field of one, or of `self`, like `{{order_id}}`, \
                         `{{order.id}}` or `{{self.region}}`"
                    ));
                }
                if !lit.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut lit)));
                }
                parts.push(Part::Field(path));
                for _ in 0..inner.chars().count() + 1 {
                    chars.next();
                }
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        parts.push(Part::Text(lit));
    }
    Ok(parts)
}

/// Every name a parameter binds: plain `x`, and the names inside patterns like `(a, b)` or
/// `Point { x, y }`. `_` binds nothing.
fn bound_names(pat: &Pat, out: &mut Vec<Ident>) {
    match pat {
        Pat::Ident(p) => {
            out.push(p.ident.clone());
            if let Some((_, sub)) = &p.subpat {
                bound_names(sub, out);
            }
        }
        Pat::Tuple(t) => t.elems.iter().for_each(|p| bound_names(p, out)),
        Pat::TupleStruct(t) => t.elems.iter().for_each(|p| bound_names(p, out)),
        Pat::Struct(s) => s.fields.iter().for_each(|f| bound_names(&f.pat, out)),
        Pat::Slice(s) => s.elems.iter().for_each(|p| bound_names(p, out)),
        Pat::Reference(r) => bound_names(&r.pat, out),
        Pat::Paren(p) => bound_names(&p.pat, out),
        Pat::Type(t) => bound_names(&t.pat, out),
        _ => {}
    }
}

impl KeyTemplate {
    /// Parses `lit`; an unclosed or stray brace is an error at the literal.
    pub(crate) fn parse(lit: &LitStr) -> syn::Result<Self> {
        let text = lit.value();
        if text.is_empty() {
            return Err(syn::Error::new(
                lit.span(),
                "`key` must not be empty; name the resource, like `key = \"order:{order_id}\"`",
            ));
        }
        let parts = parse_parts(&text).map_err(|msg| syn::Error::new(lit.span(), msg))?;
        Ok(KeyTemplate {
            lit: lit.clone(),
            parts,
        })
    }

    /// Checks that every placeholder starts with a parameter of `sig` (or `self` on a method).
    pub(crate) fn check_names(&self, sig: &Signature) -> syn::Result<()> {
        let has_self = sig.receiver().is_some();
        let mut params = Vec::new();
        for input in &sig.inputs {
            if let FnArg::Typed(t) = input {
                bound_names(&t.pat, &mut params);
            }
        }
        for part in &self.parts {
            let Part::Field(path) = part else { continue };
            let first = path[0].as_str();
            let known = if first == "self" {
                has_self
            } else {
                params.iter().any(|p| p == first)
            };
            if known {
                continue;
            }
            let mut names: Vec<String> = params.iter().map(|p| format!("`{p}`")).collect();
            if has_self {
                names.insert(0, "`self`".to_owned());
            }
            let listed = if names.is_empty() {
                format!(
                    "`{}` has no parameters to use; add one, or use a fixed key",
                    sig.ident
                )
            } else {
                format!("the parameters of `{}` are {}", sig.ident, names.join(", "))
            };
            let msg = if first == "self" {
                format!(
                    "`{{{}}}` in `key` needs a method taking `self`, `&self` or `&mut self`; {listed}",
                    path.join(".")
                )
            } else {
                format!("`{{{first}}}` in `key` is not a parameter; {listed}")
            };
            return Err(syn::Error::new(self.lit.span(), msg));
        }
        Ok(())
    }

    /// An expression of type `String` that formats the key at call time (borrowing the
    /// parameters), spanned at the literal so a missing `Display` impl is reported there.
    pub(crate) fn to_expr(&self) -> TokenStream {
        let span = self.lit.span();
        let mut fmt = String::new();
        let mut args = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => fmt.push_str(&t.replace('{', "{{").replace('}', "}}")),
                Part::Field(path) => {
                    fmt.push_str("{}");
                    let segments = path.iter().enumerate().map(|(i, seg)| {
                        if i == 0 && seg == "self" {
                            quote_spanned!(span=> self)
                        } else if is_index(seg) {
                            let index = syn::Index {
                                index: seg.parse().expect("checked digits"),
                                span,
                            };
                            quote!(#index)
                        } else {
                            let ident = Ident::new(seg, span);
                            quote!(#ident)
                        }
                    });
                    args.push(quote!(#(#segments).*));
                }
            }
        }
        if args.is_empty() {
            let text = LitStr::new(&self.lit.value(), span);
            return quote_spanned!(span=> <::std::string::String as ::core::convert::From<&str>>::from(#text));
        }
        let fmt = LitStr::new(&fmt, span);
        quote_spanned!(span=> ::std::format!(#fmt, #(#args),*))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(p: &[&str]) -> Part {
        Part::Field(p.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn parses() {
        assert_eq!(
            parse_parts("order:{id}").unwrap(),
            vec![Part::Text("order:".into()), field(&["id"])]
        );
        assert_eq!(
            parse_parts("{{x}}/{ self.a.0 }-{b}").unwrap(),
            vec![
                Part::Text("{x}/".into()),
                field(&["self", "a", "0"]),
                Part::Text("-".into()),
                field(&["b"]),
            ]
        );
        assert_eq!(
            parse_parts("plain").unwrap(),
            vec![Part::Text("plain".into())]
        );
    }

    #[test]
    fn rejects() {
        assert!(parse_parts("order:{id").unwrap_err().contains("unclosed"));
        assert!(parse_parts("order:{a{b}").unwrap_err().contains("unclosed"));
        assert!(parse_parts("order:}").unwrap_err().contains("unmatched"));
        assert!(parse_parts("x{}").unwrap_err().contains("empty"));
        assert!(parse_parts("{id:?}").unwrap_err().contains("format spec"));
        assert!(parse_parts("{a-b}")
            .unwrap_err()
            .contains("not a parameter"));
        assert!(parse_parts("{0}").is_err());
        assert!(parse_parts("{a.self}").is_err());
    }
}
