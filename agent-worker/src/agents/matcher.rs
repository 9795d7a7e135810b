//! Matching a message against keywords and regular expressions, shared by `rules` and `router`.

use regex::{Regex, RegexBuilder};

/// Largest compiled size of a configured pattern, so a config cannot make matching expensive.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a configured pattern: case-insensitive unless it says `(?-i)`.
pub fn compile_pattern(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
}

/// Selects messages containing any of its keywords or matching its pattern.
#[derive(Clone, Debug)]
pub struct Matcher {
    keywords: Vec<Keyword>,
    pattern: Option<Regex>,
}

/// A message prepared once for every matcher that looks at it.
pub struct Message<'a> {
    raw: &'a str,
    normalized: String,
}

/// A keyword as matched: lowercase words, optionally matching any word it starts (`pric*`).
#[derive(Clone, Debug)]
struct Keyword {
    raw: String,
    text: String,
    is_prefix: bool,
}

// === impl Matcher ===

impl Matcher {
    /// Builds a matcher from validated config; an invalid pattern (refused at start-up) never matches.
    pub fn new(keywords: &[String], pattern: Option<&str>) -> Self {
        Self {
            keywords: keywords.iter().map(|k| Keyword::parse(k)).collect(),
            pattern: pattern.and_then(|p| compile_pattern(p).ok()),
        }
    }

    /// What selected the message (`keyword "balance"`, `pattern "..."`), if anything did.
    pub fn find(&self, message: &Message<'_>) -> Option<String> {
        if let Some(keyword) = self.keywords.iter().find(|k| k.is_in(&message.normalized)) {
            return Some(format!("keyword \"{}\"", keyword.raw));
        }
        let pattern = self.pattern.as_ref()?;
        pattern
            .is_match(message.raw)
            .then(|| format!("pattern \"{}\"", pattern.as_str()))
    }
}

// === impl Message ===

impl<'a> Message<'a> {
    pub fn new(raw: &'a str) -> Self {
        Self {
            raw,
            normalized: normalize(raw),
        }
    }
}

// === impl Keyword ===

impl Keyword {
    fn parse(raw: &str) -> Self {
        let trimmed = raw.trim();
        let (stem, is_prefix) = match trimmed.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (trimmed, false),
        };
        Self {
            raw: trimmed.to_owned(),
            text: normalize(stem),
            is_prefix,
        }
    }

    /// Whether the keyword occurs in a normalized message, starting and ending on word boundaries.
    fn is_in(&self, message: &str) -> bool {
        message.match_indices(&self.text).any(|(at, found)| {
            let starts_word = !message[..at].chars().next_back().is_some_and(is_word_char);
            let ends_word = !message[at + found.len()..]
                .chars()
                .next()
                .is_some_and(is_word_char);
            starts_word && (self.is_prefix || ends_word)
        })
    }
}

/// Lowercases `text` and collapses each run of whitespace to one space.
fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(keywords: &[&str], pattern: Option<&str>, message: &str) -> Option<String> {
        let keywords: Vec<String> = keywords.iter().map(|k| (*k).to_owned()).collect();
        Matcher::new(&keywords, pattern).find(&Message::new(message))
    }

    #[test]
    fn keyword_matches_whole_words_ignoring_case() {
        assert_eq!(
            matches(&["balance"], None, "My BALANCE?").as_deref(),
            Some("keyword \"balance\"")
        );
        assert_eq!(matches(&["hi"], None, "this is something"), None);
    }

    #[test]
    fn trailing_star_matches_words_starting_with_the_stem() {
        assert!(matches(&["pric*"], None, "what is your pricing").is_some());
        assert!(matches(&["pric*"], None, "apricot").is_none());
    }

    #[test]
    fn phrase_keyword_matches_across_any_whitespace() {
        assert!(matches(&["how much"], None, "How\n  much is it?").is_some());
    }

    #[test]
    fn pattern_matches_ignoring_case_unless_told_otherwise() {
        let found = matches(&[], Some(r"\border\s+#?\d{4,}"), "Where is ORDER #12345?");
        assert_eq!(found.as_deref(), Some(r#"pattern "\border\s+#?\d{4,}""#));
        assert!(matches(&[], Some(r"(?-i)IBAN"), "my iban").is_none());
    }

    #[test]
    fn keywords_are_tried_before_the_pattern() {
        let found = matches(&["card"], Some("card"), "my card");
        assert_eq!(found.as_deref(), Some("keyword \"card\""));
    }
}
