//! Payloads, answers and states as byte strings: postcard writes a byte string as its length
//! and its bytes, exactly as it writes a `Vec<u8>` (a length, then each `u8` as one byte), so
//! the wire is the same; but a byte string is read with one copy, where a `Vec<u8>` is read
//! one element at a time, each through the visitor (for a payload of a few hundred bytes,
//! most of what its decode costs).
//!
//! Used with `#[serde(with = "…")]` on the fields that carry them.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The most elements a sequence read in place of a byte string reserves room for before it
/// has them: a length from a peer is only a claim.
const MAX_RESERVED: usize = 4096;

/// `Vec<u8>` as a byte string.
pub(crate) mod vec {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(ByteBufVisitor)
    }
}

/// `Option<Vec<u8>>` with the bytes as a byte string.
pub(crate) mod option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        bytes.as_deref().map(BytesRef).serialize(serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<ByteBuf>::deserialize(deserializer)?.map(|bytes| bytes.0))
    }
}

/// `Result<Vec<u8>, E>` with the bytes as a byte string.
pub(crate) mod result {
    use super::*;

    pub(crate) fn serialize<S: Serializer, E: Serialize>(
        result: &Result<Vec<u8>, E>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        result.as_deref().map(BytesRef).serialize(serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, E: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Result<Vec<u8>, E>, D::Error> {
        Ok(Result::<ByteBuf, E>::deserialize(deserializer)?.map(|bytes| bytes.0))
    }
}

/// Borrowed bytes that serialize as a byte string.
struct BytesRef<'a>(&'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Owned bytes read from a byte string.
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_byte_buf(ByteBufVisitor)
            .map(ByteBuf)
    }
}

struct ByteBufVisitor;

impl<'de> Visitor<'de> for ByteBufVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }

    /// A format that writes byte strings as sequences of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_RESERVED));
        while let Some(byte) = seq.next_element()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    /// The fields as they were declared before: plain `Vec<u8>`s.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        payload: Vec<u8>,
        state: Option<Vec<u8>>,
        result: Result<Vec<u8>, String>,
    }

    /// The same fields as byte strings.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AsBytes {
        #[serde(with = "super::vec")]
        payload: Vec<u8>,
        #[serde(with = "super::option")]
        state: Option<Vec<u8>>,
        #[serde(with = "super::result")]
        result: Result<Vec<u8>, String>,
    }

    proptest! {
        /// Byte strings are what `Vec<u8>` was on the wire, both ways: a node of this build
        /// and one of the build before read each other.
        #[test]
        fn byte_strings_are_the_same_bytes_on_the_wire_as_vecs(
            payload in proptest::collection::vec(any::<u8>(), 0..600),
            state in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            answer in proptest::collection::vec(any::<u8>(), 0..300),
            failed in any::<bool>(),
        ) {
            let result = if failed { Err(String::from("no")) } else { Ok(answer) };
            let plain = Plain { payload, state, result };
            let as_bytes = AsBytes {
                payload: plain.payload.clone(),
                state: plain.state.clone(),
                result: plain.result.clone(),
            };
            let wire = postcard::to_allocvec(&plain).expect("encodes");
            prop_assert_eq!(&postcard::to_allocvec(&as_bytes).expect("encodes"), &wire);
            prop_assert_eq!(postcard::from_bytes::<AsBytes>(&wire).expect("decodes"), as_bytes);
            let back: Plain = postcard::from_bytes(&wire).expect("decodes");
            prop_assert_eq!(back, plain);
        }
    }

    #[test]
    fn a_byte_string_longer_than_its_frame_is_an_error() {
        // A length of 200 with 3 bytes behind it.
        let wire = [200, 1, 1, 2, 3];
        assert!(postcard::from_bytes::<super::ByteBuf>(&wire).is_err());
    }
}
