//! Expiry in etcd rides on leases, one per time bucket (not one per key): a binding that
//! lapses at second `e` is put under the lease of bucket `ceil(e / width)`, which etcd
//! revokes (deleting its keys) at the bucket's end, `bucket * width`. So a key leaves etcd
//! at most one bucket width after its own expiry, and a whole bucket costs one LeaseGrant.
//! Width: a tenth of the idle timeout, between 1 s and 60 s.

use std::collections::BTreeMap;
use std::time::Duration;

/// Bindings closer than this to their expiry are not worth mirroring.
pub const MIN_TTL_S: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets {
    pub width_s: u64,
}

impl Buckets {
    pub fn for_timeout(idle: Duration) -> Buckets {
        Buckets {
            width_s: (idle.as_secs() / 10).clamp(1, 60),
        }
    }

    /// The bucket of a binding that lapses at `expires_at_s`.
    pub fn of(&self, expires_at_s: u64) -> u64 {
        expires_at_s.div_ceil(self.width_s)
    }

    /// When the bucket's lease runs out (Unix seconds).
    pub fn end_s(&self, bucket: u64) -> u64 {
        bucket.saturating_mul(self.width_s)
    }

    /// The TTL to ask for when granting the bucket's lease at `now_s`.
    pub fn ttl_s(&self, bucket: u64, now_s: u64) -> i64 {
        let ttl = self.end_s(bucket).saturating_sub(now_s).max(MIN_TTL_S);
        i64::try_from(ttl).unwrap_or(i64::MAX)
    }
}

/// The leases this worker holds, by bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leases {
    by_bucket: BTreeMap<u64, i64>,
}

impl Leases {
    pub fn get(&self, bucket: u64) -> Option<i64> {
        self.by_bucket.get(&bucket).copied()
    }

    pub fn insert(&mut self, bucket: u64, id: i64) {
        self.by_bucket.insert(bucket, id);
    }

    /// Forgets every lease (etcd lost them, e.g. after "requested lease not found").
    pub fn clear(&mut self) {
        self.by_bucket.clear();
    }

    /// Drops the leases that run out within [`MIN_TTL_S`].
    pub fn prune(&mut self, buckets: &Buckets, now_s: u64) {
        self.by_bucket
            .retain(|&b, _| buckets.end_s(b) > now_s.saturating_add(MIN_TTL_S));
    }

    pub fn len(&self) -> usize {
        self.by_bucket.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_bucket.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn bucket_width_and_ttl() {
        assert_eq!(Buckets::for_timeout(Duration::from_secs(4)).width_s, 1);
        assert_eq!(
            Buckets::for_timeout(Duration::from_secs(20 * 60)).width_s,
            60
        );
        assert_eq!(Buckets::for_timeout(Duration::from_secs(300)).width_s, 30);
        let b = Buckets { width_s: 30 };
        // Expiring at 1000..=1020 → bucket 34, ending at 1020; 1021 → bucket 35 (1050).
        assert_eq!(b.of(1000), 34);
        assert_eq!(b.of(1020), 34);
        assert_eq!(b.of(1021), 35);
        assert_eq!(b.end_s(34), 1020);
        // A key put at 700 that lapses at 1000 stays in etcd until 1020: within one width.
        assert_eq!(b.ttl_s(34, 700), 320);
        assert_eq!(b.ttl_s(34, 1020), 1);
    }

    #[test]
    fn leases_are_pruned_before_they_run_out() {
        let b = Buckets { width_s: 10 };
        let mut l = Leases::default();
        l.insert(100, 7); // ends at 1000
        l.insert(101, 8); // ends at 1010
        l.prune(&b, 998);
        assert_eq!(l.get(100), Some(7));
        l.prune(&b, 999);
        assert_eq!((l.get(100), l.get(101)), (None, Some(8)));
        l.clear();
        assert!(l.is_empty());
    }
}
