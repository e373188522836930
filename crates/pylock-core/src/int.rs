//! Integer arguments, parsed exactly as Redis parses its own (`string2ll`).
//!
//! Accepted: an optional `-`, then `0` alone or a digit `1`-`9` followed by digits, within `i64`.
//! Rejected: empty strings, `+`, spaces, leading zeros, `-0` and anything that overflows.

/// Parses a Redis integer argument. `None` when it is not one.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, s),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    // Accumulate as a negative number so that i64::MIN parses without overflow.
    let mut acc: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        acc = acc.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative {
        Some(acc)
    } else {
        acc.checked_neg()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_i64;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let cases: &[(&str, Option<i64>)] = &[
            ("0", Some(0)),
            ("1", Some(1)),
            ("-1", Some(-1)),
            ("60000", Some(60000)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("", None),
            ("-", None),
            ("+1", None),
            ("01", None),
            ("-0", None),
            ("00", None),
            (" 1", None),
            ("1 ", None),
            ("1.0", None),
            ("1e3", None),
            ("0x10", None),
            ("١", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_i64(input.as_bytes()), *want, "input {input:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trips_every_i64(n: i64) {
            prop_assert_eq!(parse_i64(n.to_string().as_bytes()), Some(n));
        }

        #[test]
        fn agrees_with_std_on_canonical_forms(s in "-?[0-9]{1,21}") {
            let canonical = s.parse::<i64>().ok().filter(|n| n.to_string() == s);
            prop_assert_eq!(parse_i64(s.as_bytes()), canonical);
        }

        #[test]
        fn never_panics(bytes: Vec<u8>) {
            let _ = parse_i64(&bytes);
        }
    }
}
