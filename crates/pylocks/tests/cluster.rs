//! The client against a real three-primary Redis Cluster, through the redis crate's sync and
//! async cluster connections: the lock's key is argv[1], so every call routes to its node.

use std::time::Duration;

use pylocks::{Error, LeaseEnd, LockFactory};
use testkit::redis::cluster::ClusterClient;
use testkit::{holder, server_tests, Cluster};

fn people() -> LockFactory {
    LockFactory::builder("person", Duration::from_secs(30))
        .root_prefix("locks")
        .build()
        .unwrap()
}

server_tests! {
    fn sync_cluster_connection(kind: Kind) {
        let cluster = Cluster::start(kind);
        let mut con = ClusterClient::new(cluster.urls()).unwrap().get_connection().unwrap();
        let f = people();
        for id in 0..12 {
            let h = f.acquire(&mut con, [id]).unwrap();
            let key = h.key().to_string();
            // The lease is on the node that serves the key.
            let on_node = holder(&mut cluster.node_for(&key).conn(), &key).expect("held");
            assert_eq!(on_node.lease.id, h.lease_id().as_bytes());
            assert!(matches!(f.acquire(&mut con, [id]), Err(Error::AlreadyHeld { .. })));
            let mut again = f.get_handle(&mut con, [id], h.lease_id()).unwrap();
            again.extend(&mut con, Duration::from_secs(60)).unwrap();
            again.release(&mut con).unwrap();
            assert!(matches!(h.release(&mut con), Err(Error::NotHeld { .. })));
        }
    }

    fn async_cluster_connection(kind: Kind) {
        let cluster = Cluster::start(kind);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let client = ClusterClient::new(cluster.urls()).unwrap();
            let mut con = client.get_async_connection().await.unwrap();
            let f = people();
            for id in 0..12 {
                let mut h = f.acquire_async(&mut con, [id]).await.unwrap();
                h.confirm_async(&mut con).await.unwrap();
                let err = f.get_handle_async(&mut con, [id], "someone-else").await.unwrap_err();
                assert!(matches!(err, Error::NotOwned { .. }), "{err}");
                h.release_async(&mut con).await.unwrap();
            }
        });
    }

    fn a_watch_of_a_lock_whose_slot_moved_reads_as_moved(kind: Kind) {
        let cluster = Cluster::start(kind);
        let mut con = ClusterClient::new(cluster.urls()).unwrap().get_connection().unwrap();
        let h = people().acquire(&mut con, [77]).unwrap();
        let key = h.key().to_string();
        let from = cluster.node_for(&key);
        let to = cluster.nodes().iter().find(|n| n.port() != from.port()).unwrap();
        // Watched on the node itself: a cluster connection would follow the move.
        let mut watch_con = from.conn();
        let watcher = {
            let h = h.clone();
            std::thread::spawn(move || h.watch(&mut watch_con, Some(Duration::from_secs(10))))
        };
        testkit::wait_until(Duration::from_secs(5), || {
            from.info("pylock", "pylock_watching").as_deref() == Some("1")
        })
        .expect("the watch blocks");
        cluster.migrate_slot(cluster.slot(&key), from, to);
        assert_eq!(watcher.join().unwrap().unwrap(), Some(LeaseEnd::Moved));
        // The lease lives on at the new node, where the cluster connection now sends it.
        let mut h = h;
        h.confirm(&mut con).unwrap();
        h.release(&mut con).unwrap();
    }
}
