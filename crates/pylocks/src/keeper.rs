//! [`Keeper`]: renews a lease in the background for a long task, and says at once when it is lost.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use redis::AsyncConnectionConfig;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Error, LockHandle};

/// Whether a kept lease is still held, as the [`Keeper`] last learned.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LeaseStatus {
    /// Every renewal so far succeeded.
    Held,
    /// The lease is lost: [`Error::LeaseEnded`] with the reason when the keeper's watch saw it
    /// end; [`Error::NotHeld`], [`Error::NotOwned`] or [`Error::Claimed`] when a renewal was
    /// refused; or [`Error::Unconfirmed`] when the server could not be reached before the lease
    /// was due to expire. [`Error::lease_end`] gives the reason of all but the last.
    Lost(Error),
}

/// Renews a lease in the background so that a task may outlive the lease's TTL.
///
/// Started with [`LockHandle::keep_alive`] or [`LockHandle::keep_alive_watching`]. Every third
/// of the lease TTL it sends `PYLOCK.CONFIRM key lease EXTEND ttl`. When a renewal fails it
/// does not carry on silently:
///
/// - `NOTHELD`, `NOTOWNED` or `CLAIMED`: the lease is lost at once;
/// - any other failure (transport, timeout): it retries until the instant the lease may have
///   expired ([`LockHandle::valid_until`]), then reports [`Error::Unconfirmed`].
///
/// A keeper from [`keep_alive_watching`](LockHandle::keep_alive_watching) also waits on
/// `PYLOCK.WATCH` on a connection of its own, so that a lease that ends between renewals (a
/// `DEL`, a `FLUSHALL`, a claim or release by another process) is reported within milliseconds,
/// as [`Error::LeaseEnded`] with the reason. A watch connection that fails is opened again,
/// with a backoff; a server that refuses WATCH altogether (a module without it, an ACL) leaves
/// the renewals alone to find a loss.
///
/// The task learns of a loss through [`LeaseWatch`] ([`Keeper::watch`]), or by running its
/// work inside [`Keeper::while_held`], which stops the work as soon as the lease is lost.
///
/// Dropping a keeper aborts the renewing task; it sends nothing, and the lease ends at its TTL.
/// The watch connection closes with the task; the server drops its wait then, or at the latest
/// when the watch's bounded wait runs out.
/// Call [`Keeper::release`] to give the lock back.
#[derive(Debug)]
pub struct Keeper {
    handle: LockHandle,
    watch: LeaseWatch,
    task: AbortOnDrop,
}

/// Aborts the renewing task when dropped. Aborting is local: no network call.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Observes a [`Keeper`]'s lease. Cheap to clone; each clone can be awaited on its own.
#[derive(Debug, Clone)]
pub struct LeaseWatch(watch::Receiver<LeaseStatus>);

impl LeaseWatch {
    /// The current status.
    pub fn status(&self) -> LeaseStatus {
        self.0.borrow().clone()
    }

    /// Whether the lease has been found lost.
    pub fn is_lost(&self) -> bool {
        matches!(*self.0.borrow(), LeaseStatus::Lost(_))
    }

    /// Waits until the lease is found lost and returns why. `None` when the keeper stopped
    /// (released, stopped or dropped) with the lease still held.
    pub async fn lost(&mut self) -> Option<Error> {
        let status = self
            .0
            .wait_for(|s| matches!(s, LeaseStatus::Lost(_)))
            .await
            .ok()?;
        match &*status {
            LeaseStatus::Lost(e) => Some(e.clone()),
            LeaseStatus::Held => None,
        }
    }
}

impl Keeper {
    /// Starts the task; with `watch_from`, it also watches the lease on a connection it opens
    /// from that client.
    pub(crate) fn start<C>(handle: LockHandle, con: C, watch_from: Option<redis::Client>) -> Self
    where
        C: redis::aio::ConnectionLike + Send + 'static,
    {
        let (tx, rx) = watch::channel(LeaseStatus::Held);
        let task = tokio::spawn(keep(handle.clone(), con, watch_from, tx));
        Keeper {
            handle,
            watch: LeaseWatch(rx),
            task: AbortOnDrop(task),
        }
    }

    /// The kept lease (its key, lease id and fencing token).
    pub fn handle(&self) -> &LockHandle {
        &self.handle
    }

    /// A watch on the lease, for a task that checks or awaits loss itself.
    pub fn watch(&self) -> LeaseWatch {
        self.watch.clone()
    }

    /// The current status.
    pub fn status(&self) -> LeaseStatus {
        self.watch.status()
    }

    /// Runs `work` for as long as the lease is held.
    ///
    /// # Errors
    ///
    /// The loss (see [`LeaseStatus::Lost`]) as soon as the keeper finds the lease lost; `work`
    /// is then dropped where it stood.
    pub async fn while_held<F: Future>(&self, work: F) -> Result<F::Output, Error> {
        let mut watch = self.watch.clone();
        let mut lost = std::pin::pin!(async move {
            match watch.lost().await {
                Some(e) => e,
                // The renewing task cannot end while `self` is borrowed, except by a panic.
                None => std::future::pending().await,
            }
        });
        let mut work = std::pin::pin!(work);
        // The loss is polled first, so work that is ready in the same wake-up as a loss is
        // not reported as done under a lost lease. (Written out rather than `tokio::select!`,
        // which would put tokio's `macros` feature in the library's dependencies.)
        std::future::poll_fn(|cx| {
            if let Poll::Ready(e) = lost.as_mut().poll(cx) {
                return Poll::Ready(Err(e));
            }
            work.as_mut().poll(cx).map(Ok)
        })
        .await
    }

    /// Stops renewing and returns the handle; the lease then ends at its TTL unless released.
    pub async fn stop(self) -> LockHandle {
        let mut this = self;
        this.task.0.abort();
        // Wait for the abort so that no renewal is in flight when the caller goes on.
        let _ = (&mut this.task.0).await;
        this.handle
    }

    /// Stops renewing and releases the lock.
    ///
    /// # Errors
    ///
    /// The loss, if the keeper already found the lease lost; otherwise as
    /// [`LockHandle::release`].
    pub async fn release<C: redis::aio::ConnectionLike + ?Sized>(
        self,
        con: &mut C,
    ) -> Result<(), Error> {
        let status = self.status();
        let handle = self.stop().await;
        if let LeaseStatus::Lost(e) = status {
            return Err(e);
        }
        handle.release_async(con).await
    }
}

/// The keeper's task: renews and, with a client, watches, until one of them finds the lease
/// lost; then publishes the loss and ends. Both run in this one task so that aborting it stops
/// both, and whichever learns of the end first reports it.
async fn keep<C>(
    handle: LockHandle,
    con: C,
    watch_from: Option<redis::Client>,
    status: watch::Sender<LeaseStatus>,
) where
    C: redis::aio::ConnectionLike + Send + 'static,
{
    let mut renewal = pin!(renew(handle.clone(), con));
    let mut watching = pin!(async {
        match watch_from {
            Some(client) => watch_lease(&handle, client).await,
            None => std::future::pending().await,
        }
    });
    let loss = std::future::poll_fn(|cx| {
        if let Poll::Ready(e) = watching.as_mut().poll(cx) {
            return Poll::Ready(e);
        }
        renewal.as_mut().poll(cx)
    })
    .await;
    status.send_replace(LeaseStatus::Lost(loss));
}

/// How long one `PYLOCK.WATCH` may wait on the server before it answers nil and is sent again.
///
/// The watch ends with the keeper by closing its connection (the task is aborted, and `Drop`
/// sends nothing), not by `CLIENT UNBLOCK` from the renewal connection: that would need a
/// network call when the keeper stops, which `Drop` cannot make, and the client id of a
/// connection the driver may have reopened. A closed connection ends the server's wait at
/// once; the bound on each wait is what makes that hold even where the close is not seen
/// (a half-open connection, a driver that keeps the socket until the reply comes), and what
/// lets the keeper notice a watch connection that went silent.
const WATCH_WAIT: Duration = Duration::from_secs(2);
/// How much longer than [`WATCH_WAIT`] the client waits for the answer before it takes the
/// watch connection for dead and opens another.
const WATCH_SLACK: Duration = Duration::from_secs(2);
/// The first and the longest pause before the watch connection is opened again.
const WATCH_RETRY: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Watches the lease on a connection of its own, in bounded waits, until it ends; returns the
/// loss. Transport failures reopen the connection with a backoff, for as long as the keeper
/// runs: the renewals bound that, since a server that cannot be reached ends in
/// [`Error::Unconfirmed`]. A server that refuses WATCH (no retry helps) leaves the renewals alone
/// to find a loss: this then waits forever.
async fn watch_lease(handle: &LockHandle, client: redis::Client) -> Error {
    // The response timeout is ours (`WATCH_WAIT + WATCH_SLACK`), not the driver's 500 ms
    // default, which would end every wait early.
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(WATCH_SLACK))
        .set_response_timeout(None);
    let mut con = None;
    let mut pause = WATCH_RETRY.0;
    loop {
        let c = match &mut con {
            Some(c) => c,
            None => match client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(c) => con.insert(c),
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(WATCH_RETRY.1);
                    continue;
                }
            },
        };
        let wait = handle.watch_async(c, Some(WATCH_WAIT));
        match tokio::time::timeout(WATCH_WAIT + WATCH_SLACK, wait).await {
            // Still held (or another client unblocked the wait): wait again.
            Ok(Ok(None)) => pause = WATCH_RETRY.0,
            Ok(Ok(Some(reason))) => {
                return Error::LeaseEnded {
                    key: handle.key().to_string(),
                    reason,
                }
            }
            Ok(Err(Error::Redis(e))) if matches!(e.retry_method(), redis::RetryMethod::NoRetry) => {
                return std::future::pending().await;
            }
            // A transport failure, or no answer in time: open a new connection.
            Ok(Err(_)) | Err(_) => {
                con = None;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(WATCH_RETRY.1);
            }
        }
    }
}

/// The renewals: extends every third of the TTL, retries transport failures until the lease
/// may have expired, and returns the loss.
async fn renew<C>(mut handle: LockHandle, mut con: C) -> Error
where
    C: redis::aio::ConnectionLike + Send + 'static,
{
    let ttl = handle.lease_ttl();
    let period = (ttl / 3).max(Duration::from_millis(1));
    let retry = (ttl / 20).max(Duration::from_millis(5));
    // Renew every third of the TTL, and well before the lease may expire when less is left
    // (a handle from `get_handle` may come with little time left).
    let next_renewal = |handle: &LockHandle| {
        let left =
            Instant::from_std(handle.valid_until()).saturating_duration_since(Instant::now());
        period.min(left / 2)
    };
    let mut wait = next_renewal(&handle);
    let mut last_error: Option<redis::RedisError> = None;
    loop {
        tokio::time::sleep(wait).await;
        let deadline = Instant::from_std(handle.valid_until());
        let attempt = handle.confirm_with_async(&mut con, Some(ttl));
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(())) => {
                last_error = None;
                wait = next_renewal(&handle);
            }
            Ok(Err(e)) if e.is_lease_lost() => return e,
            Ok(Err(e)) => {
                if let Error::Redis(e) = e {
                    last_error = Some(e);
                }
                let now = Instant::now();
                if now >= deadline {
                    return Error::Unconfirmed {
                        key: handle.key().to_string(),
                        cause: last_error,
                    };
                }
                wait = retry.min(deadline - now);
            }
            Err(_elapsed) => {
                return Error::Unconfirmed {
                    key: handle.key().to_string(),
                    cause: last_error,
                }
            }
        }
    }
}
