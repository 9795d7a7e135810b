//! The Redis store: the same GCRA as governor, run by one Lua script so each
//! check is a single atomic round trip and every gateway replica shares it.

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::*;
use fred::types::scripts::Script;

use super::{Decision, Policies, RateLimitError, RateLimitStore, Tier};

/// GCRA over Redis' clock, in microseconds, for each of KEYS in turn, until
/// one refuses: ARGV[2i-1] and ARGV[2i] are the interval between requests
/// and the burst (the limit) of KEYS[i]. Returns {allowed, remaining, reset,
/// retry_after} for each key counted, the refusing one last.
const GCRA: &str = r#"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tolerance = interval * (burst - 1)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local allow_at = tat - tolerance
  if now < allow_at then
    for _, v in ipairs({0, 0, tat - now, allow_at - now}) do table.insert(out, v) end
    return out
  end
  local next_tat = tat + interval
  local ttl_ms = math.max(1, math.ceil((next_tat - now) / 1000))
  redis.call('SET', key, string.format('%.0f', next_tat), 'PX', ttl_ms)
  local remaining = math.floor((now + tolerance - tat) / interval)
  for _, v in ipairs({1, remaining, next_tat - now, 0}) do table.insert(out, v) end
end
return out
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
        let decisions = self.check_in_turn(&[tier], key).await?;
        decisions.into_iter().next().ok_or(RateLimitError::BadReply)
    }

    /// One script call, so one round trip, for all of `tiers`.
    async fn check_in_turn(&self, tiers: &[Tier], key: &str) -> Result<Vec<Decision>, RateLimitError> {
        let keys: Vec<String> = tiers
            .iter()
            .map(|tier| format!("{}:{}:{key}", self.prefix, tier.as_str()))
            .collect();
        let args: Vec<u64> = tiers
            .iter()
            .flat_map(|&tier| {
                let policy = self.policies.get(tier);
                let interval = u64::try_from(policy.interval().as_micros()).unwrap_or(u64::MAX);
                [interval, u64::from(policy.limit.get())]
            })
            .collect();
        let reply: Vec<i64> = self.script.evalsha_with_reload(&self.client, keys, args).await?;
        // Every tier decided, or fewer with a refusal last.
        let decided = reply.len() / 4;
        let refused_last = reply.len() >= 4 && reply[reply.len() - 4] == 0;
        if decided == 0
            || !reply.len().is_multiple_of(4)
            || decided > tiers.len()
            || (decided < tiers.len() && !refused_last)
        {
            return Err(RateLimitError::BadReply);
        }
        let micros = |v: i64| Duration::from_micros(v.max(0).unsigned_abs());
        Ok(tiers
            .iter()
            .zip(reply.chunks_exact(4))
            .map(|(&tier, reply)| {
                let limit = self.policies.get(tier).limit.get();
                Decision {
                    allowed: reply[0] == 1,
                    limit,
                    remaining: u32::try_from(reply[1].max(0)).unwrap_or(u32::MAX).min(limit),
                    reset: micros(reply[2]),
                    retry_after: micros(reply[3]),
                }
            })
            .collect())
    }
}
