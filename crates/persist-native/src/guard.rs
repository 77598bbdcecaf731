//! The panic barrier of every exported function: Envoy must never see an unwind (it would
//! abort the whole proxy). The body's panic becomes `fallback`, after `on_panic` (count
//! `error`, log) ran — itself guarded, so a second panic is swallowed too.

use std::panic::{catch_unwind, AssertUnwindSafe};

// catch_unwind only catches with unwinding panics: refuse to build the module otherwise.
#[cfg(all(panic = "abort", not(target_family = "wasm")))]
compile_error!(
    "persist-native needs panic = \"unwind\" (build it with `--profile native`, see Cargo.toml)"
);

pub fn guarded<R>(fallback: R, on_panic: impl FnOnce(), body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(_) => {
            let _ = catch_unwind(AssertUnwindSafe(on_panic));
            fallback
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_panic_becomes_the_fallback_and_is_reported() {
        let reported = Cell::new(0);
        let r = guarded(
            7,
            || reported.set(reported.get() + 1),
            || -> i32 { panic!("boom") },
        );
        assert_eq!((r, reported.get()), (7, 1));
        let r = guarded(7, || reported.set(reported.get() + 1), || 1);
        assert_eq!((r, reported.get()), (1, 1));
    }

    #[test]
    fn a_panicking_report_is_swallowed_too() {
        let r = guarded(0u32, || panic!("again"), || -> u32 { panic!("boom") });
        assert_eq!(r, 0);
    }

    #[test]
    fn indexing_out_of_bounds_is_caught() {
        let v: Vec<u8> = Vec::new();
        #[allow(clippy::indexing_slicing)]
        let r = guarded(None, || {}, || Some(v[3]));
        assert_eq!(r, None);
    }
}
