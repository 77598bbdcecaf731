//! HTTP cookie syntax: reading the request `Cookie` header and writing `Set-Cookie`.

pub mod header;
pub mod set_cookie;
