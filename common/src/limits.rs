//! Input rules that gateway and chat-core both apply, defined once so the
//! edge and the core cannot drift apart.

/// Longest accepted `client_msg_id`.
pub const MAX_CLIENT_MSG_ID_LEN: usize = 128;

/// Frames queued for one client connection, on each hop (chat-core's
/// outgoing queue per connection, the gateway's per socket), before it counts
/// as a slow consumer and is closed. Room for two long replies (2,000 deltas
/// each): a reader may lag a whole reply behind a fast agent and lose nothing.
pub const CONNECTION_FRAME_QUEUE: usize = 4096;

/// Default largest message content, in bytes.
pub const DEFAULT_MAX_CONTENT_BYTES: usize = 16 * 1024;

/// `client_msg_id`: 1 to [`MAX_CLIENT_MSG_ID_LEN`] printable ASCII characters.
pub fn check_client_msg_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_CLIENT_MSG_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID_LEN} printable ASCII characters"
        ));
    }
    Ok(())
}

/// A session id in its one canonical form (a lowercase hyphenated UUID), or
/// `None` when `raw` is no UUID and so names no session.
pub fn normalize_session_id(raw: &str) -> Option<String> {
    uuid::Uuid::parse_str(raw)
        .ok()
        .map(|id| id.hyphenated().to_string())
}

/// Why message content was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("content must not be empty")]
    Empty,
    /// Postgres text cannot hold U+0000, so no stored text may.
    #[error("content must not contain NUL characters")]
    Nul,
    #[error("content exceeds {0} bytes")]
    TooLarge(usize),
}

/// Message content: not blank, at most `max_bytes` bytes.
pub fn check_content(content: &str, max_bytes: usize) -> Result<(), ContentError> {
    if content.trim().is_empty() {
        return Err(ContentError::Empty);
    }
    if content.len() > max_bytes {
        return Err(ContentError::TooLarge(max_bytes));
    }
    if has_nul(content) {
        return Err(ContentError::Nul);
    }
    Ok(())
}

/// Whether `text` holds U+0000, raw or as a JSON `\u0000` escape: the
/// databases' text and JSON columns cannot store it, so stored text is
/// refused with it rather than failing in the database.
pub fn has_nul(text: &str) -> bool {
    text.contains('\0') || text.to_ascii_lowercase().contains("\\u0000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_msg_ids_are_bounded_printable_ascii() {
        assert!(check_client_msg_id("abc-123").is_ok());
        assert!(check_client_msg_id("").is_err());
        assert!(check_client_msg_id("has space").is_err());
        assert!(check_client_msg_id(&"x".repeat(MAX_CLIENT_MSG_ID_LEN)).is_ok());
        assert!(check_client_msg_id(&"x".repeat(MAX_CLIENT_MSG_ID_LEN + 1)).is_err());
    }

    #[test]
    fn session_ids_have_one_canonical_form() {
        let canonical = "0190f5c2-7b1e-7cc0-8000-000000000000";
        assert_eq!(normalize_session_id(canonical).as_deref(), Some(canonical));
        assert_eq!(
            normalize_session_id("0190F5C2-7B1E-7CC0-8000-000000000000").as_deref(),
            Some(canonical)
        );
        assert_eq!(
            normalize_session_id("0190f5c27b1e7cc08000000000000000").as_deref(),
            Some(canonical)
        );
        assert_eq!(normalize_session_id("not-a-session"), None);
    }

    #[test]
    fn blank_and_oversized_content_is_refused() {
        assert_eq!(check_content("  \n", 10), Err(ContentError::Empty));
        assert_eq!(check_content("0123456789a", 10), Err(ContentError::TooLarge(10)));
        assert!(check_content("hello", 10).is_ok());
        assert_eq!(check_content("a\0b", 10), Err(ContentError::Nul));
        assert!(has_nul(r#"{"k":"\u0000"}"#));
        assert!(!has_nul("plain"));
    }
}
