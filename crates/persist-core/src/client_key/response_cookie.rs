//! Learning an application cookie from a response: `Set-Cookie: JSESSIONID=abc; Path=/`.

/// The value this `Set-Cookie` header gives cookie `name`, unless it deletes the cookie
/// (empty value, `Max-Age` of zero or less).
pub fn value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut parts = header.split(|&c| c == b';');
    let first = parts.next()?;
    let eq = first.iter().position(|&c| c == b'=')?;
    let (n, v) = first.split_at_checked(eq)?;
    if n.trim_ascii() != name.as_bytes() {
        return None;
    }
    let v = v.get(1..)?.trim_ascii();
    let v = match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => v,
    };
    if v.is_empty() {
        return None;
    }
    let deletes = parts.any(|attr| {
        let attr = attr.trim_ascii();
        let Some((k, val)) = attr
            .iter()
            .position(|&c| c == b'=')
            .and_then(|i| attr.split_at_checked(i))
        else {
            return false;
        };
        k.trim_ascii().eq_ignore_ascii_case(b"max-age")
            && val
                .get(1..)
                .map(|x| x.trim_ascii())
                .is_some_and(|x| x.first() == Some(&b'-') || x.iter().all(|c| *c == b'0'))
    });
    (!deletes).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn learns_and_ignores() {
        assert_eq!(
            value(b"JSESSIONID=abc; Path=/; HttpOnly", "JSESSIONID"),
            Some(&b"abc"[..])
        );
        assert_eq!(
            value(b" JSESSIONID = \"q\" ", "JSESSIONID"),
            Some(&b"q"[..])
        );
        assert_eq!(value(b"jsessionid=abc", "JSESSIONID"), None);
        assert_eq!(value(b"JSESSIONID=; Path=/", "JSESSIONID"), None);
        assert_eq!(value(b"JSESSIONID=x; Max-Age=0", "JSESSIONID"), None);
        assert_eq!(value(b"JSESSIONID=x; max-age=-1", "JSESSIONID"), None);
        assert_eq!(
            value(b"JSESSIONID=x; Max-Age=60", "JSESSIONID"),
            Some(&b"x"[..])
        );
        assert_eq!(value(b"JSESSIONID=x; Max-Age=", "JSESSIONID"), None);
        assert_eq!(value(b"other=1", "JSESSIONID"), None);
        assert_eq!(value(b"", "JSESSIONID"), None);
        assert_eq!(value(&[0xff, b'=', 0xfe], "JSESSIONID"), None);
    }
}
