//! Semaphores through the Rust client (`LockFactoryBuilder::limit`, `PYLOCK.ACQUIRE … LIMIT n`)
//! against real servers: each lease is a lease of its own, and the key's n is fixed.

use std::time::{Duration, Instant};

use pylocks::{cmd, Error, LockFactory};
use testkit::redis;
use testkit::{server_tests, Server};

fn exports(n: u32) -> LockFactory {
    LockFactory::builder("export", Duration::from_secs(60))
        .no_root_prefix()
        .limit(n)
        .build()
        .unwrap()
}

fn info(con: &mut redis::Connection, key: &str) -> Option<cmd::LockInfo> {
    cmd::info(key).to_cmd().query(con).unwrap()
}

server_tests! {
    fn up_to_n_leases_each_with_its_own_id_token_and_deadline(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = exports(3);
        assert_eq!(f.limit(), Some(3));
        let held: Vec<_> = (0..3).map(|_| f.acquire(&mut con, ["acme"]).unwrap()).collect();
        assert!(held.windows(2).all(|w| w[0].token() < w[1].token()));
        assert!(matches!(f.acquire(&mut con, ["acme"]), Err(Error::AlreadyHeld { .. })));
        let seen = info(&mut con, "export:acme").expect("held");
        assert_eq!((seen.limit, seen.waiters, seen.holders.len()), (3, 0, 3));
        let mut ids: Vec<_> = seen.holders.iter().map(|l| l.id.clone()).collect();
        ids.sort();
        let mut want: Vec<_> = held.iter().map(|h| h.lease_id().to_string()).collect();
        want.sort();
        assert_eq!(ids, want);
        assert_eq!(seen.lease, seen.holders[0], "the earliest deadline first");
        // One lease extended, confirmed, claimed and released on its own.
        let mut it = held.into_iter();
        let (mut a, b, c) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        a.extend(&mut con, Duration::from_secs(5)).unwrap();
        assert!(a.ttl() <= Duration::from_secs(5));
        let seen = info(&mut con, "export:acme").unwrap();
        assert_eq!(seen.holders[0].id, a.lease_id(), "now the earliest deadline");
        let b2 = b.claim(&mut con, None).unwrap();
        assert!(b2.token() > c.token());
        a.release(&mut con).unwrap();
        let next = f.acquire(&mut con, ["acme"]).unwrap();
        assert!(next.token() > b2.token());
        for h in [b2, c, next] {
            h.release(&mut con).unwrap();
        }
        assert!(info(&mut con, "export:acme").is_none());
    }

    fn the_keys_limit_is_fixed_and_a_mismatch_changes_nothing(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let first = exports(3).acquire(&mut con, ["acme"]).unwrap();
        let plain = LockFactory::builder("export", Duration::from_secs(60)).no_root_prefix().build().unwrap();
        for other in [exports(2), plain.clone()] {
            match other.acquire(&mut con, ["acme"]) {
                Err(Error::LimitMismatch { key, message }) => {
                    assert_eq!(key, "export:acme");
                    assert!(message.starts_with("LIMITMISMATCH ") && message.contains('3'), "{message}");
                }
                other => panic!("expected LimitMismatch, got {other:?}"),
            }
        }
        let seen = info(&mut con, "export:acme").unwrap();
        assert_eq!((seen.limit, seen.holders.len()), (3, 1));
        first.release(&mut con).unwrap();
        // A lock reads as a semaphore of one.
        let lock = plain.acquire(&mut con, ["acme"]).unwrap();
        let seen = info(&mut con, "export:acme").unwrap();
        assert_eq!((seen.limit, seen.holders.len()), (1, 1));
        assert_eq!(seen.lease.id, lock.lease_id());
        lock.release(&mut con).unwrap();
    }

    fn a_blocking_acquire_gets_the_first_place_that_frees(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = exports(2);
        let a = f.acquire(&mut con, ["acme"]).unwrap();
        let _b = f.acquire(&mut con, ["acme"]).unwrap();
        let url = s.url();
        let waiter = std::thread::spawn(move || {
            let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
            exports(2).acquire_blocking(&mut con, ["acme"], Some(Duration::from_secs(20)))
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while info(&mut con, "export:acme").unwrap().waiters != 1 {
            assert!(Instant::now() < deadline, "the waiter never queued");
            std::thread::sleep(Duration::from_millis(10));
        }
        let freed = a.token();
        a.release(&mut con).unwrap();
        let got = waiter.join().unwrap().unwrap();
        assert!(got.token() > freed);
        assert_eq!(info(&mut con, "export:acme").unwrap().holders.len(), 2);
    }

}

#[test]
fn a_limit_outside_the_protocols_range_is_refused_before_any_call() {
    for n in [0, 100_001, u32::MAX] {
        let built = LockFactory::builder("x", Duration::from_secs(1))
            .limit(n)
            .build();
        assert!(
            matches!(built, Err(Error::InvalidLimit { limit }) if limit == n),
            "{n}"
        );
        let cmd = cmd::acquire("x", Duration::from_secs(1)).limit(n).to_cmd();
        assert!(matches!(cmd, Err(Error::InvalidLimit { .. })), "{n}");
    }
    assert!(LockFactory::builder("x", Duration::from_secs(1))
        .limit(100_000)
        .build()
        .is_ok());
}

/// The keeper, which needs the async API.
#[cfg(feature = "aio")]
mod keeper {
    use std::time::Duration;

    use pylocks::{LeaseStatus, LockFactory};
    use testkit::redis;
    use testkit::{server_tests, Server};

    use super::info;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    server_tests! {
        fn the_keeper_keeps_one_lease_of_a_semaphore(kind: Kind) {
            let s = Server::start(kind);
            rt().block_on(async {
                let client = redis::Client::open(s.url()).unwrap();
                let mut con = client.get_multiplexed_async_connection().await.unwrap();
                let f = LockFactory::builder("export", Duration::from_millis(400))
                    .no_root_prefix()
                    .limit(2)
                    .build()
                    .unwrap();
                let kept = f.acquire_async(&mut con, ["acme"]).await.unwrap();
                let other = f.acquire_async(&mut con, ["acme"]).await.unwrap();
                let id = kept.lease_id().to_string();
                let keeper = kept.keep_alive(con.clone());
                tokio::time::sleep(Duration::from_millis(1500)).await;
                assert!(matches!(keeper.status(), LeaseStatus::Held), "{:?}", keeper.status());
                let mut sync = s.conn();
                let seen = info(&mut sync, "export:acme").expect("still held");
                assert_eq!(seen.holders.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), vec![id.as_str()],
                    "the kept lease lives on; the other one expired at its own deadline");
                let _ = other;
                keeper.release(&mut con).await.unwrap();
                assert!(info(&mut sync, "export:acme").is_none());
            });
        }
    }
}
