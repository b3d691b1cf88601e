//! The value codec: how every value in the database is laid out, byte by byte.
//!
//! Hand-written rather than derived, so that the layout is exactly what this
//! comment says, is stable across compiler and library versions, and is
//! checked on the way in and again on the way out.
//!
//! # Envelope (every value)
//!
//! ```text
//! offset   size  field
//! 0        1     codec version, CODEC_VERSION = 1
//! 1        1     kind: b'F' format, b'I' identity, b'A' acceptor state, b'R' log record,
//!                b'M' membership
//! 2        n     body: the kind's fields in order; integers little-endian, fixed width;
//!                byte strings as u32 length then the bytes
//! 2 + n    4     CRC32 (IEEE 802.3, as crc32fast computes it) of bytes 0 .. 2 + n, LE
//! ```
//!
//! # Bodies
//!
//! ```text
//! F format    u32 format version
//! I identity  u64 cluster id, u64 node id
//! A acceptor  u64 promised.round, u64 promised.node, u64 snapshot, u64 commit, u64 applied
//! R record    u64 slot, u64 ballot.round, u64 ballot.node, u8 chosen (0 | 1),
//!             u8 value tag (0 no-op | 1 batch | 2 membership),
//!             batch only: u32 command count, then per command u32 length ++ bytes
//!             membership only: a configuration (below)
//! M membership  u64 slot, then a configuration: the configuration in effect
//!             after that slot
//!
//! configuration  u8 shape (0 stable | 1 joint), then one membership (stable)
//!                or two (joint: old, then new)
//! membership     u64 phase-1 quorum, u64 phase-2 quorum,
//!                u32 voter count, u64 per voter, u32 observer count, u64 per observer
//! ```
//!
//! A decoded configuration is validated (`Configuration::validate`): a
//! membership that breaks a rule is corrupt data, not something to run with.
//!
//! # Invariants
//!
//! - `decode(encode(x)) == x` for every value, including an empty batch
//!   (distinct from a no-op) and empty commands.
//! - Decoding checks the CRC first, then the version and kind, then every
//!   length against the bytes that remain, then that nothing is left over. It
//!   never panics and never allocates more than the input's length, whatever
//!   the input. CRC32 detects every error burst of up to 32 bits, so any
//!   single corrupted byte is caught.
//! - Commands are stored as-is: the codec never looks inside them.

use crate::format::AcceptorState;
use crate::types::Identity;
use bytes::Bytes;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use synod_paxos::{
    Ballot, Configuration, Membership, MembershipRecord, NodeId, Slot, SlotRecord, Value,
};

/// The envelope version written by this build; the only one it reads.
pub(crate) const CODEC_VERSION: u8 = 1;

const HEADER_LEN: usize = 2;
const CRC_LEN: usize = 4;
const VALUE_NOOP: u8 = 0;
const VALUE_BATCH: u8 = 1;
const VALUE_MEMBERSHIP: u8 = 2;
const SHAPE_STABLE: u8 = 0;
const SHAPE_JOINT: u8 = 1;

/// The bytes of a record body before its commands: slot, ballot round and
/// node, chosen flag, value tag.
const RECORD_FIXED_LEN: usize = 8 + 8 + 8 + 1 + 1;

/// What a value is, stored in its second byte so that a value written under
/// the wrong table or key is caught even when its CRC is intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Format = b'F',
    Identity = b'I',
    Acceptor = b'A',
    Record = b'R',
    Membership = b'M',
}

/// Why a stored value did not decode. Becomes the `reason` of
/// [`StorageError::Corrupt`](crate::StorageError::Corrupt).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    TooShort {
        len: usize,
    },
    Checksum {
        stored: u32,
        computed: u32,
    },
    Version {
        found: u8,
    },
    Kind {
        expected: u8,
        found: u8,
    },
    Truncated {
        field: &'static str,
        needed: usize,
        remaining: usize,
    },
    Invalid {
        field: &'static str,
        value: u64,
    },
    Trailing {
        bytes: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooShort { len } => write!(
                f,
                "value is {len} bytes, shorter than the {} bytes of header and checksum",
                HEADER_LEN + CRC_LEN
            ),
            DecodeError::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            DecodeError::Version { found } => write!(
                f,
                "unknown codec version {found} (this build reads {CODEC_VERSION})"
            ),
            DecodeError::Kind { expected, found } => write!(
                f,
                "value of kind {:?} where kind {:?} belongs",
                char::from(*found),
                char::from(*expected)
            ),
            DecodeError::Truncated {
                field,
                needed,
                remaining,
            } => write!(
                f,
                "truncated at {field}: needs {needed} bytes, {remaining} remain"
            ),
            DecodeError::Invalid { field, value } => write!(f, "invalid {field}: {value}"),
            DecodeError::Trailing { bytes } => {
                write!(f, "{bytes} unexpected bytes after the value")
            }
        }
    }
}

/// Appends one value to a reused buffer: header first, checksum last.
struct Encoder<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Encoder<'a> {
    /// Clears `buf` (keeping its capacity) and writes the header.
    fn begin(buf: &'a mut Vec<u8>, kind: Kind, body_len: usize) -> Encoder<'a> {
        buf.clear();
        buf.reserve(HEADER_LEN + body_len + CRC_LEN);
        buf.push(CODEC_VERSION);
        buf.push(kind as u8);
        Encoder { buf }
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u32(len_u32(b.len(), "command"));
        self.buf.extend_from_slice(b);
    }

    fn membership(&mut self, m: &Membership) {
        self.u64(m.phase1_quorum as u64);
        self.u64(m.phase2_quorum as u64);
        for ids in [&m.voters, &m.observers] {
            self.u32(len_u32(ids.len(), "membership"));
            for id in ids {
                self.u64(id.0);
            }
        }
    }

    fn configuration(&mut self, c: &Configuration) {
        match c {
            Configuration::Stable(m) => {
                self.u8(SHAPE_STABLE);
                self.membership(m);
            }
            Configuration::Joint { old, new } => {
                self.u8(SHAPE_JOINT);
                self.membership(old);
                self.membership(new);
            }
        }
    }

    fn finish(self) {
        let crc = crc32fast::hash(self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
    }
}

/// A length that must fit the format's u32 length prefix. Commands and
/// batches are bounded far below 4 GiB by the runtime, so a larger one is a
/// bug upstream, not input to reject.
fn len_u32(len: usize, what: &str) -> u32 {
    u32::try_from(len).unwrap_or_else(|_| panic!("{what} length {len} exceeds u32::MAX"))
}

/// Reads one value's body after verifying its envelope. Every read returns an
/// error instead of panicking when the bytes run out.
struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where the body ends and the checksum begins.
    end: usize,
}

impl<'a> Decoder<'a> {
    /// Checks the checksum, the version and the kind, in that order: a
    /// flipped byte anywhere is reported as a checksum mismatch.
    fn open(data: &'a [u8], kind: Kind) -> Result<Decoder<'a>, DecodeError> {
        if data.len() < HEADER_LEN + CRC_LEN {
            return Err(DecodeError::TooShort { len: data.len() });
        }
        let end = data.len() - CRC_LEN;
        let mut stored = [0u8; CRC_LEN];
        stored.copy_from_slice(&data[end..]);
        let stored = u32::from_le_bytes(stored);
        let computed = crc32fast::hash(&data[..end]);
        if stored != computed {
            return Err(DecodeError::Checksum { stored, computed });
        }
        if data[0] != CODEC_VERSION {
            return Err(DecodeError::Version { found: data[0] });
        }
        if data[1] != kind as u8 {
            return Err(DecodeError::Kind {
                expected: kind as u8,
                found: data[1],
            });
        }
        Ok(Decoder {
            data,
            pos: HEADER_LEN,
            end,
        })
    }

    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn take(&mut self, needed: usize, field: &'static str) -> Result<Range<usize>, DecodeError> {
        if needed > self.remaining() {
            return Err(DecodeError::Truncated {
                field,
                needed,
                remaining: self.remaining(),
            });
        }
        let range = self.pos..self.pos + needed;
        self.pos += needed;
        Ok(range)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let range = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.data[range]);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A length-prefixed byte string, as a range of the input.
    fn bytes(&mut self, field: &'static str) -> Result<Range<usize>, DecodeError> {
        let len = self.u32(field)? as usize;
        self.take(len, field)
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::Invalid {
                field,
                value: u64::from(other),
            }),
        }
    }

    fn ballot(&mut self, field: &'static str) -> Result<Ballot, DecodeError> {
        Ok(Ballot {
            round: self.u64(field)?,
            node: NodeId(self.u64(field)?),
        })
    }

    fn ids(&mut self, field: &'static str) -> Result<Vec<NodeId>, DecodeError> {
        let count = self.u32(field)? as usize;
        if count > self.remaining() / 8 {
            return Err(DecodeError::Truncated {
                field,
                needed: count.saturating_mul(8),
                remaining: self.remaining(),
            });
        }
        (0..count).map(|_| Ok(NodeId(self.u64(field)?))).collect()
    }

    fn membership(&mut self) -> Result<Membership, DecodeError> {
        let phase1_quorum = self.u64("phase-1 quorum")? as usize;
        let phase2_quorum = self.u64("phase-2 quorum")? as usize;
        Ok(Membership {
            phase1_quorum,
            phase2_quorum,
            voters: self.ids("voters")?,
            observers: self.ids("observers")?,
        })
    }

    fn configuration(&mut self) -> Result<Configuration, DecodeError> {
        let c = match self.u8("configuration shape")? {
            SHAPE_STABLE => Configuration::Stable(self.membership()?),
            SHAPE_JOINT => Configuration::Joint {
                old: self.membership()?,
                new: self.membership()?,
            },
            shape => {
                return Err(DecodeError::Invalid {
                    field: "configuration shape",
                    value: u64::from(shape),
                })
            }
        };
        if c.validate().is_err() {
            return Err(DecodeError::Invalid {
                field: "membership",
                value: 0,
            });
        }
        Ok(c)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            bytes => Err(DecodeError::Trailing { bytes }),
        }
    }
}

/// Encodes the format record (whose layout F1 freezes) into `buf`.
pub(crate) fn encode_format(buf: &mut Vec<u8>, version: u32) {
    let mut e = Encoder::begin(buf, Kind::Format, 4);
    e.u32(version);
    e.finish();
}

/// Decodes the format record.
pub(crate) fn decode_format(data: &[u8]) -> Result<u32, DecodeError> {
    let mut d = Decoder::open(data, Kind::Format)?;
    let version = d.u32("format version")?;
    d.finish()?;
    Ok(version)
}

/// Encodes the identity record into `buf`.
pub(crate) fn encode_identity(buf: &mut Vec<u8>, identity: Identity) {
    let mut e = Encoder::begin(buf, Kind::Identity, 16);
    e.u64(identity.cluster_id);
    e.u64(identity.node_id);
    e.finish();
}

/// Decodes the identity record.
pub(crate) fn decode_identity(data: &[u8]) -> Result<Identity, DecodeError> {
    let mut d = Decoder::open(data, Kind::Identity)?;
    let identity = Identity {
        cluster_id: d.u64("cluster id")?,
        node_id: d.u64("node id")?,
    };
    d.finish()?;
    Ok(identity)
}

/// Encodes a group's acceptor state into `buf`.
pub(crate) fn encode_acceptor(buf: &mut Vec<u8>, state: &AcceptorState) {
    let mut e = Encoder::begin(buf, Kind::Acceptor, 40);
    e.u64(state.promised.round);
    e.u64(state.promised.node.0);
    e.u64(state.snapshot.0);
    e.u64(state.commit.0);
    e.u64(state.applied.0);
    e.finish();
}

/// Decodes a group's acceptor state.
pub(crate) fn decode_acceptor(data: &[u8]) -> Result<AcceptorState, DecodeError> {
    let mut d = Decoder::open(data, Kind::Acceptor)?;
    let state = AcceptorState {
        promised: d.ballot("promised")?,
        snapshot: Slot(d.u64("snapshot")?),
        commit: Slot(d.u64("commit")?),
        applied: Slot(d.u64("applied")?),
    };
    d.finish()?;
    Ok(state)
}

/// Encodes one log record into `buf`, reusing its capacity: the only
/// allocation on the write path, and only when a record outgrows the buffer.
pub(crate) fn encode_record(buf: &mut Vec<u8>, record: &SlotRecord<Bytes>) {
    let body_len = RECORD_FIXED_LEN
        + match &record.value {
            Value::Noop => 0,
            Value::Batch(commands) => 4 + commands.iter().map(|c| 4 + c.len()).sum::<usize>(),
            Value::Membership(c) => configuration_len(c),
        };
    let mut e = Encoder::begin(buf, Kind::Record, body_len);
    e.u64(record.slot.0);
    e.u64(record.ballot.round);
    e.u64(record.ballot.node.0);
    e.u8(u8::from(record.chosen));
    match &record.value {
        Value::Noop => e.u8(VALUE_NOOP),
        Value::Batch(commands) => {
            e.u8(VALUE_BATCH);
            e.u32(len_u32(commands.len(), "batch"));
            for command in commands.iter() {
                e.bytes(command);
            }
        }
        Value::Membership(c) => {
            e.u8(VALUE_MEMBERSHIP);
            e.configuration(c);
        }
    }
    e.finish();
}

fn configuration_len(c: &Configuration) -> usize {
    1 + c
        .halves()
        .iter()
        .map(|m| 16 + 8 + 8 * (m.voters.len() + m.observers.len()))
        .sum::<usize>()
}

/// Encodes a group's stored membership into `buf`.
pub(crate) fn encode_membership(buf: &mut Vec<u8>, record: &MembershipRecord) {
    let mut e = Encoder::begin(
        buf,
        Kind::Membership,
        8 + configuration_len(&record.configuration),
    );
    e.u64(record.slot.0);
    e.configuration(&record.configuration);
    e.finish();
}

/// Decodes a group's stored membership.
pub(crate) fn decode_membership(data: &[u8]) -> Result<MembershipRecord, DecodeError> {
    let mut d = Decoder::open(data, Kind::Membership)?;
    let slot = Slot(d.u64("slot")?);
    let configuration = d.configuration()?;
    d.finish()?;
    Ok(MembershipRecord {
        slot,
        configuration,
    })
}

/// Decodes one log record. The value is copied out of the database once,
/// and every command is a slice of that one copy.
pub(crate) fn decode_record(data: &[u8]) -> Result<SlotRecord<Bytes>, DecodeError> {
    let mut d = Decoder::open(data, Kind::Record)?;
    let slot = Slot(d.u64("slot")?);
    let ballot = d.ballot("ballot")?;
    let chosen = d.bool("chosen flag")?;
    let mut membership = None;
    let commands = match d.u8("value tag")? {
        VALUE_NOOP => None,
        VALUE_BATCH => Some(command_ranges(&mut d)?),
        VALUE_MEMBERSHIP => {
            membership = Some(d.configuration()?);
            None
        }
        tag => {
            return Err(DecodeError::Invalid {
                field: "value tag",
                value: u64::from(tag),
            })
        }
    };
    d.finish()?;
    let value = match (commands, membership) {
        (None, Some(c)) => Value::Membership(c),
        (None, None) => Value::Noop,
        (Some(ranges), _) => {
            let owned = Bytes::copy_from_slice(data);
            let commands: Vec<Bytes> = ranges.into_iter().map(|r| owned.slice(r)).collect();
            Value::Batch(Arc::from(commands))
        }
    };
    Ok(SlotRecord {
        slot,
        ballot,
        value,
        chosen,
    })
}

/// The ranges of a batch's commands within the value.
fn command_ranges(d: &mut Decoder<'_>) -> Result<Vec<Range<usize>>, DecodeError> {
    let count = d.u32("command count")? as usize;
    // Each command takes at least its 4-byte length, so a count the remaining
    // bytes cannot hold is rejected before allocating for it.
    if count > d.remaining() / 4 {
        return Err(DecodeError::Truncated {
            field: "commands",
            needed: count.saturating_mul(4),
            remaining: d.remaining(),
        });
    }
    let mut ranges = Vec::with_capacity(count);
    for _ in 0..count {
        ranges.push(d.bytes("command")?);
    }
    Ok(ranges)
}

#[cfg(test)]
#[path = "codec_test.rs"]
mod tests;

#[cfg(test)]
#[path = "codec_hostile_test.rs"]
mod hostile_tests;
