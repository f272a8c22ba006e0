//! What the nodes share in Redis, and the only code that touches it: the cluster's layout (shard
//! count and region resolution, which every node must share), the live set (a sorted set of
//! heartbeats, expired by Redis's own clock), one lease per shard with an epoch that grows on
//! every grant, and the regions where riders report (a sorted set by when a node last said so,
//! on Redis's clock), from which each node works out the regions it copies. Each operation is
//! one command or one Lua script, so it is atomic on the server.

use std::time::Duration;

use h3o::CellIndex;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

/// The keys, all under one prefix so one Redis can be shared with other uses.
const LAYOUT: &str = "tomato:cluster:layout";
const NODES: &str = "tomato:cluster:nodes";
const EPOCHS: &str = "tomato:cluster:epochs";
const REGIONS: &str = "tomato:cluster:regions";

fn lease_key(shard: u32) -> String {
    format!("tomato:cluster:lease:{shard}")
}

/// Refreshes this node's heartbeat, drops the expired ones, and answers the live set with each
/// node's expiry (Unix milliseconds, Redis's clock).
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
";

/// Marks the regions of ARGV as reported in now (Redis's clock, seconds).
const ANNOUNCE: &str = r"
local now = tonumber(redis.call('TIME')[1])
for _, region in ipairs(ARGV) do redis.call('ZADD', KEYS[1], now, region) end
return 0
";

/// Forgets the regions nobody reported in for ARGV[1] seconds and answers the others.
const ACTIVE: &str = r"
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// Grants the lease if nobody holds it, with the next epoch; answers the epoch, or 0.
const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local epoch = redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('SET', KEYS[1], ARGV[1] .. '/' .. epoch, 'PX', ARGV[2])
return epoch
";

/// Extends the lease if it is still ours. A lease that is gone altogether (Redis restarted
/// without its data) is claimed back for its holder; one held by another node is not.
const RENEW: &str = r"
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// Deletes the lease if it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A node seen alive, and until when its heartbeat holds (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub expires_ms: i64,
}

/// A shard's lease as stored: who holds it, and at which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub node: String,
    pub epoch: u64,
}

impl Lease {
    fn value(&self) -> String {
        format!("{}/{}", self.node, self.epoch)
    }

    fn parse(value: &str) -> Option<Lease> {
        let (node, epoch) = value.rsplit_once('/')?;
        Some(Lease {
            node: node.to_owned(),
            epoch: epoch.parse().ok()?,
        })
    }
}

/// The Redis side of the cluster.
#[derive(Clone)]
pub struct Coordination {
    redis: ConnectionManager,
    heartbeat: Script,
    acquire: Script,
    renew: Script,
    release: Script,
    announce: Script,
    active: Script,
}

impl std::fmt::Debug for Coordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordination").finish_non_exhaustive()
    }
}

impl Coordination {
    pub async fn connect(url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let redis = client.get_connection_manager_with_config(config).await?;
        Ok(Self {
            redis,
            heartbeat: Script::new(HEARTBEAT),
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            announce: Script::new(ANNOUNCE),
            active: Script::new(ACTIVE),
        })
    }

    /// Says that riders report in these regions now.
    pub async fn announce_regions(&self, regions: &[CellIndex]) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        let mut script = self.announce.key(REGIONS);
        for region in regions {
            script.arg(region.to_string());
        }
        script.invoke_async::<()>(&mut redis).await
    }

    /// The regions some node said riders report in, within the last `within`.
    pub async fn active_regions(&self, within: Duration) -> redis::RedisResult<Vec<CellIndex>> {
        let mut redis = self.redis.clone();
        let regions: Vec<String> = self
            .active
            .key(REGIONS)
            .arg(within.as_secs())
            .invoke_async(&mut redis)
            .await?;
        Ok(regions
            .iter()
            .filter_map(|region| region.parse().ok())
            .collect())
    }

    /// Records `layout` as the cluster's if it has none yet, and answers the cluster's.
    pub async fn layout(&self, layout: &str) -> redis::RedisResult<String> {
        let mut redis = self.redis.clone();
        let _: bool = redis.set_nx(LAYOUT, layout).await?;
        redis.get(LAYOUT).await
    }

    pub async fn heartbeat(&self, node: &str, ttl: Duration) -> redis::RedisResult<Vec<Member>> {
        let mut redis = self.redis.clone();
        let live: Vec<(String, f64)> = self
            .heartbeat
            .key(NODES)
            .arg(node)
            .arg(millis(ttl))
            .invoke_async(&mut redis)
            .await?;
        Ok(live
            .into_iter()
            .map(|(id, expires)| Member {
                id,
                expires_ms: expires as i64,
            })
            .collect())
    }

    /// Leaves the live set at once (a clean shutdown), so others need not wait for the TTL.
    pub async fn forget(&self, node: &str) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        redis.zrem(NODES, node).await
    }

    /// Takes the shard's lease if it is free; the lease granted, if any.
    pub async fn acquire(
        &self,
        shard: u32,
        node: &str,
        ttl: Duration,
    ) -> redis::RedisResult<Option<Lease>> {
        let mut redis = self.redis.clone();
        let epoch: u64 = self
            .acquire
            .key(lease_key(shard))
            .key(EPOCHS)
            .arg(node)
            .arg(millis(ttl))
            .arg(shard)
            .invoke_async(&mut redis)
            .await?;
        Ok((epoch > 0).then(|| Lease {
            node: node.to_owned(),
            epoch,
        }))
    }

    /// Extends our lease; false once it is somebody else's.
    pub async fn renew(
        &self,
        shard: u32,
        lease: &Lease,
        ttl: Duration,
    ) -> redis::RedisResult<bool> {
        let mut redis = self.redis.clone();
        let renewed: i64 = self
            .renew
            .key(lease_key(shard))
            .arg(lease.value())
            .arg(millis(ttl))
            .invoke_async(&mut redis)
            .await?;
        Ok(renewed == 1)
    }

    /// Gives the lease back, if it is still ours.
    pub async fn release(&self, shard: u32, lease: &Lease) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        let _: i64 = self
            .release
            .key(lease_key(shard))
            .arg(lease.value())
            .invoke_async(&mut redis)
            .await?;
        Ok(())
    }

    /// Every shard's lease as Redis holds it now.
    pub async fn leases(&self, count: u32) -> redis::RedisResult<Vec<Option<Lease>>> {
        let mut redis = self.redis.clone();
        let keys: Vec<String> = (0..count).map(lease_key).collect();
        let values: Vec<Option<String>> = redis.mget(&keys).await?;
        Ok(values
            .into_iter()
            .map(|value| value.as_deref().and_then(Lease::parse))
            .collect())
    }
}

/// A duration in whole milliseconds, as Redis takes them.
pub(crate) fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_values_round_trip() {
        let lease = Lease {
            node: "10.0.0.5:8080".into(),
            epoch: 42,
        };
        assert_eq!(Lease::parse(&lease.value()), Some(lease));
        assert_eq!(Lease::parse("no-epoch"), None);
    }
}
