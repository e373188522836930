//! The slice of the Redis module API that pylock uses, behind safe wrappers. Every call into
//! Redis and every callback Redis makes into the module passes through this file; no other file
//! touches a raw module-API pointer (`storage` keeps only the unsafe code of its value layout).
//!
//! - Function pointers are read through [`rm!`]. `init` checks each one the module calls
//!   ([`missing_required`]) and refuses to load if any is missing, so the `None` arm of [`rm!`]
//!   cannot be reached once the module is loaded.
//! - Callbacks (commands, timers, blocked clients, keyspace and server events, INFO, data-type
//!   callbacks) enter through generic trampolines here, each under [`guard`], so a panic is
//!   logged (and a command answered with an error) instead of unwinding into Redis.
//! - [`Ctx`] is a context; [`Flags`] its flags, typed; [`Key`] an open key, typed by mode
//!   ([`Read`] or [`Write`]); [`Blocked`] a blocked client; [`TimerJob`] a timer's work.

use std::ffi::{c_char, c_int, c_long, c_longlong, c_void, CStr};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pylock_core::{CommandError, ReplySink};
use redis_module::raw;

/// Reads a module API function pointer that `init` verified is present.
macro_rules! rm {
    ($name:ident) => {{
        #[allow(unused_unsafe)]
        let f = unsafe { redis_module::raw::$name };
        match f {
            Some(f) => f,
            // `init` refuses to load without it (see `missing_required`); a panic here is
            // caught by `guard` and never unwound into Redis.
            None => $crate::api::missing(stringify!($name)),
        }
    }};
}

/// Unreachable once loaded: `init` refuses to load unless every function in
/// `missing_required` is present, and `rm!` is only used on those. Were it reached, the panic
/// is caught by [`guard`].
#[cold]
pub(crate) fn missing(name: &str) -> ! {
    panic!("module API function {name} is not available")
}

/// The API functions pylock calls unconditionally, checked at load time.
pub(crate) fn missing_required() -> Option<&'static str> {
    macro_rules! check {
        ($($name:ident),* $(,)?) => {
            $( if unsafe { raw::$name }.is_none() { return Some(stringify!($name)); } )*
        };
    }
    check!(
        RedisModule_CreateCommand,
        RedisModule_OpenKey,
        RedisModule_CloseKey,
        RedisModule_KeyType,
        RedisModule_DeleteKey,
        RedisModule_ModuleTypeGetType,
        RedisModule_ModuleTypeGetValue,
        RedisModule_ModuleTypeSetValue,
        RedisModule_GetAbsExpire,
        RedisModule_SetAbsExpire,
        RedisModule_Milliseconds,
        RedisModule_GetContextFlags,
        RedisModule_Replicate,
        RedisModule_ReplicateVerbatim,
        RedisModule_SignalModifiedKey,
        RedisModule_SetModuleOptions,
        RedisModule_StringPtrLen,
        RedisModule_ReplyWithArray,
        RedisModule_ReplyWithStringBuffer,
        RedisModule_ReplyWithLongLong,
        RedisModule_ReplyWithNull,
        RedisModule_ReplyWithError,
        RedisModule_ReplyWithSimpleString,
        RedisModule_SaveSigned,
        RedisModule_LoadSigned,
        RedisModule_SaveStringBuffer,
        RedisModule_LoadStringBuffer,
        RedisModule_IsIOError,
        RedisModule_LogIOError,
        RedisModule_GetContextFromIO,
        RedisModule_Free,
        RedisModule_EmitAOF,
        RedisModule_DigestAddStringBuffer,
        RedisModule_DigestAddLongLong,
        RedisModule_DigestEndSequence,
        RedisModule_RegisterInfoFunc,
        RedisModule_InfoAddSection,
        RedisModule_InfoAddFieldULongLong,
        RedisModule_Log,
        RedisModule_GetSelectedDb,
        RedisModule_SelectDb,
        RedisModule_CreateString,
        RedisModule_FreeString,
        RedisModule_BlockClient,
        RedisModule_UnblockClient,
        RedisModule_SetDisconnectCallback,
        RedisModule_GetBlockedClientHandle,
        RedisModule_GetBlockedClientPrivateData,
        RedisModule_SubscribeToServerEvent,
        RedisModule_CreateTimer,
        RedisModule_StopTimer,
        RedisModule_SubscribeToKeyspaceEvents,
        RedisModule_Call,
        RedisModule_FreeCallReply,
        RedisModule_NotifyKeyspaceEvent,
        RedisModule_GetKeyNameFromOptCtx,
        RedisModule_GetDbIdFromOptCtx,
        RedisModule_GetDetachedThreadSafeContext,
        RedisModule_Scan,
        RedisModule_ScanCursorCreate,
        RedisModule_ScanCursorDestroy,
    );
    None
}

const OK: c_int = raw::REDISMODULE_OK as c_int;

// ---- the callback boundary ------------------------------------------------------------------

/// Runs a callback body so that a panic is logged instead of unwinding into Redis. Returns
/// `None` when the body panicked.
pub(crate) fn guard<T>(
    ctx: *mut raw::RedisModuleCtx,
    what: &str,
    f: impl FnOnce() -> T,
) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(panic) => {
            log(
                ctx,
                c"warning",
                &format!("pylock: internal error in {what}: {}", panic_text(&*panic)),
            );
            None
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Unix time in milliseconds, from the clock Redis uses for key expiry (for callbacks that get
/// no context, such as the data-type loaders).
pub(crate) fn now_ms() -> i64 {
    unsafe { rm!(RedisModule_Milliseconds)() }
}

/// Logs `msg` at `level` (`c"warning"`, `c"notice"`…) in the server log.
pub(crate) fn log(ctx: *mut raw::RedisModuleCtx, level: &CStr, msg: &str) {
    let Ok(msg) = std::ffi::CString::new(msg.replace('\0', " ")) else {
        return;
    };
    unsafe { rm!(RedisModule_Log)(ctx, level.as_ptr(), c"%s".as_ptr(), msg.as_ptr()) };
}

/// An error text with its terminating NUL, built without allocating.
struct ErrorText {
    buf: [u8; 192],
    len: usize,
}

impl ErrorText {
    fn new(err: CommandError, command: &str) -> Self {
        let mut text = Self {
            buf: [0; 192],
            len: 0,
        };
        // A text too long for the buffer is cut (none of ours is); a NUL always ends it.
        let _ = err.write(command, &mut text);
        text
    }

    fn as_c_str(&self) -> &CStr {
        // `write_str` keeps the last byte free and never copies a NUL, so this finds the end.
        CStr::from_bytes_until_nul(&self.buf).unwrap_or(c"ERR")
    }
}

impl std::fmt::Write for ErrorText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for &b in s.as_bytes() {
            if self.len + 1 >= self.buf.len() {
                return Err(std::fmt::Error);
            }
            self.buf[self.len] = if b == 0 { b' ' } else { b };
            self.len += 1;
        }
        Ok(())
    }
}

// ---- strings --------------------------------------------------------------------------------

/// One command argument (or another string Redis lends a callback), readable as bytes.
#[repr(transparent)]
pub(crate) struct Arg(*mut raw::RedisModuleString);

impl AsRef<[u8]> for Arg {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: every `Arg` is lent by Redis for the callback it was handed to (argv, a
        // ready key) or owned by an `OwnedString`, and is not kept beyond it.
        unsafe { string_bytes(self.0) }
    }
}

/// # Safety
///
/// `s` must be null or a valid string that outlives the returned slice.
unsafe fn string_bytes<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    if s.is_null() {
        return &[];
    }
    let mut len = 0;
    let ptr = rm!(RedisModule_StringPtrLen)(s, &mut len);
    if ptr.is_null() {
        return &[];
    }
    std::slice::from_raw_parts(ptr.cast::<u8>(), len)
}

/// A string the module created; freed on drop.
pub(crate) struct OwnedString {
    ctx: *mut raw::RedisModuleCtx,
    arg: Arg,
}

impl OwnedString {
    pub(crate) fn arg(&self) -> &Arg {
        &self.arg
    }
}

impl Drop for OwnedString {
    fn drop(&mut self) {
        unsafe { rm!(RedisModule_FreeString)(self.ctx, self.arg.0) };
    }
}

// ---- context --------------------------------------------------------------------------------

/// A context Redis passed to a callback.
#[derive(Clone, Copy)]
pub(crate) struct Ctx(*mut raw::RedisModuleCtx);

/// The context flags that pylock acts on.
#[derive(Clone, Copy)]
pub(crate) struct Flags(c_int);

impl Flags {
    fn has(self, flag: u32) -> bool {
        self.0 & flag as c_int != 0
    }
    /// Inside MULTI/EXEC, a script, or another context where a command must not block; or on
    /// the replication link, which a replica must never stall whatever arrives.
    pub(crate) fn may_block(self) -> bool {
        !(self.has(raw::REDISMODULE_CTX_FLAGS_MULTI)
            || self.has(raw::REDISMODULE_CTX_FLAGS_LUA)
            || self.has(raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING)
            || self.has(raw::REDISMODULE_CTX_FLAGS_REPLICATED))
    }
    /// This server is a replica.
    pub(crate) fn is_replica(self) -> bool {
        self.has(raw::REDISMODULE_CTX_FLAGS_SLAVE)
    }
    /// This server runs in Redis Cluster mode.
    pub(crate) fn is_cluster(self) -> bool {
        self.has(raw::REDISMODULE_CTX_FLAGS_CLUSTER)
    }
    /// AOF is on.
    pub(crate) fn aof(self) -> bool {
        self.has(raw::REDISMODULE_CTX_FLAGS_AOF)
    }
    /// The server is loading data (an RDB, an AOF, a full sync).
    pub(crate) fn loading(self) -> bool {
        self.has(raw::REDISMODULE_CTX_FLAGS_LOADING)
    }
    /// The call comes from the primary's replication stream or from AOF loading.
    pub(crate) fn replicated_or_loading(self) -> bool {
        self.has(raw::REDISMODULE_CTX_FLAGS_REPLICATED)
            || self.has(raw::REDISMODULE_CTX_FLAGS_LOADING)
    }
}

impl Ctx {
    /// Unix time in milliseconds, from the clock Redis uses for key expiry.
    pub(crate) fn now_ms(self) -> i64 {
        unsafe { rm!(RedisModule_Milliseconds)() }
    }

    /// The database the context has selected.
    pub(crate) fn db(self) -> c_int {
        unsafe { rm!(RedisModule_GetSelectedDb)(self.0) }
    }

    /// Selects database `db` (timer contexts start in database 0).
    pub(crate) fn select_db(self, db: c_int) {
        unsafe { rm!(RedisModule_SelectDb)(self.0, db) };
    }

    /// Selects database `db`; false when it does not exist.
    pub(crate) fn try_select_db(self, db: c_int) -> bool {
        unsafe { rm!(RedisModule_SelectDb)(self.0, db) == OK }
    }

    /// Calls `f` with the value and absolute expiry (Unix ms, `None` for none) of every key of
    /// type `ty` in the selected database. Redis's SCAN guarantees apply: a key present for the
    /// whole scan is seen at least once. Only for a moment with no commands running (a server
    /// event), since it walks the whole database.
    pub(crate) fn scan_values(
        self,
        ty: *mut raw::RedisModuleType,
        mut f: impl FnMut(&[u8], *mut c_void, Option<i64>),
    ) {
        /// Told each key's name, value and absolute expiry.
        type Each<'f> = &'f mut dyn FnMut(&[u8], *mut c_void, Option<i64>);
        struct Scan<'f> {
            ty: *mut raw::RedisModuleType,
            f: Each<'f>,
        }
        unsafe extern "C" fn each(
            _ctx: *mut raw::RedisModuleCtx,
            name: *mut raw::RedisModuleString,
            key: *mut raw::RedisModuleKey,
            data: *mut c_void,
        ) {
            // SAFETY: `data` is the `Scan` below, alive for the whole `RedisModule_Scan` call.
            let Some(scan) = (unsafe { data.cast::<Scan>().as_mut() }) else {
                return;
            };
            if key.is_null() {
                return;
            }
            unsafe {
                if rm!(RedisModule_KeyType)(key) as isize != raw::REDISMODULE_KEYTYPE_MODULE
                    || rm!(RedisModule_ModuleTypeGetType)(key) != scan.ty
                {
                    return;
                }
                let value = rm!(RedisModule_ModuleTypeGetValue)(key);
                let at = rm!(RedisModule_GetAbsExpire)(key);
                let name: &[u8] = if name.is_null() {
                    &[]
                } else {
                    let mut len = 0;
                    let ptr = rm!(RedisModule_StringPtrLen)(name, &mut len);
                    std::slice::from_raw_parts(ptr.cast::<u8>(), len)
                };
                (scan.f)(name, value, (at >= 0).then_some(at));
            }
        }
        let mut scan = Scan { ty, f: &mut f };
        unsafe {
            let cursor = rm!(RedisModule_ScanCursorCreate)();
            while rm!(RedisModule_Scan)(self.0, cursor, Some(each), (&mut scan as *mut Scan).cast())
                != 0
            {}
            rm!(RedisModule_ScanCursorDestroy)(cursor);
        }
    }

    pub(crate) fn flags(self) -> Flags {
        Flags(unsafe { rm!(RedisModule_GetContextFlags)(self.0) })
    }

    /// A new string holding `bytes`.
    pub(crate) fn string(self, bytes: &[u8]) -> Option<OwnedString> {
        let s =
            unsafe { rm!(RedisModule_CreateString)(self.0, bytes.as_ptr().cast(), bytes.len()) };
        (!s.is_null()).then_some(OwnedString {
            ctx: self.0,
            arg: Arg(s),
        })
    }

    /// Answers the call with `err`, spelled for the command `command`.
    pub(crate) fn reply_error(self, err: CommandError, command: &str) -> Replied {
        let text = ErrorText::new(err, command);
        unsafe { rm!(RedisModule_ReplyWithError)(self.0, text.as_c_str().as_ptr()) };
        Replied(())
    }

    /// Answers the call with what `write` writes (one complete reply).
    pub(crate) fn reply_with(mut self, write: impl FnOnce(&mut Ctx)) -> Replied {
        write(&mut self);
        Replied(())
    }

    /// Answers the call with nil.
    pub(crate) fn reply_nil(mut self) -> Replied {
        self.nil();
        Replied(())
    }

    pub(crate) fn reply_ok(self) -> Replied {
        unsafe { rm!(RedisModule_ReplyWithSimpleString)(self.0, c"OK".as_ptr()) };
        Replied(())
    }

    /// Opens `name` for reading. A key that does not exist, or has expired as Redis judges
    /// it, reads as empty.
    pub(crate) fn open_read(self, name: &Arg) -> Key<Read> {
        Key::open(self, name, raw::REDISMODULE_READ)
    }

    /// Opens `name` for reading and writing.
    pub(crate) fn open_write(self, name: &Arg) -> Key<Write> {
        Key::open(self, name, raw::REDISMODULE_READ | raw::REDISMODULE_WRITE)
    }

    /// Tells WATCH (and client-side caching) that the key changed. The module turns off
    /// Redis's implicit signal on every key opened for writing, so that calls that change
    /// nothing (a contended ACQUIRE, a plain CONFIRM) leave a client's WATCH intact.
    pub(crate) fn signal_modified(self, key: &Arg) {
        unsafe { rm!(RedisModule_SignalModifiedKey)(self.0, key.0) };
    }

    /// Publishes the keyspace event `event` of the module class for `key` in the context's
    /// database: `__keyspace@<db>__:<key>` and `__keyevent@<db>__:<event>`, when
    /// `notify-keyspace-events` has `d` (with `K` or `E`). Modules subscribed to the module
    /// class get it too; pylock's own handler ([`subscribe_keyspace`]) is not.
    pub(crate) fn notify(self, event: &CStr, key: &Arg) {
        unsafe {
            rm!(RedisModule_NotifyKeyspaceEvent)(
                self.0,
                raw::REDISMODULE_NOTIFY_MODULE,
                event.as_ptr(),
                key.0,
            )
        };
    }

    /// Whether writes are paused (`CLIENT PAUSE WRITE` or `ALL`, or a failover's pause).
    /// Callbacks that are not commands must not write then: Redis holds back writes and key
    /// expiry until the pause ends, and on Redis 7.0 storing over a key whose expiry the pause
    /// held back fails an assertion in `dbAdd` and aborts the server.
    pub(crate) fn writes_paused(self) -> bool {
        // SAFETY: reads server state; called on the main thread.
        unsafe { raw::RedisModule_AvoidReplicaTraffic }.is_some_and(|f| unsafe { f() } != 0)
    }

    /// Whether this node serves `key`. Outside a cluster, always. In a cluster a timer or a
    /// blocked client may run after the key's slot moved away (or while it is migrating and
    /// the key has left): a grant here would then be a second lock beside the one on the new
    /// node. `RM_Call` applies the cluster's own routing check, so a cheap read tells.
    pub(crate) fn serves_key(self, key: &Arg) -> bool {
        if !self.flags().is_cluster() {
            return true;
        }
        let reply =
            unsafe { rm!(RedisModule_Call)(self.0, c"EXISTS".as_ptr(), c"s".as_ptr(), key.0) };
        if reply.is_null() {
            return false;
        }
        unsafe { rm!(RedisModule_FreeCallReply)(reply) };
        true
    }

    // ---- replication: effects, never verbatim (see `propagation`) ----

    /// Whether a replicated effect would be written anywhere; when it would not, the
    /// `replicate_*` calls only count the change.
    fn skip_effect(self) -> bool {
        if crate::propagation::effects_needed(self.flags()) {
            return false;
        }
        // Redis propagates nothing in this state, verbatim or not; this only counts the
        // change in `server.dirty`, as `RM_Replicate` would have.
        unsafe { rm!(RedisModule_ReplicateVerbatim)(self.0) };
        true
    }

    /// Propagates `PYLOCK.RESTORE key id token [PXAT deadline] [FROM claimed-from]`: the full
    /// state of a grant or a claim (without a deadline only for a lease that has none).
    pub(crate) fn replicate_grant(
        self,
        key: &Arg,
        id: &[u8],
        token: i64,
        deadline_ms: Option<i64>,
        claimed_from: Option<&[u8]>,
    ) {
        if self.skip_effect() {
            return;
        }
        let (cmd, buf, len) = (
            c"PYLOCK.RESTORE".as_ptr(),
            id.as_ptr().cast::<c_char>(),
            id.len(),
        );
        let token = token as c_longlong;
        unsafe {
            match (deadline_ms, claimed_from) {
                (Some(at), None) => rm!(RedisModule_Replicate)(
                    self.0,
                    cmd,
                    c"sblcl".as_ptr(),
                    key.0,
                    buf,
                    len,
                    token,
                    c"PXAT".as_ptr(),
                    at as c_longlong,
                ),
                (None, None) => {
                    rm!(RedisModule_Replicate)(self.0, cmd, c"sbl".as_ptr(), key.0, buf, len, token)
                }
                (Some(at), Some(from)) => rm!(RedisModule_Replicate)(
                    self.0,
                    cmd,
                    c"sblclcb".as_ptr(),
                    key.0,
                    buf,
                    len,
                    token,
                    c"PXAT".as_ptr(),
                    at as c_longlong,
                    c"FROM".as_ptr(),
                    from.as_ptr().cast::<c_char>(),
                    from.len(),
                ),
                (None, Some(from)) => rm!(RedisModule_Replicate)(
                    self.0,
                    cmd,
                    c"sblcb".as_ptr(),
                    key.0,
                    buf,
                    len,
                    token,
                    c"FROM".as_ptr(),
                    from.as_ptr().cast::<c_char>(),
                    from.len(),
                ),
            };
        }
    }

    /// Propagates `PYLOCK.RESTORE key id token PXAT deadline [FROM claimed-from] LIMIT n`: one
    /// lease of a semaphore, granted, renewed or claimed.
    pub(crate) fn replicate_sem_lease(
        self,
        key: &Arg,
        id: &[u8],
        token: i64,
        deadline_ms: i64,
        claimed_from: Option<&[u8]>,
        limit: u32,
    ) {
        if self.skip_effect() {
            return;
        }
        let (cmd, buf, len) = (
            c"PYLOCK.RESTORE".as_ptr(),
            id.as_ptr().cast::<c_char>(),
            id.len(),
        );
        let (token, at, n) = (
            token as c_longlong,
            deadline_ms as c_longlong,
            c_longlong::from(limit),
        );
        unsafe {
            match claimed_from {
                None => rm!(RedisModule_Replicate)(
                    self.0,
                    cmd,
                    c"sblclcl".as_ptr(),
                    key.0,
                    buf,
                    len,
                    token,
                    c"PXAT".as_ptr(),
                    at,
                    c"LIMIT".as_ptr(),
                    n,
                ),
                Some(from) => rm!(RedisModule_Replicate)(
                    self.0,
                    cmd,
                    c"sblclcbcl".as_ptr(),
                    key.0,
                    buf,
                    len,
                    token,
                    c"PXAT".as_ptr(),
                    at,
                    c"FROM".as_ptr(),
                    from.as_ptr().cast::<c_char>(),
                    from.len(),
                    c"LIMIT".as_ptr(),
                    n,
                ),
            };
        }
    }

    /// Propagates `PYLOCK.DROP key id`: one lease of a semaphore ended (released, expired,
    /// claimed away, taken back).
    pub(crate) fn replicate_drop(self, key: &Arg, id: &[u8]) {
        if self.skip_effect() {
            return;
        }
        unsafe {
            rm!(RedisModule_Replicate)(
                self.0,
                c"PYLOCK.DROP".as_ptr(),
                c"sb".as_ptr(),
                key.0,
                id.as_ptr().cast::<c_char>(),
                id.len(),
            )
        };
    }

    /// Propagates `PEXPIREAT key deadline`.
    pub(crate) fn replicate_deadline(self, key: &Arg, deadline_ms: i64) {
        if self.skip_effect() {
            return;
        }
        unsafe {
            rm!(RedisModule_Replicate)(
                self.0,
                c"PEXPIREAT".as_ptr(),
                c"sl".as_ptr(),
                key.0,
                deadline_ms as c_longlong,
            );
        }
    }

    /// Propagates `DEL key`.
    pub(crate) fn replicate_delete(self, key: &Arg) {
        if self.skip_effect() {
            return;
        }
        unsafe { rm!(RedisModule_Replicate)(self.0, c"DEL".as_ptr(), c"s".as_ptr(), key.0) };
    }

    /// Whether a module-unblocked client is answered exactly once even when `CLIENT UNBLOCK`
    /// meets it before Redis delivered the unblock: true on Valkey and on Redis 7.4 or later
    /// (Redis fixed it there); false on Redis 7.0 to 7.2, where the client is left with no reply.
    pub(crate) fn unblock_is_race_free(self) -> bool {
        let is_valkey = self.server_info_has(c"server", c"valkey_version");
        // 0x00MMmmpp; Valkey reports the Redis version it is compatible with (7.2.4).
        let version = unsafe { raw::RedisModule_GetServerVersion }.map_or(0, |f| unsafe { f() });
        is_valkey || version >= 0x0007_0400
    }

    /// Whether `INFO <section>` has the field `field`.
    fn server_info_has(self, section: &CStr, field: &CStr) -> bool {
        let Some(get_field) = (unsafe { raw::RedisModule_ServerInfoGetFieldC }) else {
            return false;
        };
        // SAFETY: `info` is live for the closure; the field's text is not kept.
        self.with_server_info(section, |info| unsafe {
            !get_field(info, field.as_ptr()).is_null()
        })
        .unwrap_or(false)
    }

    /// Reads `INFO <section>` field `field` as an integer.
    pub(crate) fn server_info_int(self, section: &CStr, field: &CStr) -> Option<i64> {
        let get_field = unsafe { raw::RedisModule_ServerInfoGetFieldSigned }?;
        self.with_server_info(section, |info| {
            let mut err: c_int = 0;
            // SAFETY: `info` is live for the closure.
            let v = unsafe { get_field(info, field.as_ptr(), &mut err) };
            (err == 0).then_some(v)
        })
        .flatten()
    }

    /// Runs `f` on `INFO <section>`, freed afterwards; `None` where the server lacks the API.
    fn with_server_info<T>(
        self,
        section: &CStr,
        f: impl FnOnce(*mut raw::RedisModuleServerInfoData) -> T,
    ) -> Option<T> {
        let (Some(get), Some(free)) = (unsafe { raw::RedisModule_GetServerInfo }, unsafe {
            raw::RedisModule_FreeServerInfo
        }) else {
            return None;
        };
        let info = unsafe { get(self.0, section.as_ptr()) };
        if info.is_null() {
            return None;
        }
        let out = f(info);
        unsafe { free(self.0, info) };
        Some(out)
    }
}

impl ReplySink for Ctx {
    fn array(&mut self, len: usize) {
        unsafe { rm!(RedisModule_ReplyWithArray)(self.0, len as c_long) };
    }
    fn bulk(&mut self, bytes: &[u8]) {
        unsafe {
            rm!(RedisModule_ReplyWithStringBuffer)(
                self.0,
                bytes.as_ptr().cast::<c_char>(),
                bytes.len(),
            )
        };
    }
    fn int(&mut self, value: i64) {
        unsafe { rm!(RedisModule_ReplyWithLongLong)(self.0, value as c_longlong) };
    }
    fn nil(&mut self) {
        unsafe { rm!(RedisModule_ReplyWithNull)(self.0) };
    }
}

/// Proof that a command answered its call, or blocked its client (the answer then comes from
/// the blocked client's callbacks): every command handler returns it, and only the reply
/// methods and [`Replied::later`] make it.
#[must_use]
pub(crate) struct Replied(());

impl Replied {
    /// The call blocked `_client`; its reply comes when the module unblocks it.
    pub(crate) fn later(_client: &Blocked) -> Self {
        Self(())
    }
}

// ---- keys -----------------------------------------------------------------------------------

/// The mode of an open [`Key`].
pub(crate) trait Mode {}
/// Opened for reading: no method that writes.
pub(crate) struct Read;
/// Opened for reading and writing.
pub(crate) struct Write;
impl Mode for Read {}
impl Mode for Write {}

/// What an open key holds, as far as a module type can tell.
pub(crate) enum Content {
    Empty,
    /// A value of the module type given to [`Key::content`].
    Ours(*mut c_void),
    Other,
}

/// An open key; closed on drop.
pub(crate) struct Key<M: Mode> {
    ptr: *mut raw::RedisModuleKey,
    _mode: PhantomData<M>,
}

impl<M: Mode> Key<M> {
    fn open(ctx: Ctx, name: &Arg, mode: u32) -> Self {
        let ptr = unsafe { rm!(RedisModule_OpenKey)(ctx.0, name.0, mode as c_int) };
        Self {
            ptr: ptr.cast(),
            _mode: PhantomData,
        }
    }

    /// Whether the key is empty, holds a value of `ty`, or holds anything else.
    pub(crate) fn content(&self, ty: *mut raw::RedisModuleType) -> Content {
        if self.ptr.is_null() {
            return Content::Empty;
        }
        unsafe {
            match rm!(RedisModule_KeyType)(self.ptr) as isize {
                raw::REDISMODULE_KEYTYPE_EMPTY => Content::Empty,
                raw::REDISMODULE_KEYTYPE_MODULE
                    if rm!(RedisModule_ModuleTypeGetType)(self.ptr) == ty =>
                {
                    Content::Ours(rm!(RedisModule_ModuleTypeGetValue)(self.ptr))
                }
                _ => Content::Other,
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
}

impl Key<Write> {
    /// Stores `value` of type `ty`, replacing whatever the key held. On failure Redis did not
    /// take the value, and it is handed back.
    pub(crate) fn set_value(
        &mut self,
        ty: *mut raw::RedisModuleType,
        value: *mut c_void,
    ) -> Result<(), *mut c_void> {
        let status = unsafe { rm!(RedisModule_ModuleTypeSetValue)(self.ptr, ty, value) };
        if status == OK {
            Ok(())
        } else {
            Err(value)
        }
    }

    /// Moves the key's absolute expiry. The stored value is untouched.
    pub(crate) fn set_deadline(&self, deadline_ms: i64) {
        unsafe { rm!(RedisModule_SetAbsExpire)(self.ptr, deadline_ms) };
    }

    /// Deletes the key.
    pub(crate) fn delete(&mut self) {
        unsafe { rm!(RedisModule_DeleteKey)(self.ptr) };
    }
}

impl<M: Mode> Drop for Key<M> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            unsafe { rm!(RedisModule_CloseKey)(self.ptr) };
        }
    }
}

// ---- commands -------------------------------------------------------------------------------

/// A command: its handler runs under [`guard`]; a panic is answered as an error.
pub(crate) trait Command {
    /// The name, lowercase, as registered and as error texts spell it.
    const NAME: &'static str;
    /// `RM_CreateCommand` flags.
    const FLAGS: &'static CStr;
    /// ACL categories, set only on servers that support them for modules (7.2+).
    const ACL: &'static CStr;
    /// Its arity, key spec and `COMMAND DOCS`, set where the server has `RM_SetCommandInfo`.
    const DOCS: Docs;
    fn run(ctx: Ctx, args: &[Arg]) -> Replied;
}

/// What a command tells `COMMAND INFO`, `COMMAND DOCS` and ACL about itself
/// (`RM_SetCommandInfo`, Redis 7.0+).
pub(crate) struct Docs {
    pub(crate) summary: &'static CStr,
    /// The module version that introduced the command.
    pub(crate) since: &'static CStr,
    pub(crate) complexity: &'static CStr,
    /// Space-separated command tips (`nondeterministic_output`…), or empty.
    pub(crate) tips: &'static CStr,
    /// Arguments including the name: `n` exactly `n`, `-n` at least `n`. Redis answers a call
    /// with another count `ERR wrong number of arguments for '<name>' command` before the
    /// module runs.
    pub(crate) arity: i32,
    /// How the command uses its one key, argv[1].
    pub(crate) key: KeyUse,
    /// The arguments after the name, in order; the first is the key.
    pub(crate) args: &'static [ArgDoc],
}

/// How a command uses its key, as its key spec tells ACL and `COMMAND INFO`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum KeyUse {
    /// Reads the lock and returns what it holds (`RO ACCESS`): `%R~pattern` is enough.
    Read,
    /// Reads and may change the lock (`RW UPDATE`): needs write permission on the key.
    Update,
    /// Replaces whatever the key holds (`OW UPDATE`).
    Overwrite,
}

impl KeyUse {
    fn flags(self) -> u64 {
        u64::from(match self {
            KeyUse::Read => raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS,
            KeyUse::Update => raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_UPDATE,
            KeyUse::Overwrite => raw::REDISMODULE_CMD_KEY_OW | raw::REDISMODULE_CMD_KEY_UPDATE,
        })
    }
}

/// The type of an argument, as `COMMAND DOCS` shows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ArgType {
    Key,
    String,
    Integer,
    UnixTime,
}

/// One argument in `COMMAND DOCS` (what `redis-cli` shows as a hint).
pub(crate) struct ArgDoc {
    pub(crate) name: &'static CStr,
    pub(crate) kind: ArgType,
    /// The option word before the value (`LEASE` before `lease-id`); it makes the argument
    /// optional.
    pub(crate) token: Option<&'static CStr>,
    pub(crate) summary: &'static CStr,
}

impl ArgDoc {
    /// A positional argument.
    pub(crate) const fn required(
        name: &'static CStr,
        kind: ArgType,
        summary: &'static CStr,
    ) -> Self {
        Self::with_token(None, name, kind, summary)
    }

    /// An optional `TOKEN value` pair.
    pub(crate) const fn option(
        token: &'static CStr,
        name: &'static CStr,
        kind: ArgType,
        summary: &'static CStr,
    ) -> Self {
        Self::with_token(Some(token), name, kind, summary)
    }

    const fn with_token(
        token: Option<&'static CStr>,
        name: &'static CStr,
        kind: ArgType,
        summary: &'static CStr,
    ) -> Self {
        Self {
            name,
            kind,
            token,
            summary,
        }
    }

    fn to_raw(&self) -> raw::RedisModuleCommandArg {
        let type_ = match self.kind {
            ArgType::Key => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
            ArgType::String => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
            ArgType::Integer => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
            ArgType::UnixTime => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_UNIX_TIME,
        };
        let flags = if self.token.is_some() {
            raw::REDISMODULE_CMD_ARG_OPTIONAL as c_int
        } else {
            raw::REDISMODULE_CMD_ARG_NONE as c_int
        };
        raw::RedisModuleCommandArg {
            name: self.name.as_ptr(),
            type_,
            // The one key spec (index 0) for the key; -1 ("not a key") for the others.
            key_spec_index: if self.kind == ArgType::Key { 0 } else { -1 },
            token: self.token.map_or(std::ptr::null(), CStr::as_ptr),
            summary: non_empty(self.summary),
            since: std::ptr::null(),
            flags,
            deprecated_since: std::ptr::null(),
            subargs: std::ptr::null_mut(),
            display_text: std::ptr::null(),
        }
    }
}

fn non_empty(s: &CStr) -> *const c_char {
    if s.is_empty() {
        std::ptr::null()
    } else {
        s.as_ptr()
    }
}

/// The terminator of a command-info array: an element with all fields zero.
fn zeroed_arg() -> raw::RedisModuleCommandArg {
    raw::RedisModuleCommandArg {
        name: std::ptr::null(),
        type_: 0,
        key_spec_index: 0,
        token: std::ptr::null(),
        summary: std::ptr::null(),
        since: std::ptr::null(),
        flags: 0,
        deprecated_since: std::ptr::null(),
        subargs: std::ptr::null_mut(),
        display_text: std::ptr::null(),
    }
}

/// The key spec of a command whose only key is argv[1].
fn key_spec(flags: u64) -> raw::RedisModuleCommandKeySpec {
    raw::RedisModuleCommandKeySpec {
        notes: std::ptr::null(),
        flags,
        begin_search_type: raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX,
        bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
            index: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_1 { pos: 1 },
        },
        find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE,
        fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
            range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                lastkey: 0,
                keystep: 1,
                limit: 0,
            },
        },
    }
}

/// The terminator of the key-spec array (begin search type 0, "invalid").
fn zeroed_key_spec() -> raw::RedisModuleCommandKeySpec {
    raw::RedisModuleCommandKeySpec {
        notes: std::ptr::null(),
        flags: 0,
        begin_search_type: raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INVALID,
        bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
            index: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_1 { pos: 0 },
        },
        find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_OMITTED,
        fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
            range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                lastkey: 0,
                keystep: 0,
                limit: 0,
            },
        },
    }
}

/// Sets `docs` on `command` through `RM_SetCommandInfo`. Redis copies every string and array,
/// so what is built here only needs to live for the call.
///
/// # Safety
///
/// `command` must be a command this module registered, `set_info` the server's
/// `RM_SetCommandInfo`.
unsafe fn set_command_info(
    set_info: unsafe extern "C" fn(
        *mut raw::RedisModuleCommand,
        *const raw::RedisModuleCommandInfo,
    ) -> c_int,
    command: *mut raw::RedisModuleCommand,
    docs: &Docs,
) -> bool {
    // Version 1 of the structs, with this header's sizes: Redis 7.0 reads each array with
    // these strides and ignores the fields it does not know (`display_text`).
    let version = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
    };
    let mut key_specs = [key_spec(docs.key.flags()), zeroed_key_spec()];
    let mut args: Vec<raw::RedisModuleCommandArg> = docs.args.iter().map(ArgDoc::to_raw).collect();
    args.push(zeroed_arg());
    let info = raw::RedisModuleCommandInfo {
        version: &version,
        summary: non_empty(docs.summary),
        complexity: non_empty(docs.complexity),
        since: non_empty(docs.since),
        history: std::ptr::null_mut(),
        tips: non_empty(docs.tips),
        arity: docs.arity,
        key_specs: key_specs.as_mut_ptr(),
        args: args.as_mut_ptr(),
    };
    set_info(command, &info) == OK
}

unsafe extern "C" fn command_trampoline<C: Command>(
    ctx: *mut raw::RedisModuleCtx,
    argv: *mut *mut raw::RedisModuleString,
    argc: c_int,
) -> c_int {
    let args: &[Arg] = match usize::try_from(argc) {
        // SAFETY: argv/argc are what Redis passed; `Arg` is a transparent string pointer.
        Ok(n) if !argv.is_null() => std::slice::from_raw_parts(argv.cast::<Arg>(), n),
        _ => &[],
    };
    if guard(ctx, C::NAME, || C::run(Ctx(ctx), args)).is_none() {
        let _ = Ctx(ctx).reply_error(CommandError::Internal, C::NAME);
    }
    OK
}

/// Registers `C` with its key at argv[1] (first key 1, last key 1, step 1), through the API
/// that exists on Redis 7.0 as well as on later Redis and on Valkey; then, where the server
/// has them, its ACL categories (7.2+) and its [`Docs`] (7.0+: arity, key spec, `COMMAND
/// DOCS`). Without `RM_SetCommandInfo` the command keeps the legacy key spec (full access) and
/// checks its own arity, with the same error text.
pub(crate) fn register_command<C: Command>(ctx: Ctx) -> Result<(), String> {
    let ctx = ctx.0;
    let name = std::ffi::CString::new(C::NAME).map_err(|e| e.to_string())?;
    let status = unsafe {
        rm!(RedisModule_CreateCommand)(
            ctx,
            name.as_ptr(),
            Some(command_trampoline::<C>),
            C::FLAGS.as_ptr(),
            1,
            1,
            1,
        )
    };
    if status != OK {
        return Err(format!("could not register {}", C::NAME));
    }
    let Some(get_command) = (unsafe { raw::RedisModule_GetCommand }) else {
        return Ok(());
    };
    let command = unsafe { get_command(ctx, name.as_ptr()) };
    if command.is_null() {
        log(ctx, c"warning", &format!("could not look up {}", C::NAME));
        return Ok(());
    }
    // Redis 7.0 has no ACL categories for module commands; users grant them by name there.
    if let Some(set_categories) = unsafe { raw::RedisModule_SetCommandACLCategories } {
        if unsafe { set_categories(command, C::ACL.as_ptr()) } != OK {
            log(
                ctx,
                c"warning",
                &format!("could not set ACL categories of {}", C::NAME),
            );
        }
    }
    if let Some(set_info) = unsafe { raw::RedisModule_SetCommandInfo } {
        // SAFETY: `command` was just registered by this module; `set_info` is the server's.
        if !unsafe { set_command_info(set_info, command, &C::DOCS) } {
            log(
                ctx,
                c"warning",
                &format!("could not set the command info of {}", C::NAME),
            );
        }
    }
    Ok(())
}

/// Module-wide options and the INFO callback, set once in `init`.
pub(crate) fn configure(ctx: Ctx) {
    let ctx = ctx.0;
    // A context of the module's own for callbacks Redis gives none (a data type's `unlink2`):
    // timers are created in it. It lives as long as the module.
    let detached = unsafe { rm!(RedisModule_GetDetachedThreadSafeContext)(ctx) };
    MODULE_CTX.store(detached, std::sync::atomic::Ordering::Relaxed);
    unsafe {
        // Signal WATCH only for keys we change, not for every key opened for writing; and let
        // the RDB loader report a short or corrupt payload (`RESTORE`, `MIGRATE`, a damaged
        // file) as an error instead of aborting the server.
        rm!(RedisModule_SetModuleOptions)(
            ctx,
            (raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED
                | raw::REDISMODULE_OPTIONS_HANDLE_IO_ERRORS) as c_int,
        );
        rm!(RedisModule_RegisterInfoFunc)(ctx, Some(info_trampoline));
    }
}

// ---- INFO -----------------------------------------------------------------------------------

/// Adds fields to the module's `INFO` section.
pub(crate) struct InfoSink(*mut raw::RedisModuleInfoCtx);

impl InfoSink {
    pub(crate) fn field(&mut self, name: &CStr, value: u64) {
        unsafe { rm!(RedisModule_InfoAddFieldULongLong)(self.0, name.as_ptr(), value) };
    }
}

unsafe extern "C" fn info_trampoline(ctx: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    // An empty section name makes the section just "pylock", the module's name.
    if rm!(RedisModule_InfoAddSection)(ctx, c"".as_ptr()) != OK {
        return; // this section was not asked for
    }
    guard(std::ptr::null_mut(), "INFO", || {
        crate::stats::info(&mut InfoSink(ctx))
    });
}

// ---- timers ---------------------------------------------------------------------------------

/// Work a module timer does when it fires, under [`guard`].
pub(crate) trait TimerJob: Sized + 'static {
    fn fire(self, ctx: Ctx);
}

/// A running timer of job type `J`.
pub(crate) struct Timer<J> {
    id: raw::RedisModuleTimerID,
    _job: PhantomData<fn() -> J>,
}

impl<J> Clone for Timer<J> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<J> Copy for Timer<J> {}

/// Redis computes a timer's due time as now + period in µs, and an overflowing one would sort
/// first and stall every module timer: periods are clamped to this (about 35,000 years).
pub(crate) const MAX_TIMER_MS: i64 = 1 << 50;

impl Ctx {
    /// Runs `job` in `period_ms` (clamped to `0..=MAX_TIMER_MS`).
    pub(crate) fn start_timer<J: TimerJob>(self, period_ms: i64, job: J) -> Timer<J> {
        let data = Box::into_raw(Box::new(job)).cast::<c_void>();
        let period = period_ms.clamp(0, MAX_TIMER_MS);
        let id = unsafe {
            rm!(RedisModule_CreateTimer)(self.0, period, Some(timer_trampoline::<J>), data)
        };
        Timer {
            id,
            _job: PhantomData,
        }
    }

    /// Stops `timer` if it has not fired, dropping its job.
    pub(crate) fn stop_timer<J: TimerJob>(self, timer: Timer<J>) {
        let mut data: *mut c_void = std::ptr::null_mut();
        let stopped = unsafe { rm!(RedisModule_StopTimer)(self.0, timer.id, &mut data) };
        if stopped == OK && !data.is_null() {
            // SAFETY: made by `start_timer::<J>` and not fired, so not yet taken back.
            drop(unsafe { Box::from_raw(data.cast::<J>()) });
        }
    }
}

unsafe extern "C" fn timer_trampoline<J: TimerJob>(
    ctx: *mut raw::RedisModuleCtx,
    data: *mut c_void,
) {
    if data.is_null() {
        return;
    }
    // SAFETY: made by `start_timer::<J>`; a fired timer's data is handed over exactly once.
    let job = *Box::from_raw(data.cast::<J>());
    guard(ctx, "timer", || job.fire(Ctx(ctx)));
}

// ---- blocked clients ------------------------------------------------------------------------

/// A client blocked by [`Ctx::block`]. Its handle, an opaque address, tells blocked clients
/// apart while they are blocked (Redis frees it only after the module unblocked it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Blocked(usize);

/// The callbacks of one kind of blocked client, each run under [`guard`].
pub(crate) trait BlockedKind: 'static {
    /// What the module unblocks the client with.
    type Answer: 'static;
    /// The module unblocked the client with `answer` (or with none): reply to it.
    fn reply(ctx: Ctx, answer: Option<&mut Self::Answer>);
    /// `CLIENT UNBLOCK` (without `ERROR`) ended the wait: reply to it, and
    /// [`Ctx::unblock`] it if the module has not yet.
    fn timed_out(ctx: Ctx, client: Blocked);
    /// The client disconnected, or `CLIENT UNBLOCK … ERROR` ended the wait: forget it, and
    /// [`Ctx::unblock`] it if the module has not yet.
    fn disconnected(ctx: Ctx, client: Blocked);
    /// Redis frees an answer the client was unblocked with, after the reply callback ran or
    /// instead of it (the client went away first).
    fn freed(ctx: Ctx, answer: Self::Answer);
}

impl Ctx {
    /// Blocks the calling client until the module unblocks it; Redis applies no timeout of its
    /// own (`CLIENT UNBLOCK` still reaches [`BlockedKind::timed_out`]). `None` when Redis
    /// refused to block it.
    pub(crate) fn block<K: BlockedKind>(self) -> Option<Blocked> {
        let bc = unsafe {
            rm!(RedisModule_BlockClient)(
                self.0,
                Some(reply_trampoline::<K>),
                Some(timeout_trampoline::<K>),
                Some(free_trampoline::<K>),
                0,
            )
        };
        if bc.is_null() {
            return None;
        }
        unsafe { rm!(RedisModule_SetDisconnectCallback)(bc, Some(disconnect_trampoline::<K>)) };
        Some(Blocked(bc as usize))
    }

    fn blocked_client(self) -> Blocked {
        Blocked(unsafe { rm!(RedisModule_GetBlockedClientHandle)(self.0) } as usize)
    }
}

/// Unblocks `client` of kind `K`: its reply callback runs with `answer` before the event loop
/// next sleeps. Each blocked client is unblocked once.
pub(crate) fn unblock<K: BlockedKind>(client: Blocked, answer: Option<K::Answer>) {
    let privdata = answer.map_or(std::ptr::null_mut(), |a| {
        Box::into_raw(Box::new(a)).cast::<c_void>()
    });
    unsafe {
        rm!(RedisModule_UnblockClient)(client.0 as *mut raw::RedisModuleBlockedClient, privdata)
    };
}

unsafe extern "C" fn reply_trampoline<K: BlockedKind>(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    // SAFETY: the private data of a client of kind `K` is always a boxed `K::Answer`, which
    // Redis keeps until `free_trampoline`.
    let answer = rm!(RedisModule_GetBlockedClientPrivateData)(ctx)
        .cast::<K::Answer>()
        .as_mut();
    if guard(ctx, "blocked-client reply", || K::reply(Ctx(ctx), answer)).is_none() {
        let _ = Ctx(ctx).reply_error(CommandError::Internal, "");
    }
    OK
}

unsafe extern "C" fn timeout_trampoline<K: BlockedKind>(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    let c = Ctx(ctx);
    let client = c.blocked_client();
    if guard(ctx, "blocked-client timeout", || K::timed_out(c, client)).is_none() {
        let _ = c.reply_error(CommandError::Internal, "");
    }
    OK
}

unsafe extern "C" fn disconnect_trampoline<K: BlockedKind>(
    ctx: *mut raw::RedisModuleCtx,
    bc: *mut raw::RedisModuleBlockedClient,
) {
    guard(ctx, "blocked-client disconnect", || {
        K::disconnected(Ctx(ctx), Blocked(bc as usize))
    });
}

unsafe extern "C" fn free_trampoline<K: BlockedKind>(
    ctx: *mut raw::RedisModuleCtx,
    data: *mut c_void,
) {
    if data.is_null() {
        return;
    }
    // SAFETY: made by `unblock::<K>`; Redis frees each client's private data once.
    let answer = *Box::from_raw(data.cast::<K::Answer>());
    guard(ctx, "blocked-client free", || K::freed(Ctx(ctx), answer));
}

// ---- events ---------------------------------------------------------------------------------

/// A handler of keyspace notifications, run under [`guard`]. It must not write.
pub(crate) trait KeyspaceHandler: 'static {
    /// `event` is the event's name (`del`, `expired`, `rename_from`, ...).
    fn event(ctx: Ctx, event: &[u8], key: &Arg);
}

unsafe extern "C" fn keyspace_trampoline<H: KeyspaceHandler>(
    ctx: *mut raw::RedisModuleCtx,
    _type: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    // SAFETY: Redis passes the event's name as a NUL-terminated string.
    let name = if event.is_null() {
        &[][..]
    } else {
        unsafe { CStr::from_ptr(event) }.to_bytes()
    };
    guard(ctx, "keyspace event", || {
        H::event(Ctx(ctx), name, &Arg(key))
    });
    OK
}

/// Subscribes `H` to generic, expired and evicted keyspace events: the ways a key can vanish
/// without a PYLOCK command.
pub(crate) fn subscribe_keyspace<H: KeyspaceHandler>(ctx: Ctx) -> Result<(), String> {
    let types = raw::REDISMODULE_NOTIFY_GENERIC
        | raw::REDISMODULE_NOTIFY_EXPIRED
        | raw::REDISMODULE_NOTIFY_EVICTED;
    let status = unsafe {
        rm!(RedisModule_SubscribeToKeyspaceEvents)(
            ctx.0,
            types as c_int,
            Some(keyspace_trampoline::<H>),
        )
    };
    if status == OK {
        Ok(())
    } else {
        Err("could not subscribe to keyspace events".into())
    }
}

/// A server event pylock listens to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ServerEvent {
    ForkChild,
    RoleChanged,
    /// Loading started or stopped; `ended` when it finished.
    Loading {
        ended: bool,
    },
    ReplicaChange,
    /// `FLUSHDB` or `FLUSHALL` finished: the database emptied, `None` for all of them.
    Flushed(Option<c_int>),
    /// `SWAPDB a b` swapped the contents of two databases.
    Swapped(c_int, c_int),
}

impl ServerEvent {
    /// The event to subscribe to, for a variant (the variant's data does not matter).
    fn id(self) -> u64 {
        match self {
            Self::ForkChild => raw::REDISMODULE_EVENT_FORK_CHILD,
            Self::RoleChanged => raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
            Self::Loading { .. } => raw::REDISMODULE_EVENT_LOADING,
            Self::ReplicaChange => raw::REDISMODULE_EVENT_REPLICA_CHANGE,
            Self::Flushed(_) => raw::REDISMODULE_EVENT_FLUSHDB,
            Self::Swapped(..) => raw::REDISMODULE_EVENT_SWAPDB,
        }
    }
}

/// A handler of server events, run under [`guard`].
pub(crate) trait ServerEventHandler: 'static {
    fn event(ctx: Ctx, event: ServerEvent);
}

unsafe extern "C" fn server_event_trampoline<H: ServerEventHandler>(
    ctx: *mut raw::RedisModuleCtx,
    event: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    let event = match event.id {
        raw::REDISMODULE_EVENT_FORK_CHILD => ServerEvent::ForkChild,
        raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED => ServerEvent::RoleChanged,
        raw::REDISMODULE_EVENT_LOADING => ServerEvent::Loading {
            ended: subevent == raw::REDISMODULE_SUBEVENT_LOADING_ENDED,
        },
        raw::REDISMODULE_EVENT_REPLICA_CHANGE => ServerEvent::ReplicaChange,
        raw::REDISMODULE_EVENT_FLUSHDB if subevent == raw::REDISMODULE_SUBEVENT_FLUSHDB_END => {
            // SAFETY: Redis passes a RedisModuleFlushInfoV1 with this event.
            let Some(info) = (unsafe { data.cast::<raw::RedisModuleFlushInfoV1>().as_ref() })
            else {
                return;
            };
            ServerEvent::Flushed((info.dbnum >= 0).then_some(info.dbnum))
        }
        raw::REDISMODULE_EVENT_SWAPDB => {
            // SAFETY: Redis passes a RedisModuleSwapDbInfoV1 with this event.
            let Some(info) = (unsafe { data.cast::<raw::RedisModuleSwapDbInfoV1>().as_ref() })
            else {
                return;
            };
            ServerEvent::Swapped(info.dbnum_first, info.dbnum_second)
        }
        _ => return,
    };
    guard(ctx, "server event", || H::event(Ctx(ctx), event));
}

/// Subscribes `H` to `events`. False when the server lacks server events, or refused one.
pub(crate) fn subscribe_server_events<H: ServerEventHandler>(
    ctx: Ctx,
    events: &[ServerEvent],
) -> bool {
    let Some(subscribe) = (unsafe { raw::RedisModule_SubscribeToServerEvent }) else {
        return false;
    };
    events.iter().all(|e| {
        let event = raw::RedisModuleEvent {
            id: e.id(),
            dataver: 1,
        };
        unsafe { subscribe(ctx.0, event, Some(server_event_trampoline::<H>)) == OK }
    })
}

/// The context `init` got.
///
/// # Safety
///
/// `ctx` must be the context Redis passed to the module's `OnLoad`.
pub(crate) unsafe fn init_ctx(ctx: *mut raw::RedisModuleCtx) -> Ctx {
    Ctx(ctx)
}

static MODULE_CTX: std::sync::atomic::AtomicPtr<raw::RedisModuleCtx> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// The module's own detached context (made at load), for work started from a callback that
/// has no context: creating and stopping timers, the clock. It has no client, so it must not
/// be used to reply, open keys or replicate.
pub(crate) fn module_ctx() -> Option<Ctx> {
    let ptr = MODULE_CTX.load(std::sync::atomic::Ordering::Relaxed);
    (!ptr.is_null()).then_some(Ctx(ptr))
}

/// The key a data type callback is about (`unlink2`): its name and database.
pub(crate) struct KeyOpt(*mut raw::RedisModuleKeyOptCtx);

impl KeyOpt {
    /// # Safety
    ///
    /// `ctx` must be the handle Redis passed to the running data type callback.
    pub(crate) unsafe fn from_raw(ctx: *mut raw::RedisModuleKeyOptCtx) -> Self {
        Self(ctx)
    }

    /// The key's name, `None` if Redis gave none.
    pub(crate) fn key(&self) -> Option<&[u8]> {
        let name = unsafe { rm!(RedisModule_GetKeyNameFromOptCtx)(self.0) };
        if name.is_null() {
            return None;
        }
        let mut len = 0;
        let ptr = unsafe { rm!(RedisModule_StringPtrLen)(name, &mut len) };
        // SAFETY: Redis keeps the key's string alive for the callback.
        (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
    }

    /// The key's database.
    pub(crate) fn db(&self) -> c_int {
        unsafe { rm!(RedisModule_GetDbIdFromOptCtx)(self.0) }
    }
}

// ---- data-type I/O --------------------------------------------------------------------------

/// An RDB (or DUMP/RESTORE payload) being read or written by a data-type callback. With
/// `HANDLE_IO_ERRORS` set, a short read sets an error flag instead of aborting the server;
/// every read here checks it.
pub(crate) struct Io(*mut raw::RedisModuleIO);

impl Io {
    /// # Safety
    ///
    /// `io` must be the handle Redis passed to the running data-type callback.
    pub(crate) unsafe fn from_raw(io: *mut raw::RedisModuleIO) -> Self {
        Self(io)
    }

    fn failed(&self) -> bool {
        unsafe { rm!(RedisModule_IsIOError)(self.0) != 0 }
    }

    pub(crate) fn load_signed(&mut self) -> Option<i64> {
        let v = unsafe { rm!(RedisModule_LoadSigned)(self.0) };
        (!self.failed()).then_some(v)
    }

    /// Reads a string buffer, calling `f` with its bytes (freed afterwards).
    pub(crate) fn load_bytes<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
        let mut len = 0;
        let buf = unsafe { rm!(RedisModule_LoadStringBuffer)(self.0, &mut len) };
        if self.failed() || buf.is_null() {
            if !buf.is_null() {
                unsafe { rm!(RedisModule_Free)(buf.cast()) };
            }
            return None;
        }
        // SAFETY: Redis returned `len` bytes at `buf`, ours until freed below.
        let out = f(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) });
        unsafe { rm!(RedisModule_Free)(buf.cast()) };
        Some(out)
    }

    /// Logs why a value read here was refused: at `warning` while the server loads a file or
    /// a full sync (Redis then stops loading, and this line says why), at `verbose` for a
    /// `RESTORE`, as Redis logs its own bad payloads, so clients cannot flood the log.
    pub(crate) fn log_refusal(&mut self, msg: &str) {
        let Ok(msg) = std::ffi::CString::new(msg.replace('\0', " ")) else {
            return;
        };
        // SAFETY: `self.0` is the handle of the running callback; the context Redis returns
        // for it lives until the callback ends.
        let loading = unsafe {
            let ctx = rm!(RedisModule_GetContextFromIO)(self.0);
            !ctx.is_null()
                && rm!(RedisModule_GetContextFlags)(ctx)
                    & raw::REDISMODULE_CTX_FLAGS_LOADING as c_int
                    != 0
        };
        let level = if loading { c"warning" } else { c"verbose" };
        unsafe {
            rm!(RedisModule_LogIOError)(self.0, level.as_ptr(), c"%s".as_ptr(), msg.as_ptr())
        };
    }

    pub(crate) fn save_signed(&mut self, v: i64) {
        unsafe { rm!(RedisModule_SaveSigned)(self.0, v) };
    }

    pub(crate) fn save_bytes(&mut self, bytes: &[u8]) {
        unsafe { rm!(RedisModule_SaveStringBuffer)(self.0, bytes.as_ptr().cast(), bytes.len()) };
    }

    /// Emits `PYLOCK.RESTORE key id token [PXAT deadline] [FROM claimed-from]` into a
    /// rewritten AOF (Redis writes the key's own `PEXPIREAT` after it).
    ///
    /// # Safety
    ///
    /// `key` must be the key Redis passed to the running `aof_rewrite` callback.
    pub(crate) unsafe fn emit_restore(
        &mut self,
        key: *mut raw::RedisModuleString,
        id: &[u8],
        token: i64,
        deadline_ms: Option<i64>,
        claimed_from: Option<&[u8]>,
        limit: Option<u32>,
    ) {
        let cmd = c"PYLOCK.RESTORE".as_ptr();
        let token = token as c_longlong;
        // A semaphore's lease always has a deadline.
        if let (Some(n), Some(at)) = (limit, deadline_ms) {
            let (at, n) = (at as c_longlong, c_longlong::from(n));
            match claimed_from {
                None => rm!(RedisModule_EmitAOF)(
                    self.0,
                    cmd,
                    c"sblclcl".as_ptr(),
                    key,
                    id.as_ptr(),
                    id.len(),
                    token,
                    c"PXAT".as_ptr(),
                    at,
                    c"LIMIT".as_ptr(),
                    n,
                ),
                Some(from) => rm!(RedisModule_EmitAOF)(
                    self.0,
                    cmd,
                    c"sblclcbcl".as_ptr(),
                    key,
                    id.as_ptr(),
                    id.len(),
                    token,
                    c"PXAT".as_ptr(),
                    at,
                    c"FROM".as_ptr(),
                    from.as_ptr(),
                    from.len(),
                    c"LIMIT".as_ptr(),
                    n,
                ),
            }
            return;
        }
        match (deadline_ms, claimed_from) {
            (None, None) => rm!(RedisModule_EmitAOF)(
                self.0,
                cmd,
                c"sbl".as_ptr(),
                key,
                id.as_ptr(),
                id.len(),
                token,
            ),
            (Some(at), None) => rm!(RedisModule_EmitAOF)(
                self.0,
                cmd,
                c"sblcl".as_ptr(),
                key,
                id.as_ptr(),
                id.len(),
                token,
                c"PXAT".as_ptr(),
                at as c_longlong,
            ),
            (None, Some(from)) => rm!(RedisModule_EmitAOF)(
                self.0,
                cmd,
                c"sblcb".as_ptr(),
                key,
                id.as_ptr(),
                id.len(),
                token,
                c"FROM".as_ptr(),
                from.as_ptr(),
                from.len(),
            ),
            (Some(at), Some(from)) => rm!(RedisModule_EmitAOF)(
                self.0,
                cmd,
                c"sblclcb".as_ptr(),
                key,
                id.as_ptr(),
                id.len(),
                token,
                c"PXAT".as_ptr(),
                at as c_longlong,
                c"FROM".as_ptr(),
                from.as_ptr(),
                from.len(),
            ),
        }
    }
}

/// A `DEBUG DIGEST` being computed.
pub(crate) struct Digest(*mut raw::RedisModuleDigest);

impl Digest {
    /// # Safety
    ///
    /// `md` must be the handle Redis passed to the running digest callback.
    pub(crate) unsafe fn from_raw(md: *mut raw::RedisModuleDigest) -> Self {
        Self(md)
    }
    pub(crate) fn add_bytes(&mut self, bytes: &[u8]) {
        unsafe {
            rm!(RedisModule_DigestAddStringBuffer)(
                self.0,
                bytes.as_ptr().cast_mut().cast(),
                bytes.len(),
            )
        };
    }
    pub(crate) fn add_int(&mut self, v: i64) {
        unsafe { rm!(RedisModule_DigestAddLongLong)(self.0, v as c_longlong) };
    }
    pub(crate) fn end_sequence(&mut self) {
        unsafe { rm!(RedisModule_DigestEndSequence)(self.0) };
    }
}
