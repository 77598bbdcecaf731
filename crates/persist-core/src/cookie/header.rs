//! Reading a request `Cookie` header without allocating: `a=1; b="2"; c=3`.
//! Tolerant of any bytes (non-UTF-8, missing `=`, stray spaces); never fails.

/// Iterates over the values of every cookie called `name`, in header order, with
/// surrounding double quotes removed.
pub fn values<'a>(header: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    header.split(|&c| c == b';').filter_map(move |pair| {
        let pair = trim(pair);
        let eq = pair.iter().position(|&c| c == b'=')?;
        let (n, v) = pair.split_at_checked(eq)?;
        if trim(n) != name {
            return None;
        }
        Some(unquote(trim(v.get(1..)?)))
    })
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(start, |p| p + 1);
    s.get(start..end).unwrap_or_default()
}

fn unquote(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn all<'a>(h: &'a [u8], n: &'a [u8]) -> Vec<&'a [u8]> {
        values(h, n).collect()
    }

    #[test]
    fn finds_values() {
        let h = b"a=1; persist=abc; b=\"x\";persist=\"q=w\" ; c";
        assert_eq!(all(h, b"persist"), vec![&b"abc"[..], b"q=w"]);
        assert_eq!(all(h, b"b"), vec![&b"x"[..]]);
        assert_eq!(all(h, b"c"), Vec::<&[u8]>::new());
        assert_eq!(all(h, b"Persist"), Vec::<&[u8]>::new());
        assert_eq!(all(b"persist=", b"persist"), vec![&b""[..]]);
        assert_eq!(all(b"persist=\"", b"persist"), vec![&b"\""[..]]);
    }

    #[test]
    fn hostile_bytes() {
        let h = [0xffu8, b'=', 0xfe, b';', b' ', b';', b'=', b'=', b';'];
        assert_eq!(all(&h, b"\xff"), vec![&b"\xfe"[..]]);
        assert_eq!(all(&h, b""), vec![&b"="[..]]);
        assert_eq!(all(b"", b"x"), Vec::<&[u8]>::new());
        assert_eq!(all(b";;;;", b"x"), Vec::<&[u8]>::new());
    }
}
