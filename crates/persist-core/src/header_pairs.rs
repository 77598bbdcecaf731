//! The proxy-wasm serialization of a whole header map (`proxy_get_header_map_pairs`):
//! `count u32 | (name_len u32, value_len u32) × count | name\0 value\0 …`, little-endian.
//! Parsed here without trusting any length, so a surprising map cannot panic the filter.

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(raw)).ok()
}

/// The values of every header called `name` (lower-case), in order.
pub fn values<'a>(bytes: &'a [u8], name: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let Some(count) = u32_at(bytes, 0) else {
        return out;
    };
    let Some(mut data) = count.checked_mul(8).and_then(|n| n.checked_add(4)) else {
        return out;
    };
    for i in 0..count {
        let Some(size_at) = i.checked_mul(8).and_then(|n| n.checked_add(4)) else {
            break;
        };
        let (Some(name_len), Some(value_len)) = (
            u32_at(bytes, size_at),
            u32_at(bytes, size_at.saturating_add(4)),
        ) else {
            break;
        };
        let Some(value_at) = data.checked_add(name_len).and_then(|n| n.checked_add(1)) else {
            break;
        };
        let Some(next) = value_at
            .checked_add(value_len)
            .and_then(|n| n.checked_add(1))
        else {
            break;
        };
        let (Some(n), Some(v)) = (
            bytes.get(data..data.saturating_add(name_len)),
            bytes.get(value_at..value_at.saturating_add(value_len)),
        ) else {
            break;
        };
        if n == name {
            out.push(v);
        }
        data = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (n, v) in pairs {
            out.extend((n.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (n, v) in pairs {
            out.extend(n.as_bytes());
            out.push(0);
            out.extend(v.as_bytes());
            out.push(0);
        }
        out
    }

    #[test]
    fn finds_every_value() {
        let m = serialize(&[
            (":status", "200"),
            ("set-cookie", "a=1"),
            ("x", ""),
            ("set-cookie", "JSESSIONID=q; Path=/"),
        ]);
        assert_eq!(
            values(&m, b"set-cookie"),
            vec![&b"a=1"[..], b"JSESSIONID=q; Path=/"]
        );
        assert_eq!(values(&m, b"x"), vec![&b""[..]]);
        assert!(values(&m, b"y").is_empty());
        for cut in 0..m.len() {
            let _ = values(&m[..cut], b"set-cookie");
        }
        assert!(values(&[0xff; 12], b"x").is_empty());
        assert!(values(b"", b"x").is_empty());
    }
}
