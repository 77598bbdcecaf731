//! Persistence rules: what a request's persistence data means, and what to do once the
//! response says which server really answered.

pub mod cookie;
pub mod learned_hashes;
