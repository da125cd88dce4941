//! Addresses as the data plane's maps hold them, for tests that seed the maps by hand.

use lb_common::{FAMILY_V4, FAMILY_V6};

/// A test address: IPv4 or IPv6, as wire-order bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Ip {
    /// The map layout: wire-order bytes taken as native words, IPv4 in word 0.
    pub fn words(self) -> [u32; 4] {
        match self {
            Ip::V4(a) => [u32::from_ne_bytes(a), 0, 0, 0],
            Ip::V6(a) => words16(a),
        }
    }

    /// `FAMILY_V4` or `FAMILY_V6`.
    pub fn family(self) -> u8 {
        match self {
            Ip::V4(_) => FAMILY_V4,
            Ip::V6(_) => FAMILY_V6,
        }
    }
}

/// An IPv6 address as four native words of wire-order bytes.
pub fn words16(a: [u8; 16]) -> [u32; 4] {
    std::array::from_fn(|i| {
        u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_wire_order_in_memory() {
        let a = [0xfd, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];
        let w = Ip::V6(a).words();
        let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_ne_bytes()).collect();
        assert_eq!(bytes, a);
        assert_eq!(
            Ip::V4([10, 0, 0, 1]).words()[0].to_ne_bytes(),
            [10, 0, 0, 1]
        );
        assert_eq!(Ip::V4([10, 0, 0, 1]).family(), FAMILY_V4);
    }
}
