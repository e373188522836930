//! The public command builders (`pylocks::cmd`) in `redis::pipe()` pipelines and `MULTI`
//! blocks against real servers, with their replies parsed into `Lease` and `LockInfo`.

use std::time::{Duration, Instant};

use pylocks::cmd::{self, Lease, LockInfo};
use pylocks::{Error, LockFactory, LockHandle};
use testkit::redis::{self, RedisResult};
use testkit::{holder, server_tests, Server};

const SECOND: Duration = Duration::from_secs(1);

server_tests! {
    fn every_command_in_one_pipeline(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let key = "job:7";
        #[allow(clippy::type_complexity)]
        let (granted, info, confirmed, refused, released, after): (
            Option<Lease>,
            Option<LockInfo>,
            Lease,
            Option<Lease>,
            i64,
            Option<LockInfo>,
        ) = redis::pipe()
            .add_command(cmd::acquire(key, 30 * SECOND).lease("lease-a").to_cmd().unwrap())
            .add_command(cmd::info(key).to_cmd())
            .add_command(cmd::confirm(key, "lease-a").extend(60 * SECOND).to_cmd().unwrap())
            .add_command(cmd::acquire(key, 30 * SECOND).lease("lease-b").to_cmd().unwrap())
            .add_command(cmd::release(key, "lease-a").to_cmd())
            .add_command(cmd::info(key).to_cmd())
            .query(&mut con)
            .unwrap();

        let granted = granted.expect("the lock was free");
        assert_eq!(granted.id, "lease-a");
        assert!(granted.token > 0);
        assert!(granted.ttl > 29 * SECOND && granted.ttl <= 30 * SECOND, "{:?}", granted.ttl);
        let info = info.expect("held between the acquire and the release");
        assert_eq!(info.lease.id, "lease-a");
        assert_eq!(info.lease.token, granted.token);
        assert_eq!(info.waiters, 0);
        assert_eq!(confirmed.id, "lease-a");
        assert_eq!(confirmed.token, granted.token, "EXTEND keeps the token");
        assert!(confirmed.ttl > 59 * SECOND, "EXTEND reset the ttl: {:?}", confirmed.ttl);
        assert_eq!(refused, None, "another lease gets nil while lease-a holds the lock");
        assert_eq!(released, 1);
        assert_eq!(after, None, "released");
        assert!(holder(&mut con, key).is_none());
    }

    fn error_replies_stay_per_command_with_ignore_errors(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let (mine, nobody, stranger, wrong, still): (
            Option<Lease>,
            RedisResult<Lease>,
            RedisResult<Lease>,
            RedisResult<i64>,
            Lease,
        ) = redis::pipe()
            .ignore_errors()
            .add_command(cmd::acquire("a", 10 * SECOND).lease("mine").to_cmd().unwrap())
            .add_command(cmd::confirm("free", "mine").to_cmd().unwrap())
            .add_command(cmd::confirm("a", "stranger").to_cmd().unwrap())
            .add_command(cmd::release("a", "stranger").to_cmd())
            .add_command(cmd::confirm("a", "mine").to_cmd().unwrap())
            .query(&mut con)
            .unwrap();
        assert_eq!(mine.expect("granted").id, "mine");
        let nobody = nobody.expect_err("nobody holds 'free'");
        assert_eq!(nobody.code(), Some("NOTHELD"));
        assert!(matches!(Error::from_redis("free", nobody), Error::NotHeld { .. }));
        let stranger = stranger.expect_err("'a' is held by another lease");
        assert_eq!(stranger.code(), Some("NOTOWNED"));
        assert!(matches!(Error::from_redis("a", stranger), Error::NotOwned { .. }));
        let wrong = wrong.expect_err("a stranger cannot release");
        assert!(matches!(Error::from_redis("a", wrong), Error::NotOwned { .. }));
        assert_eq!(still.id, "mine", "the refused release left the lock alone");
        assert_eq!(holder(&mut con, "a").unwrap().lease.id, b"mine");

        // Without ignore_errors the query fails as a whole, naming each failed command.
        let err = redis::pipe()
            .add_command(cmd::info("a").to_cmd())
            .add_command(cmd::release("free", "mine").to_cmd())
            .add_command(cmd::release("a", "mine").to_cmd())
            .query::<(Option<LockInfo>, i64, i64)>(&mut con)
            .unwrap_err();
        let failed = err.into_server_errors().expect("a pipeline error");
        let failed: Vec<(usize, &str)> = failed.iter().map(|(i, e)| (*i, e.code())).collect();
        assert_eq!(failed, [(1, "NOTHELD")]);
        assert!(holder(&mut con, "a").is_none(), "the commands after the failed one ran");
    }

    fn handles_from_an_atomic_pipeline(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let people = LockFactory::builder("person", 20 * SECOND).no_root_prefix().build().unwrap();
        let (a, b) = (people.acquire_cmd([1]).unwrap(), people.acquire_cmd([2]).unwrap());
        let busy = people.acquire(&mut con, [3]).unwrap();
        // BLOCK does not wait inside MULTI: a held lock answers nil at once.
        let waits = people.acquire_cmd([3]).unwrap().block(None);
        let sent = Instant::now();
        let (la, lb, lc): (Option<Lease>, Option<Lease>, Option<Lease>) = redis::pipe()
            .atomic()
            .add_command(a.to_cmd().unwrap())
            .add_command(b.to_cmd().unwrap())
            .add_command(waits.to_cmd().unwrap())
            .query(&mut con)
            .unwrap();
        assert!(sent.elapsed() < 5 * SECOND);
        assert_eq!(lc, None);
        let ha = LockHandle::from_acquire(&a, la.unwrap(), sent).unwrap();
        let mut hb = LockHandle::from_acquire(&b, lb.unwrap(), sent).unwrap();
        assert_eq!(ha.key(), "person:1");
        assert_eq!(ha.lease_ttl(), 20 * SECOND);
        assert!(ha.valid_until() > sent + 19 * SECOND);
        assert!(ha.token() > 0 && hb.token() > 0);
        hb.confirm(&mut con).unwrap();
        assert_eq!(holder(&mut con, "person:2").unwrap().lease.id, hb.lease_id().as_bytes());

        // The work's last write and both releases in one round trip.
        let ((), ra, rb): ((), i64, i64) = redis::pipe()
            .set("person:1:total", 5)
            .add_command(ha.release_cmd().to_cmd())
            .add_command(hb.release_cmd().to_cmd())
            .query(&mut con)
            .unwrap();
        assert_eq!((ra, rb), (1, 1));
        assert!(holder(&mut con, "person:1").is_none() && holder(&mut con, "person:2").is_none());
        busy.release(&mut con).unwrap();
    }

    fn a_handle_refuses_a_reply_for_another_lease(kind: Kind) {
        let s = Server::start(kind);
        let mut con = s.conn();
        let request = cmd::acquire("k", 5 * SECOND).lease("one");
        let lease: Option<Lease> = request.to_cmd().unwrap().query(&mut con).unwrap();
        let other = cmd::acquire("k", 5 * SECOND).lease("two");
        let err = LockHandle::from_acquire(&other, lease.unwrap(), Instant::now()).unwrap_err();
        assert!(matches!(err, Error::UnexpectedReply { .. }), "{err}");
    }
}

/// The same builders on an async multiplexed connection.
#[cfg(feature = "aio")]
mod on_async {
    use super::*;

    server_tests! {
        fn an_async_pipeline(kind: Kind) {
            let s = Server::start(kind);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let client = redis::Client::open(s.url()).unwrap();
                let mut con = client.get_multiplexed_async_connection().await.unwrap();
                let (granted, confirmed, released): (Option<Lease>, Lease, i64) = redis::pipe()
                    .add_command(cmd::acquire("k", 5 * SECOND).lease("l").to_cmd().unwrap())
                    .add_command(cmd::confirm("k", "l").to_cmd().unwrap())
                    .add_command(cmd::release("k", "l").to_cmd())
                    .query_async(&mut con)
                    .await
                    .unwrap();
                assert_eq!(granted.unwrap().token, confirmed.token);
                assert_eq!(released, 1);
            });
            assert!(holder(&mut s.conn(), "k").is_none());
        }
    }
}
