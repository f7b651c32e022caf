//! Docker ids as users see them.

/// The first 12 characters of a Docker id, as `docker` shows them (whole characters: an id
/// that is not hex never makes this panic).
pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(12) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_of_odd_ids() {
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id(""), "");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id("0123456789ab"), "0123456789ab");
        // 11 ASCII bytes then a 2-byte character: byte 12 is inside it.
        assert_eq!(short_id("0123456789aé-rest"), "0123456789aé");
        assert_eq!(short_id("ééééééééééééé"), "éééééééééééé");
        assert_eq!(short_id("🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀"), "🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀🦀");
    }
}
