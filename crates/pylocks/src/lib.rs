//! Locks and leases for task-queue workers, enforced by Redis through the `pylock` module.
//!
//! The server does the locking (`PYLOCK.ACQUIRE`, `PYLOCK.CONFIRM`, `PYLOCK.RELEASE`,
//! `PYLOCK.WATCH`), atomically;
//! this crate names locks, sends those commands and reads their replies. Each grant is a
//! *lease*: a lease id, a fencing token and a TTL. Whoever knows the lease id can check that the
//! lease still holds the lock, which is what lets a producer take a lock and hand it to a task.
//!
//! Every call takes a connection explicitly: any `redis::ConnectionLike` for the sync API, any
//! `redis::aio::ConnectionLike` (`MultiplexedConnection`, `ConnectionManager`, cluster
//! connections) for the `_async` API. Each command names one key, the lock's, as its first
//! argument, and none uses `MULTI`, so cluster connections route every call.
//!
//! # Features
//!
//! - `aio` (default): the `_async` methods and the [`Keeper`], on tokio. It enables `redis`'s
//!   `aio` and `tokio-comp` features and needs tokio's `rt`, `time` and `sync`, never its
//!   `macros` or multi-thread runtime. Without it (`default-features = false`) the crate is
//!   sync only, and pulls in neither tokio nor redis's async stack.
//!
//! # The lease id is the client's
//!
//! The client names every lease it asks for: a random UUID (version 4, lowercase, hyphenated,
//! as the server would make one), sent as `PYLOCK.ACQUIRE key ttl LEASE id`. The server grants
//! an ACQUIRE naming the lease that already holds the lock again, with the same fencing token
//! and the TTL reset, so a request sent again after its reply was lost cannot strand the lock
//! under a lease nobody knows. [`LockFactory::acquire_cmd`] gives the request, whose
//! [`lease_id`](cmd::Acquire::lease_id) is known before it is sent and which
//! [`LockFactory::acquire_with`] sends as often as needed;
//! [`lease`](cmd::Acquire::lease) names a lease of your own instead, for example one per task
//! so that a redelivered task asks for the same lease. The Python client does the same.
//!
//! # Pipelines
//!
//! [`cmd`] builds each PYLOCK command as a `redis::Cmd` for a [`redis::pipe()`] or a `MULTI`
//! block, and parses their replies ([`cmd::Lease`], [`cmd::LockInfo`]). The factory and the
//! handle send these same commands; [`LockHandle::from_acquire`],
//! [`LockHandle::confirm_cmd`] and [`LockHandle::release_cmd`] join the two.
//!
//! ```no_run
//! use std::time::Duration;
//! # fn demo(con: &mut redis::Connection, handle: pylocks::LockHandle) -> Result<(), Box<dyn std::error::Error>> {
//! // The work's last write and the release, in one round trip.
//! let ((), released): ((), i64) = redis::pipe()
//!     .set("person:42", 47)
//!     .add_command(handle.release_cmd().to_cmd())
//!     .query(con)?;
//! # let _ = released; Ok(()) }
//! ```
//!
//! # Pattern 1: take the lock inside the task
//!
//! The task tries to acquire when it starts. If the lock is held, it fails (and the queue may
//! retry it). `releasing` runs the work and releases afterwards, even on error or panic.
//!
//! ```no_run
//! use std::time::Duration;
//! use pylocks::{Error, LockFactory};
//!
//! fn add_to_person(
//!     person_lock: &LockFactory,
//!     con: &mut redis::Connection,
//!     person_id: u64,
//!     amount: i64,
//! ) -> Result<(), Box<dyn std::error::Error>> {
//!     let handle = match person_lock.acquire(con, [person_id]) {
//!         Ok(handle) => handle,
//!         Err(e @ Error::AlreadyHeld { .. }) => {
//!             eprintln!("lock on person {person_id} was already held: {e}");
//!             return Err(e.into());
//!         }
//!         Err(e) => return Err(e.into()),
//!     };
//!     let scope = handle.releasing(con, |con| -> redis::RedisResult<()> {
//!         let key = format!("person:{person_id}");
//!         let val: Option<i64> = redis::cmd("GET").arg(&key).query(con)?;
//!         redis::cmd("SET").arg(&key).arg(val.unwrap_or(0) + amount).query::<()>(con)
//!     });
//!     // Err when the lease was lost before the release: the update was not protected.
//!     scope.into_result()??;
//!     Ok(())
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let person_lock = LockFactory::builder("person", Duration::from_secs(60))
//!     .arity(1)
//!     .root_prefix("locks_example")
//!     .build()?;
//! let mut con = redis::Client::open("redis://127.0.0.1:6379/")?.get_connection()?;
//! add_to_person(&person_lock, &mut con, 42, 5)?;
//! # Ok(()) }
//! ```
//!
//! # Pattern 2: take the lock before enqueuing, and pass the lease id
//!
//! The producer acquires first and enqueues only if it got the lock, passing the lease id with
//! the task. The task confirms with [`LockFactory::get_handle`] that its own lease still holds
//! the lock before it touches shared state. A lease that expired is refused with
//! [`Error::NotHeld`], or with [`Error::NotOwned`] when someone else has taken the lock since.
//!
//! ```no_run
//! use pylocks::{Error, LockFactory};
//!
//! fn enqueue_add_to_person(
//!     person_lock: &LockFactory,
//!     con: &mut redis::Connection,
//!     person_id: u64,
//!     amount: i64,
//! ) -> Result<(), Error> {
//!     let handle = person_lock.acquire(con, [person_id])?; // AlreadyHeld: don't enqueue
//!     let task = format!("{person_id} {} {amount}", handle.lease_id());
//!     redis::cmd("RPUSH").arg("tasks").arg(task).query::<()>(con)?;
//!     Ok(())
//! }
//!
//! fn add_to_person(
//!     person_lock: &LockFactory,
//!     con: &mut redis::Connection,
//!     person_id: u64,
//!     lease_id: &str,
//!     amount: i64,
//! ) -> Result<(), Box<dyn std::error::Error>> {
//!     let handle = match person_lock.get_handle(con, [person_id], lease_id) {
//!         Ok(handle) => handle,
//!         Err(e) if e.is_lease_lost() => {
//!             eprintln!("lease {lease_id} on person {person_id} expired: {e}");
//!             return Err(e.into());
//!         }
//!         Err(e) => return Err(e.into()),
//!     };
//!     handle
//!         .releasing(con, |con| -> redis::RedisResult<()> {
//!             let key = format!("person:{person_id}");
//!             let val: Option<i64> = redis::cmd("GET").arg(&key).query(con)?;
//!             redis::cmd("SET").arg(&key).arg(val.unwrap_or(0) + amount).query(con)
//!         })
//!         .into_result()??;
//!     Ok(())
//! }
//! ```
//!
//! # Running a task once: claim the lease you were given
//!
//! A queue can deliver one message twice (a redelivery after a lost worker or a visibility
//! timeout, a retry while the first run is alive), and every copy carries the same lease id.
//! [`LockHandle::claim`] exchanges it for an id of the run's own and a greater fencing token
//! (`PYLOCK.CONFIRM … CLAIM`). Only one run can; every other gets [`Error::Claimed`], which
//! [`Error::is_lease_lost`] counts as a loss. The new id is made before the claim is sent, so a
//! claim sent again after a lost reply gets the same lease back.
//!
//! ```no_run
//! use pylocks::{Error, LockFactory};
//!
//! fn add_to_person_once(
//!     person_lock: &LockFactory,
//!     con: &mut redis::Connection,
//!     person_id: u64,
//!     lease_id: &str,
//! ) -> Result<(), Error> {
//!     let given = person_lock.get_handle(con, [person_id], lease_id)?;
//!     let mine = match given.claim(con, None) {
//!         Ok(mine) => mine,
//!         Err(e @ Error::Claimed { .. }) => {
//!             eprintln!("another run has lease {lease_id}: {e}"); // acknowledge, don't run
//!             return Ok(());
//!         }
//!         Err(e) => return Err(e),
//!     };
//!     mine.releasing(con, |con| redis::cmd("INCRBY").arg("person:42").arg(5).query::<i64>(con))
//!         .into_result()??;
//!     Ok(())
//! }
//! ```
//!
//! # Learning at once that a lease ended
//!
//! [`LockHandle::watch`] (`PYLOCK.WATCH`) blocks until the lease ends and says why, as a
//! [`LeaseEnd`] (released, expired, claimed, deleted, flushed, moved, demoted), or `None` when
//! its timeout passes first. It blocks the connection it is sent on, so it takes one of its own.
//!
//! ```no_run
//! # fn demo(client: &redis::Client, handle: &pylocks::LockHandle) -> Result<(), pylocks::Error> {
//! use std::time::Duration;
//! let mut watching = client.get_connection()?;
//! if let Some(end) = handle.watch(&mut watching, Some(Duration::from_secs(30)))? {
//!     eprintln!("lease on {} ended: {end}", handle.key());
//! }
//! # Ok(()) }
//! ```
//!
//! Both patterns run for real, with a producer and worker processes, in the `pylocks-demo`
//! binary of this crate (`cargo run --release -p pylocks --bin pylocks-demo -- --help`).
//!
//! # Long tasks
//!
//! A task that may outlive its lease's TTL hands the handle to a [`Keeper`], which extends the
//! lease every third of its TTL; [`Keeper::while_held`] stops the work when the lease is lost.
//! [`LockHandle::keep_alive_watching`] also watches the lease on a connection the keeper opens
//! from the client, so a loss between renewals (a `DEL`, a claim by a duplicate run) is
//! reported within milliseconds, with its reason ([`Error::lease_end`]);
//! [`LockHandle::keep_alive`] renews only, and finds a loss at the next renewal.
//!
//! ```no_run
//! # #[cfg(feature = "aio")]
//! # async fn demo(people: pylocks::LockFactory) -> Result<(), Box<dyn std::error::Error>> {
//! let client = redis::Client::open("redis://127.0.0.1:6379/")?;
//! let mut con = client.get_multiplexed_async_connection().await?;
//! let handle = people.acquire_async(&mut con, [42]).await?;
//! let keeper = handle.keep_alive_watching(con.clone(), client);
//! let report = keeper.while_held(async { /* a long computation */ 42 }).await?;
//! keeper.release(&mut con).await?;
//! # let _ = report; Ok(()) }
//! ```
//!
//! # Dropping and losing
//!
//! No `Drop` here makes a network call. A handle or keeper that is dropped leaves its lease to
//! end at its TTL. A release of a lease that was already lost is an error, never a success.
//!
//! # Layout
//!
//! - `key`: the lock key format.
//! - [`cmd`]: the public command builders and reply types; the only place that writes the
//!   commands, over `pylock_core`'s command types, and reads their replies, over its reply
//!   parsers. It makes the lease ids.
//! - `wire`: sending a command (sync, or async with `aio`) and turning its reply into this
//!   crate's errors (the WATCH reply too, with the server's `UNBLOCKED`); `WAIT` for durability.
//! - [`LockFactory`] (`factory`): names locks, acquires and finds leases, optional durability.
//! - [`LockHandle`] and [`Released`] (`handle`): confirm, extend, claim, watch, release,
//!   release in a scope.
//! - [`Keeper`] (`keeper`, `aio` only): background renewal on tokio, and optionally a watch of
//!   the lease on a connection of its own.
//! - [`LeaseEnd`] (in [`cmd`], re-exported): why a lease ended, as WATCH answers.
//! - [`Error`] (`error`): the one error type, and the mapping of server error codes.

#![deny(missing_docs)]

pub mod cmd;
mod error;
mod factory;
mod handle;
#[cfg(feature = "aio")]
mod keeper;
mod key;
mod wire;

pub use cmd::LeaseEnd;
pub use error::Error;
pub use factory::{Durability, LockFactory, LockFactoryBuilder, DEFAULT_ROOT_PREFIX};
pub use handle::{LockHandle, Released};
#[cfg(feature = "aio")]
pub use keeper::{Keeper, LeaseStatus, LeaseWatch};

/// The `redis` crate this client is built against; connections given to it must come from
/// the same version.
pub use redis;
