//! The sync API over a plain `redis::Connection`, against real servers.

use std::time::Duration;

use pylocks::{Error, LockFactory};
use testkit::redis;
use testkit::{holder, server_tests, Server};

fn people(ttl: Duration) -> LockFactory {
    LockFactory::builder("person", ttl)
        .root_prefix("locks_example")
        .build()
        .unwrap()
}

server_tests! {
    fn acquire_grants_a_lease_and_a_second_acquire_is_already_held(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = people(Duration::from_secs(60));
        let h = f.acquire(&mut con, [42]).unwrap();
        assert_eq!(h.key(), "locks_example:person:42");
        assert_eq!(h.lease_id().len(), 36, "a UUID, made by the client: {}", h.lease_id());
        assert!(h.token() > 0);
        assert!(h.ttl() > Duration::from_secs(59) && h.ttl() <= Duration::from_secs(60));
        assert_eq!(h.lease_ttl(), Duration::from_secs(60));
        let held = holder(&mut con, h.key()).expect("held");
        assert_eq!(held.lease.id, h.lease_id().as_bytes());
        assert_eq!(held.lease.token, h.token());

        let err = f.acquire(&mut s.conn(), [42]).unwrap_err();
        assert!(matches!(&err, Error::AlreadyHeld { key } if key == h.key()), "{err}");
        assert!(!err.is_lease_lost());
        assert_eq!(holder(&mut con, h.key()).unwrap().lease.id, h.lease_id().as_bytes());
    }

    fn get_handle_confirms_the_owner_and_names_the_failure(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = people(Duration::from_secs(60));
        let err = f.get_handle(&mut con, [7], "no-such-lease").unwrap_err();
        match &err {
            Error::NotHeld { key, message } => {
                assert_eq!(key, "locks_example:person:7");
                assert!(message.starts_with("NOTHELD "), "{message}");
            }
            other => panic!("expected NotHeld, got {other:?}"),
        }
        let h = f.acquire(&mut con, [7]).unwrap();
        let mut worker = f.get_handle(&mut s.conn(), [7], h.lease_id()).unwrap();
        assert_eq!(worker.lease_id(), h.lease_id());
        assert_eq!(worker.token(), h.token());
        worker.confirm(&mut con).unwrap();
        let err = f.get_handle(&mut con, [7], "someone-else").unwrap_err();
        match &err {
            Error::NotOwned { message, .. } => assert!(message.starts_with("NOTOWNED "), "{message}"),
            other => panic!("expected NotOwned, got {other:?}"),
        }
        assert!(err.is_lease_lost());
        assert_eq!(holder(&mut con, h.key()).unwrap().lease.id, h.lease_id().as_bytes(),
            "a refused confirm leaves the lock alone");
    }

    fn extend_resets_the_time_left(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = people(Duration::from_millis(500));
        let mut h = f.acquire(&mut con, [1]).unwrap();
        h.extend(&mut con, Duration::from_secs(30)).unwrap();
        assert!(h.ttl() > Duration::from_secs(29), "{:?}", h.ttl());
        assert_eq!(h.lease_ttl(), Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(700));
        h.confirm(&mut con).expect("still held past the factory's 500 ms ttl");
        let held = holder(&mut con, h.key()).unwrap();
        assert!(held.lease.ttl_ms > 28_000, "{}", held.lease.ttl_ms);
        let err = h.extend(&mut con, Duration::ZERO).unwrap_err();
        assert!(matches!(err, Error::InvalidTtl { .. }), "{err}");
    }

    fn release_frees_the_lock_and_reports_a_lost_lease(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = people(Duration::from_millis(100));
        let h = f.acquire(&mut con, [1]).unwrap();
        h.release(&mut con).unwrap();
        assert!(holder(&mut con, "locks_example:person:1").is_none());

        // Expired, nobody took it: NOTHELD.
        let h = f.acquire(&mut con, [1]).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        let err = h.release(&mut con).unwrap_err();
        assert!(matches!(err, Error::NotHeld { .. }), "{err}");

        // Expired and taken by another lease: NOTOWNED, and the new holder keeps the lock.
        let old = f.acquire(&mut con, [1]).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        let new = people(Duration::from_secs(60)).acquire(&mut s.conn(), [1]).unwrap();
        assert!(new.token() > old.token(), "fencing tokens grow");
        let err = old.release(&mut con).unwrap_err();
        assert!(matches!(err, Error::NotOwned { .. }), "{err}");
        assert_eq!(holder(&mut con, new.key()).unwrap().lease.id, new.lease_id().as_bytes());
    }

    fn releasing_releases_after_the_work_fails(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = people(Duration::from_secs(60));
        let h = f.acquire(&mut con, [3]).unwrap();
        let key = h.key().to_string();
        let scope = h.releasing(&mut con, |con| {
            redis::cmd("SET").arg("person:3").arg(10).query::<()>(con)?;
            // A command that fails, as work can.
            redis::cmd("INCR").arg("locks_example:person:3").query::<i64>(con)
        });
        assert!(scope.release.is_ok(), "{:?}", scope.release);
        let err = scope.output.expect_err("INCR on a lock is WRONGTYPE");
        assert_eq!(err.code(), Some("WRONGTYPE"));
        assert!(holder(&mut con, &key).is_none(), "released after the failed work");
    }

    fn releasing_releases_after_a_panic_and_lets_it_continue(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = people(Duration::from_secs(60));
        let h = f.acquire(&mut con, [4]).unwrap();
        let key = h.key().to_string();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _scope = h.releasing(&mut con, |_con| -> () { panic!("work blew up") });
        }))
        .expect_err("the panic continues after the release");
        assert_eq!(panicked.downcast_ref::<&str>(), Some(&"work blew up"));
        assert!(holder(&mut con, &key).is_none(), "released before the panic went on");
    }

    fn releasing_reports_a_lease_lost_during_the_work(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = people(Duration::from_millis(100));
        let h = f.acquire(&mut con, [5]).unwrap();
        let scope = h.releasing(&mut con, |_con| {
            std::thread::sleep(Duration::from_millis(250));
            // Meanwhile another worker takes the expired lock.
            people(Duration::from_secs(60)).acquire(&mut s.conn(), [5]).map(|_| "done")
        });
        assert!(scope.lease_lost());
        assert!(matches!(scope.release, Err(Error::NotOwned { .. })), "{:?}", scope.release);
        assert_eq!(scope.output.as_ref().ok(), Some(&"done"));
        let err = scope.into_result().unwrap_err();
        assert!(err.is_lease_lost(), "{err}");
    }

    fn a_key_of_another_type_is_a_redis_error_with_its_code(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        redis::cmd("SET").arg("person:9").arg("x").query::<()>(&mut con).unwrap();
        let f = LockFactory::builder("person", Duration::from_secs(1)).no_root_prefix().build().unwrap();
        match f.acquire(&mut con, [9]).unwrap_err() {
            Error::Redis(e) => assert_eq!(e.code(), Some("WRONGTYPE")),
            other => panic!("expected a redis error, got {other:?}"),
        }
        let v: String = redis::cmd("GET").arg("person:9").query(&mut con).unwrap();
        assert_eq!(v, "x");
    }

    fn works_over_resp3_and_a_dyn_connection(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn_resp3();
        let dynamic: &mut dyn redis::ConnectionLike = &mut con;
        let f = people(Duration::from_secs(5));
        let mut h = f.acquire(dynamic, ["resp3"]).unwrap();
        h.extend(dynamic, Duration::from_secs(9)).unwrap();
        assert!(h.ttl() > Duration::from_secs(8));
        h.release(dynamic).unwrap();
    }
}
