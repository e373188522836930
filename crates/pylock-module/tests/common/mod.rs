//! Helpers shared by the per-command suites (each test binary uses some of them).

#![allow(dead_code)]

use testkit::redis::{self, Value};

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
