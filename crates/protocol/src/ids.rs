//! Identifiers that travel in topics and messages, and their grammar.
//!
//! Each becomes (part of) an MQTT topic level or a file name somewhere, so each is checked
//! where it enters: the box checks what the center sends, the center what a box sends.

/// Whether `id` is a valid camera id: `[A-Za-z0-9_-]{1,32}`.
pub fn valid_camera_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `s` is a valid request id (`jti`): `[A-Za-z0-9_-]{1,64}`, since it becomes a topic
/// level (`live/{request_id}`, `clip/{request_id}`).
pub fn valid_jti(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `id` is a valid gateway id (the CN of a box's certificate, a topic level):
/// 1-64 of `A-Z a-z 0-9 _ - .`.
pub fn valid_gateway_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_ids() {
        assert!(valid_camera_id("front-door_1"));
        assert!(valid_camera_id(&"a".repeat(32)));
        assert!(!valid_camera_id(&"a".repeat(33)));
        assert!(!valid_camera_id(""));
        assert!(!valid_camera_id("a/b"));
        assert!(!valid_camera_id("a+"));
    }

    #[test]
    fn request_ids_are_one_topic_level() {
        assert!(valid_jti("AbC_-09"));
        assert!(valid_jti(&"x".repeat(64)));
        assert!(!valid_jti(&"x".repeat(65)));
        for bad in ["", "a/b", "a+b", "#", "a b", "é"] {
            assert!(!valid_jti(bad), "{bad:?}");
        }
    }

    #[test]
    fn gateway_ids_are_one_topic_level() {
        assert!(valid_gateway_id("gw-01.city"));
        for bad in ["", "a/b", "a+", "#", &"g".repeat(65)] {
            assert!(!valid_gateway_id(bad), "{bad:?}");
        }
    }
}
