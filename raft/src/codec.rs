//! The one codec for everything boxoffice persists or sends between nodes.
//!
//! Every encoded value is `[FORMAT_VERSION] ++ postcard(value)`. postcard is a
//! specified, stable format; the leading byte lets a future release read old
//! values and refuse values it does not understand instead of misreading them.

use serde::{de::DeserializeOwned, Serialize};

/// Version byte written in front of every encoded value.
pub const FORMAT_VERSION: u8 = 1;

/// Why a value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value is empty: not even a version byte.
    #[error("empty value: no format version byte")]
    Empty,
    /// Written by a format this build does not know.
    #[error("unsupported format version {found} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// postcard could not decode or encode the value.
    #[error("postcard: {0}")]
    Postcard(#[from] postcard::Error),
}

/// Encodes a value with the format-version byte in front.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Serializing our own plain data types into a Vec cannot fail: postcard only
    // fails on unsupported serde features (e.g. unknown-length sequences), which
    // none of the encoded types use. A failure is a programming error.
    postcard::to_io(value, &mut out).expect("postcard encoding of an in-memory value");
    out
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, rest) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion { found: version });
    }
    Ok(postcard::from_bytes(rest)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_checks() {
        let v = (7u64, "seat".to_string(), vec![1u32, 2, 3]);
        let bytes = encode(&v);
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (u64, String, Vec<u32>) = decode(&bytes).unwrap();
        assert_eq!(back, v);

        let mut wrong = bytes.clone();
        wrong[0] = 99;
        assert!(matches!(
            decode::<(u64, String, Vec<u32>)>(&wrong),
            Err(CodecError::UnsupportedVersion { found: 99 })
        ));
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<(u64, String, Vec<u32>)>(&bytes[..3]),
            Err(CodecError::Postcard(_))
        ));
    }
}
