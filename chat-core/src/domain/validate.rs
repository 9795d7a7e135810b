//! Checks on message content and metadata, done before anything touches
//! the database. The content rule lives in [`chat_common::limits`], shared
//! with the gateway.

use chat_common::limits::{self, ContentError};

use super::DomainError;

pub fn validate_content(content: &str, max_bytes: usize) -> Result<(), DomainError> {
    limits::check_content(content, max_bytes).map_err(|error| match error {
        ContentError::Empty | ContentError::Nul => DomainError::Invalid(error.to_string()),
        ContentError::TooLarge(_) => DomainError::TooLarge(error.to_string()),
    })
}

/// Longest metadata a message or session may carry, as JSON text.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Checks metadata sent with a message: a JSON object of at most
/// [`MAX_METADATA_BYTES`], without NUL characters.
pub fn validate_metadata(metadata: &str) -> Result<(), DomainError> {
    if metadata.len() > MAX_METADATA_BYTES {
        return Err(DomainError::TooLarge(format!(
            "metadata must be at most {MAX_METADATA_BYTES} bytes of JSON"
        )));
    }
    if limits::has_nul(metadata) {
        return Err(DomainError::Invalid(
            "metadata must not contain NUL characters".into(),
        ));
    }
    if !serde_json::from_str::<serde_json::Value>(metadata).is_ok_and(|v| v.is_object()) {
        return Err(DomainError::Invalid("metadata must be a JSON object".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_a_bounded_json_object() {
        assert!(validate_metadata(r#"{"channel":"web"}"#).is_ok());
        for bad in ["[]", "\"text\"", "{", "{\"k\":\"\0\"}"] {
            assert!(
                matches!(validate_metadata(bad), Err(DomainError::Invalid(_))),
                "{bad}"
            );
        }
        let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(MAX_METADATA_BYTES));
        assert!(matches!(validate_metadata(&big), Err(DomainError::TooLarge(_))));
    }

    #[test]
    fn blank_and_oversized_content_is_refused() {
        assert!(matches!(
            validate_content("  \n", 10),
            Err(DomainError::Invalid(_))
        ));
        assert!(matches!(
            validate_content("0123456789a", 10),
            Err(DomainError::TooLarge(_))
        ));
        assert!(validate_content("hello", 10).is_ok());
    }
}
