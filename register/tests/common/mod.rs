//! A registry over the real MongoDB and Redis, in a fresh database and under
//! a fresh key prefix, so concurrent runs never see each other's data.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod api;

use std::sync::Arc;
use std::time::Duration;

use fishchat_e2e::{mongo, redis, redis_url, unique_name};
use fishchat_register::membership::RecordingLog;
use fishchat_register::password::Passwords;
use fishchat_register::store::mongo::MongoStore;
use fishchat_register::store::redis::RedisStore;
use fishchat_register::{LoginLimits, Outbound, Registry, Stores, TokenPolicy};
use mongodb::Database;
use mongodb::bson::doc;

/// Token lifetime for tests that do not wait for expiry.
pub const LONG_TTL: Duration = Duration::from_secs(600);

/// One test's registry and the backends behind it.
pub struct TestEnv {
    pub registry: Arc<Registry>,
    pub db: Database,
    pub redis: RedisStore,
    pub prefix: String,
    /// The membership log the registry tells (a recording fake).
    pub log: Arc<RecordingLog>,
}

/// A registry whose tokens live `ttl`, with cheap argon2 parameters (debug
/// builds would spend seconds per hash with the production ones).
pub async fn test_env(test: &str, ttl: Duration) -> TestEnv {
    test_env_limited(test, ttl, LoginLimits::default()).await
}

/// Like [`test_env`], with `limits` on failed logins.
pub async fn test_env_limited(test: &str, ttl: Duration, limits: LoginLimits) -> TestEnv {
    // Proves Redis answers (failing fast with a clear message when it does not)
    // before a database is created that the failure would leave behind.
    drop(redis().await);
    let db = mongo()
        .await
        .database(&unique_name(&format!("fc-register-{test}")));
    let mongo_store = Arc::new(MongoStore::open(&db).await.expect("open MongoDB store"));
    let prefix = format!("{}:", unique_name(&format!("fc-register-{test}")));
    let redis_store = RedisStore::connect(&redis_url(), &prefix)
        .await
        .expect("connect Redis store");
    let stores = Stores {
        accounts: mongo_store.clone(),
        groups: mongo_store,
        tokens: Arc::new(redis_store.clone()),
        sessions: Arc::new(redis_store.clone()),
        attempts: Arc::new(redis_store.clone()),
    };
    let log = Arc::new(RecordingLog::default());
    let outbound = Outbound {
        membership: log.clone(),
        announcer: Arc::new(redis_store.clone()),
    };
    let params = argon2::Params::new(1024, 1, 1, None).expect("valid argon2 params");
    let registry = Registry::new(
        stores,
        outbound,
        TokenPolicy {
            ttl,
            grace: Duration::from_secs(60),
        },
        Passwords::with_params(params),
    )
    .with_login_limits(limits);
    TestEnv {
        registry: Arc::new(registry),
        db,
        redis: redis_store,
        prefix,
        log,
    }
}

impl TestEnv {
    /// Makes the next user and group ids start above a random billion, so ids
    /// this test announces on the shared Redis channels are not ones another
    /// test's fresh database hands out too.
    pub async fn spread_ids(&self) {
        let start = 1_000_000_000 + i64::from(rand::random::<u32>());
        for counter in ["users", "groups"] {
            self.db
                .collection::<mongodb::bson::Document>("counters")
                .update_one(doc! { "_id": counter }, doc! { "$set": { "seq": start } })
                .await
                .expect("move an id counter");
        }
    }

    /// Drops the database and deletes every key under the prefix.
    pub async fn cleanup(self) {
        self.db.drop().await.expect("drop test database");
        let mut conn = redis().await;
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("list test keys");
        if !keys.is_empty() {
            ::redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut conn)
                .await
                .expect("delete test keys");
        }
    }
}
