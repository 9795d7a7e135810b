//! Checks on client input, done before anything touches the database. The
//! rules themselves live in [`chat_common::limits`], shared with the gateway.

use chat_common::limits::{self, ContentError};

use crate::service::ServiceError;

pub fn validate_session_id(id: &str) -> Result<(), ServiceError> {
    limits::normalize_session_id(id)
        .map(drop)
        .ok_or(ServiceError::NotFound("session"))
}

pub fn validate_content(content: &str, max_bytes: usize) -> Result<(), ServiceError> {
    limits::check_content(content, max_bytes).map_err(|error| match error {
        ContentError::Empty => ServiceError::Invalid(error.to_string()),
        ContentError::TooLarge(_) => ServiceError::TooLarge(error.to_string()),
    })
}

pub fn validate_client_msg_id(id: &str) -> Result<(), ServiceError> {
    limits::check_client_msg_id(id).map_err(ServiceError::Invalid)
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
