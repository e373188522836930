//! The keeper renews a lease past its TTL and reports a loss at once, against real servers.

use std::time::{Duration, Instant};

use pylocks::{Error, LeaseEnd, LeaseStatus, LockFactory};
use testkit::redis;
use testkit::{holder, server_tests, Server};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn jobs(ttl: Duration) -> LockFactory {
    LockFactory::builder("job", ttl)
        .no_root_prefix()
        .build()
        .unwrap()
}

async fn connect(s: &Server) -> redis::aio::MultiplexedConnection {
    redis::Client::open(s.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

server_tests! {
    fn keeps_a_short_lease_alive_well_past_its_ttl(kind: Kind) {
        let s = Server::start(kind);
        rt().block_on(async {
            let mut con = connect(&s).await;
            let h = jobs(Duration::from_millis(300)).acquire_async(&mut con, [1]).await.unwrap();
            let (id, token) = (h.lease_id().to_string(), h.token());
            let keeper = h.keep_alive(con.clone());
            let out = keeper
                .while_held(async {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    "finished"
                })
                .await
                .expect("the lease stayed held for five TTLs");
            assert_eq!(out, "finished");
            assert!(matches!(keeper.status(), LeaseStatus::Held));
            let held = holder(&mut s.conn(), "job:1").expect("still held");
            assert_eq!(held.lease.id, id.as_bytes());
            assert_eq!(held.lease.token, token, "renewal keeps the token");
            keeper.release(&mut con).await.unwrap();
        });
        assert!(holder(&mut s.conn(), "job:1").is_none(), "released");
        let extended: u64 = s.info("pylock", "pylock_extended").unwrap().parse().unwrap();
        assert!(extended >= 4, "renewed every third of the ttl: {extended}");
    }

    fn signals_a_stolen_lock_promptly(kind: Kind) {
        let s = Server::start(kind);
        rt().block_on(async {
            let mut con = connect(&s).await;
            let ttl = Duration::from_millis(600);
            let keeper = jobs(ttl).acquire_async(&mut con, [2]).await.unwrap().keep_alive(con.clone());
            let mut watch = keeper.watch();
            tokio::time::sleep(Duration::from_millis(250)).await;
            assert!(!watch.is_lost());

            // An operator deletes the lock and another client takes it.
            let mut other = s.conn();
            redis::cmd("DEL").arg("job:2").query::<()>(&mut other).unwrap();
            let thief = jobs(Duration::from_secs(60)).acquire(&mut other, [2]).unwrap();
            let stolen_at = Instant::now();

            let work = keeper.while_held(std::future::pending::<()>());
            let err = tokio::time::timeout(Duration::from_secs(2), work)
                .await
                .expect("the work is stopped, not left running")
                .unwrap_err();
            let took = stolen_at.elapsed();
            assert!(matches!(err, Error::NotOwned { .. }), "{err}");
            // The next renewal (every ttl/3) finds it: well before the lease would have run out.
            assert!(took < ttl, "signalled within a renewal period or two: {took:?}");
            let seen = watch.lost().await.expect("the watch saw it too");
            assert!(matches!(seen, Error::NotOwned { .. }), "{seen}");

            let err = keeper.release(&mut con).await.unwrap_err();
            assert!(err.is_lease_lost(), "release after a loss is an error: {err}");
            assert_eq!(holder(&mut s.conn(), "job:2").unwrap().lease.id, thief.lease_id().as_bytes(),
                "the thief's lock is untouched");
        });
    }

    fn signals_a_deleted_lock_as_not_held(kind: Kind) {
        let s = Server::start(kind);
        rt().block_on(async {
            let mut con = connect(&s).await;
            let keeper = jobs(Duration::from_millis(300)).acquire_async(&mut con, [3]).await.unwrap().keep_alive(con.clone());
            redis::cmd("DEL").arg("job:3").query::<()>(&mut s.conn()).unwrap();
            let err = tokio::time::timeout(Duration::from_secs(2), keeper.watch().lost())
                .await
                .expect("loss signalled")
                .expect("a loss, not a stop");
            assert!(matches!(err, Error::NotHeld { .. }), "{err}");
            assert!(matches!(keeper.status(), LeaseStatus::Lost(Error::NotHeld { .. })));
        });
    }

    fn an_unreachable_server_ends_in_unconfirmed_by_the_lease_deadline(kind: Kind) {
        let mut s = Server::start(kind);
        rt().block_on(async {
            let mut con = connect(&s).await;
            let ttl = Duration::from_millis(500);
            let h = jobs(ttl).acquire_async(&mut con, [4]).await.unwrap();
            let keeper = h.keep_alive(con.clone());
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.kill();
            let killed_at = Instant::now();
            let err = tokio::time::timeout(Duration::from_secs(3), keeper.watch().lost())
                .await
                .expect("loss signalled, not silence")
                .expect("a loss");
            assert!(matches!(err, Error::Unconfirmed { .. }), "{err}");
            // Retries stop at the lease's deadline (at most one ttl after the last renewal).
            assert!(killed_at.elapsed() <= ttl + Duration::from_millis(400), "{:?}", killed_at.elapsed());
        });
    }

    fn dropping_the_keeper_stops_renewal_without_a_network_call(kind: Kind) {
        let s = Server::start(kind);
        rt().block_on(async {
            let mut con = connect(&s).await;
            let keeper = jobs(Duration::from_millis(300)).acquire_async(&mut con, [5]).await.unwrap().keep_alive(con.clone());
            tokio::time::sleep(Duration::from_millis(400)).await;
            drop(keeper);
            assert!(holder(&mut s.conn(), "job:5").is_some(), "drop sent no release");
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(holder(&mut s.conn(), "job:5").is_none(), "no renewal after drop: the lease ran out");
        });
    }
}

mod watching {
    //! Keepers from `keep_alive_watching`: a loss is signalled within milliseconds, with the reason.

    /// A keeper that also watches, on a lease of `ttl` at `job:{n}`, once its watch is blocked on
    /// the server.
    async fn watched_keeper(
        s: &Server,
        n: u32,
        ttl: Duration,
    ) -> (pylocks::Keeper, redis::aio::MultiplexedConnection) {
        let mut con = connect(s).await;
        let client = redis::Client::open(s.url()).unwrap();
        let keeper = jobs(ttl)
            .acquire_async(&mut con, [n])
            .await
            .unwrap()
            .keep_alive_watching(con.clone(), client);
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.info("pylock", "pylock_watching").as_deref() != Some("1") {
            assert!(
                Instant::now() < deadline,
                "the keeper's watch never blocked"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (keeper, con)
    }

    /// Waits (at most 2 s) for the keeper to report a loss, and returns it with the time it took
    /// from `since`.
    async fn loss_after(keeper: &pylocks::Keeper, since: Instant) -> (Error, Duration) {
        let err = tokio::time::timeout(
            Duration::from_secs(2),
            keeper.while_held(std::future::pending::<()>()),
        )
        .await
        .expect("the loss is signalled")
        .unwrap_err();
        (err, since.elapsed())
    }

    /// Well under the renewal period of the 30 s leases below (10 s): only the watch can be this
    /// quick. Loopback answers in about a millisecond; the rest is margin for a loaded machine.
    const PROMPT: Duration = Duration::from_millis(100);

    use super::*;

    server_tests! {
        fn a_watching_keeper_signals_a_delete_within_milliseconds(kind: Kind) {
            let s = Server::start(kind);
            rt().block_on(async {
                let (keeper, mut con) = watched_keeper(&s, 10, Duration::from_secs(30)).await;
                let at = Instant::now();
                redis::cmd("DEL").arg("job:10").query::<()>(&mut s.conn()).unwrap();
                let (err, took) = loss_after(&keeper, at).await;
                assert!(matches!(err, Error::LeaseEnded { reason: LeaseEnd::Deleted, .. }), "{err}");
                assert_eq!(err.lease_end(), Some(LeaseEnd::Deleted));
                assert!(err.is_lease_lost());
                assert!(took < PROMPT, "{took:?}");
                assert!(matches!(keeper.status(), LeaseStatus::Lost(Error::LeaseEnded { .. })));
                let err = keeper.release(&mut con).await.unwrap_err();
                assert!(err.is_lease_lost(), "{err}");
            });
        }

        fn a_watching_keeper_signals_a_release_or_claim_by_another_process(kind: Kind) {
            let s = Server::start(kind);
            rt().block_on(async {
                // Another process knows the lease id (pattern 2) and releases it.
                let (keeper, _con) = watched_keeper(&s, 11, Duration::from_secs(30)).await;
                let other = keeper.handle().clone();
                let at = Instant::now();
                other.release(&mut s.conn()).unwrap();
                let (err, took) = loss_after(&keeper, at).await;
                assert_eq!(err.lease_end(), Some(LeaseEnd::Released), "{err}");
                assert!(took < PROMPT, "{took:?}");
                drop(keeper);

                // A duplicate run claims it.
                let (keeper, _con) = watched_keeper(&s, 12, Duration::from_secs(30)).await;
                let at = Instant::now();
                let duplicate = keeper.handle().claim(&mut s.conn(), None).unwrap();
                let (err, took) = loss_after(&keeper, at).await;
                assert_eq!(err.lease_end(), Some(LeaseEnd::Claimed), "{err}");
                assert!(took < PROMPT, "{took:?}");
                drop(keeper);
                assert_eq!(holder(&mut s.conn(), "job:12").unwrap().lease.id, duplicate.lease_id().as_bytes(),
                    "the keeper stopped without touching the claimant's lock");
            });
        }

        fn a_watching_keeper_renews_past_the_ttl_and_stops_watching_when_dropped(kind: Kind) {
            let s = Server::start(kind);
            rt().block_on(async {
                let ttl = Duration::from_millis(300);
                let (keeper, mut con) = watched_keeper(&s, 13, ttl).await;
                let out = keeper
                    .while_held(tokio::time::sleep(Duration::from_millis(1200)))
                    .await;
                assert!(out.is_ok(), "renewals (EXTEND) did not end the watch: {out:?}");
                assert!(matches!(keeper.status(), LeaseStatus::Held));
                let handle = keeper.stop().await;
                // Stopping closed the watch connection: the server no longer counts the watch.
                let deadline = Instant::now() + Duration::from_secs(3);
                while s.info("pylock", "pylock_watching").as_deref() != Some("0") {
                    assert!(Instant::now() < deadline, "the watch outlived the keeper");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                handle.release_async(&mut con).await.unwrap();
            });
        }

        fn a_watching_keeper_watches_again_after_a_server_restart(kind: Kind) {
            let mut s = Server::start_with(kind, &["--appendonly", "yes", "--appendfsync", "always"]);
            s.wait_aof_rewrite_done();
            rt().block_on(async {
                // Renewals on a connection manager, which reconnects; the keeper reopens its own
                // watch connection.
                let client = redis::Client::open(s.url()).unwrap();
                let mut con = redis::aio::ConnectionManager::new(client.clone()).await.unwrap();
                let keeper = jobs(Duration::from_secs(30))
                    .acquire_async(&mut con, [14])
                    .await
                    .unwrap()
                    .keep_alive_watching(con.clone(), client);
                let watching = |s: &Server| s.info("pylock", "pylock_watching");
                let deadline = Instant::now() + Duration::from_secs(5);
                while watching(&s).as_deref() != Some("1") {
                    assert!(Instant::now() < deadline, "the keeper's watch never blocked");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // Killed and started again from its AOF: the lease is back, and so is the watch.
                let run_id = s.info("server", "run_id");
                s.restart_with(&[]);
                assert_ne!(s.info("server", "run_id"), run_id, "a new server process");
                let deadline = Instant::now() + Duration::from_secs(10);
                while watching(&s).as_deref() != Some("1") {
                    assert!(Instant::now() < deadline, "the keeper did not watch again after the restart");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                assert!(matches!(keeper.status(), LeaseStatus::Held), "{:?}", keeper.status());
                assert_eq!(holder(&mut s.conn(), "job:14").unwrap().lease.id, keeper.handle().lease_id().as_bytes());
                let at = Instant::now();
                redis::cmd("DEL").arg("job:14").query::<()>(&mut s.conn()).unwrap();
                let (err, took) = loss_after(&keeper, at).await;
                assert_eq!(err.lease_end(), Some(LeaseEnd::Deleted), "{err}");
                assert!(took < PROMPT, "{took:?}");
            });
        }
    }
}
