//! The one codec for everything boxoffice persists or sends between nodes.
//!
//! ## Format
//!
//! Every encoded value is `[version] ++ postcard(body)`. postcard is a specified,
//! stable format, but not a self-describing one: a decoder must know the exact
//! shape the bytes were written with. The leading byte says which shape.
//!
//! - **Stored values** ([`encode`], [`decode`]) implement [`Versioned`]: the byte is
//!   the version of *that type's* stored shape. Every stored type starts at
//!   version 1, which is the shape the first releases wrote (they put a global
//!   format byte `1` in front of every value; that byte reads as "version 1" of
//!   each type, so their data decodes unchanged: `storage/tests/golden/v1.txt`
//!   holds their bytes, and `storage/tests/formats.rs` decodes them).
//! - **Node-to-node messages** ([`encode_message`], [`decode_message`]) carry
//!   [`MESSAGE_VERSION`]: the shape of the RPC bodies as a whole.
//!
//! Decoding refuses what it does not understand: an unknown version, bytes left
//! over after the value (a field removed, or a value written by a newer shape),
//! or bytes missing (a field added): never a silent misreading.
//!
//! ## How a stored type may change (the evolution rule)
//!
//! 1. **Add a variant** to an enum (a command, an effect, a rejection, a hold
//!    state): only at the end. postcard writes a variant as its index, so old
//!    values keep their meaning. Never reorder, remove, or change the payload of
//!    an existing variant: add a new variant instead (`HoldV2`), and keep
//!    handling the old one for as long as old values can exist.
//! 2. **Add or change a field** of a stored struct: freeze the current struct
//!    under a versioned name (`BookingV1`, kept forever), add the field to the
//!    struct, bump its [`Versioned::VERSION`], and decode the old version through
//!    the frozen struct (`From<BookingV1> for Booking`, choosing the new field's
//!    value for old records). A nested struct belongs to every stored type that
//!    contains it: changing it bumps each of them.
//! 3. **Keep the proof**: the golden bytes of every version ever written stay in
//!    `storage/tests/golden/` (checked by `storage/tests/formats.rs`) and must
//!    keep decoding to the same values; add
//!    the new version's bytes beside them.
//! 4. **Roll out readers before writers.** A node refuses a version newer than
//!    it knows (it crashes on such a stored value rather than misread it). So a
//!    release that starts writing a new variant or version must follow one that
//!    reads it everywhere, or write it only behind a setting that is off until
//!    every node is upgraded (as `raft.propose_batch_max` did for
//!    `Command::Batch`).
//!
//! Log entries ([`LOG_FORMAT_VERSION`]) hold commands, and remembered answers hold
//! outcomes: those types follow the same rule. A command's idempotency
//! fingerprint is not its encoding (see `command::fingerprint`), so a new field
//! does not turn clients' retries into `idempotency_key_reused`.

use serde::{de::DeserializeOwned, Serialize};

/// Version of the log-entry shape (`Entry`, holding `Request`, `Command`): bump
/// it, with a decoder of the old shape, when the variant rule cannot express a
/// change to them.
pub const LOG_FORMAT_VERSION: u8 = 1;

/// Version of the node-to-node message shapes (Raft RPC, forwarded writes,
/// bootstrap): a node refuses a message of another version with a clear error.
pub const MESSAGE_VERSION: u8 = 1;

/// Why a value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value is empty: not even a version byte.
    #[error("empty value: no version byte")]
    Empty,
    /// Written in a version this build does not know.
    #[error(
        "{what}: unsupported version {found} (this build reads versions {oldest}..={current})"
    )]
    UnsupportedVersion {
        /// The type.
        what: &'static str,
        /// The version byte found.
        found: u8,
        /// The oldest version this build reads.
        oldest: u8,
        /// The version this build writes.
        current: u8,
    },
    /// The value decoded with bytes to spare: it was written in another shape.
    #[error("{what}: {extra} bytes left over after the value")]
    TrailingBytes {
        /// The type.
        what: &'static str,
        /// How many.
        extra: usize,
    },
    /// postcard could not decode the value.
    #[error("{what}: {source}")]
    Postcard {
        /// The type.
        what: &'static str,
        /// postcard's error.
        source: postcard::Error,
    },
}

/// A type stored by boxoffice, with the version of its stored shape.
///
/// [`Versioned::decode_version`] reads every version from
/// [`Versioned::OLDEST_VERSION`] to [`Versioned::VERSION`]; the default reads
/// only the current one, with serde. See the module docs for how a type moves
/// to a new version.
pub trait Versioned: Serialize + DeserializeOwned {
    /// What the value is, for error messages.
    const NAME: &'static str;
    /// The version this build writes.
    const VERSION: u8 = 1;
    /// The oldest version this build still reads.
    const OLDEST_VERSION: u8 = 1;

    /// Decodes a body written in `version` (checked to be in range). The default
    /// reads only the current version: a type that moves to version 2 must
    /// override this to read version 1 through its frozen shape, and until it
    /// does, version 1 bytes are refused rather than read with the new shape.
    fn decode_version(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        if version != Self::VERSION {
            return Err(CodecError::UnsupportedVersion {
                what: Self::NAME,
                found: version,
                oldest: Self::VERSION,
                current: Self::VERSION,
            });
        }
        postcard_exact(Self::NAME, body)
    }
}

/// Declares types stored at version 1 (their only version so far).
#[macro_export]
macro_rules! versioned_v1 {
    ($($ty:ty => $name:literal),* $(,)?) => {
        $(impl $crate::codec::Versioned for $ty {
            const NAME: &'static str = $name;
        })*
    };
}

/// Decodes exactly one `T` from `body`: no bytes missing, none left over.
pub fn postcard_exact<T: DeserializeOwned>(
    what: &'static str,
    body: &[u8],
) -> Result<T, CodecError> {
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|source| CodecError::Postcard { what, source })?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes {
            what,
            extra: rest.len(),
        });
    }
    Ok(value)
}

fn frame<T: Serialize + ?Sized>(version: u8, value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(version);
    // Serializing our own plain data types into a Vec cannot fail: postcard only
    // fails on unsupported serde features (e.g. unknown-length sequences), which
    // none of the encoded types use. A failure is a programming error.
    postcard::to_extend(value, out).expect("postcard encoding of an in-memory value")
}

/// The length of [`encode_message`]'s bytes for `value`, counted without
/// writing them.
pub fn encoded_message_len<T: Serialize + ?Sized>(value: &T) -> usize {
    // As in `frame`: cannot fail for our types.
    1 + postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(
        value,
        postcard::ser_flavors::Size::default(),
    )
    .expect("postcard size of an in-memory value")
}

/// Encodes a stored value: its type's current version, then its body.
pub fn encode<T: Versioned>(value: &T) -> Vec<u8> {
    frame(T::VERSION, value)
}

/// Decodes a stored value written by [`encode`] in any version this build reads.
pub fn decode<T: Versioned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if !(T::OLDEST_VERSION..=T::VERSION).contains(&version) {
        return Err(CodecError::UnsupportedVersion {
            what: T::NAME,
            found: version,
            oldest: T::OLDEST_VERSION,
            current: T::VERSION,
        });
    }
    T::decode_version(version, body)
}

/// Encodes a node-to-node message.
pub fn encode_message<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    frame(MESSAGE_VERSION, value)
}

/// Decodes a node-to-node message written by [`encode_message`].
pub fn decode_message<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != MESSAGE_VERSION {
        return Err(CodecError::UnsupportedVersion {
            what: "node-to-node message",
            found: version,
            oldest: MESSAGE_VERSION,
            current: MESSAGE_VERSION,
        });
    }
    postcard_exact("node-to-node message", body)
}

/// The stored shapes of openraft's own types, which the log store keeps: the
/// log entry (holding this crate's commands) and Raft's bookkeeping.
mod raft_types {
    use super::{Versioned, LOG_FORMAT_VERSION};
    use crate::{Entry, LogId, NodeId};

    impl Versioned for Entry {
        const NAME: &'static str = "log entry";
        const VERSION: u8 = LOG_FORMAT_VERSION;
    }

    crate::versioned_v1! {
        openraft::Vote<NodeId> => "vote",
        LogId => "log id",
        Option<LogId> => "committed log id",
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct ThingV1 {
        a: u32,
    }

    /// A type that gained a field: version 2, reading version 1 too.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Thing {
        a: u32,
        b: String,
    }

    impl Versioned for Thing {
        const NAME: &'static str = "thing";
        const VERSION: u8 = 2;
        fn decode_version(version: u8, body: &[u8]) -> Result<Self, CodecError> {
            match version {
                1 => postcard_exact::<ThingV1>(Self::NAME, body).map(|v| Thing {
                    a: v.a,
                    b: "default".into(),
                }),
                _ => postcard_exact(Self::NAME, body),
            }
        }
    }
    versioned_v1!(ThingV1 => "thing v1");

    #[test]
    fn a_message_length_is_counted_as_written() {
        for b in ["", "x", &"long ".repeat(100)] {
            let t = Thing {
                a: 300_000,
                b: b.into(),
            };
            assert_eq!(encoded_message_len(&t), encode_message(&t).len());
        }
    }

    #[test]
    fn versions_decode_through_their_own_shape_and_refuse_what_they_cannot_read() {
        let old = encode(&ThingV1 { a: 7 });
        assert_eq!(old, vec![1, 7]);
        assert_eq!(
            decode::<Thing>(&old).unwrap(),
            Thing {
                a: 7,
                b: "default".into()
            }
        );
        let new = encode(&Thing {
            a: 7,
            b: "x".into(),
        });
        assert_eq!(new[0], 2);
        assert_eq!(decode::<Thing>(&new).unwrap().b, "x");
        // An old reader refuses the new version rather than misread it.
        assert!(matches!(
            decode::<ThingV1>(&new),
            Err(CodecError::UnsupportedVersion { found: 2, .. })
        ));
        // A field added in place (without a new version) is caught either way.
        let mut grown = old.clone();
        grown.push(0);
        assert!(matches!(
            decode::<ThingV1>(&grown),
            Err(CodecError::TrailingBytes { extra: 1, .. })
        ));
        assert!(matches!(
            decode::<Thing>(&[2, 7]),
            Err(CodecError::Postcard { .. })
        ));
        assert!(matches!(decode::<Thing>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<Thing>(&[3, 7]),
            Err(CodecError::UnsupportedVersion { found: 3, .. })
        ));
    }

    /// A type whose version was bumped without a reader of the old one.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Forgot {
        a: u32,
    }
    impl Versioned for Forgot {
        const NAME: &'static str = "forgot";
        const VERSION: u8 = 2;
    }

    #[test]
    fn a_bumped_version_without_its_old_reader_refuses_old_bytes() {
        assert!(matches!(
            decode::<Forgot>(&[1, 7]),
            Err(CodecError::UnsupportedVersion { found: 1, .. })
        ));
        assert_eq!(decode::<Forgot>(&[2, 7]).unwrap(), Forgot { a: 7 });
    }

    #[test]
    fn messages_carry_their_version() {
        let bytes = encode_message(&(5u16, "x".to_string()));
        assert_eq!(bytes[0], MESSAGE_VERSION);
        assert_eq!(
            decode_message::<(u16, String)>(&bytes).unwrap(),
            (5, "x".into())
        );
        let mut other = bytes.clone();
        other[0] = MESSAGE_VERSION + 1;
        assert!(decode_message::<(u16, String)>(&other).is_err());
    }
}
