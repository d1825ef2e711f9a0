//! An immutable, reference-counted byte string: what a log entry's command lives in.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Immutable bytes shared by reference counting: a clone copies a pointer, not the bytes.
///
/// A command is held in one from the moment it is proposed. The leader's log keeps it,
/// and every AppendEntries to every follower owns a copy of its entries (a message is
/// data handed to the driver); with a `Vec<u8>` each of those copies was an allocation
/// and a `memcpy` of the command, per follower, per send.
///
/// Build one from a `Vec<u8>` or a `&[u8]` (`From`); read it as a `&[u8]` (`Deref`).
/// Serialized as one binary blob (MessagePack `bin`), like a `Vec<u8>` under
/// `serde_bytes`.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharedBytes(Arc<[u8]>);

impl SharedBytes {
    /// The bytes, as a slice (what `Deref` gives too).
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<[u8]> for SharedBytes {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

/// Moves the bytes into a shared allocation (one copy, made once per command).
impl From<Vec<u8>> for SharedBytes {
    fn from(bytes: Vec<u8>) -> SharedBytes {
        SharedBytes(bytes.into())
    }
}

impl From<&[u8]> for SharedBytes {
    fn from(bytes: &[u8]) -> SharedBytes {
        SharedBytes(bytes.into())
    }
}

/// Collects into one allocation of the exact size when the iterator knows its length
/// (as `a.iter().copied().chain(b.iter().copied())` does): how a tag and a body become one
/// command without an intermediate buffer.
impl FromIterator<u8> for SharedBytes {
    fn from_iter<I: IntoIterator<Item = u8>>(bytes: I) -> SharedBytes {
        SharedBytes(bytes.into_iter().collect())
    }
}

impl<const N: usize> From<&[u8; N]> for SharedBytes {
    fn from(bytes: &[u8; N]) -> SharedBytes {
        SharedBytes(bytes.as_slice().into())
    }
}

impl From<Arc<[u8]>> for SharedBytes {
    fn from(bytes: Arc<[u8]>) -> SharedBytes {
        SharedBytes(bytes)
    }
}

impl PartialEq<[u8]> for SharedBytes {
    fn eq(&self, other: &[u8]) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<Vec<u8>> for SharedBytes {
    fn eq(&self, other: &Vec<u8>) -> bool {
        *self.0 == **other
    }
}

/// Prints like a `Vec<u8>` (a list of numbers), as entries printed before.
impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SharedBytes, D::Error> {
        d.deserialize_bytes(SharedBytesVisitor)
    }
}

struct SharedBytesVisitor;

impl<'de> Visitor<'de> for SharedBytesVisitor {
    type Value = SharedBytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<SharedBytes, E> {
        Ok(v.into())
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<SharedBytes, E> {
        Ok(v.into())
    }

    /// A sequence of numbers (how formats without a bytes type write them).
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<SharedBytes, A::Error> {
        super::types::as_bytes::BytesVisitor.visit_seq(seq).map(SharedBytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_bytes() {
        let a = SharedBytes::from(vec![1, 2, 3]);
        let b = a.clone();
        assert!(std::ptr::eq(a.as_ptr(), b.as_ptr()), "a clone copied the bytes");
        assert_eq!(b, vec![1, 2, 3]);
        assert_eq!(&*b, &[1, 2, 3][..]);
        assert_eq!(format!("{b:?}"), format!("{:?}", vec![1u8, 2, 3]));
    }

    #[test]
    fn encodes_as_one_binary_blob() {
        let bytes = SharedBytes::from(vec![0xFF; 300]);
        let encoded = rmp_serde::to_vec(&bytes).unwrap();
        assert_eq!(encoded, rmp_serde::to_vec(&serde_bytes::Bytes::new(&bytes)).unwrap());
        assert_eq!(rmp_serde::from_slice::<SharedBytes>(&encoded).unwrap(), bytes);
        assert!(rmp_serde::from_slice::<SharedBytes>(&rmp_serde::to_vec("text").unwrap()).is_err());
    }
}
