//! Helpers shared by the per-command suites (each test binary uses some of them).

#![allow(dead_code)]

use testkit::redis::{self, Value};
use testkit::{query, Lease, Server};

pub fn dbsize(con: &mut redis::Connection) -> i64 {
    redis::cmd("DBSIZE").query(con).unwrap()
}

pub fn dump(con: &mut redis::Connection, key: &str) -> Value {
    redis::cmd("DUMP").arg(key).query(con).unwrap()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The module's fencing-token high-water mark, from `INFO pylock`.
pub fn high_water(s: &Server) -> i64 {
    s.info("pylock", "pylock_token_high_water")
        .expect("high water")
        .parse()
        .unwrap()
}

/// A connection authenticated as `user` (password `pw`).
pub fn as_user(s: &Server, user: &str) -> redis::Connection {
    let mut con = s.conn();
    redis::cmd("AUTH")
        .arg(user)
        .arg("pw")
        .query::<()>(&mut con)
        .unwrap();
    con
}

/// The error code of a reply, or `ok: …` for a success, to compare ACL outcomes by.
pub fn code(r: redis::RedisResult<Value>) -> String {
    match r {
        Ok(v) => format!("ok: {v:?}"),
        Err(e) => e.code().unwrap_or("?").to_string(),
    }
}

/// `PYLOCK.ACQUIRE key ttl LEASE id`, which must grant.
pub fn take(con: &mut redis::Connection, key: &str, ttl_ms: i64, id: &str) -> Lease {
    Lease::from_value(&query(
        con,
        &[
            b"PYLOCK.ACQUIRE",
            key.as_bytes(),
            ttl_ms.to_string().as_bytes(),
            b"LEASE",
            id.as_bytes(),
        ],
    ))
}
