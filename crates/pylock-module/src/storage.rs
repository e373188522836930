//! Where leases live: the `pylock-lk` module data type, and typed access to a lock's key.
//!
//! A lock is one key of our own type holding the lease id and fencing token; its deadline is
//! the key's own (absolute) expiry, so Redis expires locks, evicts them per `maxmemory-policy`
//! and sends replicas a DEL exactly as for any other key. See `docs/DESIGN.md` for why a module
//! type rather than a string or hash.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, Ordering};

use pylock_core::{LeaseState, TokenClock, MAX_LEASE_ID_LEN};
use redis_module::native_types::RedisType;
use redis_module::raw;

use crate::api::{rm, Arg, Ctx};

/// The stored value of a held lock: one allocation holding the fencing token, the id's length
/// and the id itself (`[token: i64][len: u32][id: len bytes]`). A 36-byte UUID makes it
/// 48 bytes, one allocator size class; a `Box` of a struct holding a `Box<[u8]>` took two
/// allocations (32 + 48 bytes) per lock. The RDB encoding does not depend on this layout.
pub(crate) struct Lock(NonNull<u8>);

const ID_LEN_AT: usize = size_of::<i64>();
const ID_AT: usize = ID_LEN_AT + size_of::<u32>();

impl Lock {
    fn layout(id_len: usize) -> Option<Layout> {
        Layout::from_size_align(ID_AT.checked_add(id_len)?, align_of::<i64>()).ok()
    }

    /// A lock value holding `token` and a copy of `id`; `None` if `id` is over `u32::MAX` bytes
    /// (callers accept at most `MAX_LEASE_ID_LEN`).
    pub(crate) fn new(token: i64, id: &[u8]) -> Option<Self> {
        let len = u32::try_from(id.len()).ok()?;
        let layout = Self::layout(id.len())?;
        // SAFETY: the layout is non-zero in size; every byte written is inside it, the token at
        // an 8-aligned offset 0, the length at 8 and the id from 12.
        unsafe {
            let ptr = NonNull::new(alloc(layout)).unwrap_or_else(|| handle_alloc_error(layout));
            ptr.as_ptr().cast::<i64>().write(token);
            ptr.as_ptr()
                .add(ID_LEN_AT)
                .cast::<u32>()
                .write_unaligned(len);
            std::ptr::copy_nonoverlapping(id.as_ptr(), ptr.as_ptr().add(ID_AT), id.len());
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

impl Drop for Lock {
    fn drop(&mut self) {
        // `new` succeeded with this id length, so its layout exists.
        if let Some(layout) = Self::layout(self.as_ref().id().len()) {
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

    /// The lease id.
    pub(crate) fn id(self) -> &'a [u8] {
        // SAFETY: `Lock::new` wrote the length at `ID_LEN_AT` and that many bytes at `ID_AT`.
        unsafe {
            let len = self
                .ptr
                .as_ptr()
                .add(ID_LEN_AT)
                .cast::<u32>()
                .read_unaligned() as usize;
            std::slice::from_raw_parts(self.ptr.as_ptr().add(ID_AT), len)
        }
    }
}

/// Type name as `TYPE key` shows it (Redis requires exactly 9 characters).
pub(crate) const TYPE_NAME: &str = "pylock-lk";
/// Bumped whenever the RDB encoding changes; `rdb_load` refuses versions it does not know.
const ENCODING_VERSION: c_int = 0;

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
        unlink2: None,
        copy2: None,
    },
);

/// The server-wide fencing-token high-water mark (see `pylock_core::token`). Module callbacks
/// all run on Redis's main thread; the atomic only makes the static safe to share.
static TOKEN_HIGH_WATER: AtomicI64 = AtomicI64::new(0);

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

/// The key holds a value of another type.
pub(crate) struct WrongType;

/// An open key; closed on drop.
pub(crate) struct LockKey {
    ptr: *mut raw::RedisModuleKey,
}

impl LockKey {
    /// Opens `name` for reading (`write == false`) or writing. A key opened for reading that
    /// does not exist (or has expired, as Redis judges it) reads as empty.
    pub(crate) fn open(ctx: Ctx, name: &Arg, write: bool) -> Self {
        let mode = if write {
            raw::REDISMODULE_READ | raw::REDISMODULE_WRITE
        } else {
            raw::REDISMODULE_READ
        };
        let ptr = unsafe { rm!(RedisModule_OpenKey)(ctx.0, name.as_ptr(), mode as c_int) };
        Self { ptr: ptr.cast() }
    }

    /// The lock stored here: `Ok(None)` if the key is empty.
    ///
    /// # Errors
    ///
    /// [`WrongType`] if the key holds any other type.
    pub(crate) fn lock(&self) -> Result<Option<LockRef<'_>>, WrongType> {
        if self.ptr.is_null() {
            return Ok(None);
        }
        unsafe {
            match rm!(RedisModule_KeyType)(self.ptr) as isize {
                raw::REDISMODULE_KEYTYPE_EMPTY => Ok(None),
                raw::REDISMODULE_KEYTYPE_MODULE
                    if rm!(RedisModule_ModuleTypeGetType)(self.ptr)
                        == *LOCK_TYPE.raw_type.borrow() =>
                {
                    // SAFETY: a value of our type is always made by `Lock::into_raw`, and the
                    // borrow of `self` keeps the key open.
                    Ok(LockRef::from_raw(rm!(RedisModule_ModuleTypeGetValue)(
                        self.ptr,
                    )))
                }
                _ => Err(WrongType),
            }
        }
    }

    /// The key's absolute expiry in Unix ms, `None` if it has none.
    pub(crate) fn expires_at_ms(&self) -> Option<i64> {
        if self.ptr.is_null() {
            return None;
        }
        let at = unsafe { rm!(RedisModule_GetAbsExpire)(self.ptr) };
        (at >= 0).then_some(at)
    }

    /// The lease state as the pure rules see it.
    ///
    /// # Errors
    ///
    /// [`WrongType`] if the key holds any other type.
    pub(crate) fn state(&self) -> Result<Option<LeaseState<'_>>, WrongType> {
        Ok(self.lock()?.map(|lock| LeaseState {
            id: lock.id(),
            token: lock.token(),
            expires_at_ms: self.expires_at_ms(),
        }))
    }

    /// Stores a lock of `token` and `id` (replacing whatever the key held) with an absolute
    /// deadline. The key must have been opened for writing. Callers have checked `id` against
    /// `MAX_LEASE_ID_LEN`.
    pub(crate) fn store(&mut self, token: i64, id: &[u8], deadline_ms: Option<i64>) {
        let Some(lock) = Lock::new(token, id) else {
            return;
        };
        let value = lock.into_raw();
        unsafe {
            let status =
                rm!(RedisModule_ModuleTypeSetValue)(self.ptr, *LOCK_TYPE.raw_type.borrow(), value);
            if status != raw::REDISMODULE_OK as c_int {
                // Redis did not take ownership; reclaim the value rather than leak it.
                drop(Lock::from_raw(value));
                return;
            }
        }
        if let Some(at) = deadline_ms {
            self.set_deadline(at);
        }
    }

    /// Moves the key's absolute expiry. The key must have been opened for writing. The stored
    /// value is untouched, so borrows of it stay valid.
    pub(crate) fn set_deadline(&self, deadline_ms: i64) {
        unsafe { rm!(RedisModule_SetAbsExpire)(self.ptr, deadline_ms) };
    }

    /// Deletes the key. The key must have been opened for writing.
    pub(crate) fn delete(&mut self) {
        unsafe { rm!(RedisModule_DeleteKey)(self.ptr) };
    }
}

impl Drop for LockKey {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            unsafe { rm!(RedisModule_CloseKey)(self.ptr) };
        }
    }
}

// ---- data type callbacks -------------------------------------------------------------------
//
// RDB encoding, version 0: signed token, then the lease id as a string buffer.

unsafe extern "C" fn rdb_save(io: *mut raw::RedisModuleIO, value: *mut c_void) {
    let Some(lock) = LockRef::from_raw(value) else {
        return;
    };
    let id = lock.id();
    rm!(RedisModule_SaveSigned)(io, lock.token());
    rm!(RedisModule_SaveStringBuffer)(io, id.as_ptr().cast(), id.len());
}

unsafe extern "C" fn rdb_load(io: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    if encver != ENCODING_VERSION {
        // Redis fails the load when this returns NULL: better than misreading a newer format.
        return std::ptr::null_mut();
    }
    let token = rm!(RedisModule_LoadSigned)(io);
    let mut len = 0;
    let buf = rm!(RedisModule_LoadStringBuffer)(io, &mut len);
    if buf.is_null() {
        return std::ptr::null_mut();
    }
    let lock = match std::slice::from_raw_parts(buf.cast::<u8>(), len) {
        id if token > 0 && !id.is_empty() && id.len() <= MAX_LEASE_ID_LEN => Lock::new(token, id),
        _ => None,
    };
    rm!(RedisModule_Free)(buf.cast());
    let Some(lock) = lock else {
        return std::ptr::null_mut();
    };
    observe_token(token);
    lock.into_raw()
}

unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    let Some(lock) = LockRef::from_raw(value) else {
        return;
    };
    let id = lock.id();
    // Redis writes the key's PEXPIREAT right after this command.
    rm!(RedisModule_EmitAOF)(
        aof,
        c"PYLOCK.RESTORE".as_ptr(),
        c"sbl".as_ptr(),
        key,
        id.as_ptr(),
        id.len(),
        lock.token(),
    );
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    LockRef::from_raw(value).map_or(0, |lock| ID_AT + lock.id().len())
}

unsafe extern "C" fn digest(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    let Some(lock) = LockRef::from_raw(value) else {
        return;
    };
    let id = lock.id();
    rm!(RedisModule_DigestAddStringBuffer)(md, id.as_ptr().cast_mut().cast(), id.len());
    rm!(RedisModule_DigestAddLongLong)(md, lock.token());
    rm!(RedisModule_DigestEndSequence)(md);
}

unsafe extern "C" fn free(value: *mut c_void) {
    drop(Lock::from_raw(value));
}

/// The token high-water mark travels in every RDB (and AOF preamble), so a restart never
/// reissues a token of a lease that was released before the save.
unsafe extern "C" fn aux_save(io: *mut raw::RedisModuleIO, _when: c_int) {
    rm!(RedisModule_SaveSigned)(io, TOKEN_HIGH_WATER.load(Ordering::Relaxed));
}

unsafe extern "C" fn aux_load(io: *mut raw::RedisModuleIO, encver: c_int, _when: c_int) -> c_int {
    if encver != ENCODING_VERSION {
        return raw::REDISMODULE_ERR as c_int;
    }
    observe_token(rm!(RedisModule_LoadSigned)(io));
    raw::REDISMODULE_OK as c_int
}
