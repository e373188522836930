//! The async API over `MultiplexedConnection` and `ConnectionManager`, against real servers.

use std::time::Duration;

use pylocks::{Error, LockFactory};
use testkit::redis::{self, aio::ConnectionLike};
use testkit::{holder, server_tests, Server};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn people(ttl: Duration) -> LockFactory {
    LockFactory::builder("person", ttl)
        .root_prefix("locks_example")
        .build()
        .unwrap()
}

/// The whole life of a lease on one async connection type.
async fn lease_life<C: ConnectionLike + Send>(s: &Server, con: &mut C) {
    let f = people(Duration::from_secs(60));
    let mut h = f.acquire_async(con, [1]).await.unwrap();
    assert_eq!(h.key(), "locks_example:person:1");
    let err = f.acquire_async(con, [1]).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyHeld { .. }), "{err}");

    let worker = f.get_handle_async(con, [1], h.lease_id()).await.unwrap();
    assert_eq!(worker.token(), h.token());
    let err = f.get_handle_async(con, [1], "other").await.unwrap_err();
    assert!(matches!(err, Error::NotOwned { .. }), "{err}");
    let err = f.get_handle_async(con, [2], "other").await.unwrap_err();
    assert!(matches!(err, Error::NotHeld { .. }), "{err}");

    h.extend_async(con, Duration::from_secs(90)).await.unwrap();
    assert!(h.ttl() > Duration::from_secs(89));
    h.confirm_async(con).await.unwrap();

    let scope = h
        .releasing_async(con, async |con| {
            redis::cmd("INCR")
                .arg("locks_example:person:1")
                .query_async::<i64>(con)
                .await
        })
        .await;
    assert!(scope.release.is_ok(), "{:?}", scope.release);
    assert_eq!(scope.output.unwrap_err().code(), Some("WRONGTYPE"));
    assert!(holder(&mut s.conn(), "locks_example:person:1").is_none());

    // Releasing a lease that expired is an error, not a success.
    let short = people(Duration::from_millis(50));
    let h = short.acquire_async(con, [3]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = h.release_async(con).await.unwrap_err();
    assert!(matches!(err, Error::NotHeld { .. }), "{err}");
}

/// Many tasks on one shared connection add to one counter by GET then SET: with the lock
/// around the read-modify-write, no increment is lost.
async fn exact_totals<C>(con: C)
where
    C: ConnectionLike + Clone + Send + 'static,
{
    let f = people(Duration::from_secs(10));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let f = f.clone();
        let mut con = con.clone();
        tasks.push(tokio::spawn(async move {
            let mut contended = 0;
            for _ in 0..20 {
                let h = loop {
                    match f.acquire_async(&mut con, ["counter"]).await {
                        Ok(h) => break h,
                        Err(Error::AlreadyHeld { .. }) => {
                            contended += 1;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err(e) => panic!("{e}"),
                    }
                };
                h.releasing_async(&mut con, async |con| {
                    let v: Option<i64> = redis::cmd("GET").arg("total").query_async(con).await?;
                    tokio::task::yield_now().await;
                    redis::cmd("SET")
                        .arg("total")
                        .arg(v.unwrap_or(0) + 1)
                        .query_async::<()>(con)
                        .await
                })
                .await
                .into_result()
                .unwrap()
                .unwrap();
            }
            contended
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut con = con;
    let total: i64 = redis::cmd("GET")
        .arg("total")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(total, 120);
}

server_tests! {
    fn lease_life_on_a_multiplexed_connection(kind: Kind) {
        let s = Server::start(kind);
        rt().block_on(async {
            let client = redis::Client::open(s.url()).unwrap();
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            lease_life(&s, &mut con).await;
        });
    }

    fn lease_life_on_a_connection_manager(kind: Kind) {
        let s = Server::start(kind);
        rt().block_on(async {
            let client = redis::Client::open(s.url()).unwrap();
            let mut con = client.get_connection_manager().await.unwrap();
            lease_life(&s, &mut con).await;
        });
    }

    fn exact_totals_on_a_shared_multiplexed_connection(kind: Kind) {
        let s = Server::start(kind);
        rt().block_on(async {
            let client = redis::Client::open(s.url()).unwrap();
            exact_totals(client.get_multiplexed_async_connection().await.unwrap()).await;
        });
    }

    fn exact_totals_on_a_shared_connection_manager(kind: Kind) {
        let s = Server::start(kind);
        rt().block_on(async {
            let client = redis::Client::open(s.url()).unwrap();
            exact_totals(client.get_connection_manager().await.unwrap()).await;
        });
    }

    fn releasing_async_releases_after_a_panic(kind: Kind) {
        let s = Server::start(kind);
        rt().block_on(async {
            let client = redis::Client::open(s.url()).unwrap();
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            let h = people(Duration::from_secs(60)).acquire_async(&mut con, [8]).await.unwrap();
            let mut con2 = con.clone();
            let task = tokio::spawn(async move {
                let _scope = h.releasing_async(&mut con2, async |_con| -> () {
                    tokio::task::yield_now().await;
                    panic!("async work blew up")
                })
                .await;
            });
            let err = task.await.expect_err("the panic reaches the task's join");
            assert!(err.is_panic());
        });
        assert!(holder(&mut s.conn(), "locks_example:person:8").is_none());
    }
}

mod lifecycle {
    //! `claim_async` and `watch_async`.

    use super::*;
    use pylocks::LeaseEnd;
    use testkit::redis::AsyncConnectionConfig;

    testkit::server_tests! {
        fn claim_and_watch_async(kind: Kind) {
            let s = Server::start(kind);
            rt().block_on(async {
                let client = redis::Client::open(s.url()).unwrap();
                let mut con = client.get_multiplexed_async_connection().await.unwrap();
                // The watch below outlasts the default 500 ms response timeout.
                let config = AsyncConnectionConfig::new().set_response_timeout(None);
                let mut watch_con = client.get_multiplexed_async_connection_with_config(&config).await.unwrap();
                let f = people(Duration::from_secs(60));
                let given = f.acquire_async(&mut con, [5]).await.unwrap();
                assert_eq!(given.watch_async(&mut watch_con, Some(Duration::from_millis(700))).await.unwrap(), None);

                let watched = given.clone();
                let watcher = tokio::spawn(async move { watched.watch_async(&mut watch_con, None).await });
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mine = given.claim_async(&mut con, None).await.unwrap();
                let again = given.claim_async(&mut con, None).await.unwrap();
                assert_eq!((again.lease_id(), again.token()), (mine.lease_id(), mine.token()));
                assert!(mine.token() > given.token());
                let got = tokio::time::timeout(Duration::from_secs(2), watcher).await.unwrap().unwrap();
                assert_eq!(got.unwrap(), Some(LeaseEnd::Claimed));

                let duplicate = f.get_handle_async(&mut con, [5], mine.lease_id()).await.unwrap();
                let err = given.claim_async(&mut con, Some("another-run")).await.unwrap_err();
                assert!(matches!(err, Error::Claimed { .. }) && err.is_lease_lost(), "{err}");
                assert_eq!(holder(&mut s.conn(), "locks_example:person:5").unwrap().lease.id, mine.lease_id().as_bytes());
                drop(duplicate);
                mine.release_async(&mut con).await.unwrap();
                assert_eq!(given.watch_async(&mut con, None).await.unwrap(), Some(LeaseEnd::NotHeld));
            });
        }
    }
}
