//! The slice of the Redis module API that pylock uses, behind small safe wrappers.
//!
//! Every raw function pointer is read through [`rm!`]. `init` checks each one the module calls
//! ([`REQUIRED`]) and refuses to load if any is missing, so the `None` arm of [`rm!`] cannot be
//! reached once the module is loaded.

use std::ffi::{c_char, c_int, CStr};
use std::os::raw::c_longlong;

use pylock_core::{CommandError, ReplySink};
use redis_module::raw;

/// Reads a module API function pointer that `init` verified is present.
macro_rules! rm {
    ($name:ident) => {{
        #[allow(unused_unsafe)]
        let f = unsafe { redis_module::raw::$name };
        match f {
            Some(f) => f,
            // `init` refuses to load without it (see `REQUIRED`); a panic here is caught at the
            // command boundary and answered as an error, never unwound into Redis.
            None => $crate::api::missing(stringify!($name)),
        }
    }};
}
pub(crate) use rm;

/// Unreachable once loaded: `init` refuses to load unless every function in `missing_required`
/// is present, and `rm!` is only used on those. Were it reached, the panic is caught at the
/// callback boundary (`commands::run` / `commands::guard`) and never unwinds into Redis.
#[cold]
pub(crate) fn missing(name: &str) -> ! {
    panic!("module API function {name} is not available")
}

/// The API functions pylock calls, checked at load time.
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
        RedisModule_CreateTimer,
        RedisModule_StopTimer,
        RedisModule_SubscribeToKeyspaceEvents,
        RedisModule_Call,
        RedisModule_FreeCallReply,
    );
    None
}

/// `REDISMODULE_OK`, what a command callback returns once it has replied.
pub(crate) fn raw_ok() -> c_int {
    raw::REDISMODULE_OK as c_int
}

/// One command argument, readable as bytes without copying.
#[repr(transparent)]
pub(crate) struct Arg(*mut raw::RedisModuleString);

impl Arg {
    /// Wraps a string Redis handed to a callback (or one the module created).
    pub(crate) fn from_ptr(ptr: *mut raw::RedisModuleString) -> Self {
        Self(ptr)
    }

    pub(crate) fn as_ptr(&self) -> *mut raw::RedisModuleString {
        self.0
    }
}

impl AsRef<[u8]> for Arg {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: Redis keeps argv strings alive for the whole command call, and every `Arg`
        // is borrowed from argv (or from a string the module holds) for no longer than that.
        unsafe { string_bytes(self.0) }
    }
}

/// The bytes of a Redis string.
///
/// # Safety
///
/// `s` must be a valid string that outlives the returned slice.
pub(crate) unsafe fn string_bytes<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    let mut len = 0;
    let ptr = rm!(RedisModule_StringPtrLen)(s, &mut len);
    if ptr.is_null() {
        return &[];
    }
    std::slice::from_raw_parts(ptr.cast::<u8>(), len)
}

/// The context of one command call.
#[derive(Clone, Copy)]
pub(crate) struct Ctx(pub(crate) *mut raw::RedisModuleCtx);

impl Ctx {
    /// The arguments of the call, argv[0] (the command name) included.
    ///
    /// # Safety
    ///
    /// `argv` and `argc` must be the ones Redis passed to the command callback.
    pub(crate) unsafe fn args<'a>(
        argv: *mut *mut raw::RedisModuleString,
        argc: c_int,
    ) -> &'a [Arg] {
        match usize::try_from(argc) {
            Ok(n) if !argv.is_null() => std::slice::from_raw_parts(argv.cast::<Arg>(), n),
            _ => &[],
        }
    }

    /// Unix time in milliseconds, from the clock Redis uses for key expiry.
    pub(crate) fn now_ms(self) -> i64 {
        unsafe { rm!(RedisModule_Milliseconds)() }
    }

    /// The database the call runs in.
    pub(crate) fn db(self) -> c_int {
        unsafe { rm!(RedisModule_GetSelectedDb)(self.0) }
    }

    pub(crate) fn flags(self) -> c_int {
        unsafe { rm!(RedisModule_GetContextFlags)(self.0) }
    }

    pub(crate) fn reply_error(self, err: CommandError, command: &str) -> c_int {
        let mut text = err.message(command);
        text.push('\0');
        self.reply_error_text(&text)
    }

    /// `text` must end with a NUL byte.
    pub(crate) fn reply_error_text(self, text: &str) -> c_int {
        debug_assert!(text.ends_with('\0'));
        unsafe { rm!(RedisModule_ReplyWithError)(self.0, text.as_ptr().cast::<c_char>()) }
    }

    pub(crate) fn reply_ok(self) -> c_int {
        unsafe { rm!(RedisModule_ReplyWithSimpleString)(self.0, c"OK".as_ptr()) }
    }

    /// Whether a replicated effect would be written anywhere; when it would not, the
    /// `replicate_*` wrappers only count the change (see `propagation`).
    fn skip_effect(self) -> bool {
        if crate::propagation::effects_needed(self.flags()) {
            return false;
        }
        // Redis propagates nothing in this state, verbatim or not; this only counts the
        // change in `server.dirty`, as `RM_Replicate` would have.
        unsafe { rm!(RedisModule_ReplicateVerbatim)(self.0) };
        true
    }

    /// Propagates `PYLOCK.RESTORE key id token [PXAT deadline]`: the full state of a grant
    /// (without a deadline only for a lock whose TTL was removed).
    pub(crate) fn replicate_grant(
        self,
        key: &Arg,
        id: &[u8],
        token: i64,
        deadline_ms: Option<i64>,
    ) {
        if self.skip_effect() {
            return;
        }
        let (cmd, fmt) = (c"PYLOCK.RESTORE".as_ptr(), c"sblcl".as_ptr());
        let (key, buf, len) = (key.as_ptr(), id.as_ptr().cast::<c_char>(), id.len());
        unsafe {
            match deadline_ms {
                Some(at) => rm!(RedisModule_Replicate)(
                    self.0,
                    cmd,
                    fmt,
                    key,
                    buf,
                    len,
                    token as c_longlong,
                    c"PXAT".as_ptr(),
                    at as c_longlong,
                ),
                None => rm!(RedisModule_Replicate)(
                    self.0,
                    cmd,
                    c"sbl".as_ptr(),
                    key,
                    buf,
                    len,
                    token as c_longlong,
                ),
            };
        }
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
                key.as_ptr(),
                deadline_ms as c_longlong,
            );
        }
    }

    /// Propagates `DEL key`.
    pub(crate) fn replicate_delete(self, key: &Arg) {
        if self.skip_effect() {
            return;
        }
        unsafe {
            rm!(RedisModule_Replicate)(self.0, c"DEL".as_ptr(), c"s".as_ptr(), key.as_ptr());
        }
    }

    /// Tells WATCH (and client-side caching) that the key changed. The module turns off
    /// Redis's implicit signal on every key opened for writing, so that calls that change
    /// nothing (a contended ACQUIRE, a plain CONFIRM) leave a client's WATCH intact.
    pub(crate) fn signal_modified(self, key: &Arg) {
        unsafe {
            rm!(RedisModule_SignalModifiedKey)(self.0, key.as_ptr());
        }
    }

    pub(crate) fn log_warning(self, msg: &str) {
        log(self.0, c"warning", msg);
    }
}

pub(crate) fn log(ctx: *mut raw::RedisModuleCtx, level: &CStr, msg: &str) {
    let Ok(msg) = std::ffi::CString::new(msg.replace('\0', " ")) else {
        return;
    };
    unsafe { rm!(RedisModule_Log)(ctx, level.as_ptr(), c"%s".as_ptr(), msg.as_ptr()) };
}

impl ReplySink for Ctx {
    fn array(&mut self, len: usize) {
        unsafe { rm!(RedisModule_ReplyWithArray)(self.0, len as std::os::raw::c_long) };
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
