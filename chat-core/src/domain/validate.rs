//! Checks on message content, done before anything touches the database.

use super::DomainError;

pub fn validate_content(content: &str, max_bytes: usize) -> Result<(), DomainError> {
    if content.trim().is_empty() {
        return Err(DomainError::Invalid("content must not be empty".into()));
    }
    if content.len() > max_bytes {
        return Err(DomainError::TooLarge(format!(
            "content exceeds {max_bytes} bytes"
        )));
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
            Err(DomainError::Invalid(_))
        ));
        assert!(matches!(
            validate_content("0123456789a", 10),
            Err(DomainError::TooLarge(_))
        ));
        assert!(validate_content("hello", 10).is_ok());
    }
}
