//! Where leases live: the `pylock-lk` module data type, and typed access to a lock's key.
//!
//! A lock is one key of our own type holding the lease id, fencing token, the lease's own
//! deadline and the id it was claimed from; the key's (absolute) expiry is set to the deadline,
//! so Redis expires locks, evicts them per `maxmemory-policy` and sends replicas a DEL exactly
//! as for any other key, while a generic command that moves the expiry cannot extend a lease.
//! A semaphore (n > 1) is a key of the same type holding a [`Sem`] (every lease), the key's
//! expiry its latest lease's deadline; the value pointer's low bit tells the two apart. See
//! `docs/DESIGN.md` for why a module type rather than a string or hash.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, Ordering};

use pylock_core::{stored, LeaseState, TokenClock};
use redis_module::native_types::RedisType;
use redis_module::raw;

use crate::api::{guard, now_ms, Arg, Content, Ctx, Digest, Io, Key, KeyOpt, Mode, Read, Write};
use crate::sem::{Sem, SemView, Slot};

/// The low bit of a stored value's pointer: set for a semaphore ([`Sem`], boxed), clear for a
/// lock ([`Lock`]). Both are 8-aligned, and Redis never looks inside a module value.
const SEM_TAG: usize = 1;

/// A stored value, borrowed: a lock (one lease, n = 1) or a semaphore (n > 1).
#[derive(Clone, Copy)]
pub(crate) enum Stored<'a> {
    Lock(LockRef<'a>),
    Sem(&'a Sem),
}

/// Reads a value Redis holds for our type.
///
/// # Safety
///
/// `value` must be null or a value made by [`Lock::into_raw`] or [`sem_into_raw`] that
/// outlives `'a`.
unsafe fn decode<'a>(value: *const c_void) -> Option<Stored<'a>> {
    let bits = value as usize;
    if bits & SEM_TAG != 0 {
        let ptr = (bits & !SEM_TAG) as *const Sem;
        ptr.as_ref().map(Stored::Sem)
    } else {
        LockRef::from_raw(value).map(Stored::Lock)
    }
}

/// Semaphore values in existence: while there are none, no walk looks for them.
static SEM_VALUES: AtomicI64 = AtomicI64::new(0);

/// Calls `f` with the database, key and earliest lease deadline of every semaphore in every
/// database: after loading, or on a promoted replica, their expiry timers are armed from here.
/// Walks the keyspace only while semaphores exist.
pub(crate) fn for_each_sem(ctx: Ctx, mut f: impl FnMut(c_int, &[u8], i64)) {
    if SEM_VALUES.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut found = Vec::new();
    let mut db = 0;
    while ctx.try_select_db(db) {
        ctx.scan_values(lock_type(), |name, value, _| {
            // SAFETY: a value of our type, alive while the scan callback runs.
            if let Some(Stored::Sem(sem)) = unsafe { decode(value) } {
                if let Some(at) = sem.earliest() {
                    found.push((db, Box::<[u8]>::from(name), at));
                }
            }
        });
        db += 1;
    }
    ctx.select_db(0);
    for (db, key, at) in found {
        f(db, &key, at);
    }
}

/// Hands a semaphore to Redis.
fn sem_into_raw(sem: Box<Sem>) -> *mut c_void {
    LOCK_VALUES.fetch_add(1, Ordering::Relaxed);
    SEM_VALUES.fetch_add(1, Ordering::Relaxed);
    (Box::into_raw(sem) as usize | SEM_TAG) as *mut c_void
}

/// Frees any value of our type.
///
/// # Safety
///
/// `value` must come from [`Lock::into_raw`] or [`sem_into_raw`] and not be used again.
unsafe fn free_value(value: *mut c_void) {
    let bits = value as usize;
    if bits & SEM_TAG != 0 {
        let ptr = (bits & !SEM_TAG) as *mut Sem;
        if !ptr.is_null() {
            LOCK_VALUES.fetch_sub(1, Ordering::Relaxed);
            SEM_VALUES.fetch_sub(1, Ordering::Relaxed);
            drop(Box::from_raw(ptr));
        }
    } else {
        drop(Lock::from_raw(value));
    }
}

/// A key's leases as the lease rules see them: a lock or a semaphore, one code path in the
/// rules (`pylock_core::Leases`).
#[derive(Clone, Copy)]
pub(crate) enum Held<'a> {
    Lock(Option<LeaseState<'a>>),
    Sem(SemView<'a>),
}

impl<'a> pylock_core::Leases<'a> for Held<'a> {
    fn limit(&self) -> u32 {
        match self {
            Held::Lock(l) => l.limit(),
            Held::Sem(s) => s.limit(),
        }
    }
    fn live(&self, now_ms: i64) -> usize {
        match self {
            Held::Lock(l) => l.live(now_ms),
            Held::Sem(s) => s.live(now_ms),
        }
    }
    fn lease(&self, id: &[u8], now_ms: i64) -> Option<LeaseState<'a>> {
        match self {
            Held::Lock(l) => l.lease(id, now_ms),
            Held::Sem(s) => s.lease(id, now_ms),
        }
    }
    fn claimed_from(&self, id: &[u8], now_ms: i64) -> Option<LeaseState<'a>> {
        match self {
            Held::Lock(l) => l.claimed_from(id, now_ms),
            Held::Sem(s) => s.claimed_from(id, now_ms),
        }
    }
}

impl<'a> Held<'a> {
    /// What a watcher of lease `id` finds at the key: the lease itself (live or not), else a
    /// live lease claimed from it; for a lock, whatever lease it holds.
    pub(crate) fn current_for(&self, id: &[u8], now_ms: i64) -> Option<LeaseState<'a>> {
        use pylock_core::Leases;
        match self {
            Held::Lock(l) => *l,
            Held::Sem(s) => s.stored(id).or_else(|| s.claimed_from(id, now_ms)),
        }
    }

    /// The earliest deadline of a live lease (when a place may next free up).
    pub(crate) fn next_end(&self) -> Option<i64> {
        match self {
            Held::Lock(l) => l.and_then(|s| s.expires_at_ms),
            Held::Sem(s) => {
                let e = s.sem.earliest()?;
                Some(s.key_expiry_ms.map_or(e, |k| k.min(e)))
            }
        }
    }
}

/// The stored value of a held lock: one allocation holding the fencing token, the lease's own
/// deadline, the lengths of the id and of the claimed-from id, and the two ids
/// (`[token: i64][deadline: i64][id len: u32][from len: u32][id][from]`). A 36-byte UUID makes
/// it 60 bytes, one allocator size class (64). The RDB encoding does not depend on this layout.
///
/// The deadline is the lease's, and the key's expiry is set to it; the two part only when a
/// generic command moves the key's expiry (see `blocking::events`). The lease ends at the
/// earlier of the two. [`NO_DEADLINE`] marks a lease loaded from encoding 0, which had only the
/// key's expiry.
pub(crate) struct Lock(NonNull<u8>);

const DEADLINE_AT: usize = size_of::<i64>();
const ID_LEN_AT: usize = DEADLINE_AT + size_of::<i64>();
const FROM_LEN_AT: usize = ID_LEN_AT + size_of::<u32>();
const ID_AT: usize = FROM_LEN_AT + size_of::<u32>();
/// The stored deadline of a lease without one.
const NO_DEADLINE: i64 = i64::MIN;

impl Lock {
    fn layout(ids_len: usize) -> Option<Layout> {
        Layout::from_size_align(ID_AT.checked_add(ids_len)?, align_of::<i64>()).ok()
    }

    /// A lock value holding `token`, `deadline_ms` and copies of `id` and `claimed_from`;
    /// `None` if an id is over `u32::MAX` bytes (callers accept at most `MAX_LEASE_ID_LEN`).
    pub(crate) fn new(
        token: i64,
        deadline_ms: Option<i64>,
        id: &[u8],
        claimed_from: Option<&[u8]>,
    ) -> Option<Self> {
        let from = claimed_from.unwrap_or_default();
        let id_len = u32::try_from(id.len()).ok()?;
        let from_len = u32::try_from(from.len()).ok()?;
        let layout = Self::layout(id.len().checked_add(from.len())?)?;
        // SAFETY: the layout is non-zero in size; every byte written is inside it, the token
        // and deadline at 8-aligned offsets 0 and 8, the lengths at 16 and 20, the ids from 24.
        unsafe {
            let ptr = NonNull::new(alloc(layout)).unwrap_or_else(|| handle_alloc_error(layout));
            let base = ptr.as_ptr();
            base.cast::<i64>().write(token);
            base.add(DEADLINE_AT)
                .cast::<i64>()
                .write(deadline_ms.unwrap_or(NO_DEADLINE));
            base.add(ID_LEN_AT).cast::<u32>().write_unaligned(id_len);
            base.add(FROM_LEN_AT)
                .cast::<u32>()
                .write_unaligned(from_len);
            std::ptr::copy_nonoverlapping(id.as_ptr(), base.add(ID_AT), id.len());
            std::ptr::copy_nonoverlapping(from.as_ptr(), base.add(ID_AT + id.len()), from.len());
            LOCK_VALUES.fetch_add(1, Ordering::Relaxed);
            Some(Self(ptr))
        }
    }

    /// Hands the value to Redis.
    fn into_raw(self) -> *mut c_void {
        let ptr = self.0.as_ptr();
        std::mem::forget(self);
        ptr.cast()
    }

    /// Takes back a value Redis handed to a callback (`free`), or that it did not take.
    ///
    /// # Safety
    ///
    /// `value` must come from [`Lock::into_raw`] and not be used again.
    unsafe fn from_raw(value: *mut c_void) -> Option<Self> {
        NonNull::new(value.cast()).map(Self)
    }

    fn as_ref(&self) -> LockRef<'_> {
        LockRef {
            ptr: self.0,
            _value: PhantomData,
        }
    }
}

/// Lock values in existence (in any database, or being loaded or freed): while there are none,
/// no key can be a lock, and the keyspace handler skips looking (see [`may_be_a_lock`]).
static LOCK_VALUES: AtomicI64 = AtomicI64::new(0);

/// False when no lock value exists anywhere, so no key can hold one.
pub(crate) fn may_be_a_lock() -> bool {
    LOCK_VALUES.load(Ordering::Relaxed) > 0
}

impl Drop for Lock {
    fn drop(&mut self) {
        LOCK_VALUES.fetch_sub(1, Ordering::Relaxed);
        let lock = self.as_ref();
        // `new` succeeded with these lengths, so the layout exists.
        if let Some(layout) = Self::layout(lock.ids_len()) {
            // SAFETY: allocated in `new` with this same layout.
            unsafe { dealloc(self.0.as_ptr(), layout) };
        }
    }
}

/// A borrowed lock value (stored in a key, or handed to a data type callback).
#[derive(Clone, Copy)]
pub(crate) struct LockRef<'a> {
    ptr: NonNull<u8>,
    _value: PhantomData<&'a Lock>,
}

impl<'a> LockRef<'a> {
    /// # Safety
    ///
    /// `value` must be null or a value made by [`Lock::into_raw`] that outlives `'a`.
    unsafe fn from_raw(value: *const c_void) -> Option<Self> {
        NonNull::new(value.cast_mut().cast()).map(|ptr| Self {
            ptr,
            _value: PhantomData,
        })
    }

    /// The fencing token of the grant.
    pub(crate) fn token(self) -> i64 {
        // SAFETY: offset 0 of a live value, 8-aligned (see `Lock::new`).
        unsafe { self.ptr.as_ptr().cast::<i64>().read() }
    }

    /// The lease's own deadline (Unix ms); `None` for a lease loaded without one.
    pub(crate) fn deadline_ms(self) -> Option<i64> {
        // SAFETY: offset 8 of a live value, 8-aligned (see `Lock::new`).
        let at = unsafe { self.ptr.as_ptr().add(DEADLINE_AT).cast::<i64>().read() };
        (at != NO_DEADLINE).then_some(at)
    }

    /// Moves the lease's own deadline in place. Only this field changes, so borrows of the ids
    /// stay valid; the value lives in Redis's keyspace and is only touched on the main thread.
    fn write_deadline(self, deadline_ms: Option<i64>) {
        // SAFETY: offset 8 of a live value, 8-aligned; the pointer came from Redis's
        // `*mut` value, and no Rust reference to this field exists.
        unsafe {
            self.ptr
                .as_ptr()
                .add(DEADLINE_AT)
                .cast::<i64>()
                .write(deadline_ms.unwrap_or(NO_DEADLINE));
        }
    }

    fn len_at(self, at: usize) -> usize {
        // SAFETY: `Lock::new` wrote both lengths.
        unsafe { self.ptr.as_ptr().add(at).cast::<u32>().read_unaligned() as usize }
    }

    fn ids_len(self) -> usize {
        self.len_at(ID_LEN_AT) + self.len_at(FROM_LEN_AT)
    }

    /// The lease id.
    pub(crate) fn id(self) -> &'a [u8] {
        // SAFETY: `Lock::new` wrote that many bytes at `ID_AT`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(ID_AT), self.len_at(ID_LEN_AT)) }
    }

    /// The id this lease was claimed from (`CONFIRM … CLAIM`), if it was.
    pub(crate) fn claimed_from(self) -> Option<&'a [u8]> {
        let len = self.len_at(FROM_LEN_AT);
        // SAFETY: `Lock::new` wrote that many bytes right after the id.
        let from = unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(ID_AT + self.len_at(ID_LEN_AT)), len)
        };
        (len > 0).then_some(from)
    }
}

/// Type name as `TYPE key` shows it (Redis requires exactly 9 characters).
pub(crate) const TYPE_NAME: &str = "pylock-lk";
/// Bumped whenever the RDB encoding changes; `rdb_load` refuses versions it does not know.
const ENCODING_VERSION: c_int = stored::ENCODING_VERSION;

pub(crate) static LOCK_TYPE: RedisType = RedisType::new(
    TYPE_NAME,
    ENCODING_VERSION,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: Some(aof_rewrite),
        mem_usage: Some(mem_usage),
        digest: Some(digest),
        free: Some(free),
        aux_load: Some(aux_load),
        aux_save: Some(aux_save),
        aux_save2: None,
        aux_save_triggers: raw::REDISMODULE_AUX_BEFORE_RDB as c_int,
        free_effort: None,
        unlink: None,
        // No copy callback: COPY of a lock would hand the destination key a token that need not
        // exceed the destination's earlier tokens, so Redis answers COPY with an error instead.
        copy: None,
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: Some(unlink2),
        copy2: None,
    },
);

/// The server-wide fencing-token high-water mark (see `pylock_core::token`). Module callbacks
/// all run on Redis's main thread; the atomic only makes the static safe to share.
static TOKEN_HIGH_WATER: AtomicI64 = AtomicI64::new(0);

/// Locks of encoding 0 loaded since the last [`adopt_legacy_deadlines`]: they have no deadline
/// of their own yet.
static LEGACY_LOADED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// After loading (an RDB, an AOF preamble, a full sync) that brought locks of encoding 0, which
/// had only the key's expiry: every such lock takes its key's expiry as its own deadline, so a
/// later PERSIST or EXPIRE cannot extend it. Walks every database once, only when such locks
/// were loaded; a RESTORE of one is handled where it lands (`LockKey::state`).
pub(crate) fn adopt_legacy_deadlines(ctx: Ctx) {
    if LEGACY_LOADED.swap(0, Ordering::Relaxed) == 0 {
        return;
    }
    let mut db = 0;
    while ctx.try_select_db(db) {
        ctx.scan_values(lock_type(), |_, value, expires| {
            // SAFETY: a value of our type, alive while the scan callback runs.
            if let (Some(Stored::Lock(lock)), Some(at)) = (unsafe { decode(value) }, expires) {
                if lock.deadline_ms().is_none() {
                    lock.write_deadline(Some(at));
                }
            }
        });
        db += 1;
    }
    ctx.select_db(0);
}

/// Takes the next fencing token, or `None` once the token space is exhausted.
pub(crate) fn next_token(now_ms: i64) -> Option<i64> {
    let mut clock = TokenClock::new();
    clock.observe(TOKEN_HIGH_WATER.load(Ordering::Relaxed));
    let token = clock.next(now_ms)?;
    TOKEN_HIGH_WATER.store(token, Ordering::Relaxed);
    Some(token)
}

/// The largest token granted or observed so far.
pub(crate) fn token_high_water() -> i64 {
    TOKEN_HIGH_WATER.load(Ordering::Relaxed)
}

/// Raises the high-water mark to a token granted elsewhere (loaded, or from the primary).
pub(crate) fn observe_token(token: i64) {
    TOKEN_HIGH_WATER.fetch_max(token, Ordering::Relaxed);
}

/// Adapts the server-wide token sequence to the pure rules.
pub(crate) struct TokenSource;

impl pylock_core::lease::Tokens for TokenSource {
    fn next(&mut self, now_ms: i64) -> Option<i64> {
        next_token(now_ms)
    }
}

/// The key holds a value of another type.
pub(crate) struct WrongType;

/// A lock's key, open for reading ([`Read`]) or writing ([`Write`]).
pub(crate) struct LockKey<M: Mode>(Key<M>);

impl LockKey<Read> {
    /// Opens `name` for reading: a key that does not exist or has expired reads as empty.
    pub(crate) fn read(ctx: Ctx, name: &Arg) -> Self {
        Self(ctx.open_read(name))
    }
}

impl LockKey<Write> {
    /// Opens `name` for writing.
    pub(crate) fn write(ctx: Ctx, name: &Arg) -> Self {
        Self(ctx.open_write(name))
    }
}

fn lock_type() -> *mut raw::RedisModuleType {
    *LOCK_TYPE.raw_type.borrow()
}

impl<M: Mode> LockKey<M> {
    /// The value stored here: `Ok(None)` if the key is empty.
    ///
    /// # Errors
    ///
    /// [`WrongType`] if the key holds any other type.
    pub(crate) fn stored(&self) -> Result<Option<Stored<'_>>, WrongType> {
        match self.0.content(lock_type()) {
            Content::Empty => Ok(None),
            // SAFETY: a value of our type is always made by `Lock::into_raw` or
            // `sem_into_raw`, and the borrow of `self` keeps the key open.
            Content::Ours(value) => Ok(unsafe { decode(value) }),
            Content::Other => Err(WrongType),
        }
    }

    /// The lock stored here: `Ok(None)` if the key is empty or holds a semaphore.
    ///
    /// # Errors
    ///
    /// [`WrongType`] if the key holds any other type.
    pub(crate) fn lock(&self) -> Result<Option<LockRef<'_>>, WrongType> {
        Ok(match self.stored()? {
            Some(Stored::Lock(l)) => Some(l),
            _ => None,
        })
    }

    /// The semaphore stored here, if the key holds one.
    pub(crate) fn sem(&self) -> Option<&Sem> {
        match self.stored() {
            Ok(Some(Stored::Sem(s))) => Some(s),
            _ => None,
        }
    }

    /// The key's leases as the rules see them.
    ///
    /// # Errors
    ///
    /// [`WrongType`] if the key holds any other type.
    pub(crate) fn held(&self) -> Result<Held<'_>, WrongType> {
        match self.stored()? {
            Some(Stored::Sem(s)) => Ok(Held::Sem(s.view(self.expires_at_ms()))),
            _ => self.state().map(Held::Lock),
        }
    }

    /// The key's absolute expiry in Unix ms, `None` if it has none.
    pub(crate) fn expires_at_ms(&self) -> Option<i64> {
        self.0.expires_at_ms()
    }

    /// The lease state as the pure rules see it.
    ///
    /// # Errors
    ///
    /// [`WrongType`] if the key holds any other type.
    pub(crate) fn state(&self) -> Result<Option<LeaseState<'_>>, WrongType> {
        Ok(self
            .lock()?
            .inspect(|lock| {
                // A lease from encoding 0 had only the key's expiry (one that a RESTORE
                // brought; loaded files are seen to at the end of loading): the first look at
                // it makes that its own deadline, so a later PERSIST or EXPIRE cannot extend it.
                if lock.deadline_ms().is_none() {
                    if let Some(at) = self.expires_at_ms() {
                        lock.write_deadline(Some(at));
                    }
                }
            })
            .map(|lock| LeaseState {
                id: lock.id(),
                token: lock.token(),
                expires_at_ms: earliest(lock.deadline_ms(), self.expires_at_ms()),
                claimed_from: lock.claimed_from(),
            }))
    }

    /// The lease's own deadline, when the key's expiry is later or absent (a generic command
    /// moved it): the expiry to put back. `None` when they agree, or the key's is earlier.
    pub(crate) fn expiry_to_restore(&self) -> Option<i64> {
        let own = match self.stored().ok()?? {
            Stored::Lock(l) => l.deadline_ms()?,
            Stored::Sem(s) => s.latest()?,
        };
        match self.expires_at_ms() {
            Some(key) if key <= own => None,
            _ => Some(own),
        }
    }
}

/// The earlier of two optional deadlines, `None` being never.
fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl LockKey<Write> {
    /// Stores a lock of `token` and `id` (replacing whatever the key held) with an absolute
    /// deadline, claimed from `claimed_from`. Callers have checked the ids against
    /// `MAX_LEASE_ID_LEN`.
    pub(crate) fn store(
        &mut self,
        token: i64,
        id: &[u8],
        deadline_ms: Option<i64>,
        claimed_from: Option<&[u8]>,
    ) {
        let Some(lock) = Lock::new(token, deadline_ms, id, claimed_from) else {
            return;
        };
        let _own = OwnWrite::enter();
        if let Err(value) = self.0.set_value(lock_type(), lock.into_raw()) {
            // Redis did not take ownership; reclaim the value rather than leak it.
            // SAFETY: made by `into_raw` just above and not handed to Redis.
            unsafe { free_value(value) };
            return;
        }
        if let Some(at) = deadline_ms {
            self.set_deadline(at);
        }
    }

    /// Moves the lease's deadline and the key's absolute expiry with it. Only the deadline
    /// field of the value changes, so borrows of the ids stay valid.
    pub(crate) fn set_deadline(&self, deadline_ms: i64) {
        if let Ok(Some(lock)) = self.lock() {
            lock.write_deadline(Some(deadline_ms));
        }
        self.0.set_deadline(deadline_ms);
    }

    /// Puts the key's expiry back to `deadline_ms` (the lease's own) without touching the value.
    pub(crate) fn set_key_expiry(&self, deadline_ms: i64) {
        self.0.set_deadline(deadline_ms);
    }

    /// The semaphore stored here, to change in place.
    pub(crate) fn sem_mut(&mut self) -> Option<&mut Sem> {
        match self.0.content(lock_type()) {
            Content::Ours(value) if value as usize & SEM_TAG != 0 => {
                // SAFETY: a tagged value of our type is a `Box<Sem>` (see `sem_into_raw`);
                // the key is open for writing and borrowed mutably.
                unsafe { ((value as usize & !SEM_TAG) as *mut Sem).as_mut() }
            }
            _ => None,
        }
    }

    /// Stores `sem` (replacing whatever the key held) and sets the key's expiry to its latest
    /// deadline.
    pub(crate) fn store_sem(&mut self, sem: Box<Sem>) {
        let latest = sem.latest();
        let _own = OwnWrite::enter();
        let raw = sem_into_raw(sem);
        if let Err(value) = self.0.set_value(lock_type(), raw) {
            // SAFETY: made by `sem_into_raw` just above and not handed to Redis.
            unsafe { free_value(value) };
            return;
        }
        if let Some(at) = latest {
            self.0.set_deadline(at);
        }
    }

    /// After a change to the semaphore here: the key's expiry follows its latest deadline,
    /// and a semaphore with no lease left is deleted. Returns whether the key is gone.
    pub(crate) fn sem_changed(&mut self) -> bool {
        let Some(latest) = self.sem().map(Sem::latest) else {
            return false;
        };
        match latest {
            None => {
                self.delete();
                true
            }
            Some(at) => {
                if self.expires_at_ms() != Some(at) {
                    self.0.set_deadline(at);
                }
                false
            }
        }
    }

    /// Deletes the key.
    pub(crate) fn delete(&mut self) {
        let _own = OwnWrite::enter();
        self.0.delete();
    }
}

// ---- data type callbacks -------------------------------------------------------------------
//
// RDB encoding (`pylock_core::stored`): version 2 writes, for the first lease (a semaphore's
// earliest), the signed token, the signed deadline (`stored::NO_DEADLINE` for none), the lease
// id and the claimed-from id (empty for none) as string buffers, then n and the number of
// further leases, then each further lease the same way; version 1 was the first lease alone,
// version 0 the token and the id. Every callback body runs under `guard`;
// reads go through `Io`, which checks Redis's I/O error flag (`HANDLE_IO_ERRORS` is set in
// `init`), so a short or corrupt payload is refused, not fatal.

unsafe extern "C" fn rdb_save(io: *mut raw::RedisModuleIO, value: *mut c_void) {
    let Some(stored) = decode(value) else {
        return;
    };
    let mut io = Io::from_raw(io);
    guard(std::ptr::null_mut(), "rdb_save", || {
        let save =
            |io: &mut Io, token: i64, deadline: Option<i64>, id: &[u8], from: Option<&[u8]>| {
                io.save_signed(token);
                io.save_signed(deadline.unwrap_or(stored::NO_DEADLINE));
                io.save_bytes(id);
                io.save_bytes(from.unwrap_or_default());
            };
        match stored {
            Stored::Lock(lock) => {
                save(
                    &mut io,
                    lock.token(),
                    lock.deadline_ms(),
                    lock.id(),
                    lock.claimed_from(),
                );
                io.save_signed(1);
                io.save_signed(0);
            }
            Stored::Sem(sem) => {
                let mut leases = sem.by_deadline();
                let Some(first) = leases.next() else {
                    return;
                };
                save(
                    &mut io,
                    first.token,
                    Some(first.deadline_ms),
                    &first.id,
                    first.from.as_deref(),
                );
                io.save_signed(i64::from(sem.limit()));
                io.save_signed(sem.len() as i64 - 1);
                for l in leases {
                    save(
                        &mut io,
                        l.token,
                        Some(l.deadline_ms),
                        &l.id,
                        l.from.as_deref(),
                    );
                }
            }
        }
    });
}

unsafe extern "C" fn rdb_load(io: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    let mut io = Io::from_raw(io);
    // NULL makes Redis fail the load (a file) or answer `Bad data format` (RESTORE), never
    // store a half-read lock.
    guard(std::ptr::null_mut(), "rdb_load", || {
        load_value(&mut io, encver)
    })
    .flatten()
    .unwrap_or(std::ptr::null_mut())
}

/// One lease as read: token, deadline, id, claimed-from id.
struct Loaded {
    token: i64,
    deadline: Option<i64>,
    id: Box<[u8]>,
    from: Option<Box<[u8]>>,
}

fn refuse<T>(io: &mut Io, why: stored::Refusal) -> Option<T> {
    io.log_refusal(&format!("pylock: refusing a stored lock: {why}"));
    None
}

/// Reads one value of encoding `encver`: a lock, or with version 2 a semaphore. `None` for a
/// version this module does not know (a newer module wrote it), a short or corrupt payload, or
/// values no grant could have made (`pylock_core::stored` decides which).
fn load_value(io: &mut Io, encver: c_int) -> Option<*mut c_void> {
    if let Err(why) = stored::check_version(encver) {
        return refuse(io, why);
    }
    let first = load_lease(io, encver)?;
    if encver == stored::LEGACY_VERSION {
        LEGACY_LOADED.fetch_add(1, Ordering::Relaxed);
    }
    let (limit, more) = if encver >= 2 {
        let limit = io.load_signed()?;
        let more = io.load_signed()?;
        match stored::check_limit(limit, more) {
            Ok(n) => (n, more),
            Err(why) => return refuse(io, why),
        }
    } else {
        (1, 0)
    };
    if limit == 1 {
        let lock = Lock::new(
            first.token,
            first.deadline,
            &first.id,
            first.from.as_deref(),
        )?;
        observe_token(first.token);
        return Some(lock.into_raw());
    }
    let mut sem = Box::new(Sem::new(limit));
    let mut tokens = Vec::with_capacity(more as usize + 1);
    let mut next = Some(first);
    let mut left = more;
    while let Some(l) = next.take() {
        let Some(deadline) = l.deadline else {
            return refuse(io, stored::Refusal::MissingDeadline);
        };
        if sem.find(&l.id).is_some() {
            return refuse(io, stored::Refusal::DuplicateId);
        }
        tokens.push(l.token);
        sem.insert(Slot {
            token: l.token,
            deadline_ms: deadline,
            id: l.id,
            from: l.from,
        });
        if left > 0 {
            left -= 1;
            next = Some(load_lease(io, encver)?);
        }
    }
    for t in tokens {
        observe_token(t);
    }
    Some(sem_into_raw(sem))
}

/// Reads one lease of encoding `encver`, checked.
fn load_lease(io: &mut Io, encver: c_int) -> Option<Loaded> {
    let token = io.load_signed()?;
    let deadline = if encver >= 1 {
        match stored::check_deadline(io.load_signed()?) {
            Ok(at) => at,
            Err(why) => return refuse(io, why),
        }
    } else {
        None
    };
    let id = io.load_bytes(|id| {
        stored::check(encver, token, id, now_ms()).map(|()| Box::<[u8]>::from(id))
    })?;
    let id = match id {
        Ok(id) => id,
        Err(why) => return refuse(io, why),
    };
    let from = if encver >= 1 {
        let from = io.load_bytes(|from| {
            stored::check_claimed_from(from, &id).map(|from| from.map(Box::<[u8]>::from))
        })?;
        match from {
            Ok(from) => from,
            Err(why) => return refuse(io, why),
        }
    } else {
        None
    };
    Some(Loaded {
        token,
        deadline,
        id,
        from,
    })
}

unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    let Some(stored) = decode(value) else {
        return;
    };
    let mut io = Io::from_raw(aof);
    // SAFETY: `key` is the key of this callback.
    guard(std::ptr::null_mut(), "aof_rewrite", || unsafe {
        match stored {
            Stored::Lock(lock) => io.emit_restore(
                key,
                lock.id(),
                lock.token(),
                lock.deadline_ms(),
                lock.claimed_from(),
                None,
            ),
            Stored::Sem(sem) => {
                for l in sem.by_deadline() {
                    io.emit_restore(
                        key,
                        &l.id,
                        l.token,
                        Some(l.deadline_ms),
                        l.from.as_deref(),
                        Some(sem.limit()),
                    );
                }
            }
        }
    });
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    match decode(value) {
        Some(Stored::Lock(lock)) => ID_AT + lock.ids_len(),
        Some(Stored::Sem(sem)) => sem.mem_usage(),
        None => 0,
    }
}

unsafe extern "C" fn digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    let Some(stored) = decode(value) else {
        return;
    };
    let mut md = Digest::from_raw(md);
    guard(std::ptr::null_mut(), "digest", || {
        let mut add = |token: i64, deadline: Option<i64>, id: &[u8], from: Option<&[u8]>| {
            md.add_bytes(id);
            md.add_int(token);
            md.add_int(deadline.unwrap_or(stored::NO_DEADLINE));
            md.add_bytes(from.unwrap_or_default());
        };
        match stored {
            Stored::Lock(lock) => add(
                lock.token(),
                lock.deadline_ms(),
                lock.id(),
                lock.claimed_from(),
            ),
            Stored::Sem(sem) => {
                for l in sem.by_deadline() {
                    add(l.token, Some(l.deadline_ms), &l.id, l.from.as_deref());
                }
                md.add_int(i64::from(sem.limit()));
            }
        }
        md.end_sequence();
    });
}

thread_local! {
    /// Whether the module itself is replacing or deleting a lock now (its `unlink2` is then
    /// about a change the module already handles).
    static OWN_WRITE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Who hears of a lock removed or replaced by anything but the module.
    static UNLINK_HOOK: std::cell::Cell<Option<UnlinkHook>> = const { std::cell::Cell::new(None) };
}

/// Told the database and key of a lock removed or replaced by a command not the module's.
type UnlinkHook = fn(c_int, &[u8]);

struct OwnWrite(bool);

impl OwnWrite {
    fn enter() -> Self {
        Self(OWN_WRITE.with(|w| w.replace(true)))
    }
}

impl Drop for OwnWrite {
    fn drop(&mut self) {
        OWN_WRITE.with(|w| w.set(self.0));
    }
}

/// Sets who hears, with the database and key, of every lock that a command other than the
/// module's own removes or replaces: DEL, UNLINK, RENAME, MOVE, expiry, eviction, and any
/// command that writes another value over it (SET, RESTORE REPLACE, a STORE of a set, ...),
/// which the keyspace events do not all report in the classes the module listens to.
pub(crate) fn on_foreign_unlink(hook: UnlinkHook) {
    UNLINK_HOOK.with(|h| h.set(Some(hook)));
}

/// Redis is about to remove a lock from its database, or write another value over it.
unsafe extern "C" fn unlink2(ctx: *mut raw::RedisModuleKeyOptCtx, _value: *const c_void) {
    if OWN_WRITE.with(std::cell::Cell::get) {
        return;
    }
    let Some(hook) = UNLINK_HOOK.with(std::cell::Cell::get) else {
        return;
    };
    let key = KeyOpt::from_raw(ctx);
    guard(std::ptr::null_mut(), "unlink", || {
        if let Some(name) = key.key() {
            hook(key.db(), name);
        }
    });
}

unsafe extern "C" fn free(value: *mut c_void) {
    free_value(value);
}

/// The token high-water mark travels in every RDB (and AOF preamble), so a restart never
/// reissues a token of a lease that was released before the save.
unsafe extern "C" fn aux_save(io: *mut raw::RedisModuleIO, _when: c_int) {
    let mut io = Io::from_raw(io);
    guard(std::ptr::null_mut(), "aux_save", || {
        io.save_signed(TOKEN_HIGH_WATER.load(Ordering::Relaxed));
    });
}

unsafe extern "C" fn aux_load(io: *mut raw::RedisModuleIO, encver: c_int, _when: c_int) -> c_int {
    let mut io = Io::from_raw(io);
    let loaded = guard(std::ptr::null_mut(), "aux_load", || {
        if stored::check_version(encver).is_err() {
            return false;
        }
        let Some(high_water) = io.load_signed() else {
            return false;
        };
        // 0 is the mark of a server that never granted; anything else must be plausible, so a
        // damaged or forged file cannot exhaust the token sequence.
        if high_water != 0 {
            if let Err(why) = stored::check_token(high_water, now_ms()) {
                io.log_refusal(&format!(
                    "pylock: refusing the stored token high-water mark: {why}"
                ));
                return false;
            }
        }
        observe_token(high_water);
        true
    });
    if loaded == Some(true) {
        raw::REDISMODULE_OK as c_int
    } else {
        raw::REDISMODULE_ERR as c_int
    }
}
