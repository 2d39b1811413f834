//! TLS and least-privilege credentials on every networked backend (issue 19).
