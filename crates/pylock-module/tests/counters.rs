//! `INFO pylock` counts what clients received: a hand-off whose client is killed or unblocked
//! in the same turn as the release is taken back and not counted as acquired.

use std::time::Duration;

use testkit::redis::{self, Value};
use testkit::{holder, query, server_tests, wait_until, Lease, Server};

fn counter(s: &Server, name: &str) -> i64 {
    s.info("pylock", &format!("pylock_{name}"))
        .unwrap()
        .parse()
        .unwrap()
}

/// A client blocked in `ACQUIRE k … LEASE id BLOCK 2000`; returns its client id and the
/// thread that gets its reply (an error text for a killed or ERROR-unblocked client).
fn waiter(s: &Server, id: &str) -> (i64, std::thread::JoinHandle<Result<Value, String>>) {
    let mut con = s.conn();
    let client: i64 = redis::cmd("CLIENT").arg("ID").query(&mut con).unwrap();
    let id = id.to_string();
    let t = std::thread::spawn(move || {
        redis::cmd("PYLOCK.ACQUIRE")
            .arg("k")
            .arg(60_000)
            .arg("LEASE")
            .arg(&id)
            .arg("BLOCK")
            .arg(2_000)
            .query::<Value>(&mut con)
            .map_err(|e| testkit::error_text(&e))
    });
    (client, t)
}

/// Holder `h`, waiters `w1` then `w2`; then in one transaction the holder releases and `w1`
/// is ended by `end` (a CLIENT command naming it). The lock must go to one waiter that
/// received it, and `acquired` count the holder's grant and that one only.
fn release_and_end_the_head(
    kind: testkit::Kind,
    end: fn(i64) -> redis::Cmd,
) -> (Result<Value, String>, Server) {
    let s = Server::start(kind);
    let mut con = s.conn();
    query(
        &mut con,
        &[b"PYLOCK.ACQUIRE", b"k", b"60000", b"LEASE", b"h"],
    );
    let (w1, t1) = waiter(&s, "w1");
    wait_until(Duration::from_secs(5), || {
        holder(&mut con, "k").unwrap().waiters == 1
    })
    .unwrap();
    let (_w2, t2) = waiter(&s, "w2");
    wait_until(Duration::from_secs(5), || {
        holder(&mut con, "k").unwrap().waiters == 2
    })
    .unwrap();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("PYLOCK.RELEASE")
        .arg("k")
        .arg("h")
        .add_command(end(w1));
    let _: Value = pipe.query(&mut con).unwrap();
    let r1 = t1.join().unwrap();
    let r2 = t2.join().unwrap();
    // Exactly one waiter got the lock, and it holds it: w2 when w1's answer could still be
    // taken back (Redis 7.0); on Valkey a plain CLIENT UNBLOCK of a client the module already
    // unblocked is ignored and w1 keeps its grant, while w2 times out.
    let got: Vec<Lease> = [&r1, &r2]
        .into_iter()
        .filter_map(|r| match r {
            Ok(v @ Value::Array(_)) => Some(Lease::from_value(v)),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 1, "{r1:?} {r2:?}");
    let h = holder(&mut con, "k").expect("someone holds the lock");
    assert_eq!(h.lease.id, got[0].id);
    assert_eq!(
        counter(&s, "acquired"),
        2,
        "the holder's grant and the one received"
    );
    assert_eq!(counter(&s, "waiting"), 0);
    (r1, s)
}

server_tests! {
    fn a_killed_head_is_not_counted(kind: Kind) {
        let (r1, _s) = release_and_end_the_head(kind, |id| {
            let mut c = redis::cmd("CLIENT");
            c.arg("KILL").arg("ID").arg(id);
            c
        });
        assert!(r1.is_err(), "a killed client gets no lease: {r1:?}");
    }

    fn an_error_unblocked_head_is_not_counted(kind: Kind) {
        let (r1, _s) = release_and_end_the_head(kind, |id| {
            let mut c = redis::cmd("CLIENT");
            c.arg("UNBLOCK").arg(id).arg("ERROR");
            c
        });
        assert!(r1.as_ref().is_err_and(|e| e.starts_with("UNBLOCKED")), "{r1:?}");
    }

    fn an_unblocked_head_is_not_counted(kind: Kind) {
        let (r1, s) = release_and_end_the_head(kind, |id| {
            let mut c = redis::cmd("CLIENT");
            c.arg("UNBLOCK").arg(id);
            c
        });
        // Without ERROR: nil and counted as contended, unless the server ignored the unblock of
        // a client it had already been told to answer (Valkey), and then w2 timed out.
        assert!(matches!(r1, Ok(Value::Nil) | Ok(Value::Array(_))), "{r1:?}");
        assert_eq!(counter(&s, "contended"), 1);
    }
}
