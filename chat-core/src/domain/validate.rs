//! Checks on message content, done before anything touches the database.
//! The rule itself lives in [`chat_common::limits`], shared with the gateway.

use chat_common::limits::{self, ContentError};

use super::DomainError;

pub fn validate_content(content: &str, max_bytes: usize) -> Result<(), DomainError> {
    limits::check_content(content, max_bytes).map_err(|error| match error {
        ContentError::Empty | ContentError::Nul => DomainError::Invalid(error.to_string()),
        ContentError::TooLarge(_) => DomainError::TooLarge(error.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
