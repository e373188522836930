//! `PYLOCK.WATCH` against real servers: the reason at once for a lease that is not held, and
//! for a held one, every way it can end answered with its reason, at once; TIMEOUT, MULTI,
//! CLIENT UNBLOCK and disconnects; and the `watching` count.

mod common;

use common::take;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testkit::redis::{self, Value};
use testkit::{error_text, query, server_tests, wait_until, Server};

/// A command that ends a lease, run on its own connection.
type Ending = Box<dyn FnOnce(&mut redis::Connection)>;

/// The reply of a WATCH run on its own connection, and how long after `trigger` it came.
type Answer = (Result<Value, String>, Instant);

fn watch_in_thread(s: &Server, key: &str, id: &str, extra: &[&str]) -> JoinHandle<Answer> {
    let url = s.url();
    let (key, id) = (key.to_string(), id.to_string());
    let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        let mut cmd = redis::cmd("PYLOCK.WATCH");
        cmd.arg(&key).arg(&id);
        for a in &extra {
            cmd.arg(a);
        }
        let r = cmd.query::<Value>(&mut con).map_err(|e| error_text(&e));
        (r, Instant::now())
    })
}

fn watching(s: &Server) -> i64 {
    s.info("pylock", "pylock_watching")
        .unwrap()
        .parse()
        .unwrap()
}

fn wait_watching(s: &Server, n: i64) {
    wait_until(Duration::from_secs(5), || watching(s) == n)
        .unwrap_or_else(|_| panic!("watching {} != {n}", watching(s)));
}

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

/// Watches `key`'s lease `id`, runs `end` on another connection, and checks the answer is
/// `reason`, within 250 ms of `end` returning (a bound a loaded CI machine keeps; the delays
/// measured, well under a millisecond on a quiet one, are in docs/BENCHMARKS.md).
fn ends_with(
    s: &Server,
    key: &str,
    id: &str,
    reason: &str,
    end: impl FnOnce(&mut redis::Connection),
) {
    let w = watch_in_thread(s, key, id, &[]);
    wait_watching(s, 1);
    let mut con = s.conn();
    end(&mut con);
    let ended = Instant::now();
    let (reply, at) = w.join().unwrap();
    assert_eq!(reply, Ok(bulk(reason)), "{key}: reason");
    let late = at.saturating_duration_since(ended);
    assert!(
        late < Duration::from_millis(250),
        "{key}: answered {late:?} after the end"
    );
    assert_eq!(watching(s), 0);
}

server_tests! {
    fn a_lease_not_held_is_answered_at_once(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let w = |con: &mut redis::Connection, key: &str, id: &str| -> Value {
            redis::cmd("PYLOCK.WATCH").arg(key).arg(id).query(con).unwrap()
        };
        assert_eq!(w(&mut con, "free", "a"), bulk("notheld"));
        take(&mut con, "k", 60_000, "a");
        assert_eq!(w(&mut con, "k", "b"), bulk("notowned"));
        query(&mut con, &[b"PYLOCK.CONFIRM", b"k", b"a", b"CLAIM", b"c"]);
        assert_eq!(w(&mut con, "k", "a"), bulk("claimed"));
        // TIMEOUT passes with the lease still held: nil.
        let t0 = Instant::now();
        let v: Value = redis::cmd("PYLOCK.WATCH").arg("k").arg("c").arg("TIMEOUT").arg(100)
            .query(&mut con).unwrap();
        assert_eq!(v, Value::Nil);
        assert!(t0.elapsed() >= Duration::from_millis(95), "{:?}", t0.elapsed());
        assert_eq!(watching(&s), 0);
        // Inside MULTI it never blocks: nil while held, the reason when not.
        let (a, b): (Value, Value) = redis::pipe().atomic()
            .cmd("PYLOCK.WATCH").arg("k").arg("c")
            .cmd("PYLOCK.WATCH").arg("k").arg("a")
            .query(&mut con).unwrap();
        assert_eq!((a, b), (Value::Nil, bulk("claimed")));
        // And in a script.
        let v: Value = redis::cmd("EVAL").arg("return redis.call('PYLOCK.WATCH', KEYS[1], ARGV[1])")
            .arg(1).arg("k").arg("c").query(&mut con).unwrap();
        assert_eq!(v, Value::Nil);
        // A key of another type.
        redis::cmd("SET").arg("str").arg("v").query::<()>(&mut con).unwrap();
        let e = redis::cmd("PYLOCK.WATCH").arg("str").arg("a").query::<Value>(&mut con).unwrap_err();
        assert!(error_text(&e).starts_with("WRONGTYPE"), "{e}");
    }

    fn release_expiry_and_claim_answer_their_reasons(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "r", 60_000, "a");
        ends_with(&s, "r", "a", "released", |c| {
            query(c, &[b"PYLOCK.RELEASE", b"r", b"a"]);
        });
        take(&mut con, "c", 60_000, "a");
        ends_with(&s, "c", "a", "claimed", |c| {
            query(c, &[b"PYLOCK.CONFIRM", b"c", b"a", b"CLAIM", b"b"]);
        });
        // Expiry: answered at the deadline itself, by the module's timer.
        take(&mut con, "e", 300, "a");
        let w = watch_in_thread(&s, "e", "a", &[]);
        let deadline = Instant::now() + Duration::from_millis(300);
        let (reply, at) = w.join().unwrap();
        assert_eq!(reply, Ok(bulk("expired")));
        let late = at.saturating_duration_since(deadline);
        assert!(late < Duration::from_millis(60), "expired answered {late:?} after the deadline");
        assert!(at + Duration::from_millis(20) >= deadline, "answered before the deadline");
    }

    fn renewals_do_not_end_a_lease(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "k", 300, "a");
        let w = watch_in_thread(&s, "k", "a", &["TIMEOUT", "600"]);
        wait_watching(&s, 1);
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(100));
            query(&mut con, &[b"PYLOCK.CONFIRM", b"k", b"a", b"EXTEND", b"300"]);
            query(&mut con, &[b"PYLOCK.CONFIRM", b"k", b"a"]);
            take(&mut con, "k", 300, "a");
        }
        let (reply, _) = w.join().unwrap();
        assert_eq!(reply, Ok(Value::Nil), "still held when TIMEOUT passed");
        // The renewed deadline is the one that counts for the end.
        let w = watch_in_thread(&s, "k", "a", &[]);
        let (reply, _) = w.join().unwrap();
        assert_eq!(reply, Ok(bulk("expired")));
    }

    fn generic_commands_answer_deleted(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let cases: Vec<(&str, Ending)> = vec![
            ("del", Box::new(|c| { redis::cmd("DEL").arg("del").query::<()>(c).unwrap() })),
            ("unlink", Box::new(|c| { redis::cmd("UNLINK").arg("unlink").query::<()>(c).unwrap() })),
            ("rename", Box::new(|c| { redis::cmd("RENAME").arg("rename").arg("elsewhere").query::<()>(c).unwrap() })),
            ("move", Box::new(|c| { redis::cmd("MOVE").arg("move").arg(3).query::<()>(c).unwrap() })),
            ("set", Box::new(|c| { redis::cmd("SET").arg("set").arg("v").query::<()>(c).unwrap() })),
            ("expire-past", Box::new(|c| { redis::cmd("PEXPIREAT").arg("expire-past").arg(1).query::<()>(c).unwrap() })),
        ];
        for (key, end) in cases {
            take(&mut con, key, 60_000, "a");
            ends_with(&s, key, "a", "deleted", end);
        }
        // RESTORE … REPLACE of another lock over it.
        take(&mut con, "src", 60_000, "other");
        let payload: Vec<u8> = redis::cmd("DUMP").arg("src").query(&mut con).unwrap();
        take(&mut con, "restore", 60_000, "a");
        ends_with(&s, "restore", "a", "deleted", |c| {
            redis::cmd("RESTORE").arg("restore").arg(0).arg(payload).arg("REPLACE").query::<()>(c).unwrap();
        });
        // RENAME of another lock onto it.
        take(&mut con, "onto", 60_000, "a");
        ends_with(&s, "onto", "a", "deleted", |c| {
            redis::cmd("RENAME").arg("src").arg("onto").query::<()>(c).unwrap();
        });
        // A TTL earlier than the deadline deletes the key when it passes: deleted, not expired.
        take(&mut con, "short-ttl", 60_000, "a");
        let w = watch_in_thread(&s, "short-ttl", "a", &[]);
        wait_watching(&s, 1);
        redis::cmd("PEXPIRE").arg("short-ttl").arg(150).query::<()>(&mut con).unwrap();
        let (reply, _) = w.join().unwrap();
        assert_eq!(reply, Ok(bulk("deleted")));
    }

    fn eviction_answers_deleted(kind: Kind) {
        let s = Server::start_with(kind, &["--maxmemory", "8mb", "--maxmemory-policy", "allkeys-random"]);
        let mut con = s.conn();
        take(&mut con, "k", 600_000, "a");
        let w = watch_in_thread(&s, "k", "a", &["TIMEOUT", "20000"]);
        wait_watching(&s, 1);
        // Fill memory until the lock is evicted (bounded: at most 64 MB written).
        let blob = vec![b'x'; 64 * 1024];
        for i in 0..1024 {
            let _: redis::RedisResult<()> = redis::cmd("SET").arg(format!("fill:{i}")).arg(&blob[..]).query(&mut con);
            let exists: i64 = redis::cmd("EXISTS").arg("k").query(&mut con).unwrap();
            if exists == 0 {
                break;
            }
        }
        let (reply, _) = w.join().unwrap();
        assert_eq!(reply, Ok(bulk("deleted")), "evicted");
    }

    fn watch_changes_and_replicates_nothing(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "k", 60_000, "a");
        let dirty = || -> String { s.info("persistence", "rdb_changes_since_last_save").unwrap() };
        let before = (dirty(), common::dump(&mut con, "k"));
        for _ in 0..3 {
            let v: Value = redis::cmd("PYLOCK.WATCH").arg("k").arg("a").arg("TIMEOUT").arg(20)
                .query(&mut con).unwrap();
            assert_eq!(v, Value::Nil);
            let v: Value = redis::cmd("PYLOCK.WATCH").arg("k").arg("b").query(&mut con).unwrap();
            assert_eq!(v, bulk("notowned"));
        }
        assert_eq!((dirty(), common::dump(&mut con, "k")), before);
    }

    fn flushes_and_swaps_answer_flushed(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        for cmd in ["FLUSHDB", "FLUSHALL"] {
            take(&mut con, "k", 60_000, "a");
            ends_with(&s, "k", "a", "flushed", |c| redis::cmd(cmd).query::<()>(c).unwrap());
        }
        take(&mut con, "k", 60_000, "a");
        ends_with(&s, "k", "a", "flushed", |c| redis::cmd("SWAPDB").arg(0).arg(5).query::<()>(c).unwrap());
        // A flush of another database leaves the watch alone.
        redis::cmd("FLUSHALL").query::<()>(&mut con).unwrap();
        take(&mut con, "k", 60_000, "a");
        let w = watch_in_thread(&s, "k", "a", &["TIMEOUT", "300"]);
        wait_watching(&s, 1);
        redis::cmd("SELECT").arg(7).query::<()>(&mut con).unwrap();
        redis::cmd("FLUSHDB").query::<()>(&mut con).unwrap();
        assert_eq!(w.join().unwrap().0, Ok(Value::Nil));
    }

    fn many_watchers_unblock_and_disconnect(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "k", 60_000, "a");
        let watchers: Vec<_> = (0..5).map(|_| watch_in_thread(&s, "k", "a", &[])).collect();
        wait_watching(&s, 5);
        // CLIENT UNBLOCK of one: nil.
        let ids: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
        let blocked: Vec<i64> = ids.lines()
            .filter(|l| l.contains("cmd=pylock.watch"))
            .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")).and_then(|v| v.parse().ok()))
            .collect();
        assert_eq!(blocked.len(), 5, "{ids}");
        let n: i64 = redis::cmd("CLIENT").arg("UNBLOCK").arg(blocked[0]).query(&mut con).unwrap();
        assert_eq!(n, 1);
        wait_watching(&s, 4);
        // A disconnect leaves too.
        let url = s.url();
        let mut gone = redis::Client::open(url).unwrap().get_connection().unwrap();
        redis::cmd("PYLOCK.WATCH").arg("k").arg("a").arg("TIMEOUT").arg(1)
            .query::<Value>(&mut gone).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        drop(gone);
        query(&mut con, &[b"PYLOCK.RELEASE", b"k", b"a"]);
        let mut replies: Vec<Result<Value, String>> = watchers.into_iter().map(|w| w.join().unwrap().0).collect();
        replies.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(replies.iter().filter(|r| **r == Ok(Value::Nil)).count(), 1, "{replies:?}");
        assert_eq!(replies.iter().filter(|r| **r == Ok(bulk("released"))).count(), 4, "{replies:?}");
        assert_eq!(watching(&s), 0);
    }

    fn a_role_change_ends_watches(kind: Kind) {
        let s = Server::start(kind);
        let other = Server::start(kind);
        let mut con = s.conn();
        take(&mut con, "k", 60_000, "a");
        let w = watch_in_thread(&s, "k", "a", &[]);
        wait_watching(&s, 1);
        redis::cmd("REPLICAOF").arg("127.0.0.1").arg(other.port()).query::<()>(&mut con).unwrap();
        let (reply, _) = w.join().unwrap();
        // The server ends blocked clients itself on a role change; that stands for `demoted`.
        match reply {
            Ok(v) => assert_eq!(v, bulk("demoted")),
            Err(e) => assert!(e.starts_with("UNBLOCKED"), "{e}"),
        }
        wait_watching(&s, 0);
    }

    fn an_extend_that_brings_the_deadline_forward_ends_the_lease_then(kind: Kind) {
        // The contention checker found watchers (and waiters) told only when Redis's own expiry
        // cycle found the key, up to 100 ms after the new deadline. With `hz 1` that cycle
        // runs once a second, so a module that waited for it would be up to a second late,
        // far past the bound below, which leaves a loaded machine room.
        let s = Server::start_with(kind, &["--hz", "1"]);
        let mut con = s.conn();
        for round in 0..3 {
            let key = format!("w{round}");
            take(&mut con, &key, 60_000, "a");
            let w = watch_in_thread(&s, &key, "a", &[]);
            wait_watching(&s, 1);
            let extended = Instant::now();
            query(&mut con, &[b"PYLOCK.CONFIRM", key.as_bytes(), b"a", b"EXTEND", b"150"]);
            let (reply, at) = w.join().unwrap();
            assert_eq!(reply, Ok(bulk("expired")));
            let late = at.saturating_duration_since(extended + Duration::from_millis(150));
            assert!(late < Duration::from_millis(300), "{key}: expired answered {late:?} after the deadline");
        }
        // A waiter is served at the new deadline too.
        for round in 0..3 {
            let key = format!("q{round}");
            take(&mut con, &key, 60_000, "a");
            let url = s.url();
            let k = key.clone();
            let waiter = std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                let v: Value = redis::cmd("PYLOCK.ACQUIRE").arg(&k).arg(1000).arg("BLOCK").arg(5000)
                    .query(&mut c).unwrap();
                (v, Instant::now())
            });
            wait_until(Duration::from_secs(5), || s.info("pylock", "pylock_waiting").as_deref() == Some("1"))
                .expect("the waiter queued");
            let extended = Instant::now();
            query(&mut con, &[b"PYLOCK.CONFIRM", key.as_bytes(), b"a", b"EXTEND", b"150"]);
            let (v, at) = waiter.join().unwrap();
            assert_ne!(v, Value::Nil, "{key}: the waiter was granted the lock");
            let late = at.saturating_duration_since(extended + Duration::from_millis(150));
            assert!(late < Duration::from_millis(300), "{key}: granted {late:?} after the deadline");
        }
    }
}
