//! The Redis store: the same GCRA as governor, run by one Lua script so each
//! check is a single atomic round trip and every gateway replica shares it.

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::*;
use fred::types::scripts::Script;

use super::{Decision, Policies, RateLimitError, RateLimitStore, Tier};

/// GCRA over Redis' clock, in microseconds. KEYS[1]: the counted key.
/// ARGV[1]: interval between requests; ARGV[2]: burst (the limit).
/// Returns {allowed, remaining, reset, retry_after}.
const GCRA: &str = r#"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = interval * (burst - 1)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
local next_tat = tat + interval
local ttl_ms = math.max(1, math.ceil((next_tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl_ms)
local remaining = math.floor((now + tolerance - tat) / interval)
return {1, remaining, next_tat - now, 0}
"#;

/// Limits shared by every gateway using the same Redis (and key prefix).
pub struct RedisStore {
    client: Client,
    script: Script,
    prefix: String,
    policies: Policies,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects and loads the script; keys are named `<prefix>:<tier>:<key>`.
    pub async fn connect(url: &str, prefix: &str, policies: Policies) -> Result<Self, RateLimitError> {
        let config = Config::from_url(url)?;
        let client = Builder::from_config(config)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(5);
                // Every request checks its limits here: no delayed ACK waits.
                c.tcp.nodelay = Some(true);
            })
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(2))
            .build()?;
        client.init().await?;
        let script = Script::from_lua(GCRA);
        script.load(&client).await?;
        Ok(Self {
            client,
            script,
            prefix: prefix.to_owned(),
            policies,
        })
    }
}

#[async_trait]
impl RateLimitStore for RedisStore {
    async fn check(&self, tier: Tier, key: &str) -> Result<Decision, RateLimitError> {
        let policy = self.policies.get(tier);
        let interval = u64::try_from(policy.interval().as_micros()).unwrap_or(u64::MAX);
        let key = format!("{}:{}:{key}", self.prefix, tier.as_str());
        let reply: Vec<i64> = self
            .script
            .evalsha_with_reload(&self.client, key, vec![interval, u64::from(policy.limit.get())])
            .await?;
        let [allowed, remaining, reset, retry_after] = reply[..] else {
            return Err(RateLimitError::BadReply);
        };
        let micros = |v: i64| Duration::from_micros(v.max(0).unsigned_abs());
        Ok(Decision {
            allowed: allowed == 1,
            limit: policy.limit.get(),
            remaining: u32::try_from(remaining.max(0))
                .unwrap_or(u32::MAX)
                .min(policy.limit.get()),
            reset: micros(reset),
            retry_after: micros(retry_after),
        })
    }
}
