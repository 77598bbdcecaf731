//! gRPC's message framing over HTTP/2 (each message: a compressed flag byte, its length as
//! four big-endian bytes, the message). proxy-wasm's gRPC client frames the mirror's messages
//! itself; a host whose calls are plain HTTP requests and streams (the dynamic-module ABI's
//! callouts, README "Native module") frames and unframes them with this.

/// A message larger than this is refused (a watch or a load page is far smaller; a peer
/// sending more is broken).
pub const MAX_MESSAGE: usize = 16 << 20;

const PREFIX: usize = 5;

/// The framing of a stream was broken: a compressed message (never asked for), or one larger
/// than [`MAX_MESSAGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadFrame;

/// `message` as one uncompressed gRPC frame.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX + message.len());
    out.push(0);
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    out
}

/// The one message of a unary answer's body; `None` unless the body is exactly one
/// uncompressed frame.
pub fn unframe(body: &[u8]) -> Option<&[u8]> {
    let (len, rest) = header(body).ok()??;
    (rest.len() == len).then_some(rest)
}

/// The length of the frame `bytes` starts with and what follows its prefix; `None` while the
/// prefix is incomplete.
fn header(bytes: &[u8]) -> Result<Option<(usize, &[u8])>, BadFrame> {
    let Some((prefix, rest)) = bytes.split_first_chunk::<PREFIX>() else {
        return Ok(None);
    };
    let [flag, len @ ..] = *prefix;
    let len = usize::try_from(u32::from_be_bytes(len)).map_err(|_| BadFrame)?;
    if flag != 0 || len > MAX_MESSAGE {
        return Err(BadFrame);
    }
    Ok(Some((len, rest)))
}

/// Splits a stream's data, which arrives in chunks of any size, back into messages.
#[derive(Debug, Default)]
pub struct FrameReader {
    pending: Vec<u8>,
}

impl FrameReader {
    /// Appends a chunk of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
    }

    /// The next whole message, `None` until one is complete.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, BadFrame> {
        let Some((len, rest)) = header(&self.pending)? else {
            return Ok(None);
        };
        let Some(message) = rest.get(..len) else {
            return Ok(None);
        };
        let message = message.to_vec();
        self.pending.drain(..PREFIX + len);
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_frame_round_trips() {
        let f = frame(b"hello");
        assert_eq!(f, b"\0\0\0\0\x05hello");
        assert_eq!(unframe(&f), Some(&b"hello"[..]));
        assert_eq!(unframe(&frame(b"")), Some(&b""[..]));
    }

    #[test]
    fn unframe_wants_exactly_one_plain_frame() {
        assert_eq!(unframe(b""), None, "an empty body (a gRPC error)");
        assert_eq!(unframe(b"\0\0\0"), None);
        assert_eq!(unframe(b"\0\0\0\0\x05hell"), None, "short");
        assert_eq!(unframe(b"\0\0\0\0\x05hello!"), None, "trailing bytes");
        assert_eq!(unframe(b"\x01\0\0\0\x05hello"), None, "compressed");
        assert_eq!(unframe(b"\0\xff\xff\xff\xff"), None, "too large");
    }

    #[test]
    fn the_reader_reassembles_messages_split_anyhow() {
        let mut stream = frame(b"first");
        stream.extend(frame(b""));
        stream.extend(frame(&[7u8; 300]));
        for size in [1, 2, 5, 7, 64, stream.len()] {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for chunk in stream.chunks(size) {
                r.push(chunk);
                while let Some(m) = r.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(
                got,
                vec![b"first".to_vec(), Vec::new(), vec![7u8; 300]],
                "chunks of {size}"
            );
            assert_eq!(r.next_message(), Ok(None));
        }
    }

    #[test]
    fn the_reader_refuses_a_broken_stream() {
        let mut r = FrameReader::default();
        r.push(b"\x01\0\0\0\x01x");
        assert_eq!(r.next_message(), Err(BadFrame));
        let mut big = vec![0u8];
        big.extend((u32::try_from(MAX_MESSAGE).unwrap() + 1).to_be_bytes());
        let mut r = FrameReader::default();
        r.push(&big);
        assert_eq!(r.next_message(), Err(BadFrame));
    }
}
