//! `acquire_blocking` (sync and async) against real servers: the server hands the lock over
//! on release, and a timeout ends in `AlreadyHeld`.

use std::time::{Duration, Instant};

use pylocks::{Error, LockFactory};
use testkit::redis::{self, AsyncConnectionConfig};
use testkit::{holder, server_tests, wait_until, Server};

fn people() -> LockFactory {
    LockFactory::builder("person", Duration::from_secs(30))
        .no_root_prefix()
        .build()
        .unwrap()
}

fn waiters(s: &Server, key: &str) -> i64 {
    holder(&mut s.conn(), key).map_or(0, |h| h.waiters)
}

server_tests! {
    fn sync_acquire_blocking_gets_the_lock_on_release(kind: Kind) {
        let s = Server::start(kind);
        let f = people();
        let mut con = s.conn();
        let held = f.acquire(&mut con, [7]).unwrap();
        let mut waiter_con = s.conn();
        let waiter = std::thread::spawn(move || {
            let f = people();
            f.acquire_blocking(&mut waiter_con, [7], Some(Duration::from_secs(10)))
        });
        wait_until(Duration::from_secs(5), || waiters(&s, "person:7") == 1).expect("queued");
        held.release(&mut con).unwrap();
        let got = waiter.join().unwrap().expect("handed over");
        assert!(got.token() > 0);
        assert_eq!(holder(&mut con, "person:7").unwrap().lease.id, got.lease_id().as_bytes());
    }

    fn sync_acquire_blocking_times_out_with_already_held(kind: Kind) {
        let s = Server::start(kind);
        let f = people();
        let mut con = s.conn();
        let _held = f.acquire(&mut con, [8]).unwrap();
        let start = Instant::now();
        let err = f.acquire_blocking(&mut con, [8], Some(Duration::from_millis(150))).unwrap_err();
        assert!(matches!(err, Error::AlreadyHeld { .. }), "{err}");
        assert!(start.elapsed() >= Duration::from_millis(140));
        assert_eq!(waiters(&s, "person:8"), 0);
        // A free lock is granted at once.
        let h = f.acquire_blocking(&mut con, [9], None).unwrap();
        assert_eq!(h.key(), "person:9");
    }

    fn async_acquire_blocking_waits_past_the_default_response_timeout(kind: Kind) {
        let s = Server::start(kind);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let client = redis::Client::open(s.url()).unwrap();
            // The wait below is longer than the 500 ms a multiplexed connection allows by default.
            let config = AsyncConnectionConfig::new().set_response_timeout(None);
            let mut con = client.get_multiplexed_async_connection_with_config(&config).await.unwrap();
            let f = people();
            let held = f.acquire_async(&mut con, [1]).await.unwrap();
            let mut waiter_con = client.get_multiplexed_async_connection_with_config(&config).await.unwrap();
            let waiter = tokio::spawn(async move {
                people().acquire_blocking_async(&mut waiter_con, [1], Some(Duration::from_secs(10))).await
            });
            tokio::time::sleep(Duration::from_millis(800)).await;
            assert!(!waiter.is_finished(), "the waiter must still be queued");
            held.release_async(&mut con).await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
            assert_eq!(got.key(), "person:1");
            let err = f.acquire_blocking_async(&mut con, [1], Some(Duration::from_millis(100))).await.unwrap_err();
            assert!(matches!(err, Error::AlreadyHeld { .. }), "{err}");
        });
    }
}
