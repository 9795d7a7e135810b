//! Unit tests of config parsing and validation.

use super::*;

/// One `[[agents]]` entry: `name`, `kind`, then the lines of `options`.
fn agent(name: &str, kind: &str, options: &str) -> String {
    format!("[[agents]]\nname = \"{name}\"\nkind = \"{kind}\"\n{options}\n")
}

/// The `echo` agent many configs below start with.
fn echo() -> String {
    agent("echo", "echo", "")
}

fn error_of(text: &str) -> ConfigError {
    match AgentsConfig::from_toml(text) {
        Ok(config) => panic!("config should be refused, got {config:?}"),
        Err(err) => err,
    }
}

#[test]
fn shipped_config_is_echo_and_the_banking_demo() {
    let config = AgentsConfig::load(None).expect("built-in agents.toml is valid");

    let agents: Vec<(&str, &str)> = config.agents.iter().map(|a| (a.name(), a.kind())).collect();
    assert_eq!(
        agents,
        [
            ("echo", "echo"),
            ("bank", "router"),
            ("balances", "rules"),
            ("cards", "rules"),
            ("transfers", "rules"),
            ("faq", "rules"),
            ("escalation", "human_handoff"),
        ]
    );
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
    let err = error_of(&(echo() + &echo()));
    assert!(
        matches!(&err, ConfigError::DuplicateName(name) if name == "echo"),
        "{err}"
    );
}

#[test]
fn unknown_kind_is_refused_naming_the_known_kinds() {
    let err = error_of("[[agents]]\nname = \"gpt\"\nkind = \"magic\"\n");
    let message = err.to_string();
    assert!(matches!(err, ConfigError::BadAgent { .. }), "{message}");
    assert!(
        message.contains("magic") && message.contains("echo") && message.contains("router"),
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
    let err = error_of(&(echo() + &agent("parrot", "echo", r#"prefx = "> ""#)));
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
fn agent_named_human_is_refused() {
    let err = error_of("[[agents]]\nname = \"human\"\nkind = \"echo\"\n");
    assert!(matches!(err, ConfigError::ReservedName), "{err}");
}

#[test]
fn agent_name_with_spaces_is_refused() {
    let err = error_of("[[agents]]\nname = \"my agent\"\nkind = \"echo\"\n");
    assert!(matches!(err, ConfigError::BadName(_)), "{err}");
}

/// A rules agent `support` with a default reply and `rules`.
fn support_rules(rules: &str) -> String {
    agent(
        "support",
        "rules",
        &format!("default_reply = \"sorry\"\nrules = [{rules}]"),
    )
}

#[test]
fn rules_agent_without_default_reply_is_refused() {
    let err = error_of(&agent(
        "support",
        "rules",
        r#"rules = [{ keywords = ["hi"], reply = "hello" }]"#,
    ));
    assert!(
        matches!(&err, ConfigError::MissingDefaultReply { agent } if agent == "support"),
        "{err}"
    );
}

#[test]
fn rule_without_keywords_is_refused() {
    let err = error_of(&support_rules(
        r#"{ keywords = ["hi"], reply = "hello" }, { keywords = [], reply = "never" }"#,
    ));
    assert!(matches!(err, ConfigError::BadRule { position: 2, .. }), "{err}");
}

#[test]
fn bare_wildcard_keyword_is_refused() {
    let err = error_of(&support_rules(r#"{ keywords = ["*"], reply = "anything" }"#));
    assert!(err.to_string().contains("empty keyword"), "{err}");
}

// === routes, patterns and escalation ===

/// A config with an `echo` agent and a rules agent `front` holding `rules`.
fn rules_config(rules: &str) -> String {
    echo()
        + &agent(
            "front",
            "rules",
            &format!("default_reply = \"hi\"\nrules = [{rules}]"),
        )
}

#[test]
fn rules_with_routes_patterns_and_escalation_are_accepted() {
    let config = AgentsConfig::from_toml(&rules_config(
        r#"{ keywords = ["again"], route = "echo" }, { pattern = '^\d+$', reply = "a number" }, { keywords = ["human"], escalate = true }"#,
    ))
    .expect("valid config");

    let AgentSpec::Rules(front) = &config.agents[1] else {
        panic!("front is a rules agent")
    };
    assert_eq!(front.rules[0].route.as_deref(), Some("echo"));
    assert!(front.rules[2].escalate);
}

#[test]
fn route_to_an_undeclared_agent_is_refused() {
    let err = error_of(&rules_config(r#"{ keywords = ["x"], route = "nobody" }"#));
    assert!(
        matches!(&err, ConfigError::UnknownTarget { agent, target, .. } if agent == "front" && target == "nobody"),
        "{err}"
    );
}

#[test]
fn route_to_its_own_agent_is_refused() {
    let err = error_of(&rules_config(r#"{ keywords = ["x"], route = "front" }"#));
    assert!(err.to_string().contains("own agent"), "{err}");
}

#[test]
fn invalid_pattern_is_refused_with_the_regex_error() {
    let err = error_of(&rules_config(r#"{ pattern = "(unclosed", reply = "x" }"#));
    let message = err.to_string();
    assert!(
        matches!(err, ConfigError::BadRule { position: 1, .. }),
        "{message}"
    );
    assert!(
        message.contains("(unclosed") && !message.contains('\n'),
        "{message}"
    );
}

#[test]
fn rule_with_two_actions_or_none_is_refused() {
    for (rule, problem) in [
        (
            r#"{ keywords = ["x"], reply = "a", route = "echo" }"#,
            "both reply and route",
        ),
        (
            r#"{ keywords = ["x"], route = "echo", escalate = true }"#,
            "both route and escalate",
        ),
        (r#"{ keywords = ["x"] }"#, "needs a reply"),
        (r#"{ reply = "x" }"#, "no keywords and no pattern"),
    ] {
        let err = error_of(&rules_config(rule));
        assert!(err.to_string().contains(problem), "{rule}: {err}");
    }
}

#[test]
fn router_targets_must_be_declared() {
    let router = |options: &str| echo() + &agent("router", "router", options);
    for (options, field) in [
        (r#"default_agent = "nobody""#, "default_agent"),
        (
            r#"default_agent = "echo"
routes = [{ keywords = ["x"], agent = "nobody" }]"#,
            "route #1",
        ),
        (
            r#"default_agent = "echo"
classifier = "nobody""#,
            "classifier",
        ),
        (
            r#"default_agent = "echo"
candidates = ["nobody"]"#,
            "candidates",
        ),
    ] {
        let err = error_of(&router(options));
        assert!(
            matches!(&err, ConfigError::UnknownTarget { field: f, .. } if f == field),
            "{options}: {err}"
        );
    }
    let err = error_of(&router(
        r#"default_agent = "echo"
classifier = "router""#,
    ));
    assert!(err.to_string().contains("router agent"), "{err}");
}

#[test]
fn router_candidates_default_to_its_route_agents_and_default() {
    let config = AgentsConfig::from_toml(
        r#"
        [[agents]]
        name = "a"
        kind = "echo"
        [[agents]]
        name = "b"
        kind = "echo"
        [[agents]]
        name = "router"
        kind = "router"
        default_agent = "a"
        routes = [{ keywords = ["x"], agent = "b" }, { keywords = ["y"], agent = "a" }]
        "#,
    )
    .expect("valid config");

    let AgentSpec::Router(router) = &config.agents[2] else {
        panic!("router")
    };
    assert_eq!(router.candidate_agents(), ["b", "a"]);
}

// === llm ===

/// A config with one llm agent `gpt` of `base_url` and `model`, plus `options`.
fn llm_agent(base_url: &str, model: &str, options: &str) -> String {
    agent(
        "gpt",
        "llm",
        &format!("base_url = \"{base_url}\"\nmodel = \"{model}\"\n{options}"),
    )
}

fn llm_config(options: &str) -> String {
    llm_agent("https://api.openai.com/v1", "gpt-4o-mini", options)
}

#[test]
fn llm_agent_gets_defaults_and_normalized_tools() {
    let config = AgentsConfig::from_toml(&llm_config(
        r#"builtin_tools = ["calculator"]
        [[agents.tools]]
        name = "lookup"
        description = "Looks things up"
        url = "http://tools.internal/lookup"
        method = "get"
        parameters = { type = "object", properties = { q = { type = "string" } } }"#,
    ))
    .expect("valid config");

    let AgentSpec::Llm(gpt) = &config.agents[0] else {
        panic!("gpt is an llm agent")
    };
    assert_eq!((gpt.history_window, gpt.timeout_secs), (20, 60.0));
    assert_eq!(gpt.tools[0].method, "GET");
    assert_eq!(gpt.tools[0].parameters["properties"]["q"]["type"], "string");
}

#[test]
fn llm_options_are_checked() {
    let with = llm_agent;
    let url = "https://api.openai.com/v1";
    for (text, problem) in [
        (with("not a url", "m", ""), "base_url"),
        (with("ftp://files", "m", ""), "not an http(s) URL"),
        (with(url, " ", ""), "model is empty"),
        (with(url, "m", "temperature = 3.5"), "temperature"),
        (with(url, "m", "history_window = 0"), "history_window"),
        (
            with(url, "m", "builtin_tools = [\"shell\"]"),
            "unknown built-in tool `shell`",
        ),
        (
            with(
                url,
                "m",
                "[[agents.tools]]\nname = \"t\"\ndescription = \"d\"\nurl = \"http://x\"\nparameters = \"{oops\"",
            ),
            "not valid JSON",
        ),
        (
            with(
                url,
                "m",
                "builtin_tools = [\"calculator\"]\n[[agents.tools]]\nname = \"calculator\"\ndescription = \"d\"\nurl = \"http://x\"",
            ),
            "more than once",
        ),
    ] {
        let err = error_of(&text);
        assert!(err.to_string().contains(problem), "{text}: {err}");
    }
}

// === webhook ===

#[test]
fn webhook_agent_gets_defaults() {
    let config = AgentsConfig::from_toml(
        "[[agents]]\nname = \"legacy\"\nkind = \"webhook\"\nmode = \"seed\"\nendpoint = \"http://banking:3001\"\n",
    )
    .expect("valid config");

    let AgentSpec::Webhook(legacy) = &config.agents[0] else {
        panic!("legacy is a webhook agent")
    };
    assert_eq!(legacy.mode, WebhookMode::Seed);
    assert_eq!((legacy.retries, legacy.breaker_failures), (2, 5));
    assert_eq!(legacy.timeout(), std::time::Duration::from_secs(10));
}

#[test]
fn webhook_options_are_checked() {
    for (options, problem) in [
        ("endpoint = \"banking:3001\"", "endpoint"),
        ("endpoint = \"http://x\"\nmode = \"grpc\"", "grpc"),
        ("endpoint = \"http://x\"\ntimeout_secs = 0", "timeout_secs"),
        (
            "endpoint = \"http://x\"\nbreaker_failures = 0",
            "breaker_failures",
        ),
        (
            "endpoint = \"http://x\"\nretry_backoff_secs = -1",
            "retry_backoff_secs",
        ),
    ] {
        let err = error_of(&agent("legacy", "webhook", options));
        assert!(err.to_string().contains(problem), "{options}: {err}");
    }
}

#[test]
fn shipped_config_lists_the_router_and_hides_its_specialists() {
    let config = AgentsConfig::load(None).expect("built-in agents.toml is valid");

    let listed: Vec<&str> = config
        .agents
        .iter()
        .map(AgentSpec::name)
        .filter(|name| config.listings[*name].listed)
        .collect();
    assert_eq!(listed, ["echo", "bank"]);
    assert_eq!(
        config.listings["bank"].display_name.as_deref(),
        Some("Banking assistant")
    );
}

#[test]
fn listing_keys_are_optional_and_checked() {
    let config = AgentsConfig::from_toml("[[agents]]\nname = \"plain\"\nkind = \"echo\"\n").expect("valid");
    assert_eq!(config.listings["plain"], Listing::default());
    assert!(
        Listing::default().listed,
        "agents are listed unless told otherwise"
    );

    for (line, problem) in [
        ("listed = \"no\"", "listed must be true or false"),
        ("display_name = 3", "display_name must be a string"),
        ("display_name = \"\"", "display_name must be 1 to 100"),
        ("display_name = \"a\\u0007b\"", "display_name must be 1 to 100"),
    ] {
        let err = error_of(&agent("x", "echo", line));
        assert!(err.to_string().contains(problem), "{line}: {err}");
        assert!(err.to_string().contains("`x`"), "names the agent: {err}");
    }
}
