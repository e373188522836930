//! [`Keeper`]: renews a lease in the background for a long task, and says at once when it is lost.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

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
    /// The lease is lost: [`Error::NotHeld`], [`Error::NotOwned`], or [`Error::Unconfirmed`]
    /// when the server could not be reached before the lease was due to expire.
    Lost(Error),
}

/// Renews a lease in the background so that a task may outlive the lease's TTL.
///
/// Started with [`LockHandle::keep_alive`]. Every third of the lease TTL it sends
/// `PYLOCK.CONFIRM key lease EXTEND ttl`. When a renewal fails it does not carry on silently:
///
/// - `NOTHELD` or `NOTOWNED`: the lease is lost at once;
/// - any other failure (transport, timeout): it retries until the instant the lease may have
///   expired ([`LockHandle::valid_until`]), then reports [`Error::Unconfirmed`].
///
/// The task learns of a loss through [`LeaseWatch`] ([`Keeper::watch`]), or by running its
/// work inside [`Keeper::while_held`], which stops the work as soon as the lease is lost.
///
/// Dropping a keeper aborts the renewing task; it sends nothing, and the lease ends at its TTL.
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
    pub(crate) fn start<C>(handle: LockHandle, con: C) -> Self
    where
        C: redis::aio::ConnectionLike + Send + 'static,
    {
        let (tx, rx) = watch::channel(LeaseStatus::Held);
        let task = tokio::spawn(renew(handle.clone(), con, tx));
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
    /// The loss ([`Error::NotHeld`], [`Error::NotOwned`] or [`Error::Unconfirmed`]) as soon as
    /// the keeper finds the lease lost; `work` is then dropped where it stood.
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

/// The renewing task: extends every third of the TTL, retries transport failures until the
/// lease may have expired, and publishes a loss before it ends.
async fn renew<C>(mut handle: LockHandle, mut con: C, status: watch::Sender<LeaseStatus>)
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
    let loss = loop {
        tokio::time::sleep(wait).await;
        let deadline = Instant::from_std(handle.valid_until());
        let attempt = handle.confirm_with_async(&mut con, Some(ttl));
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(())) => {
                last_error = None;
                wait = next_renewal(&handle);
            }
            Ok(Err(e)) if e.is_lease_lost() => break e,
            Ok(Err(e)) => {
                if let Error::Redis(e) = e {
                    last_error = Some(e);
                }
                let now = Instant::now();
                if now >= deadline {
                    break Error::Unconfirmed {
                        key: handle.key().to_string(),
                        cause: last_error,
                    };
                }
                wait = retry.min(deadline - now);
            }
            Err(_elapsed) => {
                break Error::Unconfirmed {
                    key: handle.key().to_string(),
                    cause: last_error,
                }
            }
        }
    };
    status.send_replace(LeaseStatus::Lost(loss));
}
