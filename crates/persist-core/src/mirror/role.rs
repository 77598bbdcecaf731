//! Which worker of an Envoy holds the watch: the one whose heartbeat is in the shared-data
//! key `persist.<profile>.mirror.watcher` (`<owner id hex> <unix ms>`). The holder renews it
//! on its tick; when it stops (its VM went away) another worker takes over once the
//! heartbeat is [`STALE_MS`] old. Claims and renewals are CAS writes, so two workers never
//! both believe they hold it for longer than one tick.

use crate::store::{SharedStore, StoreError, INSERT_ONLY};

pub const STALE_MS: u64 = 2_000;
/// The holder rewrites its heartbeat at most this often.
pub const RENEW_MS: u64 = 500;

fn parse(raw: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(raw).ok()?;
    let (owner, at) = text.split_once(' ')?;
    Some((u64::from_str_radix(owner, 16).ok()?, at.parse().ok()?))
}

/// Claims or renews the role for `me`; `true` when `me` holds it now.
pub fn hold(store: &dyn SharedStore, key: &str, me: u64, now_ms: u64) -> Result<bool, StoreError> {
    let value = format!("{me:x} {now_ms}");
    let cas = match store.get(key)? {
        None => INSERT_ONLY,
        Some((raw, cas)) => match parse(&raw) {
            Some((owner, at)) if owner == me => {
                if now_ms.saturating_sub(at) < RENEW_MS {
                    return Ok(true);
                }
                cas
            }
            Some((_, at)) if now_ms.saturating_sub(at) < STALE_MS => return Ok(false),
            _ => cas,
        },
    };
    match store.set(key, value.as_bytes(), cas) {
        Ok(()) => Ok(true),
        Err(StoreError::CasMismatch) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn one_holder_until_its_heartbeat_is_stale() {
        let s = MemoryStore::default();
        let k = "persist.x.mirror.watcher";
        assert!(hold(&s, k, 1, 10_000).unwrap());
        assert!(!hold(&s, k, 2, 10_100).unwrap());
        assert!(hold(&s, k, 1, 10_600).unwrap(), "renewed");
        assert!(
            !hold(&s, k, 2, 12_500).unwrap(),
            "1's heartbeat is 1.9 s old"
        );
        assert!(hold(&s, k, 2, 12_600).unwrap(), "taken over");
        assert!(!hold(&s, k, 1, 12_700).unwrap(), "1 lost it");
        s.set(k, b"garbage", 0).unwrap();
        assert!(hold(&s, k, 1, 12_800).unwrap());
    }
}
