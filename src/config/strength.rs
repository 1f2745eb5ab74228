//! Token strength: how much randomness a token can at most carry, judged from its length,
//! its alphabet and its repetition. A register token must carry 128 bits (32 hex or 22
//! base64url characters); a word repeated or a short password cannot.

/// Bits a register token must carry at least.
pub const MIN_TOKEN_BITS: f64 = 128.0;

/// What is wrong with `t` as a token, or `None` when it is strong enough.
pub fn token_weakness(t: &str) -> Option<String> {
    if t.chars().any(|c| !c.is_ascii_graphic()) {
        return Some(
            "contains whitespace, control or non-ASCII characters, which a register cannot send in a header; use e.g. `pointsd token add NAME` or `openssl rand -hex 16`".into(),
        );
    }
    let bits = token_bits(t);
    if bits < MIN_TOKEN_BITS {
        return Some(format!(
            "too weak: at most {bits:.0} bits of randomness, at least {MIN_TOKEN_BITS:.0} needed (32 hex or 22 base64url random characters); use `pointsd token add NAME` or `openssl rand -hex 16`"
        ));
    }
    None
}

/// At most how many bits of randomness `t` holds: the length of the unit it repeats (the
/// whole token when nothing repeats) times the bits of the smallest usual alphabet it is
/// written in. A unit counts as repeated when it comes at least twice or its repeated part is
/// eight characters or more: a random token whose last character happens to equal its first
/// is not a repetition (one generated token in sixteen was refused for that, and `demo`
/// failed to start about one time in eight).
pub fn token_bits(t: &str) -> f64 {
    let b = t.as_bytes();
    if b.is_empty() {
        return 0.0;
    }
    let unit = (1..=b.len())
        .filter(|&p| p <= b.len() / 2 || b.len() - p >= 8)
        .find(|&p| (p..b.len()).all(|i| b[i] == b[i - p]))
        .unwrap_or(b.len());
    let all = |f: fn(&u8) -> bool| b.iter().all(f);
    let alphabet: f64 = if all(u8::is_ascii_digit) {
        10.0
    } else if all(u8::is_ascii_lowercase) || all(u8::is_ascii_uppercase) {
        26.0
    } else if all(u8::is_ascii_hexdigit) {
        16.0
    } else if all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_') {
        64.0
    } else {
        94.0
    };
    unit as f64 * alphabet.log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_tokens() {
        let cases: &[(&str, bool)] = &[
            ("passwordpassword", false),
            ("passwordpasswordpasswordpassword", false),
            ("abcdefghijklmnopqrstuvwxyzabcdefgh", false),
            ("0123456789abcdef0123", false),
            ("3f9a0c7e51d24b8e96a1f0c37d5b2e8", false), // 31 hex
            ("3f9a0c7e51d24b8e96a1f0c37d5b2e84", true), // 32 hex = 128 bits
            ("3f9a0c7e51d24b8e96a1f0c37d5b2e83", true), // ends as it starts: still 128 bits
            ("3f9a0c7e51d24b8e3f9a0c7e51d24b8e", false), // 16 hex twice
            ("abcabcabcabcabcabcabcabcabcabcab", false), // a unit of 3 and a part of it
            ("aB3dE5gH7jK9mN1pQ2rS4t", true),           // 22 base64url
            ("aB3dE5gH7jK9mN1pQ2rS4", false),           // 21 base64url
            ("test-register-token-0123456789", true),
            ("xyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxyxy", false),
            ("aB3dE5gH7jK9 mN1pQ2rS4tuv", false),
            ("aB3dE5gH7jK9mN1pQ2rS4tüv", false),
            ("", false),
        ];
        for (t, ok) in cases {
            assert_eq!(
                token_weakness(t).is_none(),
                *ok,
                "{t:?}: {:?}",
                token_weakness(t)
            );
        }
    }

    /// Every token made as `demo` makes them (32 random hex characters) passes.
    #[test]
    fn generated_tokens_always_pass() {
        use rand::Rng;
        for _ in 0..20_000 {
            let t: String = (0..16)
                .map(|_| format!("{:02x}", rand::rng().random::<u8>()))
                .collect();
            assert!(
                token_weakness(&t).is_none(),
                "{t}: {:?}",
                token_weakness(&t)
            );
        }
    }
}
