//! How identity providers are configured: a JSON list in `OIDC_PROVIDERS`.

use jsonwebtoken::Algorithm;
use serde::Deserialize;

/// One trusted issuer of user tokens.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// The `aud` its tokens must carry for this backend.
    pub audience: String,
    /// Where its signing keys are published (a JWKS document).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Or its one signing key, as a PEM public key.
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// Accepted signature algorithms: `RS256` and/or `ES256` (both by default).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

/// Parses the JSON list of providers; one line naming the problem otherwise.
pub fn parse_providers(json: &str) -> Result<Vec<ProviderConfig>, String> {
    let providers: Vec<ProviderConfig> = serde_json::from_str(json)
        .map_err(|e| format!("OIDC_PROVIDERS is not a valid provider list: {e}"))?;
    for provider in &providers {
        if provider.issuer.is_empty() || provider.audience.is_empty() {
            return Err("OIDC_PROVIDERS: every provider needs an issuer and an audience".into());
        }
        if provider.jwks_url.is_some() == provider.public_key_pem.is_some() {
            return Err(format!(
                "OIDC_PROVIDERS: provider `{}` needs exactly one of jwks_url and public_key_pem",
                provider.issuer
            ));
        }
        if provider.algorithms.is_empty() {
            return Err(format!(
                "OIDC_PROVIDERS: provider `{}` allows no algorithm",
                provider.issuer
            ));
        }
        provider.parsed_algorithms()?;
    }
    let mut issuers: Vec<&str> = providers.iter().map(|p| p.issuer.as_str()).collect();
    issuers.sort_unstable();
    if issuers.windows(2).any(|w| w[0] == w[1]) {
        return Err("OIDC_PROVIDERS: an issuer is listed twice".into());
    }
    Ok(providers)
}

impl ProviderConfig {
    /// The accepted algorithms; only the asymmetric `RS256` and `ES256` are allowed.
    pub fn parsed_algorithms(&self) -> Result<Vec<Algorithm>, String> {
        self.algorithms
            .iter()
            .map(|name| match name.as_str() {
                "RS256" => Ok(Algorithm::RS256),
                "ES256" => Ok(Algorithm::ES256),
                other => Err(format!(
                    "OIDC_PROVIDERS: provider `{}` lists algorithm `{other}`; only RS256 and ES256 are accepted",
                    self.issuer
                )),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_parse_with_default_algorithms() {
        let providers =
            parse_providers(r#"[{"issuer":"https://idp","audience":"chat","jwks_url":"http://x/jwks"}]"#)
                .expect("valid");
        assert_eq!(
            providers[0].parsed_algorithms().expect("algorithms"),
            [Algorithm::RS256, Algorithm::ES256]
        );
    }

    #[test]
    fn bad_provider_lists_are_refused() {
        for bad in [
            "not json",
            r#"[{"issuer":"","audience":"chat","jwks_url":"http://x"}]"#,
            r#"[{"issuer":"i","audience":"chat"}]"#,
            r#"[{"issuer":"i","audience":"chat","jwks_url":"http://x","public_key_pem":"p"}]"#,
            r#"[{"issuer":"i","audience":"chat","jwks_url":"http://x","algorithms":["HS256"]}]"#,
            r#"[{"issuer":"i","audience":"chat","jwks_url":"http://x","algorithms":["none"]}]"#,
            r#"[{"issuer":"i","audience":"a","jwks_url":"http://x"},{"issuer":"i","audience":"b","jwks_url":"http://y"}]"#,
        ] {
            assert!(parse_providers(bad).is_err(), "{bad}");
        }
    }
}
