//! The `rules` agent: answers with the first rule whose keywords appear in the message.

use crate::config::{RuleSpec, RulesSpec};

/// Picks a canned reply by keyword, falling back to a default reply.
#[derive(Clone, Debug)]
pub struct RulesAgent {
    pub name: String,
    pub description: String,
    rules: Vec<Rule>,
    default_reply: String,
}

/// One rule: any of its keywords in the message selects its reply.
#[derive(Clone, Debug)]
struct Rule {
    keywords: Vec<Keyword>,
    reply: String,
}

/// A keyword as matched: lowercase words, optionally matching any word it starts (`pric*`).
#[derive(Clone, Debug)]
struct Keyword {
    text: String,
    is_prefix: bool,
}

// === impl RulesAgent ===

impl RulesAgent {
    /// The reply to `message`: the first matching rule's, else the default.
    pub fn reply(&self, message: &str) -> &str {
        let message = normalize(message);
        self.rules
            .iter()
            .find(|rule| rule.keywords.iter().any(|keyword| keyword.is_in(&message)))
            .map_or(&self.default_reply, |rule| &rule.reply)
    }
}

impl From<RulesSpec> for RulesAgent {
    fn from(spec: RulesSpec) -> Self {
        Self {
            name: spec.name,
            description: spec.description,
            rules: spec.rules.into_iter().map(Rule::from).collect(),
            default_reply: spec.default_reply.unwrap_or_default(),
        }
    }
}

impl From<RuleSpec> for Rule {
    fn from(spec: RuleSpec) -> Self {
        Self {
            keywords: spec.keywords.iter().map(|k| Keyword::parse(k)).collect(),
            reply: spec.reply,
        }
    }
}

// === impl Keyword ===

impl Keyword {
    fn parse(raw: &str) -> Self {
        let raw = raw.trim();
        match raw.strip_suffix('*') {
            Some(stem) => Self {
                text: normalize(stem),
                is_prefix: true,
            },
            None => Self {
                text: normalize(raw),
                is_prefix: false,
            },
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

    fn agent(rules: &[(&[&str], &str)]) -> RulesAgent {
        RulesAgent::from(RulesSpec {
            name: "support".into(),
            description: String::new(),
            rules: rules
                .iter()
                .map(|(keywords, reply)| RuleSpec {
                    keywords: keywords.iter().map(|k| (*k).to_owned()).collect(),
                    reply: (*reply).to_owned(),
                })
                .collect(),
            default_reply: Some("default".into()),
        })
    }

    #[test]
    fn keyword_matches_ignoring_case() {
        let agent = agent(&[(&["balance"], "your balance")]);
        assert_eq!(agent.reply("What is my BALANCE?"), "your balance");
    }

    #[test]
    fn keyword_inside_another_word_does_not_match() {
        let agent = agent(&[(&["hi"], "hello")]);
        assert_eq!(agent.reply("this is something"), "default");
        assert_eq!(agent.reply("hi there"), "hello");
    }

    #[test]
    fn trailing_star_matches_words_starting_with_the_stem() {
        let agent = agent(&[(&["pric*"], "prices")]);
        assert_eq!(agent.reply("what is your pricing"), "prices");
        assert_eq!(agent.reply("apricot"), "default");
    }

    #[test]
    fn phrase_keyword_matches_across_any_whitespace() {
        let agent = agent(&[(&["how much"], "a lot")]);
        assert_eq!(agent.reply("How\n  much is it?"), "a lot");
    }

    #[test]
    fn first_matching_rule_wins() {
        let agent = agent(&[(&["hours"], "9 to 5"), (&["hello"], "hello")]);
        assert_eq!(agent.reply("hello, what are your hours?"), "9 to 5");
    }

    #[test]
    fn no_match_gives_the_default_reply() {
        let agent = agent(&[(&["hours"], "9 to 5")]);
        assert_eq!(agent.reply("tell me a joke"), "default");
    }
}
