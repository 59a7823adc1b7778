//! Sessions' checkpoints in Redis, so that a session survives its host's
//! crash (see `checkpoint`, which writes them, and `takeover`, which
//! recovers one): `P:session:ID`, a hash of its owner host (`o`), its
//! grace in ms (`g`) and the record (`r`), with no expiry while its owner
//! lives; `P:host:HOST:sessions`, the ids a host wrote, so that whoever
//! sweeps a dead host gives each of its records the session's grace.

use std::sync::{Arc, LazyLock};

use futures_util::StreamExt;
use redis::Script;

use super::Backplane;
use super::conn::RedisConn;

/// Most commands in flight at once.
const IN_FLIGHT: usize = 64;

/// KEYS[1] a record; ARGV[1] a host. Deletes the record if that host owns it.
static DROP_IF_OWNER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'o') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

/// KEYS[1] a record; ARGV[1] its expected owner, ARGV[2] the claimant.
/// Makes the claimant its owner and returns the record, if the expected
/// owner still owns it (two hosts recovering one session: one wins).
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return false end
redis.call('HSET', KEYS[1], 'o', ARGV[2])
return redis.call('HGET', KEYS[1], 'r')
"#,
    )
});

/// KEYS[1] a record; ARGV[1] a dead host. Its record now expires after the
/// session's grace, if that host still owns it.
static ORPHAN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'o') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(redis.call('HGET', KEYS[1], 'g') or '30000'))
end
return 0
"#,
    )
});

/// One session's checkpoint, as written.
pub struct Checkpoint {
    pub id: Arc<str>,
    pub grace_ms: u64,
    pub record: Vec<u8>,
}

impl Backplane {
    /// Writes checkpoints as this host's; false if any failed.
    pub async fn store_checkpoints(&self, checkpoints: Vec<Checkpoint>) -> bool {
        let Some(conn) = self.link() else { return false };
        let index = self.keys.host_sessions(&self.host_id);
        let writes = futures_util::stream::iter(checkpoints)
            .map(|c| {
                let (mut conn, index) = (conn.clone(), index.clone());
                async move {
                    let key = self.keys.session(&c.id);
                    redis::cmd("HSET")
                        .arg(&key)
                        .arg("o")
                        .arg(&*self.host_id)
                        .arg("g")
                        .arg(c.grace_ms)
                        .arg("r")
                        .arg(c.record)
                        .query_async::<()>(&mut conn)
                        .await?;
                    redis::cmd("SADD").arg(index).arg(&*c.id).query_async::<()>(&mut conn).await
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let mut ok = true;
        for result in writes {
            if let Err(e) = result {
                self.failed(&e);
                ok = false;
            }
        }
        ok
    }

    /// Forgets the checkpoints of sessions that ended or left this host
    /// (unless another host owns them by now).
    pub async fn drop_checkpoints(&self, ids: Vec<Arc<str>>) {
        let Some(conn) = self.link() else { return };
        let index = self.keys.host_sessions(&self.host_id);
        let drops = futures_util::stream::iter(ids)
            .map(|id| {
                let (mut conn, index) = (conn.clone(), index.clone());
                async move {
                    DROP_IF_OWNER
                        .key(self.keys.session(&id))
                        .arg(&*self.host_id)
                        .invoke_async::<u64>(&mut conn)
                        .await?;
                    redis::cmd("SREM").arg(index).arg(&*id).query_async::<()>(&mut conn).await
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        for result in drops {
            if let Err(e) = result {
                self.failed(&e);
            }
        }
    }

    /// Session `id`'s checkpoint and its owner, if another host's.
    pub async fn read_checkpoint(&self, id: &str) -> Option<(String, Vec<u8>)> {
        let (owner, record): (Option<String>, Option<Vec<u8>>) =
            self.query(redis::cmd("HMGET").arg(self.keys.session(id)).arg("o").arg("r")).await?.ok()?;
        Some((owner.filter(|o| *o != *self.host_id)?, record?))
    }

    /// Makes this host the owner of session `id`'s checkpoint, if `owner`
    /// still owns it (two hosts recovering one session: one wins).
    pub async fn claim_checkpoint(&self, id: &str, owner: &str) -> bool {
        let claimed: Option<Vec<u8>> = self
            .script(CLAIM.key(self.keys.session(id)).arg(owner).arg(&*self.host_id))
            .await
            .and_then(Result::ok)
            .flatten();
        if claimed.is_none() {
            return false;
        }
        let index = self.keys.host_sessions(&self.host_id);
        let _ = self.query::<()>(redis::cmd("SADD").arg(index).arg(id)).await;
        true
    }
}

impl Backplane {
    /// Session `id` of `plugin`, recovered here, is no longer dead host
    /// `host`'s member of `rooms`: the sweep of that host's memberships
    /// must not take it out of them (this host joined it again).
    pub async fn disown_for(&self, host: &str, plugin: &str, rooms: &[String], id: &str) {
        let index = self.keys.host_index(host);
        for room in rooms {
            let entry = super::Keys::index_entry(&super::Keys::room_id(plugin, room), id);
            let _ = self.query::<()>(redis::cmd("SREM").arg(&index).arg(entry)).await;
        }
    }
}

/// A dead host's records expire after their sessions' grace from now:
/// their clients may still come back to another host within it.
pub(super) async fn orphan(backplane: &Backplane, conn: &RedisConn, host: &str) -> redis::RedisResult<usize> {
    let index = backplane.keys.host_sessions(host);
    let ids: Vec<String> = redis::cmd("SMEMBERS").arg(&index).query_async(&mut conn.clone()).await?;
    let results = futures_util::stream::iter(ids.iter().map(|id| backplane.keys.session(id)).collect::<Vec<_>>())
        .map(|key| {
            let (mut conn, host) = (conn.clone(), host.to_string());
            async move { ORPHAN.key(key).arg(host).invoke_async::<u64>(&mut conn).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect::<redis::RedisResult<Vec<_>>>()?;
    redis::cmd("DEL").arg(&index).query_async::<()>(&mut conn.clone()).await?;
    Ok(ids.len())
}
