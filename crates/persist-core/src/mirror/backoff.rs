//! Reconnect delays: from 250 ms, doubling up to 5 s, reset by a success.

pub const FIRST_MS: u64 = 250;
pub const MAX_MS: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next_ms: u64,
    /// No attempt before this time (Unix ms).
    until_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next_ms: FIRST_MS,
            until_ms: 0,
        }
    }
}

impl Backoff {
    /// A failure at `now_ms`: the next attempt waits the current delay, which then doubles.
    pub fn fail(&mut self, now_ms: u64) {
        self.until_ms = now_ms.saturating_add(self.next_ms);
        self.next_ms = (self.next_ms * 2).min(MAX_MS);
    }

    pub fn succeed(&mut self) {
        *self = Backoff::default();
    }

    pub fn ready(&self, now_ms: u64) -> bool {
        now_ms >= self.until_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        assert!(b.ready(0));
        let mut now = 1_000;
        let mut waits = Vec::new();
        for _ in 0..7 {
            b.fail(now);
            let mut t = now;
            while !b.ready(t) {
                t += 50;
            }
            waits.push(t - now);
            now = t;
        }
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        b.succeed();
        assert!(b.ready(now));
        b.fail(now);
        assert!(!b.ready(now + 249) && b.ready(now + 250));
    }
}
