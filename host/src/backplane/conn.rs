//! One connection to Redis, a single server or a cluster, carrying both
//! commands and pub/sub (RESP3 push messages on the same connection).
//!
//! The `redis` crate (1.8) gives sharded pub/sub (`SSUBSCRIBE`) only on its
//! cluster connection, which also tracks subscriptions and renews them on
//! the new primary after a failover or slot move. Its single-server
//! connection has plain `SUBSCRIBE` only, so a single Redis carries the same
//! channels over plain pub/sub (`PUBLISH`), which on one server behaves
//! the same.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, PushInfo, RedisError, RedisFuture, Value,
};

/// What receives pushes: tagged with the number of the connection they
/// came on, so the loss of a replaced connection is no news.
pub(super) type PushSink = Arc<dyn Fn(u64, PushInfo) + Send + Sync>;

/// Where the cluster's Redis is.
pub(super) struct Target {
    nodes: Nodes,
    push: PushSink,
    /// The number of the newest connection.
    newest: Arc<AtomicU64>,
    timeout: Duration,
}

enum Nodes {
    Single(redis::Client),
    Cluster(Vec<String>),
}

impl Target {
    /// Validates the URLs.
    pub fn new(
        url: Option<&str>,
        cluster_nodes: &[String],
        timeout: Duration,
        push: PushSink,
    ) -> Result<(Self, Mode), RedisError> {
        let (nodes, mode) = if cluster_nodes.is_empty() {
            let info = url.unwrap_or_default().into_connection_info()?;
            let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
            (Nodes::Single(redis::Client::open(info.set_redis_settings(settings))?), Mode::Single)
        } else {
            ClusterClientBuilder::new(cluster_nodes.iter().map(String::as_str)).build()?;
            (Nodes::Cluster(cluster_nodes.to_vec()), Mode::Cluster)
        };
        Ok((Self { nodes, push, newest: Arc::default(), timeout }, mode))
    }

    /// The number of the newest connection.
    pub fn newest(&self) -> u64 {
        self.newest.load(Ordering::Acquire)
    }

    /// A new connection; pushes from older ones still arrive, tagged so.
    pub async fn connect(&self) -> Result<RedisConn, RedisError> {
        let this = self.newest.fetch_add(1, Ordering::AcqRel) + 1;
        let push = self.push.clone();
        let push = move |info: PushInfo| {
            push(this, info);
            Ok::<(), std::convert::Infallible>(())
        };
        match &self.nodes {
            Nodes::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_push_sender(push);
                Ok(RedisConn::Single(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            // A new client each time: its slot map is read afresh (after a
            // failover), and it tags its pushes with this connection.
            Nodes::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .use_protocol(ProtocolVersion::RESP3)
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout)
                    .push_sender(push)
                    .build()?;
                Ok(RedisConn::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

/// Which pub/sub the channels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Single,
    Cluster,
}

impl Mode {
    pub fn publish(self) -> &'static str {
        match self {
            Mode::Single => "PUBLISH",
            Mode::Cluster => "SPUBLISH",
        }
    }
}

#[derive(Clone)]
pub(super) enum RedisConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Returns once Redis has confirmed the subscription.
    pub async fn subscribe(&mut self, channel: &str) -> Result<(), RedisError> {
        match self {
            RedisConn::Single(c) => c.subscribe(channel).await,
            RedisConn::Cluster(c) => c.ssubscribe(channel).await,
        }
    }

    pub async fn unsubscribe(&mut self, channel: &str) -> Result<(), RedisError> {
        match self {
            RedisConn::Single(c) => c.unsubscribe(channel).await,
            RedisConn::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}
