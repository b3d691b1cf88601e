//! Jute, ZooKeeper's binary record encoding: big-endian integers, one-byte
//! booleans, and `i32`-length-prefixed buffers, strings and vectors where a
//! length of -1 stands for Java's `null`.
//!
//! Everything here is written for hostile input: a [`Reader`] never reads or
//! allocates past the slice it was given, and every malformed input is a clean
//! [`JuteError`] instead of a panic.

use bytes::Bytes;

/// The frame size limit servers use unless configured otherwise.
///
/// ZooKeeper's `jute.maxbuffer` defaults to `0xfffff` (1 MiB - 1) and its
/// readers allow a little slack on top; a round 1 MiB keeps every frame a
/// stock ZooKeeper would accept while still bounding per-connection memory.
pub const MAX_BUFFER_DEFAULT: usize = 1024 * 1024;

/// Why bytes could not be decoded (or a frame accepted).
///
/// Every variant is a protocol error from the peer: the connection that sent
/// it should get a marshalling error or be closed, never a crash.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JuteError {
    /// The input ended in the middle of a field, or a length prefix claims
    /// more bytes (or vector elements) than are left.
    #[error("truncated input: a field or length prefix runs past the end of the data")]
    Truncated,
    /// A length prefix was negative but not -1 (the only negative value jute
    /// uses, for null).
    #[error("invalid length prefix {0}: only -1 (null) or a non-negative length is allowed")]
    BadLength(i32),
    /// A `ustring` field was not valid UTF-8.
    #[error("string field is not valid UTF-8")]
    BadUtf8,
    /// A frame's length prefix is above the configured limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The length the peer announced.
        len: usize,
        /// The limit it was checked against.
        max: usize,
    },
    /// The request opcode is unknown or not served by this implementation.
    #[error("opcode {0} is not implemented")]
    Unimplemented(i32),
    /// A multi request or response carried an operation type that is not
    /// allowed in it (e.g. a getData inside a write multi).
    #[error("operation type {op} is not allowed inside a multi of opcode {multi}")]
    BadMultiOp {
        /// The opcode of the enclosing multi (`MULTI` or `MULTI_READ`).
        multi: i32,
        /// The offending operation type from its `MultiHeader`.
        op: i32,
    },
    /// Bytes were left over where the caller asked for an exact fit.
    #[error("{0} unexpected bytes after the end of the record")]
    Trailing(usize),
}

/// Shorthand for results of jute decoding.
pub type Result<T, E = JuteError> = std::result::Result<T, E>;

/// Checks a frame's 4-byte big-endian length prefix before reading the body.
///
/// Done before any allocation so that a peer cannot make the server reserve
/// memory by announcing a huge frame; `max` is usually
/// [`MAX_BUFFER_DEFAULT`]. A zero length is accepted (the body decoder will
/// refuse it if a record was expected).
pub fn frame_len(header: [u8; 4], max: usize) -> Result<usize> {
    let len = i32::from_be_bytes(header);
    let len = usize::try_from(len).map_err(|_| JuteError::BadLength(len))?;
    if len > max {
        return Err(JuteError::TooLarge { len, max });
    }
    Ok(len)
}

/// A cursor over one decoded frame body.
///
/// Borrowing the frame (rather than consuming a stream) lets every length be
/// checked against what is actually left, so hostile prefixes are refused
/// before anything is allocated.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Number of unread bytes, for optional trailing fields and bounds checks.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True once everything has been read, for optional trailing fields.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The unread bytes, so a header can be decoded first and the body handed
    /// to an opcode-specific decoder.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Refuses leftover bytes, for callers that want an exact fit
    /// (ZooKeeper itself tolerates trailing bytes after requests).
    pub fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(JuteError::Trailing(self.buf.len()))
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(JuteError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads a jute `int` (4 bytes, big-endian).
    pub fn int(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    /// Reads a jute `long` (8 bytes, big-endian).
    pub fn long(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// Reads a jute `boolean`: one byte, any nonzero value is true (Java's
    /// `DataInput.readBoolean`).
    pub fn boolean(&mut self) -> Result<bool> {
        let [b] = self.array()?;
        Ok(b != 0)
    }

    /// Reads a length prefix: `None` for null (-1), refusing other negative
    /// values and lengths past the end of the input.
    fn byte_len(&mut self) -> Result<Option<usize>> {
        let len = self.int()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| JuteError::BadLength(len))?;
        if len > self.remaining() {
            return Err(JuteError::Truncated);
        }
        Ok(Some(len))
    }

    /// Reads a jute `buffer`; null (-1) decodes as empty, since nothing
    /// downstream distinguishes a null znode payload from an empty one.
    pub fn buffer(&mut self) -> Result<Bytes> {
        match self.byte_len()? {
            None => Ok(Bytes::new()),
            Some(len) => Ok(Bytes::copy_from_slice(self.take(len)?)),
        }
    }

    /// Reads a jute `ustring` (UTF-8 checked); null (-1) decodes as "".
    pub fn ustring(&mut self) -> Result<String> {
        match self.byte_len()? {
            None => Ok(String::new()),
            Some(len) => {
                let raw = self.take(len)?;
                std::str::from_utf8(raw)
                    .map(str::to_owned)
                    .map_err(|_| JuteError::BadUtf8)
            }
        }
    }

    /// Reads a jute `vector` of elements decoded by `f`; null (-1) decodes as
    /// empty.
    ///
    /// Every jute element takes at least one byte, so a count above the
    /// remaining byte count is refused before anything is allocated.
    pub fn vector<T>(&mut self, mut f: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let count = self.int()?;
        if count == -1 {
            return Ok(Vec::new());
        }
        let count = usize::try_from(count).map_err(|_| JuteError::BadLength(count))?;
        if count > self.remaining() {
            return Err(JuteError::Truncated);
        }
        // Elements used by ZooKeeper take 4 bytes or more; the hint keeps the
        // reservation proportional to the input, and the Vec grows if needed.
        let mut out = Vec::with_capacity(count.min(self.remaining() / 4));
        for _ in 0..count {
            out.push(f(self)?);
        }
        Ok(out)
    }
}

/// Encodes jute records into a byte vector, optionally as a length-prefixed
/// frame.
///
/// A framed writer reserves the 4-byte prefix up front and fills it in at the
/// end, so a reply is encoded once and never copied.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
    framed: bool,
}

/// Converts a length to jute's `i32`, saturating: lengths above `i32::MAX`
/// cannot be expressed on the wire and are far beyond any frame limit, so the
/// peer will refuse the frame rather than misparse it.
fn wire_len(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

impl Writer {
    /// An unframed writer, for a record embedded in something else or a test.
    pub fn new() -> Self {
        Writer::default()
    }

    /// A writer whose output will be one length-prefixed frame
    /// (finish with [`Writer::into_frame`]).
    pub fn framed() -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0; 4]);
        Writer { buf, framed: true }
    }

    /// Bytes written so far, not counting a reserved frame prefix.
    pub fn len(&self) -> usize {
        self.buf.len() - if self.framed { 4 } else { 0 }
    }

    /// True if no field has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw bytes, without a length prefix (any reserved prefix is
    /// dropped, at the cost of a shift).
    pub fn into_inner(mut self) -> Vec<u8> {
        if self.framed {
            self.buf.drain(..4);
        }
        self.buf
    }

    /// The bytes as a frame: a big-endian `i32` body length, then the body.
    ///
    /// Free for a writer made with [`Writer::framed`]; an unframed writer has
    /// its prefix inserted (one shift of the buffer).
    pub fn into_frame(mut self) -> Vec<u8> {
        if !self.framed {
            self.buf.splice(0..0, [0u8; 4]);
        }
        let len = wire_len(self.buf.len() - 4).to_be_bytes();
        self.buf[..4].copy_from_slice(&len);
        self.buf
    }

    /// Writes a jute `int`.
    pub fn int(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a jute `long`.
    pub fn long(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes a jute `boolean` as 0 or 1.
    pub fn boolean(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    /// Writes a jute `buffer` (never null: an empty buffer is length 0).
    pub fn buffer(&mut self, v: &[u8]) {
        self.int(wire_len(v.len()));
        self.buf.extend_from_slice(v);
    }

    /// Writes a jute `ustring` (never null: "" is length 0).
    pub fn ustring(&mut self, v: &str) {
        self.buffer(v.as_bytes());
    }

    /// Writes a jute `vector`: the count, then each element through `f`.
    pub fn vector<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.int(wire_len(items.len()));
        for item in items {
            f(self, item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn primitives_round_trip() {
        let mut w = Writer::new();
        w.int(-7);
        w.long(0x0102_0304_0506_0708);
        w.boolean(true);
        w.boolean(false);
        w.buffer(b"abc");
        w.ustring("héllo");
        w.vector(&["a".to_owned(), "bc".to_owned()], |w, s| w.ustring(s));
        let bytes = w.into_inner();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.int(), Ok(-7));
        assert_eq!(r.long(), Ok(0x0102_0304_0506_0708));
        assert_eq!(r.boolean(), Ok(true));
        assert_eq!(r.boolean(), Ok(false));
        assert_eq!(r.buffer(), Ok(Bytes::from_static(b"abc")));
        assert_eq!(r.ustring().as_deref(), Ok("héllo"));
        assert_eq!(
            r.vector(|r| r.ustring()),
            Ok(vec!["a".to_owned(), "bc".to_owned()])
        );
        assert!(r.is_empty());
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn exact_primitive_bytes() {
        let mut w = Writer::new();
        w.int(1);
        w.long(-1);
        w.boolean(true);
        w.buffer(b"");
        w.ustring("ab");
        assert_eq!(
            w.into_inner(),
            [
                0, 0, 0, 1, 255, 255, 255, 255, 255, 255, 255, 255, 1, 0, 0, 0, 0, 0, 0, 0, 2,
                b'a', b'b'
            ]
        );
    }

    #[test]
    fn nulls_decode_as_empty() {
        let bytes = [255u8; 12];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.buffer(), Ok(Bytes::new()));
        assert_eq!(r.ustring(), Ok(String::new()));
        assert_eq!(r.vector(|r| r.int()), Ok(vec![]));
        assert!(r.is_empty());
    }

    #[test]
    fn nonzero_boolean_is_true() {
        assert_eq!(Reader::new(&[2]).boolean(), Ok(true));
        assert_eq!(Reader::new(&[0x80]).boolean(), Ok(true));
    }

    #[test]
    fn hostile_lengths_are_refused() {
        let neg = (-2i32).to_be_bytes();
        assert_eq!(Reader::new(&neg).buffer(), Err(JuteError::BadLength(-2)));
        assert_eq!(Reader::new(&neg).ustring(), Err(JuteError::BadLength(-2)));
        assert_eq!(
            Reader::new(&neg).vector(|r| r.int()),
            Err(JuteError::BadLength(-2))
        );
        let huge = i32::MAX.to_be_bytes();
        assert_eq!(Reader::new(&huge).buffer(), Err(JuteError::Truncated));
        assert_eq!(Reader::new(&huge).ustring(), Err(JuteError::Truncated));
        assert_eq!(
            Reader::new(&huge).vector(|r| r.int()),
            Err(JuteError::Truncated)
        );
        // Count within the byte budget but elements missing.
        let short = [0, 0, 0, 2, 0, 0, 0, 1];
        assert_eq!(
            Reader::new(&short).vector(|r| r.int()),
            Err(JuteError::Truncated)
        );
        assert_eq!(Reader::new(&[0, 0, 0]).int(), Err(JuteError::Truncated));
        assert_eq!(Reader::new(&[0; 7]).long(), Err(JuteError::Truncated));
        assert_eq!(Reader::new(&[]).boolean(), Err(JuteError::Truncated));
    }

    #[test]
    fn bad_utf8_is_refused() {
        let bytes = [0, 0, 0, 2, 0xc3, 0x28];
        assert_eq!(Reader::new(&bytes).ustring(), Err(JuteError::BadUtf8));
    }

    #[test]
    fn trailing_bytes_are_reported_on_request() {
        let r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.finish(), Err(JuteError::Trailing(3)));
        assert_eq!(r.rest(), &[1, 2, 3]);
    }

    #[test]
    fn framing() {
        assert_eq!(frame_len([0, 0, 0, 45], MAX_BUFFER_DEFAULT), Ok(45));
        assert_eq!(frame_len([0, 0, 0, 0], MAX_BUFFER_DEFAULT), Ok(0));
        assert_eq!(
            frame_len([255, 255, 255, 255], MAX_BUFFER_DEFAULT),
            Err(JuteError::BadLength(-1))
        );
        assert_eq!(
            frame_len([0, 0x10, 0, 1], MAX_BUFFER_DEFAULT),
            Err(JuteError::TooLarge {
                len: 0x10_0001,
                max: MAX_BUFFER_DEFAULT
            })
        );
        assert_eq!(
            frame_len([0, 0x10, 0, 0], MAX_BUFFER_DEFAULT),
            Ok(MAX_BUFFER_DEFAULT)
        );

        let mut w = Writer::framed();
        assert!(w.is_empty());
        w.int(5);
        w.boolean(true);
        assert_eq!(w.len(), 5);
        assert_eq!(w.clone().into_inner(), [0, 0, 0, 5, 1]);
        assert_eq!(w.into_frame(), [0, 0, 0, 5, 0, 0, 0, 5, 1]);

        let mut w = Writer::new();
        w.int(5);
        assert_eq!(w.into_frame(), [0, 0, 0, 4, 0, 0, 0, 5]);
        assert_eq!(Writer::framed().into_frame(), [0, 0, 0, 0]);
    }

    #[test]
    fn error_messages_say_what_was_wrong() {
        assert!(JuteError::BadLength(-3).to_string().contains("-3"));
        assert!(JuteError::TooLarge { len: 9, max: 4 }
            .to_string()
            .contains("9"));
        assert!(JuteError::Unimplemented(42).to_string().contains("42"));
    }

    proptest! {
        #[test]
        fn frame_len_never_panics(header in any::<[u8; 4]>(), max in any::<usize>()) {
            match frame_len(header, max) {
                Ok(len) => {
                    prop_assert!(len <= max);
                    prop_assert_eq!(len as i64, i64::from(i32::from_be_bytes(header)));
                }
                Err(JuteError::BadLength(n)) => prop_assert!(n < 0),
                Err(JuteError::TooLarge { len, .. }) => prop_assert!(len > max),
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }

        #[test]
        fn readers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes);
            let _ = r.buffer();
            let _ = r.ustring();
            let _ = r.vector(|r| r.ustring());
            let _ = r.vector(|r| r.vector(|r| r.long()));
            let _ = r.boolean();
            prop_assert!(r.remaining() <= bytes.len());
        }

        #[test]
        fn strings_and_buffers_round_trip(
            s in ".*",
            b in proptest::collection::vec(any::<u8>(), 0..64),
            v in proptest::collection::vec(any::<i64>(), 0..16),
        ) {
            let mut w = Writer::new();
            w.ustring(&s);
            w.buffer(&b);
            w.vector(&v, |w, x| w.long(*x));
            let bytes = w.into_frame();
            let len = frame_len([bytes[0], bytes[1], bytes[2], bytes[3]], usize::MAX).unwrap();
            prop_assert_eq!(len, bytes.len() - 4);
            let mut r = Reader::new(&bytes[4..]);
            prop_assert_eq!(r.ustring().unwrap(), s);
            prop_assert_eq!(&r.buffer().unwrap()[..], &b[..]);
            prop_assert_eq!(r.vector(|r| r.long()).unwrap(), v);
            prop_assert!(r.finish().is_ok());
        }
    }
}
