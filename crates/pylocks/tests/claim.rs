//! `LockHandle::claim` (sync) against real servers: one claimant of a lease wins, a retry of its
//! claim gets the same lease back, and every other use of the old id is refused with `CLAIMED`.

use std::time::Duration;

use pylocks::{cmd, Error, LeaseEnd, LockFactory, LockHandle};
use testkit::{holder, server_tests, Server};

fn jobs() -> LockFactory {
    LockFactory::builder("job", Duration::from_secs(30))
        .build()
        .unwrap()
}

server_tests! {
    fn a_claim_passes_the_lock_to_a_new_id_with_a_greater_token(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let given = jobs().acquire(&mut con, [1]).unwrap();
        let mine = given.claim(&mut con, None).unwrap();
        assert_eq!(mine.lease_id(), given.claim_id(), "the id the handle made beforehand");
        assert_ne!(mine.lease_id(), given.lease_id());
        assert!(uuid_v4(mine.lease_id()), "{}", mine.lease_id());
        assert!(mine.token() > given.token(), "{} > {}", mine.token(), given.token());
        assert_eq!(mine.key(), given.key());
        assert_eq!(mine.lease_ttl(), given.lease_ttl());
        assert!(mine.ttl() <= given.ttl() && mine.ttl() > Duration::from_secs(29), "the deadline stays: {:?}", mine.ttl());
        let held = holder(&mut con, "job:1").unwrap();
        assert_eq!(held.lease.id, mine.lease_id().as_bytes());
        assert_eq!(held.lease.token, mine.token());
        let claimed: u64 = s.info("pylock", "pylock_claimed").unwrap().parse().unwrap();
        assert_eq!(claimed, 1);
        mine.release(&mut con).unwrap();
        assert!(holder(&mut con, "job:1").is_none());
    }

    fn a_retried_claim_gets_the_same_lease_and_another_claimant_gets_claimed(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = jobs();
        let producer = f.acquire(&mut con, [2]).unwrap();
        // Two deliveries of the same task message: two handles of the same lease.
        let first = f.get_handle(&mut s.conn(), [2], producer.lease_id()).unwrap();
        let second = f.get_handle(&mut s.conn(), [2], producer.lease_id()).unwrap();
        assert_ne!(first.claim_id(), second.claim_id());

        let won = first.claim(&mut con, None).unwrap();
        // The reply was "lost": the same handle (or a clone) claims again.
        let again = first.clone().claim(&mut s.conn(), None).unwrap();
        assert_eq!((again.lease_id(), again.token()), (won.lease_id(), won.token()));

        let err = second.claim(&mut con, None).unwrap_err();
        match &err {
            Error::Claimed { key, message } => {
                assert_eq!(key, "job:2");
                assert!(message.starts_with("CLAIMED "), "{message}");
            }
            other => panic!("expected Claimed, got {other:?}"),
        }
        assert!(err.is_lease_lost());
        assert_eq!(err.lease_end(), Some(LeaseEnd::Claimed));
        // The old id is refused everywhere with CLAIMED, and the lock is untouched.
        let err = f.get_handle(&mut con, [2], producer.lease_id()).unwrap_err();
        assert!(matches!(err, Error::Claimed { .. }), "{err}");
        let mut stale = producer.clone();
        assert!(matches!(stale.confirm(&mut con), Err(Error::Claimed { .. })));
        assert!(matches!(producer.release(&mut con), Err(Error::Claimed { .. })));
        let held = holder(&mut con, "job:2").unwrap();
        assert_eq!((held.lease.id.as_slice(), held.lease.token), (won.lease_id().as_bytes(), won.token()));
    }

    fn a_claim_of_a_lost_lease_is_refused_as_for_confirm(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = LockFactory::builder("job", Duration::from_millis(100)).build().unwrap();
        let h = f.acquire(&mut con, [3]).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        let err = h.claim(&mut con, None).unwrap_err();
        assert!(matches!(err, Error::NotHeld { .. }), "{err}");
        let other = f.acquire(&mut con, [3]).unwrap();
        let err = h.claim(&mut con, Some("mine")).unwrap_err();
        assert!(matches!(err, Error::NotOwned { .. }), "{err}");
        assert!(err.is_lease_lost());
        assert_eq!(holder(&mut con, "job:3").unwrap().lease.id, other.lease_id().as_bytes());
    }

    fn only_the_direct_predecessor_is_told_claimed(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let f = jobs();
        let a = f.acquire(&mut con, [4]).unwrap();
        let b = a.claim(&mut con, Some("task-4:run-b")).unwrap();
        assert_eq!(b.lease_id(), "task-4:run-b");
        let c = b.claim(&mut con, None).unwrap();
        assert!(c.token() > b.token() && b.token() > a.token());
        assert!(matches!(f.get_handle(&mut con, [4], b.lease_id()), Err(Error::Claimed { .. })));
        assert!(matches!(f.get_handle(&mut con, [4], a.lease_id()), Err(Error::NotOwned { .. })));
        // A bad new id is refused by the server before anything changes.
        let err = c.claim(&mut con, Some(c.lease_id())).unwrap_err();
        assert!(matches!(&err, Error::Redis(e) if e.detail() == Some("invalid lease id")), "{err}");
        assert_eq!(holder(&mut con, "job:4").unwrap().lease.id, c.lease_id().as_bytes());
    }

    fn a_claim_in_a_pipeline_becomes_a_handle(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let given = jobs().acquire(&mut con, [5]).unwrap();
        let request = given.claim_cmd().extend(Duration::from_secs(90));
        let sent = std::time::Instant::now();
        let (lease, ()): (cmd::Lease, ()) = testkit::redis::pipe()
            .add_command(request.to_cmd().unwrap())
            .set("job:5:started", 1)
            .query(&mut con)
            .unwrap();
        assert!(lease.ttl > Duration::from_secs(89), "EXTEND applied: {:?}", lease.ttl);
        let mine: LockHandle = given.claimed(&request, lease.clone(), sent).unwrap();
        assert_eq!(mine.lease_id(), given.claim_id());
        // A reply that is not this claim's is refused.
        let plain = given.confirm_cmd();
        assert!(matches!(given.claimed(&plain, lease, sent), Err(Error::UnexpectedReply { .. })));
        mine.release(&mut con).unwrap();
    }
}

fn uuid_v4(id: &str) -> bool {
    id.len() == 36 && id.as_bytes()[14] == b'4' && id == id.to_lowercase()
}
