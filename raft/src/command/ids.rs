//! Ids of holds and bookings, which name the shard that owns them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! shard_scoped_id {
    ($name:ident, $prefix:literal, $what:literal) => {
        #[doc = concat!("Identifies a ", $what, ": the shard that owns it and its sequence number there.")]
        ///
        /// Rendered as `<prefix><shard>-<seq>`, so any node can route it to its shard.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name {
            /// Owning inventory shard (group id).
            pub shard: u16,
            /// Sequence number within the shard.
            pub seq: u64,
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}-{}"), self.shard, self.seq)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let bad = || format!(concat!("malformed ", $what, " id {:?}: expected ", $prefix, "<shard>-<n>"), s);
                let rest = s.strip_prefix($prefix).ok_or_else(bad)?;
                let (shard, seq) = rest.split_once('-').ok_or_else(bad)?;
                let shard: u16 = shard.parse().map_err(|_| bad())?;
                let seq: u64 = seq.parse().map_err(|_| bad())?;
                if shard == 0 {
                    return Err(bad());
                }
                Ok($name { shard, seq })
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    (self.shard, self.seq).serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    let (shard, seq) = <(u16, u64)>::deserialize(d)?;
                    Ok($name { shard, seq })
                }
            }
        }
    };
}

shard_scoped_id!(HoldId, "h", "hold");
shard_scoped_id!(BookingId, "b", "booking");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_render_and_parse() {
        let h = HoldId { shard: 3, seq: 17 };
        assert_eq!(h.to_string(), "h3-17");
        assert_eq!("h3-17".parse::<HoldId>().unwrap(), h);
        for bad in [
            "", "h", "h3", "h-17", "x3-17", "h0-1", "h3-", "h3-1x", "b3-17",
        ] {
            assert!(bad.parse::<HoldId>().is_err(), "{bad} parsed");
        }
        let b: BookingId = serde_json::from_str("\"b2-5\"").unwrap();
        assert_eq!(b, BookingId { shard: 2, seq: 5 });
        assert_eq!(serde_json::to_string(&b).unwrap(), "\"b2-5\"");
        let bytes = crate::codec::encode_message(&b);
        assert_eq!(
            crate::codec::decode_message::<BookingId>(&bytes).unwrap(),
            b
        );
    }
}
