//! The client names every lease (`LEASE`), so a retried ACQUIRE is the same lease: against
//! real servers, including a first attempt whose reply is never read.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use pylocks::{Error, LockFactory};
use testkit::{holder, server_tests, wait_until, Server};

fn jobs(ttl: Duration) -> LockFactory {
    LockFactory::builder("job", ttl)
        .no_root_prefix()
        .build()
        .unwrap()
}

/// A lease id as the server makes one: a version-4 UUID, lowercase and hyphenated.
fn is_uuid_v4(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && b.iter()
            .enumerate()
            .all(|(i, c)| [8, 13, 18, 23].contains(&i) || matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

server_tests! {
    fn the_client_names_the_lease_before_sending(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = jobs(Duration::from_secs(30));
        let request = f.acquire_cmd([1]).unwrap();
        assert!(is_uuid_v4(request.lease_id()), "{}", request.lease_id());
        assert_ne!(f.acquire_cmd([1]).unwrap().lease_id(), request.lease_id(), "fresh each time");
        let h = f.acquire_with(&mut con, &request).unwrap();
        assert_eq!(h.lease_id(), request.lease_id());
        assert_eq!(holder(&mut con, "job:1").unwrap().lease.id, request.lease_id().as_bytes());
        // `acquire` names its leases the same way.
        let plain = f.acquire(&mut con, [2]).unwrap();
        assert!(is_uuid_v4(plain.lease_id()), "{}", plain.lease_id());
        assert_ne!(plain.lease_id(), h.lease_id());
    }

    fn sending_the_same_acquire_again_is_the_same_lease(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = jobs(Duration::from_secs(2));
        let request = f.acquire_cmd(["retry"]).unwrap();
        let first = f.acquire_with(&mut con, &request).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let again = f.acquire_with(&mut s.conn(), &request).expect("the same lease is granted again");
        assert_eq!(again.lease_id(), first.lease_id());
        assert_eq!(again.token(), first.token(), "a retry keeps the fencing token");
        assert!(again.ttl() > Duration::from_millis(1900), "the ttl is reset: {:?}", again.ttl());
        // Any other lease, including a new request for the same lock, is still refused.
        let err = f.acquire(&mut con, ["retry"]).unwrap_err();
        assert!(matches!(err, Error::AlreadyHeld { .. }), "{err}");
        // Both handles are the one lease: releasing through one ends it for the other.
        first.release(&mut con).unwrap();
        assert!(matches!(again.release(&mut con), Err(Error::NotHeld { .. })));
    }

    fn a_retry_after_a_lost_reply_gets_the_grant_that_happened(kind: Kind) {
        let s = Server::start(kind);
        let f = jobs(Duration::from_secs(30));
        let request = f.acquire_cmd(["lost"]).unwrap();
        // The first attempt reaches the server, but its reply is never read: the connection
        // goes away, as when a client times out or its link breaks.
        {
            let mut raw = TcpStream::connect(("127.0.0.1", s.port())).unwrap();
            raw.write_all(&request.to_cmd().unwrap().get_packed_command()).unwrap();
        }
        let mut con = s.conn();
        wait_until(Duration::from_secs(5), || holder(&mut s.conn(), "job:lost").is_some())
            .expect("the lost attempt was granted");
        let granted = holder(&mut con, "job:lost").unwrap();
        assert_eq!(granted.lease.id, request.lease_id().as_bytes());

        let h = f.acquire_with(&mut con, &request).expect("the retry is the granted lease");
        assert_eq!(h.lease_id(), request.lease_id());
        assert_eq!(h.token(), granted.lease.token);
        h.release(&mut con).unwrap();
        assert!(holder(&mut con, "job:lost").is_none());
    }

    fn a_lease_id_of_ones_own(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = jobs(Duration::from_secs(30));
        let request = f.acquire_cmd([9]).unwrap().lease("task-9-run");
        let h = f.acquire_with(&mut con, &request).unwrap();
        assert_eq!(h.lease_id(), "task-9-run");
        assert_eq!(holder(&mut con, "job:9").unwrap().lease.id, b"task-9-run");
        // A second run of the same task names the same lease and gets it, same token.
        let rerun = f.acquire_cmd([9]).unwrap().lease("task-9-run");
        assert_eq!(f.acquire_with(&mut s.conn(), &rerun).unwrap().token(), h.token());
        let worker = f.get_handle(&mut con, [9], "task-9-run").unwrap();
        assert_eq!(worker.token(), h.token());
        // The server still checks what it is given.
        let err = f.acquire_with(&mut con, &f.acquire_cmd([10]).unwrap().lease("")).unwrap_err();
        match err {
            Error::Redis(e) => assert_eq!(testkit::error_text(&e), "ERR invalid lease id"),
            other => panic!("expected a redis error, got {other:?}"),
        }
    }
}

#[cfg(feature = "aio")]
mod on_async {
    use super::*;
    use testkit::redis;

    server_tests! {
        fn the_same_acquire_again_on_an_async_connection(kind: Kind) {
            let s = Server::start(kind);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let client = redis::Client::open(s.url()).unwrap();
                let mut con = client.get_multiplexed_async_connection().await.unwrap();
                let f = jobs(Duration::from_secs(30));
                let request = f.acquire_cmd([1]).unwrap();
                let first = f.acquire_with_async(&mut con, &request).await.unwrap();
                let again = f.acquire_with_async(&mut con, &request).await.unwrap();
                assert_eq!((again.lease_id(), again.token()), (first.lease_id(), first.token()));
                let err = f.acquire_async(&mut con, [1]).await.unwrap_err();
                assert!(matches!(err, Error::AlreadyHeld { .. }), "{err}");
            });
        }
    }
}
