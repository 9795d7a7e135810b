//! Secrets given directly or in a file (`<VAR>_FILE`), as the Docker and
//! Kubernetes secret conventions do.

use std::path::Path;

use secrecy::SecretString;

/// The secret named `name`, from `value` or from the file at `file`.
///
/// Setting both is an error, as is an unreadable or empty file. Trailing
/// newlines (which editors and `echo` add) are trimmed. Errors name the
/// setting and the file, never the secret.
pub fn resolve(
    name: &str,
    value: Option<SecretString>,
    file: Option<&Path>,
) -> Result<Option<SecretString>, String> {
    match (value, file) {
        (Some(_), Some(_)) => Err(format!("{name} and {name}_FILE are both set; set one")),
        (value, None) => Ok(value),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{name}_FILE: cannot read {}: {e}", path.display()))?;
            let text = text.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                return Err(format!("{name}_FILE: {} is empty", path.display()));
            }
            Ok(Some(SecretString::from(text.to_owned())))
        }
    }
}

/// Reads the environment variable `name`, or the file named by `<name>_FILE`.
pub fn from_env(name: &str) -> Result<Option<SecretString>, String> {
    let value = std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(SecretString::from);
    let file = std::env::var_os(format!("{name}_FILE")).filter(|v| !v.is_empty());
    resolve(name, value, file.as_deref().map(Path::new))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn value_or_file_but_not_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwt");
        std::fs::write(&path, "from-file\n").expect("write");

        let direct = resolve("JWT_SECRET", Some("direct".into()), None).expect("ok");
        assert_eq!(direct.expect("set").expose_secret(), "direct");

        let from_file = resolve("JWT_SECRET", None, Some(&path)).expect("ok");
        assert_eq!(from_file.expect("set").expose_secret(), "from-file");

        let both = resolve("JWT_SECRET", Some("x".into()), Some(&path)).expect_err("both");
        assert!(both.contains("JWT_SECRET_FILE"));

        assert!(resolve("JWT_SECRET", None, None).expect("ok").is_none());
    }

    #[test]
    fn unreadable_or_empty_files_are_errors_that_do_not_leak() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        let error = resolve("DATABASE_URL", None, Some(&missing)).expect_err("missing");
        assert!(error.starts_with("DATABASE_URL_FILE: cannot read"));

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        assert!(resolve("DATABASE_URL", None, Some(&empty)).is_err());
    }
}
