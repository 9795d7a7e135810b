//! Settings built in code: a service's defaults come from its command line
//! definition alone, so flags, environment and `Default` can never disagree.

/// The defaults of the command line `T`, ignoring the environment: what a
/// service runs with when its settings are built in code
/// (`Settings { listen, ..Default::default() }`).
///
/// # Panics
/// When `T` has a required argument (none of the services' settings do; a
/// test checks each).
pub fn defaults<T: clap::Parser>() -> T {
    let command = T::command()
        .no_binary_name(true)
        .mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command
        .try_get_matches_from(std::iter::empty::<String>())
        .unwrap_or_else(|error| panic!("settings without defaults: {error}"));
    T::from_arg_matches(&matches).unwrap_or_else(|error| panic!("settings without defaults: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug, PartialEq)]
    struct Example {
        #[arg(long, env = "CONFIG_TEST_PORT", default_value_t = 7)]
        port: u16,
        #[arg(long, env = "CONFIG_TEST_NAME")]
        name: Option<String>,
    }

    #[test]
    fn defaults_ignore_the_environment() {
        // The variables are not set in the test process; even if they were,
        // `defaults` would not read them.
        let example: Example = defaults();
        assert_eq!(example, Example { port: 7, name: None });
    }
}
