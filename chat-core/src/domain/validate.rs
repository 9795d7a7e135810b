//! Checks on client input, done before anything touches the database.

use crate::service::ServiceError;

/// Longest accepted `client_msg_id`.
pub const MAX_CLIENT_MSG_ID_LEN: usize = 128;

pub fn validate_session_id(id: &str) -> Result<(), ServiceError> {
    uuid::Uuid::parse_str(id)
        .map(drop)
        .map_err(|_| ServiceError::NotFound("session"))
}

pub fn validate_content(content: &str, max_bytes: usize) -> Result<(), ServiceError> {
    if content.trim().is_empty() {
        return Err(ServiceError::Invalid("content must not be empty".into()));
    }
    if content.len() > max_bytes {
        return Err(ServiceError::TooLarge(format!(
            "content exceeds {max_bytes} bytes"
        )));
    }
    Ok(())
}

pub fn validate_client_msg_id(id: &str) -> Result<(), ServiceError> {
    if id.is_empty() || id.len() > MAX_CLIENT_MSG_ID_LEN {
        return Err(ServiceError::Invalid(format!(
            "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID_LEN} characters"
        )));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ServiceError::Invalid(
            "client_msg_id must be printable ASCII".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_oversized_content_is_refused() {
        assert!(matches!(
            validate_content("  \n", 10),
            Err(ServiceError::Invalid(_))
        ));
        assert!(matches!(
            validate_content("0123456789a", 10),
            Err(ServiceError::TooLarge(_))
        ));
        assert!(validate_content("hello", 10).is_ok());
    }

    #[test]
    fn client_msg_ids_are_bounded_printable_ascii() {
        assert!(validate_client_msg_id("abc-123").is_ok());
        assert!(validate_client_msg_id("").is_err());
        assert!(validate_client_msg_id("has space").is_err());
        assert!(validate_client_msg_id(&"x".repeat(129)).is_err());
    }

    #[test]
    fn session_ids_must_be_uuids() {
        assert!(validate_session_id("not-a-uuid").is_err());
        assert!(validate_session_id("0190f5c2-7b1e-7cc0-8000-000000000000").is_ok());
    }
}
