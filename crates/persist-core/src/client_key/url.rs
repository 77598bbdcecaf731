//! The request path (`:path`): `/app;jsessionid=ABC/page?x=1&sid=Q#frag`.

fn split_at_byte<'a>(s: &'a [u8], stops: &[u8]) -> (&'a [u8], &'a [u8]) {
    match s.iter().position(|c| stops.contains(c)) {
        Some(i) => s.split_at_checked(i).unwrap_or((s, &[])),
        None => (s, &[]),
    }
}

/// The path without query string or fragment.
pub fn path_only(path: &[u8]) -> &[u8] {
    split_at_byte(path, b"?#").0
}

/// The value of the first `;name=value` path parameter, `name` matched case-insensitively
/// (`;jsessionid=` and `;JSESSIONID=` alike). The value ends at `;`, `/`, `?` or `#`.
pub fn path_parameter<'a>(path: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let path = path_only(path);
    let mut params = path.split(|&c| c == b';');
    params.next();
    params.find_map(|param| {
        let (n, rest) = split_at_byte(param, b"=");
        if !n.eq_ignore_ascii_case(name.as_bytes()) {
            return None;
        }
        let value = split_at_byte(rest.get(1..)?, b"/?#").0;
        (!value.is_empty()).then_some(value)
    })
}

/// The raw (not percent-decoded) value of the first query parameter called `name`.
pub fn query_parameter<'a>(path: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let before_fragment = split_at_byte(path, b"#").0;
    let (_, query) = split_at_byte(before_fragment, b"?");
    let query = query.get(1..)?;
    query.split(|&c| c == b'&').find_map(|pair| {
        let (n, rest) = split_at_byte(pair, b"=");
        if n != name.as_bytes() {
            return None;
        }
        let value = rest.get(1..)?;
        (!value.is_empty()).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn path_parameters() {
        let p = b"/shop;JSESSIONID=abc123/cart;x=1?jsessionid=q";
        assert_eq!(path_parameter(p, "jsessionid"), Some(&b"abc123"[..]));
        assert_eq!(path_parameter(p, "x"), Some(&b"1"[..]));
        assert_eq!(
            path_parameter(b"/a;jsessionid=v", "jsessionid"),
            Some(&b"v"[..])
        );
        assert_eq!(
            path_parameter(b"/a;jsessionid=v#f", "jsessionid"),
            Some(&b"v"[..])
        );
        assert_eq!(path_parameter(b"/a;jsessionid=", "jsessionid"), None);
        assert_eq!(path_parameter(b"/a;jsessionid", "jsessionid"), None);
        assert_eq!(path_parameter(b"/a?b;jsessionid=v", "jsessionid"), None);
        assert_eq!(path_parameter(b"", "jsessionid"), None);
        assert_eq!(path_parameter(b";;;==;", "x"), None);
    }

    #[test]
    fn query_parameters() {
        let p = b"/a;b=c?x=1&sid=Q%20R&sid=2#sid=3";
        assert_eq!(query_parameter(p, "sid"), Some(&b"Q%20R"[..]));
        assert_eq!(query_parameter(p, "x"), Some(&b"1"[..]));
        assert_eq!(query_parameter(p, "SID"), None);
        assert_eq!(query_parameter(b"/a?sid", "sid"), None);
        assert_eq!(query_parameter(b"/a?sid=", "sid"), None);
        assert_eq!(query_parameter(b"/a#?sid=1", "sid"), None);
        assert_eq!(query_parameter(b"?", "x"), None);
        assert_eq!(path_only(b"/a/b?c#d"), b"/a/b");
        assert_eq!(path_only(b"/a/b#d?c"), b"/a/b");
    }
}
