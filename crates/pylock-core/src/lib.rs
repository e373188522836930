//! The PYLOCK protocol without Redis: lease rules, argument parsing, reply shapes and error codes.
//!
//! # Layout
//!
//! - [`error`]: every error a command can answer, with its exact wire text, in one place.
//! - [`int`]: integer parsing with the rules Redis applies to its own numeric arguments.
//! - [`command`]: one type per command. Each parses its arguments (after the key) and can write
//!   them back out, so the module and the client share a single definition of the wire format.
//! - [`lease`]: the lease rules, as pure functions of the stored state, the request and `now`.
//! - [`token`]: fencing-token allocation.
//! - [`stored`]: which locks read back from an RDB, AOF preamble or `DUMP` payload are kept.
//! - [`watch`]: why a lease ended, as `PYLOCK.WATCH` answers it.
//! - [`queue`]: the rules of fair waiting: FIFO hand-off, same-LEASE retries, taking back a
//!   grant nobody received, BLOCK timeouts.
//! - [`reply`]: the shapes of the replies, written through a [`reply::ReplySink`] so that the
//!   module can emit them without allocating and the client can parse them back.
//!
//! Nothing here reads a clock: every function that needs the time takes `now_ms`.

pub mod command;
pub mod error;
pub mod int;
pub mod lease;
pub mod queue;
pub mod reply;
pub mod stored;
pub mod token;
pub mod watch;

pub use command::{Acquire, Confirm, Info, Release, Watch};
pub use error::CommandError;
pub use lease::{LeaseState, Leases, Outcome};
pub use reply::{LeaseReply, ReplySink};
pub use token::TokenClock;

/// The largest lease id a caller may supply, in bytes.
pub const MAX_LEASE_ID_LEN: usize = 128;

/// The largest `LIMIT` a semaphore may have: the most leases one key admits at once.
pub const MAX_LIMIT: u32 = 100_000;

/// Length of a server-made lease id: a lowercase hyphenated UUID.
pub const UUID_LEN: usize = 36;
