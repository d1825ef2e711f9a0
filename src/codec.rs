//! MessagePack encoding for the hot paths.

use serde::Serialize;

/// Room reserved up front: `rmp_serde::to_vec` starts from an empty `Vec`, which then grows
/// 8 → 16 → 32 → 64 bytes, three or four allocations for a typical command or response
/// (measured in the writes bench's allocation count); this makes it one.
const INITIAL_CAPACITY: usize = 64;

/// Encodes `value` as MessagePack (structs as arrays, as `rmp_serde::to_vec` does).
pub(crate) fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(INITIAL_CAPACITY);
    rmp_serde::encode::write(&mut out, value).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_bytes_as_rmp_serde() {
        let value = (1u64, "two", vec![3u8; 100], Some(4.5f64));
        assert_eq!(super::to_vec(&value).unwrap(), rmp_serde::to_vec(&value).unwrap());
    }
}
