//! The server backends of distributed mode for tests: a fresh Postgres database
//! and a fresh Redis key namespace per test, on the machine's own servers
//! (`ops/services.sh` starts them), so tests never see each other's data.

use sqlx::Connection;

/// Where the machine's Postgres is (trust auth); a test database is made in it.
pub fn postgres_admin_url() -> String {
    std::env::var("JESSE_MCP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn redis_url() -> String {
    std::env::var("JESSE_MCP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Creates an empty database and returns its URL.
pub async fn fresh_postgres() -> String {
    let admin = postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!("Postgres at {admin} is unreachable (run ops/services.sh): {e}")
        });
    let name = format!(
        "jesse_mcp_test_{}",
        ulid::Ulid::generate().to_string().to_lowercase()
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').expect("URL has a database").0;
    format!("{base}/{name}")
}

/// A key prefix no other test uses.
pub fn fresh_namespace() -> String {
    format!("jesse-mcp-test-{}", ulid::Ulid::generate())
}

/// Deletes every Redis key of a namespace, as a Redis restarted without its
/// append-only file would have lost them; returns how many went.
pub async fn lose_namespace(namespace: &str) -> usize {
    let client = redis::Client::open(redis_url()).expect("Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{namespace}:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }
    keys.len()
}
