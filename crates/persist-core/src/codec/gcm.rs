//! AES-256-GCM for the short messages of sealed cookies (at most [`MAX_BODY`] bytes), with
//! 96-bit nonces and 128-bit tags: the same bytes as the `aes-gcm` crate (the tests check
//! it against that crate), prepared for the filter's hot path.
//!
//! In wasm, AES runs in software (bit-sliced, two blocks per pass on 32-bit targets), so
//! what counts is the number of block-cipher passes and GHASH multiplications:
//!
//! - the key schedule, the GHASH key and the GHASH of the associated data (fixed per cookie
//!   name) are computed once per key, at configure time;
//! - the tag mask (counter block 1) and the keystream (counter blocks 2, 3) are produced in
//!   one call: one pass for an IPv4 cookie (15-byte body), two for IPv6 (27 bytes), where
//!   the crate's generic code makes two and three;
//! - per message, GHASH covers only the body and the length block.

use aes_gcm::aes::cipher::{BlockEncrypt, KeyInit};
use aes_gcm::aes::Aes256;
use ghash::universal_hash::UniversalHash;
use ghash::GHash;
use subtle::ConstantTimeEq;

/// Nonce length (96 bits, the only one used).
pub const NONCE_LEN: usize = 12;
/// Tag length.
pub const TAG_LEN: usize = 16;
/// Longest body: two AES blocks.
pub const MAX_BODY: usize = 32;

type Block = aes_gcm::aes::Block;

/// One key and one associated-data string, prepared.
#[derive(Clone)]
pub struct Gcm {
    cipher: Aes256,
    /// GHASH keyed with H = AES(K, 0), having absorbed the associated data (padded).
    after_aad: GHash,
    aad_bits: u64,
}

impl Gcm {
    pub fn new(key: &[u8; 32], aad: &[u8]) -> Gcm {
        let cipher = Aes256::new(key.into());
        let mut h = Block::default();
        cipher.encrypt_block(&mut h);
        let mut after_aad = GHash::new(&h);
        after_aad.update_padded(aad);
        Gcm {
            cipher,
            after_aad,
            aad_bits: (aad.len() as u64).wrapping_mul(8),
        }
    }

    /// Counter blocks 1 ..= 1 + ceil(len / 16), encrypted in one call: the tag mask first,
    /// then the keystream for `len` bytes.
    fn keystream(&self, nonce: &[u8; NONCE_LEN], len: usize) -> [Block; 3] {
        let mut blocks = [Block::default(); 3];
        let n = 1 + len.div_ceil(16);
        for (i, b) in blocks.iter_mut().enumerate() {
            if let Some(head) = b.get_mut(..NONCE_LEN) {
                head.copy_from_slice(nonce);
            }
            if let Some(ctr) = b.get_mut(NONCE_LEN..) {
                ctr.copy_from_slice(&(i as u32 + 1).to_be_bytes());
            }
        }
        if let Some(used) = blocks.get_mut(..n) {
            self.cipher.encrypt_blocks(used);
        }
        blocks
    }

    fn xor_keystream(stream: &[Block; 3], data: &mut [u8]) {
        let ks = stream.iter().skip(1).flat_map(|b| b.iter());
        for (d, k) in data.iter_mut().zip(ks) {
            *d ^= k;
        }
    }

    fn tag(&self, mask: &Block, ciphertext: &[u8]) -> [u8; TAG_LEN] {
        let mut g = self.after_aad.clone();
        g.update_padded(ciphertext);
        let mut lengths = Block::default();
        let (a, c) = lengths.split_at_mut(8);
        a.copy_from_slice(&self.aad_bits.to_be_bytes());
        c.copy_from_slice(&(ciphertext.len() as u64).wrapping_mul(8).to_be_bytes());
        g.update(&[lengths]);
        let s = g.finalize();
        let mut tag = [0u8; TAG_LEN];
        for ((t, s), m) in tag.iter_mut().zip(s.iter()).zip(mask.iter()) {
            *t = s ^ m;
        }
        tag
    }

    /// Encrypts `body` in place; its tag. `None` when `body` is longer than [`MAX_BODY`].
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], body: &mut [u8]) -> Option<[u8; TAG_LEN]> {
        if body.len() > MAX_BODY {
            return None;
        }
        let stream = self.keystream(nonce, body.len());
        Self::xor_keystream(&stream, body);
        Some(self.tag(&stream[0], body))
    }

    /// Checks `tag` (in constant time) and decrypts `body` in place; `false` (body
    /// untouched) when the tag does not match or `body` is longer than [`MAX_BODY`].
    pub fn open(&self, nonce: &[u8; NONCE_LEN], body: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        if body.len() > MAX_BODY {
            return false;
        }
        let stream = self.keystream(nonce, body.len());
        let expected = self.tag(&stream[0], body);
        if !bool::from(expected.ct_eq(tag)) {
            return false;
        }
        Self::xor_keystream(&stream, body);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::{Aes256Gcm, Nonce, Tag};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Deterministic bytes (xorshift), so a failure reproduces.
    fn bytes(seed: &mut u64, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed as u8
            })
            .collect()
    }

    fn reference(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], body: &[u8]) -> (Vec<u8>, [u8; 16]) {
        let c = Aes256Gcm::new(key.into());
        let mut out = body.to_vec();
        let tag = c
            .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut out)
            .unwrap();
        (out, tag.into())
    }

    /// Known answers: the same ciphertext and tag as the aes-gcm crate, for every body
    /// length the sealed format can use (and up to two full blocks), many keys, nonces and
    /// associated data; and the crate opens what we seal and the other way round.
    #[test]
    fn same_bytes_as_the_aes_gcm_crate() {
        let mut seed = 0x2545_f491_4f6c_dd1d;
        for round in 0..40 {
            let key: [u8; 32] = bytes(&mut seed, 32).try_into().unwrap();
            let aad = bytes(&mut seed, round % 40);
            let g = Gcm::new(&key, &aad);
            for len in 0..=MAX_BODY {
                let nonce: [u8; 12] = bytes(&mut seed, 12).try_into().unwrap();
                let body = bytes(&mut seed, len);
                let (want_ct, want_tag) = reference(&key, &nonce, &aad, &body);
                let mut ct = body.clone();
                let tag = g.seal(&nonce, &mut ct).unwrap();
                assert_eq!(
                    (ct.as_slice(), tag),
                    (want_ct.as_slice(), want_tag),
                    "len {len}"
                );
                let mut pt = ct.clone();
                assert!(g.open(&nonce, &mut pt, &tag));
                assert_eq!(pt, body);
                // The crate opens ours.
                let mut theirs = ct.clone();
                Aes256Gcm::new((&key).into())
                    .decrypt_in_place_detached(
                        Nonce::from_slice(&nonce),
                        &aad,
                        &mut theirs,
                        Tag::from_slice(&tag),
                    )
                    .unwrap();
                assert_eq!(theirs, body);
            }
        }
    }

    /// NIST GCM test vector (AES-256, 96-bit IV, no AAD, one block: "Test Case 14").
    #[test]
    fn nist_vector() {
        let key = [0u8; 32];
        let nonce = [0u8; 12];
        let g = Gcm::new(&key, b"");
        let mut body = [0u8; 16];
        let tag = g.seal(&nonce, &mut body).unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&body), "cea7403d4d606b6e074ec5d3baf39d18");
        assert_eq!(hex(&tag), "d0d1c8a799996bf0265b98b5d48ab919");
    }

    #[test]
    fn tampering_and_limits() {
        let g = Gcm::new(&[5; 32], b"envoy-persist:persist");
        let nonce = [9; 12];
        let mut body = *b"0123456789abcde";
        let tag = g.seal(&nonce, &mut body).unwrap();
        let sealed = body;
        for i in 0..body.len() {
            let mut t = sealed;
            t[i] ^= 1;
            assert!(!g.open(&nonce, &mut t, &tag), "flip at {i}");
            assert_eq!(t[i], sealed[i] ^ 1, "untouched when refused");
        }
        for i in 0..16 {
            let mut bad = tag;
            bad[i] ^= 0x80;
            assert!(!g.open(&nonce, &mut sealed.clone(), &bad));
        }
        assert!(!g.open(&[8; 12], &mut sealed.clone(), &tag));
        assert!(!Gcm::new(&[5; 32], b"other").open(&nonce, &mut sealed.clone(), &tag));
        assert!(g.seal(&nonce, &mut [0u8; MAX_BODY + 1]).is_none());
        assert!(!g.open(&nonce, &mut [0u8; MAX_BODY + 1], &tag));
    }
}
