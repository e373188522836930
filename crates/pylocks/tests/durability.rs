//! Optional durability: WAIT for replicas after a grant, with a real replica and without one.

use std::time::{Duration, Instant};

use pylocks::{Durability, Error, LockFactory};
use testkit::redis;
use testkit::{holder, server_tests, wait_until, Server};

fn durable(replicas: u32, timeout: Duration) -> LockFactory {
    LockFactory::builder("account", Duration::from_secs(60))
        .no_root_prefix()
        .durability(Durability::new(replicas, timeout))
        .build()
        .unwrap()
}

server_tests! {
    fn a_replica_acknowledges_the_grant(kind: Kind) {
        let s = Server::start(kind);
        let replica = s.start_replica(&[]);
        let mut con = s.conn();
        let h = durable(1, Duration::from_secs(5)).acquire(&mut con, ["acme"]).unwrap();
        // WAIT returned 1, so the replica already holds the same lease.
        let on_replica = holder(&mut replica.conn(), "account:acme").expect("replicated");
        assert_eq!(on_replica.lease.id, h.lease_id().as_bytes());
        assert_eq!(on_replica.lease.token, h.token());

        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let client = redis::Client::open(s.url()).unwrap();
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            let h = durable(1, Duration::from_secs(5)).acquire_async(&mut con, ["beta"]).await.unwrap();
            let on_replica = holder(&mut replica.conn(), "account:beta").expect("replicated");
            assert_eq!(on_replica.lease.id, h.lease_id().as_bytes());
        });
    }

    fn too_few_replicas_fails_and_releases_the_lock(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let started = Instant::now();
        let err = durable(1, Duration::from_millis(200)).acquire(&mut con, ["acme"]).unwrap_err();
        match &err {
            Error::NotReplicated { key, required, acknowledged, released } => {
                assert_eq!(key, "account:acme");
                assert_eq!((*required, *acknowledged, *released), (1, 0, true));
            }
            other => panic!("expected NotReplicated, got {other:?}"),
        }
        assert!(err.to_string().contains("0 of 1"), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(190), "WAIT waited its timeout");
        assert!(holder(&mut con, "account:acme").is_none(), "the lease was released");

        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let client = redis::Client::open(s.url()).unwrap();
            let mut con = client.get_connection_manager().await.unwrap();
            let err = durable(1, Duration::from_millis(100)).acquire_async(&mut con, ["acme"]).await.unwrap_err();
            assert!(matches!(err, Error::NotReplicated { acknowledged: 0, released: true, .. }), "{err}");
        });
        assert!(holder(&mut con, "account:acme").is_none());
    }

    fn two_required_with_one_replica_fails(kind: Kind) {
        let s = Server::start(kind);
        let replica = s.start_replica(&[]);
        let mut con = s.conn();
        let err = durable(2, Duration::from_millis(200)).acquire(&mut con, ["acme"]).unwrap_err();
        assert!(matches!(err, Error::NotReplicated { required: 2, acknowledged: 1, released: true, .. }), "{err}");
        assert!(holder(&mut con, "account:acme").is_none());
        // The release replicates too.
        wait_until(Duration::from_secs(5), || holder(&mut replica.conn(), "account:acme").is_none())
            .expect("released on the replica");
    }
}
