//! The Internet checksum (one's-complement sum of 16-bit words), fast enough to run over every
//! byte the tunnel sends: words are added in the machine's byte order, 32 bits at a time into a
//! 64-bit total (which the compiler vectorises), and the folded result is turned to network
//! order once at the end (the sum does not depend on byte order, RFC 1071).

/// The folded sum of `bytes` as big-endian 16-bit words, an odd last byte padded with zero.
/// Sums of pieces that each start at an even offset add up with [`add`].
pub(crate) fn sum(bytes: &[u8]) -> u16 {
    let mut total: u64 = 0;
    let mut words = bytes.chunks_exact(4);
    for word in &mut words {
        total += u32::from_ne_bytes([word[0], word[1], word[2], word[3]]) as u64;
    }
    let mut rest = words.remainder();
    if rest.len() >= 2 {
        total += u16::from_ne_bytes([rest[0], rest[1]]) as u64;
        rest = &rest[2..];
    }
    if let [last] = rest {
        total += u16::from_ne_bytes([*last, 0]) as u64;
    }
    let folded = fold(total);
    if cfg!(target_endian = "little") {
        folded.swap_bytes()
    } else {
        folded
    }
}

/// One's-complement addition of folded sums.
pub(crate) fn add(a: u16, b: u16) -> u16 {
    fold(a as u64 + b as u64)
}

/// The checksum field's value for data whose sum (with the field zeroed) is `sum`.
pub(crate) fn finish(sum: u16) -> u16 {
    !sum
}

/// The sum of the IPv4 pseudo-header of a `protocol` payload of `len` bytes from `addresses`
/// (source then destination, the 8 bytes at offset 12 of the IPv4 header).
pub(crate) fn pseudo_v4(addresses: &[u8], protocol: u8, len: usize) -> u16 {
    add(sum(addresses), add(protocol as u16, len as u16))
}

/// ... of the IPv6 pseudo-header (`addresses`: the 32 bytes at offset 8 of the IPv6 header).
pub(crate) fn pseudo_v6(addresses: &[u8], protocol: u8, len: usize) -> u16 {
    add(sum(addresses), add(add(protocol as u16, (len >> 16) as u16), len as u16))
}

/// Writes the IPv4 header checksum of `header` (its options included).
pub(crate) fn set_ipv4_header(header: &mut [u8]) {
    header[10..12].copy_from_slice(&[0, 0]);
    let value = finish(sum(header));
    header[10..12].copy_from_slice(&value.to_be_bytes());
}

fn fold(mut total: u64) -> u16 {
    while total > 0xffff {
        total = (total & 0xffff) + (total >> 16);
    }
    total as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071's definition, word by word in network order.
    fn reference(bytes: &[u8]) -> u16 {
        let mut total: u64 =
            bytes.chunks(2).map(|pair| u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]) as u64).sum();
        while total > 0xffff {
            total = (total & 0xffff) + (total >> 16);
        }
        total as u16
    }

    #[test]
    fn the_fast_sum_is_the_reference_sum_for_every_length_and_content() {
        let mut state = 0x1234_5678u32;
        let mut bytes = Vec::new();
        for len in 0..300 {
            assert_eq!(sum(&bytes), reference(&bytes), "length {len}");
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            bytes.push((state >> 24) as u8);
        }
        assert_eq!(sum(&[0xff; 4096]), reference(&[0xff; 4096]));
        assert_eq!(sum(&[0xff; 4097]), reference(&[0xff; 4097]));
    }

    #[test]
    fn sums_of_even_pieces_add_up_and_a_written_ipv4_checksum_verifies() {
        let bytes: Vec<u8> = (0..101u32).map(|n| (n * 37 + 11) as u8).collect();
        assert_eq!(add(sum(&bytes[..40]), sum(&bytes[40..])), sum(&bytes));
        let mut header = [0x45, 0, 0, 60, 0x12, 0x34, 0x40, 0, 64, 6, 0xaa, 0xbb, 10, 0, 0, 1, 10, 0, 0, 2];
        set_ipv4_header(&mut header);
        assert_eq!(reference(&header), 0xffff);
    }
}
