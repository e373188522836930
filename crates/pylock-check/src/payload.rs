//! Mutated `DUMP` payloads of locks, with a valid checksum, for `RESTORE`.
//!
//! `RESTORE` checks a payload's CRC64 before it loads anything, so random bytes never reach the
//! module's loader. To test the loader, a real lock is `DUMP`ed, its body is mutated
//! (truncated, bytes flipped, a length field or an opcode replaced) and the checksum recomputed.
//! Each payload must either restore a well-formed lock or get `ERR Bad data format` and create
//! no key, and the server must stay up.
//!
//! A `DUMP` payload is `body || rdb-version (2 bytes LE) || crc64 (8 bytes LE)`, where the CRC
//! covers body and version. A lock's body, encoding version 0, is:
//!
//! ```text
//! 07                      RDB_TYPE_MODULE_2
//! 81 <8 bytes BE>         module type id (name and encoding version)
//! 02 <length-encoded u64> RDB_MODULE_OPCODE_UINT, the token (RM_SaveSigned)
//! 05 <string>             RDB_MODULE_OPCODE_STRING, the lease id (RM_SaveStringBuffer)
//! 00                      RDB_MODULE_OPCODE_EOF
//! ```
//!
//! Redis stores the id string as a length and bytes, as an integer (a short numeric id) or as
//! LZF (a compressible id over 20 bytes), so [`run`] starts from locks of each shape.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Range;

use testkit::redis::{self, Value};
use testkit::Server;

use crate::checker::Rng;

/// Redis's CRC64 (Jones polynomial, reflected, initial value 0), as `DUMP` uses it.
pub fn crc64(data: &[u8]) -> u64 {
    const POLY: u64 = 0x95AC_9329_AC4B_C9B5;
    let mut crc = 0u64;
    for &b in data {
        crc ^= u64::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// A `DUMP` payload taken apart: the serialized value and the RDB version it was written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    /// The value's bytes (type, then the type's own encoding).
    pub body: Vec<u8>,
    /// The two RDB version bytes of the footer.
    pub version: [u8; 2],
}

impl Dump {
    /// Splits a payload, checking its footer's CRC64.
    ///
    /// # Errors
    ///
    /// When the payload is shorter than its footer or the checksum does not match.
    pub fn parse(payload: &[u8]) -> Result<Dump, String> {
        let n = payload.len();
        if n < 10 {
            return Err(format!("a DUMP payload of {n} bytes has no footer"));
        }
        let (data, crc) = payload.split_at(n - 8);
        let mut le = [0u8; 8];
        le.copy_from_slice(crc);
        let (want, got) = (u64::from_le_bytes(le), crc64(data));
        if want != got {
            return Err(format!(
                "CRC64 {got:#018x} computed, {want:#018x} in the footer"
            ));
        }
        Ok(Dump {
            body: data[..n - 10].to_vec(),
            version: [data[n - 10], data[n - 9]],
        })
    }

    /// A payload of `body` with this dump's version and a freshly computed checksum.
    pub fn seal(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() + 10);
        out.extend_from_slice(body);
        out.extend_from_slice(&self.version);
        let crc = crc64(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

/// Where each field of a lock's body lies (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The 8 bytes of the module type id (after `81`).
    pub module_id: Range<usize>,
    /// The token's opcode byte.
    pub token_opcode: usize,
    /// The token's length encoding.
    pub token: Range<usize>,
    /// The id's opcode byte.
    pub id_opcode: usize,
    /// The id string's header: its length, or its special encoding and LZF lengths.
    pub id_header: Range<usize>,
    /// The id string's stored bytes (raw, or LZF-compressed).
    pub id_data: Range<usize>,
    /// The EOF opcode byte.
    pub eof: usize,
}

/// Reads an RDB length at `at`: `(value or None for a special encoding, its byte range)`.
fn rdb_len(body: &[u8], at: usize) -> Option<(Option<u64>, Range<usize>)> {
    let first = *body.get(at)?;
    let be = |n: usize| -> Option<u64> {
        let bytes = body.get(at + 1..at + 1 + n)?;
        Some(bytes.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    };
    Some(match first >> 6 {
        0 => (Some(u64::from(first & 0x3f)), at..at + 1),
        1 => (
            Some((u64::from(first & 0x3f) << 8) | u64::from(*body.get(at + 1)?)),
            at..at + 2,
        ),
        2 if first == 0x80 => (Some(be(4)?), at..at + 5),
        2 if first == 0x81 => (Some(be(8)?), at..at + 9),
        3 => (None, at..at + 1),
        _ => return None,
    })
}

impl Layout {
    /// Finds the fields of a lock's body as `DUMP` writes it; `None` if it is not one.
    pub fn of(body: &[u8]) -> Option<Layout> {
        if body.first() != Some(&7) || body.get(1) != Some(&0x81) {
            return None;
        }
        let token_opcode = 10;
        (body.get(token_opcode) == Some(&2)).then_some(())?;
        let (_, token) = rdb_len(body, token_opcode + 1)?;
        let id_opcode = token.end;
        (body.get(id_opcode) == Some(&5)).then_some(())?;
        let header_at = id_opcode + 1;
        let (len, first) = rdb_len(body, header_at)?;
        let (id_header, data_len) = match (len, body.get(header_at)? & 0x3f) {
            (Some(n), _) => (first, usize::try_from(n).ok()?),
            (None, 0) => (first, 1),
            (None, 1) => (first, 2),
            (None, 2) => (first, 4),
            (None, 3) => {
                let (clen, c) = rdb_len(body, first.end)?;
                let (_, l) = rdb_len(body, c.end)?;
                (header_at..l.end, usize::try_from(clen?).ok()?)
            }
            _ => return None,
        };
        let id_data = id_header.end..id_header.end.checked_add(data_len)?;
        let eof = id_data.end;
        (body.get(eof) == Some(&0) && body.len() == eof + 1).then_some(Layout {
            module_id: 2..10,
            token_opcode,
            token,
            id_opcode,
            id_header,
            id_data,
            eof,
        })
    }
}

fn splice(body: &[u8], at: Range<usize>, with: &[u8]) -> Vec<u8> {
    let mut out = body[..at.start].to_vec();
    out.extend_from_slice(with);
    out.extend_from_slice(&body[at.end..]);
    out
}

/// A 64-bit RDB length (`81` and 8 bytes big-endian).
fn len64(n: u64) -> Vec<u8> {
    let mut v = vec![0x81];
    v.extend_from_slice(&n.to_be_bytes());
    v
}

/// The named edge cases for one lock's body: every truncation, huge and short id lengths,
/// wrong opcodes, bad tokens, other string encodings, another type version and encoding
/// version. Each is a body; seal it with [`Dump::seal`].
pub fn edge_cases(body: &[u8], l: &Layout) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut case = |name: String, b: Vec<u8>| out.push((name, b));
    for n in 0..body.len() {
        case(format!("truncated to {n} bytes"), body[..n].to_vec());
    }
    let rest_of_id = &body[l.id_data.start..];
    for (name, len) in [
        ("2^32-1", vec![0x80, 0xff, 0xff, 0xff, 0xff]),
        ("2^40", len64(1 << 40)),
        ("2^62", len64(1 << 62)),
        ("2^64-1", len64(u64::MAX)),
        ("129", vec![0x40, 129]),
        ("0", vec![0]),
    ] {
        case(
            format!("id length {name}, id and EOF after it"),
            splice(body, l.id_header.clone(), &len),
        );
        case(format!("id length {name}, nothing after it"), {
            let mut b = body[..l.id_header.start].to_vec();
            b.extend_from_slice(&len);
            b
        });
    }
    case("id length 200, 2 bytes present".into(), {
        let mut b = body[..l.id_header.start].to_vec();
        b.extend_from_slice(&[0x40, 200]);
        b.extend_from_slice(&rest_of_id[..2]);
        b
    });
    case(
        "id of 129 bytes".into(),
        splice(body, l.id_header.start..l.eof, &{
            let mut v = vec![0x40, 129];
            v.extend_from_slice(&[b'y'; 129]);
            v
        }),
    );
    for (name, enc) in [
        ("int8 5", vec![0xc0, 5]),
        ("int8, missing", vec![0xc0]),
        ("int16 -300", vec![0xc1, 0xd4, 0xfe]),
        ("int32, 2 bytes", vec![0xc2, 1, 2]),
        ("LZF 0/0", vec![0xc3, 0, 0]),
        ("LZF 1/1000", vec![0xc3, 1, 0x43, 0xe8, 0x00]),
        ("LZF 2^62/4", {
            let mut v = vec![0xc3];
            v.extend(len64(1 << 62));
            v.push(4);
            v
        }),
        ("LZF 4/2^62", {
            let mut v = vec![0xc3, 4];
            v.extend(len64(1 << 62));
            v.extend_from_slice(&[1, 2, 3, 4]);
            v
        }),
        ("encoding 0xc4", vec![0xc4, 1, 2]),
        ("0x82 length", vec![0x82, 0, 0, 0, 0]),
    ] {
        case(
            format!("id as {name}"),
            splice(body, l.id_header.start..l.eof, &enc),
        );
    }
    for (name, tok) in [
        ("0", vec![0]),
        ("2^64-1 (-1)", len64(u64::MAX)),
        ("2^63 (i64::MIN)", len64(1 << 63)),
        ("i64::MAX", len64(i64::MAX as u64)),
        ("32-bit, 2 bytes present", vec![0x80, 1, 2]),
        ("special encoding 0xc0", vec![0xc0]),
    ] {
        case(format!("token {name}"), splice(body, l.token.clone(), &tok));
    }
    for op in [0u8, 1, 3, 4, 5, 6, 0x3f, 0x80, 0xc0, 0xff] {
        let mut b = body.to_vec();
        b[l.token_opcode] = op;
        case(format!("opcode {op:#04x} before the token"), b);
    }
    for op in [0u8, 1, 2, 3, 4, 6, 0x3f, 0xc0, 0xff] {
        let mut b = body.to_vec();
        b[l.id_opcode] = op;
        case(format!("opcode {op:#04x} before the id"), b);
    }
    for op in [1u8, 2, 5, 0x3f, 0xff] {
        let mut b = body.to_vec();
        b[l.eof] = op;
        case(format!("opcode {op:#04x} instead of EOF"), b);
    }
    case("no token (id right after the module id)".into(), {
        splice(body, l.token_opcode..l.id_opcode, &[])
    });
    case("two tokens".into(), {
        let t = body[l.token_opcode..l.id_opcode].to_vec();
        splice(body, l.id_opcode..l.id_opcode, &t)
    });
    case("two ids".into(), {
        let id = body[l.id_opcode..l.eof].to_vec();
        splice(body, l.eof..l.eof, &id)
    });
    case("a byte after EOF".into(), {
        let mut b = body.to_vec();
        b.push(0x42);
        b
    });
    case("module type v1 (RDB_TYPE_MODULE)".into(), {
        let mut b = body.to_vec();
        b[0] = 6;
        b
    });
    for v in [1u8, 2, 0xff] {
        let mut b = body.to_vec();
        let last = l.module_id.end - 1;
        b[last] ^= v;
        case(format!("encoding version bits ^ {v:#04x}"), b);
    }
    case("another module type name".into(), {
        let mut b = body.to_vec();
        b[l.module_id.start] ^= 0x80;
        b
    });
    out
}

/// One random mutation of a lock's body, with a description. The type byte is kept, so every
/// payload reaches the module's loader or Redis's lookup of the module type; other types have
/// their own loaders, which are Redis's to test.
pub fn mutate(rng: &mut Rng, body: &[u8], l: &Layout) -> (String, Vec<u8>) {
    let n = body.len();
    let pos = |rng: &mut Rng| 1 + rng.below((n - 1) as u64) as usize;
    match rng.below(8) {
        0 => {
            let at = rng.below(n as u64) as usize;
            (format!("truncated to {at}"), body[..at].to_vec())
        }
        1 | 2 => {
            let mut b = body.to_vec();
            let k = 1 + rng.below(4);
            let mut what = Vec::new();
            for _ in 0..k {
                let at = pos(rng);
                if rng.chance(50) {
                    b[at] ^= 1 << rng.below(8);
                } else {
                    b[at] = rng.next_u64() as u8;
                }
                what.push(at.to_string());
            }
            (format!("bytes changed at {}", what.join(",")), b)
        }
        3 => {
            let field = if rng.chance(50) {
                l.token.clone()
            } else {
                l.id_header.clone()
            };
            let len = match rng.below(6) {
                0 => vec![rng.below(64) as u8],
                1 => vec![0x40 | rng.below(64) as u8, rng.next_u64() as u8],
                2 => {
                    let mut v = vec![0x80];
                    v.extend_from_slice(&(rng.next_u64() as u32).to_be_bytes());
                    v
                }
                3 => len64(rng.next_u64()),
                4 => len64(1 << rng.below(64)),
                _ => vec![0xc0 | rng.below(64) as u8],
            };
            (
                format!("field at {field:?} replaced by {len:02x?}"),
                splice(body, field, &len),
            )
        }
        4 => {
            let at = pos(rng);
            let byte = rng.next_u64() as u8;
            (
                format!("byte {byte:#04x} inserted at {at}"),
                splice(body, at..at, &[byte]),
            )
        }
        5 => {
            let at = pos(rng);
            (format!("byte {at} removed"), splice(body, at..at + 1, &[]))
        }
        6 => {
            let (name, at) = *rng.pick(&[
                ("token", l.token_opcode),
                ("id", l.id_opcode),
                ("EOF", l.eof),
            ]);
            let mut b = body.to_vec();
            b[at] = rng.below(8) as u8;
            (format!("opcode before {name} set to {}", b[at]), b)
        }
        _ => {
            // Truncation after a flip: a mutated length then meets the end of the payload.
            let mut b = body.to_vec();
            let at = pos(rng);
            b[at] = rng.next_u64() as u8;
            let end = at + rng.below((n - at) as u64) as usize;
            b.truncate(end.max(at));
            (format!("byte {at} changed, truncated to {}", b.len()), b)
        }
    }
}

/// What the server made of one payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `ERR Bad data format`, and no key was created.
    Refused,
    /// A lock was restored, and `PYLOCK.INFO` reads it back with this id and token.
    Restored {
        /// The restored lease id.
        id: Vec<u8>,
        /// The restored token.
        token: i64,
    },
}

/// The key each payload is restored to.
pub const VICTIM: &str = "payload:victim";

fn info_lease(v: &Value) -> Option<(Vec<u8>, i64)> {
    let Value::Array(items) = v else {
        return None;
    };
    match items.as_slice() {
        [Value::BulkString(f0), Value::BulkString(id), Value::BulkString(f1), Value::Int(token), Value::BulkString(f2), Value::Int(_), Value::BulkString(f3), Value::Int(0)]
            if f0 == b"lease" && f1 == b"token" && f2 == b"ttl" && f3 == b"waiters" =>
        {
            Some((id.clone(), *token))
        }
        _ => None,
    }
}

/// Restores `payload` to [`VICTIM`] (which must not exist) and checks the outcome: a lock that
/// `PYLOCK.INFO` reads back with an id of 1..=128 bytes and a positive token (then deleted), or
/// `ERR Bad data format` with no key created. The server must answer `PING` afterwards.
/// `dbsize` is the number of keys before.
///
/// # Errors
///
/// A description of what broke: another reply, a key left behind, a malformed lock, or a
/// connection that failed (the server is likely gone).
pub fn restore(
    con: &mut redis::Connection,
    payload: &[u8],
    dbsize: i64,
) -> Result<Verdict, String> {
    let reply = redis::cmd("RESTORE")
        .arg(VICTIM)
        .arg(0)
        .arg(payload)
        .query::<Value>(con);
    let verdict = match reply {
        Ok(Value::Okay) => {
            let ty: String = redis::cmd("TYPE")
                .arg(VICTIM)
                .query(con)
                .map_err(|e| format!("TYPE after RESTORE: {e}"))?;
            if ty != "pylock-lk" {
                return Err(format!("RESTORE made a key of type {ty:?}"));
            }
            let info = redis::cmd("PYLOCK.INFO")
                .arg(VICTIM)
                .query::<Value>(con)
                .map_err(|e| format!("PYLOCK.INFO on the restored lock: {e}"))?;
            let Some((id, token)) = info_lease(&info) else {
                return Err(format!("PYLOCK.INFO on the restored lock: {info:?}"));
            };
            if id.is_empty() || id.len() > 128 || token <= 0 {
                return Err(format!(
                    "restored a lock no grant makes: id of {} bytes, token {token}",
                    id.len()
                ));
            }
            redis::cmd("DEL")
                .arg(VICTIM)
                .query::<i64>(con)
                .map_err(|e| format!("DEL: {e}"))?;
            Verdict::Restored { id, token }
        }
        Ok(other) => return Err(format!("RESTORE answered {other:?}")),
        Err(e) if e.is_io_error() || e.is_connection_dropped() => {
            return Err(format!("connection failed on RESTORE: {e}"))
        }
        Err(e) => {
            let text = testkit::error_text(&e);
            if text != "ERR Bad data format" {
                return Err(format!("RESTORE answered {text:?}"));
            }
            Verdict::Refused
        }
    };
    let (pong, keys): (String, i64) = redis::pipe()
        .cmd("PING")
        .cmd("DBSIZE")
        .query(con)
        .map_err(|e| format!("PING after RESTORE: {e}"))?;
    if pong != "PONG" || keys != dbsize {
        return Err(format!(
            "after RESTORE: PING {pong:?}, DBSIZE {keys} (was {dbsize})"
        ));
    }
    Ok(verdict)
}

/// Lines of a server log that show a crash, an abort, a failed assertion or a panic caught in
/// the module.
pub fn crash_lines(log: &str) -> Vec<String> {
    const MARKS: [&str; 7] = [
        "crashed by signal",
        "Guru Meditation",
        "ASSERTION FAILED",
        "Error loading data from RDB",
        "STACK TRACE",
        "pylock: internal error",
        "Out of memory",
    ];
    log.lines()
        .filter(|l| MARKS.iter().any(|m| l.contains(m)))
        .map(str::to_string)
        .collect()
}

/// The whole log of `server`.
pub fn server_log(server: &Server) -> String {
    std::fs::read_to_string(server.dir().join("server.log")).unwrap_or_default()
}

/// Ids the locks of a run are made with, one per way Redis stores a string: raw (a UUID from
/// the server, 1 byte, 128 random bytes), LZF (128 repeated bytes) and integer (a numeric id).
fn base_ids() -> Vec<Option<Vec<u8>>> {
    let mut rng = Rng::new(7);
    vec![
        None,
        Some(b"z".to_vec()),
        Some((0..128).map(|_| rng.next_u64() as u8).collect()),
        Some(vec![b'a'; 128]),
        Some(b"12345".to_vec()),
        Some(b"-7".to_vec()),
    ]
}

/// Takes a lock on a fresh key (with `id`, or a server-made one) and returns its `DUMP`.
///
/// # Panics
///
/// When the server refuses: the run cannot start.
pub fn dump_lock(con: &mut redis::Connection, key: &str, id: Option<&[u8]>) -> Vec<u8> {
    let mut cmd = redis::cmd("PYLOCK.ACQUIRE");
    cmd.arg(key).arg(600_000);
    if let Some(id) = id {
        cmd.arg("LEASE").arg(id);
    }
    let _: Value = cmd.query(con).expect("PYLOCK.ACQUIRE");
    redis::cmd("DUMP").arg(key).query(con).expect("DUMP")
}

/// What a payload run sent and saw.
#[derive(Debug, Clone, Default)]
pub struct PayloadReport {
    /// Payloads restored.
    pub sent: u64,
    /// Refused with `ERR Bad data format`.
    pub refused: u64,
    /// Restored as a well-formed lock.
    pub restored: u64,
    /// Payloads by base lock (how its id is stored).
    pub by_base: HashMap<String, u64>,
    /// Largest payload, in bytes.
    pub largest: usize,
    /// Every broken expectation, with the payload's description.
    pub violations: Vec<String>,
}

impl PayloadReport {
    /// A human-readable summary and verdict.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "restored {} mutated lock payloads with valid CRC64 (largest {} bytes): {} refused with ERR Bad data format, {} restored as well-formed locks",
            self.sent, self.largest, self.refused, self.restored
        );
        let mut bases: Vec<_> = self.by_base.iter().collect();
        bases.sort();
        for (k, n) in bases {
            let _ = writeln!(s, "  {n:>6}  from a lock with {k}");
        }
        crate::write_verdict(&mut s, &self.violations);
        s
    }

    fn record(&mut self, what: &str, payload: &[u8], got: Result<Verdict, String>) -> bool {
        self.sent += 1;
        self.largest = self.largest.max(payload.len());
        match got {
            Ok(Verdict::Refused) => self.refused += 1,
            Ok(Verdict::Restored { .. }) => self.restored += 1,
            Err(e) => {
                let fatal = e.starts_with("connection failed") || e.starts_with("PING");
                self.violations.push(format!("{what}: {e}"));
                return !fatal;
            }
        }
        true
    }
}

/// Sends payloads to `server`: the named edge cases of each base lock (see [`edge_cases`]),
/// then `count` random mutations ([`mutate`]) from `seed`. Afterwards the server must be
/// running and its log free of crash lines.
///
/// # Panics
///
/// When the base locks cannot be made or read.
pub fn run(server: &Server, count: u64, seed: u64) -> PayloadReport {
    let mut report = PayloadReport::default();
    let mut con = server.conn();
    let mut bases = Vec::new();
    for (i, id) in base_ids().into_iter().enumerate() {
        let payload = dump_lock(&mut con, &format!("payload:base:{i}"), id.as_deref());
        let dump = Dump::parse(&payload).expect("a real DUMP has a valid CRC64");
        let layout =
            Layout::of(&dump.body).unwrap_or_else(|| panic!("not a lock body: {:02x?}", dump.body));
        let name = match (&id, dump.body.get(layout.id_header.start)) {
            (None, _) => "a server-made UUID".to_string(),
            (Some(_), Some(h)) if h >> 6 == 3 => format!("an id stored with encoding {h:#04x}"),
            (Some(id), _) => format!("a raw id of {} bytes", id.len()),
        };
        bases.push((name, dump, layout));
    }
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    let mut queue: Vec<(usize, String, Vec<u8>)> = Vec::new();
    for (b, (_, dump, layout)) in bases.iter().enumerate() {
        for (what, body) in edge_cases(&dump.body, layout) {
            queue.push((b, what, body));
        }
    }
    let mut rng = Rng::new(seed);
    for _ in 0..count {
        let b = rng.below(bases.len() as u64) as usize;
        let (what, body) = mutate(&mut rng, &bases[b].1.body, &bases[b].2);
        queue.push((b, what, body));
    }
    for (i, (b, what, body)) in queue.into_iter().enumerate() {
        let (base, dump, _) = &bases[b];
        *report.by_base.entry(base.clone()).or_default() += 1;
        let payload = dump.seal(&body);
        let got = restore(&mut con, &payload, dbsize);
        if !report.record(&format!("#{i} ({base}) {what}"), &payload, got) {
            break;
        }
    }
    for line in crash_lines(&server_log(server)) {
        report.violations.push(format!("server log: {line}"));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_matches_the_jones_check_value() {
        // The check value of CRC-64/Jones as Redis's own crc64 test prints it.
        assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    #[test]
    fn seals_the_payload_of_the_crash_report() {
        // The 20-byte payload that aborted Redis 7.0 before the fix: type and module id only.
        let hex = "0781a72968724fa590000a00b09fa06abd686483";
        let payload: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let dump = Dump::parse(&payload).unwrap();
        assert_eq!(dump.version, [0x0a, 0x00]);
        assert_eq!(dump.seal(&dump.body), payload);
    }

    #[test]
    fn finds_the_fields_of_a_lock_body() {
        let mut body = vec![7, 0x81, 0xa7, 0x29, 0x68, 0x72, 0x4f, 0xa5, 0x90, 0x00];
        body.extend_from_slice(&[2, 0x81, 0, 6, 0x6c, 0, 0, 0, 0, 1]);
        body.extend_from_slice(&[5, 3, b'a', b'b', b'c', 0]);
        let l = Layout::of(&body).unwrap();
        assert_eq!(l.token, 11..20);
        assert_eq!(l.id_opcode, 20);
        assert_eq!(l.id_header, 21..22);
        assert_eq!(l.id_data, 22..25);
        assert_eq!(l.eof, 25);
        assert!(Layout::of(&body[..25]).is_none());
        for (name, b) in edge_cases(&body, &l) {
            assert_ne!(b, body, "{name} changes nothing");
        }
    }
}
