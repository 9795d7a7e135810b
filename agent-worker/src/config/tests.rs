//! Unit tests of config parsing and validation.

use super::*;

fn error_of(text: &str) -> ConfigError {
    match AgentsConfig::from_toml(text) {
        Ok(config) => panic!("config should be refused, got {config:?}"),
        Err(err) => err,
    }
}

#[test]
fn shipped_config_parses_with_echo_and_support() {
    let config = AgentsConfig::load(None).expect("built-in agents.toml is valid");

    let names: Vec<&str> = config.agents.iter().map(AgentSpec::name).collect();
    assert_eq!(names, ["echo", "support"]);
    let AgentSpec::Rules(support) = &config.agents[1] else {
        panic!("support is a rules agent")
    };
    assert!(support.rules.len() >= 4);
}

#[test]
fn config_file_is_read_from_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agents.toml");
    std::fs::write(
        &path,
        "[[agents]]\nname = \"parrot\"\nkind = \"echo\"\nprefix = \"> \"\n",
    )
    .expect("write");

    let config = AgentsConfig::load(Some(&path)).expect("valid config");

    let AgentSpec::Echo(parrot) = &config.agents[0] else {
        panic!("parrot is an echo agent")
    };
    assert_eq!(parrot.prefix, "> ");
}

#[test]
fn missing_file_is_reported_with_its_path() {
    let err = AgentsConfig::load(Some(Path::new("/nonexistent/agents.toml"))).expect_err("no such file");
    assert!(err.to_string().contains("/nonexistent/agents.toml"), "{err}");
}

#[test]
fn duplicate_agent_names_are_refused() {
    let err = error_of(
        r#"
        [[agents]]
        name = "echo"
        kind = "echo"
        [[agents]]
        name = "echo"
        kind = "echo"
        "#,
    );
    assert!(
        matches!(&err, ConfigError::DuplicateName(name) if name == "echo"),
        "{err}"
    );
}

#[test]
fn unknown_kind_is_refused_naming_the_known_kinds() {
    let err = error_of("[[agents]]\nname = \"gpt\"\nkind = \"llm\"\n");
    let message = err.to_string();
    assert!(matches!(err, ConfigError::BadAgent { .. }), "{message}");
    assert!(
        message.contains("llm") && message.contains("echo") && message.contains("rules"),
        "{message}"
    );
}

#[test]
fn missing_kind_is_refused() {
    let err = error_of("[[agents]]\nname = \"echo\"\n");
    assert!(err.to_string().contains("kind"), "{err}");
}

#[test]
fn unknown_option_is_refused_naming_the_agent() {
    let err = error_of(
        r#"
        [[agents]]
        name = "echo"
        kind = "echo"
        [[agents]]
        name = "parrot"
        kind = "echo"
        prefx = "> "
        "#,
    );
    let message = err.to_string();
    assert!(
        message.contains("#2 `parrot`") && message.contains("prefx"),
        "{message}"
    );
    assert!(!message.contains('\n'), "error fits on one line: {message}");
}

#[test]
fn toml_syntax_error_is_refused_with_its_line() {
    let err = error_of("[[agents]]\nname = \"echo\"\nkind = echo\n");
    assert!(matches!(err, ConfigError::Syntax { line: 3, .. }), "{err}");
}

#[test]
fn empty_config_is_refused() {
    assert!(matches!(error_of(""), ConfigError::NoAgents));
}

#[test]
fn empty_agent_name_is_refused() {
    let err = error_of("[[agents]]\nname = \"\"\nkind = \"echo\"\n");
    assert!(matches!(err, ConfigError::EmptyName { position: 1 }), "{err}");
}

#[test]
fn agent_name_with_spaces_is_refused() {
    let err = error_of("[[agents]]\nname = \"my agent\"\nkind = \"echo\"\n");
    assert!(matches!(err, ConfigError::BadName(_)), "{err}");
}

#[test]
fn rules_agent_without_default_reply_is_refused() {
    let err = error_of(
        r#"
        [[agents]]
        name = "support"
        kind = "rules"
        rules = [{ keywords = ["hi"], reply = "hello" }]
        "#,
    );
    assert!(
        matches!(&err, ConfigError::MissingDefaultReply { agent } if agent == "support"),
        "{err}"
    );
}

#[test]
fn rule_without_keywords_is_refused() {
    let err = error_of(
        r#"
        [[agents]]
        name = "support"
        kind = "rules"
        default_reply = "sorry"
        rules = [{ keywords = ["hi"], reply = "hello" }, { keywords = [], reply = "never" }]
        "#,
    );
    assert!(matches!(err, ConfigError::BadRule { position: 2, .. }), "{err}");
}

#[test]
fn bare_wildcard_keyword_is_refused() {
    let err = error_of(
        r#"
        [[agents]]
        name = "support"
        kind = "rules"
        default_reply = "sorry"
        rules = [{ keywords = ["*"], reply = "anything" }]
        "#,
    );
    assert!(err.to_string().contains("empty keyword"), "{err}");
}
