//! [`LockFactory`]: one family of locks (prefix, TTL, arity), and taking or finding its leases.

use std::fmt::Display;
use std::time::{Duration, Instant};

use crate::handle::LockHandle;
use crate::{cmd, key, wire, Error};

/// The root prefix of every key unless the builder names another or none, as in the original
/// library (and the Python client).
pub const DEFAULT_ROOT_PREFIX: &str = "pylocks";

/// A family of locks that share a key prefix, a lease TTL and a number of key parts.
///
/// Mirrors the original `RedisLockFactory(prefix, ttl, arity, root_prefix)`, whose root prefix
/// defaults to [`DEFAULT_ROOT_PREFIX`] (`pylocks`) as there; the TTL is a
/// [`Duration`] (the original took seconds). A factory holds no connection: every call takes
/// one, sync (`redis::ConnectionLike`) or async (`redis::aio::ConnectionLike`, with the
/// `_async` methods of the `aio` feature), so it works over a plain connection, a `MultiplexedConnection`, a
/// `ConnectionManager` or a cluster connection.
///
/// # Key format
///
/// The lock for `parts` lives at one Redis key, built so that redis-cli, a Python client or a
/// Lua script can name the same lock:
///
/// ```text
/// [root_prefix ":"] prefix ":" part1 ":" part2 … ":" partN      (N = arity)
/// ```
///
/// Inside each component (root prefix, prefix and every part) a backslash is written as two
/// backslashes and a colon as backslash-colon, so distinct part tuples never share a key. With
/// arity 0 the key is just `[root_prefix:]prefix`. Parts are formatted with [`Display`].
///
/// | root_prefix | prefix | parts | key |
/// | --- | --- | --- | --- |
/// | default (`pylocks`) | `person` | `42` | `pylocks:person:42` |
/// | `locks_example` | `person` | `42` | `locks_example:person:42` |
/// | none ([`no_root_prefix`](LockFactoryBuilder::no_root_prefix)) | `person` | `42` | `person:42` |
/// | `r` | `p` | `a:b`, `c` | `r:p:a\:b:c` |
/// | `r` | `p` | `a\`, `b` | `r:p:a\\:b` |
///
/// The shared test vectors are in `testdata/key-vectors.json`.
///
/// ```
/// use std::time::Duration;
/// let people = pylocks::LockFactory::builder("person", Duration::from_secs(60))
///     .root_prefix("locks_example")
///     .build()?;
/// assert_eq!(people.key([42])?, "locks_example:person:42");
/// # Ok::<(), pylocks::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LockFactory {
    root_prefix: Option<String>,
    prefix: String,
    arity: usize,
    ttl: Duration,
    durability: Option<Durability>,
    limit: Option<u32>,
}

/// Builds a [`LockFactory`]; see [`LockFactory::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct LockFactoryBuilder {
    root_prefix: Option<String>,
    prefix: String,
    arity: usize,
    ttl: Duration,
    durability: Option<Durability>,
    limit: Option<u32>,
}

/// How many replicas must acknowledge a grant before [`LockFactory::acquire`] returns it.
///
/// After `PYLOCK.ACQUIRE` the client sends `WAIT replicas timeout` on the same connection. If
/// fewer replicas acknowledge in time, it releases the lease and fails with
/// [`Error::NotReplicated`]. This narrows, but does not close, the window in which a failover
/// loses a grant: Redis replication stays asynchronous.
///
/// `WAIT` names no key. On a cluster connection the `redis` crate sends it to every primary
/// and keeps the smallest count, which is stricter than needed but never looser. On a
/// multiplexed connection, commands queued behind `WAIT` wait with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Durability {
    /// Replicas that must acknowledge.
    pub replicas: u32,
    /// How long `WAIT` may wait for them (rounded to milliseconds, at least 1 ms).
    pub timeout: Duration,
}

impl Durability {
    /// Requires `replicas` acknowledgements within `timeout`.
    pub fn new(replicas: u32, timeout: Duration) -> Self {
        Self { replicas, timeout }
    }
}

impl LockFactoryBuilder {
    /// Puts every key under `root_prefix` (escaped like the other components) instead of
    /// [`DEFAULT_ROOT_PREFIX`].
    pub fn root_prefix(mut self, root_prefix: impl Into<String>) -> Self {
        self.root_prefix = Some(root_prefix.into());
        self
    }

    /// Leaves the root prefix out: keys start with the prefix (`person:42`).
    pub fn no_root_prefix(mut self) -> Self {
        self.root_prefix = None;
        self
    }

    /// The number of parts that name one lock. 1 by default.
    pub fn arity(mut self, arity: usize) -> Self {
        self.arity = arity;
        self
    }

    /// Requires replica acknowledgement of every grant; see [`Durability`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = Some(durability);
        self
    }

    /// Makes every key a semaphore of up to `n` leases at once (`PYLOCK.ACQUIRE … LIMIT n`,
    /// 1 to 100,000). Acquire, blocking acquire, extend, release, claim, watch and the keeper
    /// act on one lease each, exactly as for a lock; [`cmd::info`] lists every holder.
    /// All clients of one key must use the same `n` while a lease holds it
    /// ([`Error::LimitMismatch`] otherwise). Without it, keys are locks.
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }

    /// Builds the factory.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTtl`] when the TTL is under 1 ms or over `i64::MAX` ms;
    /// [`Error::InvalidLimit`] for a limit outside `1..=100000`.
    pub fn build(self) -> Result<LockFactory, Error> {
        wire::ttl_ms(self.ttl)?;
        if let Some(n) = self.limit {
            cmd::check_limit(n)?;
        }
        Ok(LockFactory {
            root_prefix: self.root_prefix,
            prefix: self.prefix,
            arity: self.arity,
            ttl: self.ttl,
            durability: self.durability,
            limit: self.limit,
        })
    }
}

impl LockFactory {
    /// Starts a factory for locks named `prefix` whose leases last `ttl`; arity 1, root prefix
    /// [`DEFAULT_ROOT_PREFIX`], no durability requirement.
    pub fn builder(prefix: impl Into<String>, ttl: Duration) -> LockFactoryBuilder {
        LockFactoryBuilder {
            root_prefix: Some(DEFAULT_ROOT_PREFIX.to_owned()),
            prefix: prefix.into(),
            arity: 1,
            ttl,
            durability: None,
            limit: None,
        }
    }

    /// The lease TTL this factory asks for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The semaphore limit of this factory's keys, if they are semaphores
    /// ([`LockFactoryBuilder::limit`]).
    pub fn limit(&self) -> Option<u32> {
        self.limit
    }

    /// The number of parts a key takes.
    pub fn arity(&self) -> usize {
        self.arity
    }

    /// The key of the lock named by `parts` (see the [key format](LockFactory#key-format)).
    ///
    /// # Errors
    ///
    /// [`Error::Arity`] when the number of parts is not the factory's arity.
    pub fn key<I>(&self, parts: I) -> Result<String, Error>
    where
        I: IntoIterator,
        I::Item: Display,
    {
        key::build(self.root_prefix.as_deref(), &self.prefix, self.arity, parts)
    }

    /// Takes the lock named by `parts` for a new lease of the factory's TTL.
    ///
    /// The client names the new lease (a random UUID, sent with `LEASE`). Each call is a new
    /// lease; to retry an acquire whose reply was lost, so that a grant that did happen is not
    /// left held by a lease nobody knows, send the same request again with
    /// [`acquire_with`](Self::acquire_with):
    ///
    /// ```no_run
    /// # fn demo(people: &pylocks::LockFactory, client: &redis::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let request = people.acquire_cmd([42])?;
    /// let mut con = client.get_connection()?;
    /// let handle = match people.acquire_with(&mut con, &request) {
    ///     Err(pylocks::Error::Redis(e)) if e.is_io_error() => {
    ///         // Granted or not, the same lease: a grant comes back with the same token.
    ///         people.acquire_with(&mut client.get_connection()?, &request)?
    ///     }
    ///     other => other?,
    /// };
    /// assert_eq!(handle.lease_id(), request.lease_id());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`Error::Arity`], before any network call, when `parts` has the wrong length.
    /// - [`Error::AlreadyHeld`] when another lease holds the lock.
    /// - [`Error::NotReplicated`] when a [`Durability`] is set and too few replicas
    ///   acknowledged; the lease was released.
    /// - [`Error::Redis`] for transport failures and other server errors (for example
    ///   `WRONGTYPE` when the key holds something else). When `WAIT` itself fails, the client
    ///   tries once to release the new lease before returning that error.
    /// - [`Error::UnexpectedReply`] when the reply is not a lease.
    pub fn acquire<C, I>(&self, con: &mut C, parts: I) -> Result<LockHandle, Error>
    where
        C: redis::ConnectionLike + ?Sized,
        I: IntoIterator,
        I::Item: Display,
    {
        self.acquire_with(con, &self.acquire_cmd(parts)?)
    }

    /// Async [`acquire`](Self::acquire).
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire).
    #[cfg(feature = "aio")]
    pub async fn acquire_async<C, I>(&self, con: &mut C, parts: I) -> Result<LockHandle, Error>
    where
        C: redis::aio::ConnectionLike + ?Sized,
        I: IntoIterator,
        I::Item: Display,
    {
        let request = self.acquire_cmd(parts)?;
        self.acquire_with_async(con, &request).await
    }

    /// Takes the lock named by `parts`, waiting up to `timeout` (`None`: without limit) while
    /// another lease holds it. The server queues waiters per lock and hands the lock to the
    /// longest waiter the moment it is released or expires (`PYLOCK.ACQUIRE … BLOCK`); nothing
    /// polls.
    ///
    /// The connection must not give up before the server does: a sync `redis::Connection`
    /// needs a read timeout longer than `timeout` (none, the default, is fine). Otherwise the
    /// client stops waiting while the server still queues the request, and a lock handed to
    /// that request later stays held, by a reply nobody reads, until its TTL.
    ///
    /// The handle's [`valid_until`](LockHandle::valid_until) counts from when the request was
    /// sent, so it is early by the time spent waiting; [`LockHandle::confirm`] refreshes it.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire); [`Error::AlreadyHeld`] means the lock was still held
    /// when `timeout` ran out.
    pub fn acquire_blocking<C, I>(
        &self,
        con: &mut C,
        parts: I,
        timeout: Option<Duration>,
    ) -> Result<LockHandle, Error>
    where
        C: redis::ConnectionLike + ?Sized,
        I: IntoIterator,
        I::Item: Display,
    {
        self.acquire_with(con, &self.acquire_cmd(parts)?.block(timeout))
    }

    /// Async [`acquire_blocking`](Self::acquire_blocking).
    ///
    /// The connection's response timeout must exceed `timeout`: `MultiplexedConnection` and
    /// `ConnectionManager` give up after 500 ms unless configured otherwise (for example with
    /// `redis::AsyncConnectionConfig::new().set_response_timeout(None)`).
    ///
    /// # Errors
    ///
    /// As [`acquire_blocking`](Self::acquire_blocking).
    #[cfg(feature = "aio")]
    pub async fn acquire_blocking_async<C, I>(
        &self,
        con: &mut C,
        parts: I,
        timeout: Option<Duration>,
    ) -> Result<LockHandle, Error>
    where
        C: redis::aio::ConnectionLike + ?Sized,
        I: IntoIterator,
        I::Item: Display,
    {
        let request = self.acquire_cmd(parts)?.block(timeout);
        self.acquire_with_async(con, &request).await
    }

    /// The handle of an existing lease, after `PYLOCK.CONFIRM` shows that `lease_id` still
    /// holds the lock. This is how a task uses a lease its producer took.
    ///
    /// # Errors
    ///
    /// - [`Error::Arity`], before any network call.
    /// - [`Error::NotHeld`] when nobody holds the lock (the lease expired or was released).
    /// - [`Error::NotOwned`] when another lease holds it (ours expired and someone else took it).
    /// - [`Error::Redis`]: transport failures and other server errors (`ERR invalid lease id`
    ///   for an empty id or one over 128 bytes).
    /// - [`Error::UnexpectedReply`] when the reply is not a lease.
    pub fn get_handle<C, I>(
        &self,
        con: &mut C,
        parts: I,
        lease_id: &str,
    ) -> Result<LockHandle, Error>
    where
        C: redis::ConnectionLike + ?Sized,
        I: IntoIterator,
        I::Item: Display,
    {
        let key = self.key(parts)?;
        let cmd = cmd::confirm(&*key, lease_id).to_cmd()?;
        let sent = Instant::now();
        let reply = wire::run(con, &cmd);
        let lease = wire::confirm_reply(&key, reply)?;
        Ok(LockHandle::new(key, lease, sent, self.ttl))
    }

    /// Async [`get_handle`](Self::get_handle).
    ///
    /// # Errors
    ///
    /// As [`get_handle`](Self::get_handle).
    #[cfg(feature = "aio")]
    pub async fn get_handle_async<C, I>(
        &self,
        con: &mut C,
        parts: I,
        lease_id: &str,
    ) -> Result<LockHandle, Error>
    where
        C: redis::aio::ConnectionLike + ?Sized,
        I: IntoIterator,
        I::Item: Display,
    {
        let key = self.key(parts)?;
        let cmd = cmd::confirm(&*key, lease_id).to_cmd()?;
        let sent = Instant::now();
        let reply = wire::run_async(con, &cmd).await;
        let lease = wire::confirm_reply(&key, reply)?;
        Ok(LockHandle::new(key, lease, sent, self.ttl))
    }

    /// The `PYLOCK.ACQUIRE` that [`acquire`](Self::acquire) sends for `parts`: the lock's key,
    /// the factory's TTL and a fresh lease id. Add [`lease`](cmd::Acquire::lease) or
    /// [`block`](cmd::Acquire::block) to it, send it with [`acquire_with`](Self::acquire_with),
    /// or put it in a pipeline with [`to_cmd`](cmd::Acquire::to_cmd).
    ///
    /// # Errors
    ///
    /// [`Error::Arity`] when `parts` has the wrong length.
    pub fn acquire_cmd<I>(&self, parts: I) -> Result<cmd::Acquire, Error>
    where
        I: IntoIterator,
        I::Item: Display,
    {
        let request = cmd::acquire(self.key(parts)?, self.ttl);
        Ok(match self.limit {
            Some(n) => request.limit(n),
            None => request,
        })
    }

    /// Sends `request` (usually from [`acquire_cmd`](Self::acquire_cmd)) and applies the
    /// factory's [`Durability`]. Every acquire of the factory goes through here. The handle
    /// renews with the request's TTL.
    ///
    /// Sending the same request again is safe: it names the same lease, so if that lease
    /// already holds the lock (an earlier attempt was granted but its reply was lost), the
    /// server grants it again with the same fencing token and the TTL reset.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire), and [`Error::InvalidTtl`] (before any network call) for
    /// a request whose TTL is out of range; with [`block`](cmd::Acquire::block), as
    /// [`acquire_blocking`](Self::acquire_blocking).
    pub fn acquire_with<C>(&self, con: &mut C, request: &cmd::Acquire) -> Result<LockHandle, Error>
    where
        C: redis::ConnectionLike + ?Sized,
    {
        let cmd = request.to_cmd()?;
        let sent = Instant::now();
        let reply = wire::run(con, &cmd);
        let lease = wire::acquire_reply(request.key(), reply)?;
        let handle = LockHandle::from_acquire(request, lease, sent)?;
        let Some(durability) = self.durability else {
            return Ok(handle);
        };
        let acked = wire::run(
            con,
            &wire::wait_cmd(durability.replicas, durability.timeout),
        );
        match wire::wait_reply(handle.key(), acked) {
            Ok(n) if n >= durability.replicas => Ok(handle),
            other => {
                let released = handle.clone().release(con).is_ok();
                Self::durability_error(durability, handle, other, released)
            }
        }
    }

    /// Async [`acquire_with`](Self::acquire_with).
    ///
    /// # Errors
    ///
    /// As [`acquire_with`](Self::acquire_with).
    #[cfg(feature = "aio")]
    pub async fn acquire_with_async<C>(
        &self,
        con: &mut C,
        request: &cmd::Acquire,
    ) -> Result<LockHandle, Error>
    where
        C: redis::aio::ConnectionLike + ?Sized,
    {
        let cmd = request.to_cmd()?;
        let sent = Instant::now();
        let reply = wire::run_async(con, &cmd).await;
        let lease = wire::acquire_reply(request.key(), reply)?;
        let handle = LockHandle::from_acquire(request, lease, sent)?;
        let Some(durability) = self.durability else {
            return Ok(handle);
        };
        let acked = wire::run_async(
            con,
            &wire::wait_cmd(durability.replicas, durability.timeout),
        )
        .await;
        match wire::wait_reply(handle.key(), acked) {
            Ok(n) if n >= durability.replicas => Ok(handle),
            other => {
                let released = handle.clone().release_async(con).await.is_ok();
                Self::durability_error(durability, handle, other, released)
            }
        }
    }

    /// The error for a grant that was not acknowledged (`acked` is below the requirement) or
    /// whose `WAIT` failed (`acked` is that error). Either way the lease was given back first.
    fn durability_error(
        durability: Durability,
        handle: LockHandle,
        acked: Result<u32, Error>,
        released: bool,
    ) -> Result<LockHandle, Error> {
        match acked {
            Ok(acknowledged) => Err(Error::NotReplicated {
                key: handle.key().to_string(),
                required: durability.replicas,
                acknowledged,
                released,
            }),
            Err(e) => Err(e),
        }
    }
}
