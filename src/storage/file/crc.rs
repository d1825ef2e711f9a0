//! CRC-32C (Castagnoli), the checksum of every record: the polynomial iSCSI, ext4 and
//! etcd's WAL use, chosen for its error detection on storage-sized blocks. Table-driven,
//! one byte at a time (slicing-by-8 would be faster; a record's checksum costs far less
//! than its `fdatasync`, so the simple form wins).

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

/// The remainder of every byte value, built at compile time.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ POLY } else { crc >> 1 };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
};

/// The CRC-32C of `bytes`.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    crc32c_append(0, bytes)
}

/// The CRC-32C of some bytes followed by `bytes`, given `crc`, the CRC-32C of the former:
/// a stream (a snapshot) is checksummed piece by piece, never held whole.
pub(crate) fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!crc, |crc, &b| TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8))
}

#[cfg(test)]
mod tests {
    use super::{crc32c, crc32c_append};

    /// Known answers from RFC 3720 (iSCSI), appendix B.4, and the usual check value.
    #[test]
    fn known_answers() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        let descending: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&descending), 0x113F_DB5C);
    }

    #[test]
    fn appending_piece_by_piece_equals_the_whole() {
        let bytes: Vec<u8> = (0..1000u32).map(|k| (k * 7 % 251) as u8).collect();
        for cut in [0, 1, 17, 500, 999, 1000] {
            assert_eq!(crc32c_append(crc32c(&bytes[..cut]), &bytes[cut..]), crc32c(&bytes), "cut at {cut}");
        }
    }
}
