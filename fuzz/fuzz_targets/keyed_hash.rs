//! The keyed hash of client keys and `mirror.secret`, on any bytes: the first 32 bytes are
//! a secret, the rest a client key. Placing a key never panics and stays in the table
//! (slot below the slot count, for any size); the same secret and key always give the same
//! place; the mirror's key name round-trips to the MAC; any bytes as a stored generated
//! secret yield a 32-byte secret; any string as `mirror.secret` is accepted only when it
//! is base64 of 32 bytes, and otherwise refused naming `mirror.secret`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use persist_core::config::Config;
use persist_core::mirror::record::KeySpace;
use persist_core::store::{MemoryStore, SharedStore};
use persist_core::table::entry::Timeouts;
use persist_core::table::secret::{self, HashKey, SECRET_LEN};
use persist_core::table::Table;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let mut s = [0u8; SECRET_LEN];
    for (o, i) in s.iter_mut().zip(data) {
        *o = *i;
    }
    let key = data.get(SECRET_LEN..).unwrap_or_default();
    let hk = HashKey::new(&s);
    let t = Timeouts::new(Duration::from_secs(60), None);
    let max = u64::from(u16::from_le_bytes([s[0], s[1]])) + 1;
    for m in [1, max, 100_000, u64::MAX] {
        let table = Table::new("fuzz", m, t, hk.clone());
        let h = table.hash(key);
        assert!(h.slot < table.slots());
        assert_eq!(h, table.hash(key));
        assert_eq!(h, table.key_of_digest(hk.mac(key)));
    }
    let ks = KeySpace::new("/persist/", "fuzz", &s);
    let mac = hk.mac(key);
    assert_eq!(ks.digest(&ks.key(&mac)), Some(mac));
    let _ = ks.digest(key);

    // Whatever another version (or a bug) left in shared data as the generated secret.
    let store = MemoryStore::default();
    let _ = store.set(&secret::secret_key("fuzz"), key, 0);
    let shared = secret::shared_secret(&store, "fuzz", |b| {
        b.fill(9);
        true
    });
    match shared {
        Ok(v) if key.len() == SECRET_LEN => assert_eq!(v.as_slice(), key),
        Ok(v) => assert_eq!(v, [9; SECRET_LEN]),
        Err(e) => panic!("{e}"),
    }

    // The bytes as `mirror.secret`.
    let text = String::from_utf8_lossy(data);
    let json =
        serde_json::json!({"type": "client_ip", "mirror": {"cluster": "etcd", "secret": text}});
    match Config::parse(json.to_string().as_bytes()) {
        Ok(c) => assert!(c.mirror.is_some()),
        Err(e) => assert_eq!(e.field, "mirror.secret"),
    }
});
