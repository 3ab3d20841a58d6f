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
