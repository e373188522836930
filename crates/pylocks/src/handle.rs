//! [`LockHandle`]: a lease this process holds, and [`Released`]: the outcome of a scope.

#[cfg(feature = "aio")]
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
#[cfg(feature = "aio")]
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::cmd::{self, Lease, LeaseEnd};
#[cfg(feature = "aio")]
use crate::keeper::Keeper;
use crate::wire;
use crate::Error;

/// A lease on one lock: its key, lease id, fencing token and time left.
///
/// A handle also carries the id that [`claim`](Self::claim) would take the lease over under,
/// made with the handle, so that a claim sent again from the same handle (or a clone) names the
/// same new lease.
///
/// A handle is plain data. It holds no connection, and dropping it makes no network call: a
/// lease that is never released ends at its TTL. Every call that talks to Redis takes a
/// connection, sync or async (`_async`, with the `aio` feature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHandle {
    key: String,
    lease_id: String,
    token: i64,
    ttl_left: Duration,
    valid_until: Instant,
    lease_ttl: Duration,
    claim_id: String,
}

/// What a [`LockHandle::releasing`] scope produced: the work's output and the release outcome,
/// both kept so that neither hides the other.
///
/// `release` is `Err` when the lease was lost before the release (the lock expired, or another
/// lease took it: [`Error::NotHeld`] / [`Error::NotOwned`]), in which case the work ran without
/// the lock for some time; or when the release itself failed to reach the server.
#[derive(Debug)]
#[must_use = "the release outcome says whether the lock was still held"]
#[non_exhaustive]
pub struct Released<R> {
    /// What the work returned.
    pub output: R,
    /// Whether the lease was still held and is now released.
    pub release: Result<(), Error>,
}

impl<R> Released<R> {
    /// The work's output if the release succeeded; otherwise the release error (and the output
    /// is dropped). For a fallible work, `scope.into_result()??` reports both.
    ///
    /// # Errors
    ///
    /// The release error: [`Error::NotHeld`] or [`Error::NotOwned`] when the lease was lost,
    /// [`Error::Redis`] when the release failed in transport.
    pub fn into_result(self) -> Result<R, Error> {
        self.release.map(|()| self.output)
    }

    /// Whether the lease turned out to be lost when the scope ended.
    pub fn lease_lost(&self) -> bool {
        self.release.as_ref().is_err_and(Error::is_lease_lost)
    }
}

impl LockHandle {
    pub(crate) fn new(key: String, lease: Lease, sent: Instant, lease_ttl: Duration) -> Self {
        let mut handle = LockHandle {
            key,
            lease_id: lease.id.clone(),
            token: lease.token,
            ttl_left: Duration::ZERO,
            valid_until: sent,
            lease_ttl,
            // Made as `cmd::acquire` makes a lease id: known before anything is sent.
            claim_id: uuid::Uuid::new_v4().to_string(),
        };
        handle.update(lease, sent);
        handle
    }

    /// The handle of a lease granted by `request`, for an ACQUIRE sent outside the factory (in
    /// a [`redis::pipe()`], say): `lease` is its reply and `sent` when it was sent (for
    /// [`valid_until`](Self::valid_until)). Renewals ask for the request's TTL.
    ///
    /// ```no_run
    /// # fn demo(con: &mut redis::Connection) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::{Duration, Instant};
    /// use pylocks::{cmd, LockHandle};
    /// // Two locks in one round trip.
    /// let (a, b) = (cmd::acquire("a", Duration::from_secs(30)), cmd::acquire("b", Duration::from_secs(30)));
    /// let sent = Instant::now();
    /// let (la, lb): (Option<cmd::Lease>, Option<cmd::Lease>) =
    ///     redis::pipe().add_command(a.to_cmd()?).add_command(b.to_cmd()?).query(con)?;
    /// if let (Some(la), Some(lb)) = (la, lb) {
    ///     let (ha, hb) = (LockHandle::from_acquire(&a, la, sent)?, LockHandle::from_acquire(&b, lb, sent)?);
    ///     // ... work under both ...
    ///     ha.release(con)?;
    ///     hb.release(con)?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnexpectedReply`] when `lease` is not the lease the request names: the reply
    /// does not answer this request.
    pub fn from_acquire(
        request: &cmd::Acquire,
        lease: Lease,
        sent: Instant,
    ) -> Result<Self, Error> {
        if request.lease_id() != lease.id {
            return Err(Error::UnexpectedReply {
                command: pylock_core::Acquire::NAME,
                detail: format!(
                    "the request named lease {:?}, the reply {:?}",
                    request.lease_id(),
                    lease.id
                ),
            });
        }
        Ok(Self::new(
            request.key().to_string(),
            lease,
            sent,
            request.ttl(),
        ))
    }

    /// Records a fresh reply. The server measured the time left at some moment after `sent`,
    /// so `sent + ttl` is an instant before which the lease cannot have expired.
    fn update(&mut self, lease: Lease, sent: Instant) {
        self.token = lease.token;
        self.ttl_left = lease.ttl;
        self.valid_until = sent + lease.ttl;
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease id: the value to hand to a task, which calls
    /// [`LockFactory::get_handle`](crate::LockFactory::get_handle) with it.
    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// The fencing token of this lease: strictly greater than every token granted before for
    /// this key. A guarded resource can refuse writes that carry a lower token than it has seen.
    pub fn token(&self) -> i64 {
        self.token
    }

    /// Time left on the lease when the server last answered for it (acquire, confirm or extend).
    pub fn ttl(&self) -> Duration {
        self.ttl_left
    }

    /// The TTL a renewal asks for: the factory's TTL, or the last one given to
    /// [`extend`](Self::extend).
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// An instant, by this process's monotonic clock, before which the lease cannot have
    /// expired: the time the last request was sent plus the time left that the server
    /// reported. It assumes the server's clock runs at the same rate as ours, and does not
    /// cover a lease deleted by hand or an operator's `FLUSHALL`.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// Checks with the server that this lease still holds the lock (`PYLOCK.CONFIRM`), and
    /// refreshes [`ttl`](Self::ttl).
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`] or [`Error::NotOwned`] when the lease is lost; [`Error::Redis`] for
    /// transport failures; [`Error::UnexpectedReply`].
    pub fn confirm<C: redis::ConnectionLike + ?Sized>(&mut self, con: &mut C) -> Result<(), Error> {
        self.confirm_with(con, None)
    }

    /// Async [`confirm`](Self::confirm).
    ///
    /// # Errors
    ///
    /// As [`confirm`](Self::confirm).
    #[cfg(feature = "aio")]
    pub async fn confirm_async<C: redis::aio::ConnectionLike + ?Sized>(
        &mut self,
        con: &mut C,
    ) -> Result<(), Error> {
        self.confirm_with_async(con, None).await
    }

    /// Confirms the lease and sets its time left to `ttl` from now (`PYLOCK.CONFIRM … EXTEND`).
    /// Later renewals ask for the same `ttl`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTtl`] (before any network call), [`Error::NotHeld`],
    /// [`Error::NotOwned`], [`Error::Redis`] or [`Error::UnexpectedReply`].
    pub fn extend<C: redis::ConnectionLike + ?Sized>(
        &mut self,
        con: &mut C,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.confirm_with(con, Some(ttl))?;
        self.lease_ttl = ttl;
        Ok(())
    }

    /// Async [`extend`](Self::extend).
    ///
    /// # Errors
    ///
    /// As [`extend`](Self::extend).
    #[cfg(feature = "aio")]
    pub async fn extend_async<C: redis::aio::ConnectionLike + ?Sized>(
        &mut self,
        con: &mut C,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.confirm_with_async(con, Some(ttl)).await?;
        self.lease_ttl = ttl;
        Ok(())
    }

    /// The CONFIRM of this lease, for a pipeline (add `.extend(ttl)` to extend it). Its reply
    /// is a [`Lease`]; this handle does not see it, so its [`ttl`](Self::ttl) and
    /// [`valid_until`](Self::valid_until) stay as they were.
    pub fn confirm_cmd(&self) -> cmd::Confirm {
        cmd::confirm(&*self.key, &*self.lease_id)
    }

    /// The RELEASE of this lease, for a pipeline: for example the release and the work's last
    /// write in one round trip. Its reply is integer 1, or `NOTHELD` / `NOTOWNED`.
    pub fn release_cmd(&self) -> cmd::Release {
        cmd::release(&*self.key, &*self.lease_id)
    }

    fn confirm_request(&self, extend: Option<Duration>) -> cmd::Confirm {
        match extend {
            Some(ttl) => self.confirm_cmd().extend(ttl),
            None => self.confirm_cmd(),
        }
    }

    /// Every confirm goes through here; `extend` adds `EXTEND`.
    fn confirm_with<C: redis::ConnectionLike + ?Sized>(
        &mut self,
        con: &mut C,
        extend: Option<Duration>,
    ) -> Result<(), Error> {
        let cmd = self.confirm_request(extend).to_cmd()?;
        let sent = Instant::now();
        let reply = wire::run(con, &cmd);
        let lease = wire::confirm_reply(&self.key, reply)?;
        self.update(lease, sent);
        Ok(())
    }

    #[cfg(feature = "aio")]
    pub(crate) async fn confirm_with_async<C: redis::aio::ConnectionLike + ?Sized>(
        &mut self,
        con: &mut C,
        extend: Option<Duration>,
    ) -> Result<(), Error> {
        let cmd = self.confirm_request(extend).to_cmd()?;
        let sent = Instant::now();
        let reply = wire::run_async(con, &cmd).await;
        let lease = wire::confirm_reply(&self.key, reply)?;
        self.update(lease, sent);
        Ok(())
    }

    /// The id [`claim`](Self::claim) takes the lease over under when given no id of its own: a
    /// random UUID (version 4) made with this handle, the same for every clone of it.
    pub fn claim_id(&self) -> &str {
        &self.claim_id
    }

    /// The claim of this lease under [`claim_id`](Self::claim_id), for a pipeline
    /// (`PYLOCK.CONFIRM key lease-id CLAIM new-id`). Its reply is the new [`Lease`]; turn it
    /// into the new handle with [`claimed`](Self::claimed).
    pub fn claim_cmd(&self) -> cmd::Confirm {
        self.confirm_cmd().claim(&*self.claim_id)
    }

    /// Takes this lease over under a new id (`PYLOCK.CONFIRM … CLAIM`) and returns the new
    /// lease's handle: the new id, a new fencing token greater than every token granted before
    /// for the key, and the same deadline. The lock is never free in between.
    ///
    /// This is how a task that may run twice (a queue's redelivery, a retry while the first run
    /// is still alive) makes sure only one run goes on: each run claims the lease it was given,
    /// and only the first succeeds; every other gets [`Error::Claimed`].
    ///
    /// `new_id` names the new lease (1 to 128 bytes, not this lease's id); `None` uses
    /// [`claim_id`](Self::claim_id). Either way the id is fixed before anything is sent, so a
    /// claim sent again after a lost reply (a timeout, a broken connection), from this handle
    /// with the same `new_id`, gets the same new lease and token back instead of `CLAIMED`.
    /// This handle is left as it was, for such a retry; once the claim succeeded, its lease id
    /// no longer holds the lock (CONFIRM and RELEASE of it get `CLAIMED`).
    ///
    /// ```no_run
    /// # fn demo(people: &pylocks::LockFactory, client: &redis::Client, lease_id: &str) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut con = client.get_connection()?;
    /// let con = &mut con;
    /// let given = people.get_handle(con, [42], lease_id)?;
    /// let mine = match given.claim(con, None) {
    ///     Ok(mine) => mine,
    ///     Err(pylocks::Error::Claimed { .. }) => return Ok(()), // another run has it: skip
    ///     // The reply was lost: the same claim again, on a new connection.
    ///     Err(pylocks::Error::Redis(e)) if e.is_io_error() => {
    ///         given.claim(&mut client.get_connection()?, None)?
    ///     }
    ///     Err(e) => return Err(e.into()),
    /// };
    /// assert!(mine.token() > given.token());
    /// mine.releasing(con, |con| { /* the critical section, fenced with mine.token() */ }).into_result()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`Error::Claimed`] when the lease was claimed under another id;
    /// - [`Error::NotHeld`] or [`Error::NotOwned`] when the lease is lost;
    /// - [`Error::Redis`] for transport failures and other server errors (`ERR invalid lease
    ///   id` for a `new_id` that is empty, over 128 bytes or this lease's id);
    /// - [`Error::UnexpectedReply`], also when the reply names another lease than `new_id`.
    pub fn claim<C: redis::ConnectionLike + ?Sized>(
        &self,
        con: &mut C,
        new_id: Option<&str>,
    ) -> Result<LockHandle, Error> {
        let request = self.claim_request(new_id);
        let cmd = request.to_cmd()?;
        let sent = Instant::now();
        let reply = wire::run(con, &cmd);
        self.claimed(&request, wire::confirm_reply(&self.key, reply)?, sent)
    }

    /// Async [`claim`](Self::claim).
    ///
    /// # Errors
    ///
    /// As [`claim`](Self::claim).
    #[cfg(feature = "aio")]
    pub async fn claim_async<C: redis::aio::ConnectionLike + ?Sized>(
        &self,
        con: &mut C,
        new_id: Option<&str>,
    ) -> Result<LockHandle, Error> {
        let request = self.claim_request(new_id);
        let cmd = request.to_cmd()?;
        let sent = Instant::now();
        let reply = wire::run_async(con, &cmd).await;
        self.claimed(&request, wire::confirm_reply(&self.key, reply)?, sent)
    }

    fn claim_request(&self, new_id: Option<&str>) -> cmd::Confirm {
        self.confirm_cmd().claim(new_id.unwrap_or(&self.claim_id))
    }

    /// The handle of the lease a claim of this one granted, for a claim sent outside the
    /// handle ([`claim_cmd`](Self::claim_cmd) in a pipeline): `lease` is its reply and `sent`
    /// when it was sent. The new handle renews with this handle's
    /// [`lease_ttl`](Self::lease_ttl).
    ///
    /// # Errors
    ///
    /// [`Error::UnexpectedReply`] when `request` is not a claim, or `lease` is not the lease it
    /// names.
    pub fn claimed(
        &self,
        request: &cmd::Confirm,
        lease: Lease,
        sent: Instant,
    ) -> Result<LockHandle, Error> {
        if request.claim_id() != Some(lease.id.as_str()) {
            return Err(Error::UnexpectedReply {
                command: pylock_core::Confirm::NAME,
                detail: format!(
                    "the claim named lease {:?}, the reply {:?}",
                    request.claim_id(),
                    lease.id
                ),
            });
        }
        Ok(Self::new(self.key.clone(), lease, sent, self.lease_ttl))
    }

    /// Waits until this lease stops holding the lock, and says why (`PYLOCK.WATCH`).
    ///
    /// Answers at once when the lease is already gone ([`LeaseEnd::NotHeld`],
    /// [`LeaseEnd::NotOwned`], [`LeaseEnd::Claimed`]); otherwise blocks until it ends
    /// (released, expired, claimed, deleted, flushed, moved, demoted). `Ok(None)` when
    /// `timeout` passed with the lease still held (`None`: no limit), or when another client
    /// ended the wait with `CLIENT UNBLOCK`. Renewals (`EXTEND`) do not end the wait.
    ///
    /// The wait blocks the whole connection on the server: use a connection of its own. A sync
    /// `redis::Connection` needs a read timeout longer than `timeout` (none, the default, is
    /// fine); otherwise the client gives up first with an I/O error while the server still
    /// waits. [`Keeper`]s started with [`keep_alive_watching`](Self::keep_alive_watching)
    /// watch for you.
    ///
    /// ```no_run
    /// # fn demo(client: &redis::Client, handle: &pylocks::LockHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let mut watching = client.get_connection()?;
    /// match handle.watch(&mut watching, Some(Duration::from_secs(5)))? {
    ///     None => println!("still held"),
    ///     Some(end) => println!("the lease ended: {end}"), // released, expired, claimed, …
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] for transport failures (a read timeout too) and other server errors
    /// (`WRONGTYPE`); [`Error::UnexpectedReply`]. The server's `UNBLOCKED` error on a role
    /// change is not an error: it reads as [`LeaseEnd::Demoted`].
    pub fn watch<C: redis::ConnectionLike + ?Sized>(
        &self,
        con: &mut C,
        timeout: Option<Duration>,
    ) -> Result<Option<LeaseEnd>, Error> {
        let reply = wire::run(con, &self.watch_cmd(timeout).to_cmd());
        wire::watch_reply(&self.key, reply)
    }

    /// Async [`watch`](Self::watch).
    ///
    /// The connection's response timeout must exceed `timeout`: `MultiplexedConnection` and
    /// `ConnectionManager` give up after 500 ms unless configured otherwise (for example with
    /// `redis::AsyncConnectionConfig::new().set_response_timeout(None)`), and a connection
    /// shared with other work would wait behind the watch.
    ///
    /// # Errors
    ///
    /// As [`watch`](Self::watch).
    #[cfg(feature = "aio")]
    pub async fn watch_async<C: redis::aio::ConnectionLike + ?Sized>(
        &self,
        con: &mut C,
        timeout: Option<Duration>,
    ) -> Result<Option<LeaseEnd>, Error> {
        let reply = wire::run_async(con, &self.watch_cmd(timeout).to_cmd()).await;
        wire::watch_reply(&self.key, reply)
    }

    /// The WATCH of this lease, waiting up to `timeout` (`None`: no limit).
    pub fn watch_cmd(&self, timeout: Option<Duration>) -> cmd::Watch {
        let watch = cmd::watch(&*self.key, &*self.lease_id);
        match timeout {
            Some(t) => watch.timeout(t),
            None => watch,
        }
    }

    /// Gives the lock back (`PYLOCK.RELEASE`). A lease that was already lost is reported as an
    /// error, never as success: the work done under it may have overlapped another holder's.
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`] when the lease had expired, [`Error::NotOwned`] when another lease
    /// holds the lock (it is left untouched), [`Error::Redis`] for transport failures (the
    /// lease then ends at its TTL; a clone of the handle can retry), [`Error::UnexpectedReply`].
    pub fn release<C: redis::ConnectionLike + ?Sized>(self, con: &mut C) -> Result<(), Error> {
        let reply = wire::run(con, &self.release_cmd().to_cmd());
        wire::release_reply(&self.key, reply)
    }

    /// Async [`release`](Self::release).
    ///
    /// # Errors
    ///
    /// As [`release`](Self::release).
    #[cfg(feature = "aio")]
    pub async fn release_async<C: redis::aio::ConnectionLike + ?Sized>(
        self,
        con: &mut C,
    ) -> Result<(), Error> {
        let reply = wire::run_async(con, &self.release_cmd().to_cmd()).await;
        wire::release_reply(&self.key, reply)
    }

    /// Runs `work` with the connection, then releases the lease, whatever the work returned.
    ///
    /// The Rust form of the original `with handle.releasing():`. The returned [`Released`] holds
    /// both the work's output and the release outcome; a lost lease shows up there as
    /// [`Error::NotHeld`] or [`Error::NotOwned`].
    ///
    /// If `work` panics, the lease is released first and the panic then continues (the release
    /// outcome is lost with it).
    ///
    /// ```no_run
    /// # fn demo(people: &pylocks::LockFactory, con: &mut redis::Connection) -> Result<(), Box<dyn std::error::Error>> {
    /// let handle = people.acquire(con, [42])?;
    /// let scope = handle.releasing(con, |con| {
    ///     redis::cmd("INCRBY").arg("person:42").arg(5).query::<i64>(con)
    /// });
    /// let total = scope.into_result()??; // the lease was held throughout, and INCRBY worked
    /// # let _ = total; Ok(()) }
    /// ```
    pub fn releasing<C, R, F>(self, con: &mut C, work: F) -> Released<R>
    where
        C: redis::ConnectionLike + ?Sized,
        F: FnOnce(&mut C) -> R,
    {
        let outcome = catch_unwind(AssertUnwindSafe(|| work(&mut *con)));
        let release = self.release(con);
        match outcome {
            Ok(output) => Released { output, release },
            Err(panic) => resume_unwind(panic),
        }
    }

    /// Async [`releasing`](Self::releasing): `work` is an async closure given the connection.
    ///
    /// The lease is released after `work` finishes, returns an error or panics. If this future
    /// is itself dropped before it finishes (a timeout, a `select!`), no release is sent: the
    /// lease ends at its TTL.
    ///
    /// ```no_run
    /// # async fn demo(people: &pylocks::LockFactory, con: &mut redis::aio::MultiplexedConnection) -> Result<(), Box<dyn std::error::Error>> {
    /// let handle = people.acquire_async(con, [42]).await?;
    /// let scope = handle
    ///     .releasing_async(con, async |con| {
    ///         redis::cmd("INCRBY").arg("person:42").arg(5).query_async::<i64>(con).await
    ///     })
    ///     .await;
    /// let total = scope.into_result()??;
    /// # let _ = total; Ok(()) }
    /// ```
    #[cfg(feature = "aio")]
    pub async fn releasing_async<C, R, F>(self, con: &mut C, work: F) -> Released<R>
    where
        C: redis::aio::ConnectionLike + ?Sized,
        F: AsyncFnOnce(&mut C) -> R,
    {
        let outcome = {
            let mut fut = std::pin::pin!(work(&mut *con));
            std::future::poll_fn(|cx| {
                match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                    Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
                    Ok(Poll::Pending) => Poll::Pending,
                    Err(panic) => Poll::Ready(Err(panic)),
                }
            })
            .await
        };
        let release = self.release_async(con).await;
        match outcome {
            Ok(output) => Released { output, release },
            Err(panic) => resume_unwind(panic),
        }
    }

    /// Starts a [`Keeper`] that renews this lease in the background on a tokio runtime
    /// (`aio` feature).
    ///
    /// It extends the lease to [`lease_ttl`](Self::lease_ttl) every third of that TTL, using
    /// `con` (a clone of a `MultiplexedConnection` or `ConnectionManager`, or a cluster
    /// connection), until it is released, stopped or dropped.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    #[cfg(feature = "aio")]
    pub fn keep_alive<C>(self, con: C) -> Keeper
    where
        C: redis::aio::ConnectionLike + Send + 'static,
    {
        Keeper::start(self, con, None)
    }

    /// A [`Keeper`] that also watches the lease (`PYLOCK.WATCH`) on a connection of its own,
    /// opened from `client`, so that a loss is signalled within milliseconds of the lease's end
    /// rather than at the next renewal, with the reason ([`Error::LeaseEnded`]). Renewal is as
    /// for [`keep_alive`](Self::keep_alive), on `con`. `client` must name the same server as
    /// `con` (on a cluster, the key's primary).
    ///
    /// ```no_run
    /// # async fn demo(people: pylocks::LockFactory) -> Result<(), Box<dyn std::error::Error>> {
    /// let client = redis::Client::open("redis://127.0.0.1:6379/")?;
    /// let mut con = client.get_multiplexed_async_connection().await?;
    /// let keeper = people.acquire_async(&mut con, [42]).await?.keep_alive_watching(con.clone(), client);
    /// match keeper.while_held(async { /* a long computation */ }).await {
    ///     Ok(()) => keeper.release(&mut con).await?,
    ///     Err(lost) => eprintln!("stopped: {lost} ({:?})", lost.lease_end()), // e.g. Some(Deleted)
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    #[cfg(feature = "aio")]
    pub fn keep_alive_watching<C>(self, con: C, client: redis::Client) -> Keeper
    where
        C: redis::aio::ConnectionLike + Send + 'static,
    {
        Keeper::start(self, con, Some(client))
    }
}
