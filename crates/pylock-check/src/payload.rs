//! Mutated `DUMP` payloads of locks, with a valid checksum, for `RESTORE`.
//!
//! `RESTORE` checks a payload's CRC64 before it loads anything, so random bytes never reach the
//! module's loader. To test the loader, a real lock is `DUMP`ed, its body is mutated
//! (truncated, bytes flipped, a length field or an opcode replaced) and the checksum recomputed.
//! Each payload must either restore a well-formed lock or get `ERR Bad data format` and create
//! no key, and the server must stay up.
//!
//! A `DUMP` payload is `body || rdb-version (2 bytes LE) || crc64 (8 bytes LE)`, where the CRC
//! covers body and version. A lock's body is the type byte, the module type id (whose low 10
//! bits are the encoding version), the values the module saved, each after an opcode, and EOF:
//!
//! ```text
//! 07                      RDB_TYPE_MODULE_2
//! 81 <8 bytes BE>         module type id: name (54 bits) and encoding version (10 bits)
//! 02 <length-encoded u64> RDB_MODULE_OPCODE_UINT, the token (RM_SaveSigned)
//! 02 <length-encoded u64> version 1 only: the lease's deadline, Unix ms, -1 for none
//! 05 <string>             RDB_MODULE_OPCODE_STRING, the lease id (RM_SaveStringBuffer)
//! 05 <string>             version 1 only: the id it was claimed from, empty for none
//! 00                      RDB_MODULE_OPCODE_EOF
//! ```
//!
//! Version 0 is what the module wrote before CLAIM (token and id); the module still loads it,
//! so [`run`] mutates bodies of both versions. A signed value is stored as its two's
//! complement (`-1` is `81 ff ff ff ff ff ff ff ff`). Redis stores a string as a length and
//! bytes, as an integer (a short numeric id) or as LZF (a compressible id over 20 bytes), so
//! [`run`] starts from locks of each shape. [`LockBody`] writes a body of either version from
//! its values (strings always as a length and raw bytes).

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

/// A string value's place in a body: its opcode, its header (a length, or a special encoding
/// and the LZF lengths) and its stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringField {
    /// The opcode byte.
    pub opcode: usize,
    /// The header: its length, or its special encoding and LZF lengths.
    pub header: Range<usize>,
    /// The stored bytes (raw, an integer, or LZF-compressed).
    pub data: Range<usize>,
}

/// An unsigned value's opcode byte and its length encoding.
pub type UintField = (usize, Range<usize>);

/// Where each field of a lock's body lies (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The 8 bytes of the module type id (after `81`).
    pub module_id: Range<usize>,
    /// The encoding version, from the module type id's low 10 bits.
    pub encver: u16,
    /// The token's opcode byte.
    pub token_opcode: usize,
    /// The token's length encoding.
    pub token: Range<usize>,
    /// Version 1: the deadline's opcode byte and its length encoding.
    pub deadline: Option<(usize, Range<usize>)>,
    /// The id's opcode byte.
    pub id_opcode: usize,
    /// The id string's header: its length, or its special encoding and LZF lengths.
    pub id_header: Range<usize>,
    /// The id string's stored bytes (raw, or LZF-compressed).
    pub id_data: Range<usize>,
    /// Version 1: the claimed-from string.
    pub from: Option<StringField>,
    /// Version 2: n and the number of further leases (opcode and length encoding of each).
    /// Only bodies of one lease (further leases 0) are laid out here.
    pub limit: Option<(UintField, UintField)>,
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

/// Reads a string value (opcode `05`, then an RDB string) at `opcode`.
fn rdb_string(body: &[u8], opcode: usize) -> Option<StringField> {
    (body.get(opcode) == Some(&5)).then_some(())?;
    let header_at = opcode + 1;
    let (len, first) = rdb_len(body, header_at)?;
    let (header, data_len) = match (len, body.get(header_at)? & 0x3f) {
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
    let data = header.end..header.end.checked_add(data_len)?;
    (data.end <= body.len()).then_some(StringField {
        opcode,
        header,
        data,
    })
}

/// Reads an unsigned value (opcode `02`, then an RDB length) at `opcode`.
fn rdb_uint(body: &[u8], opcode: usize) -> Option<Range<usize>> {
    (body.get(opcode) == Some(&2)).then_some(())?;
    match rdb_len(body, opcode + 1)? {
        (Some(_), range) => Some(range),
        (None, _) => None,
    }
}

impl Layout {
    /// Finds the fields of a lock's body as `DUMP` writes it (encoding version 0 or 1); `None`
    /// if it is not one.
    pub fn of(body: &[u8]) -> Option<Layout> {
        if body.first() != Some(&7) || body.get(1) != Some(&0x81) {
            return None;
        }
        let module_id = 2..10;
        let encver = (u16::from(*body.get(8)? & 0x03) << 8) | u16::from(*body.get(9)?);
        let token_opcode = 10;
        let token = rdb_uint(body, token_opcode)?;
        let (deadline, id_opcode) = match encver {
            0 => (None, token.end),
            1 | 2 => {
                let range = rdb_uint(body, token.end)?;
                let end = range.end;
                (Some((token.end, range)), end)
            }
            _ => return None,
        };
        let id = rdb_string(body, id_opcode)?;
        let (from, eof) = match encver {
            0 => (None, id.data.end),
            _ => {
                let from = rdb_string(body, id.data.end)?;
                let end = from.data.end;
                (Some(from), end)
            }
        };
        let (limit, eof) = if encver >= 2 {
            let n = rdb_uint(body, eof)?;
            let more = rdb_uint(body, n.end)?;
            let end = more.end;
            ((Some(((eof, n.clone()), (n.end, more)))), end)
        } else {
            (None, eof)
        };
        (body.get(eof) == Some(&0) && body.len() == eof + 1).then_some(Layout {
            module_id,
            encver,
            token_opcode,
            token,
            deadline,
            id_opcode,
            id_header: id.header,
            id_data: id.data,
            from,
            limit,
            eof,
        })
    }
}

/// The values of a lock, to write as a body of either encoding version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockBody {
    /// 0 (token and id) or 1 (token, deadline, id, claimed-from); another value writes the
    /// version 1 fields under that version number, which a loader must refuse.
    pub encver: u16,
    /// The fencing token.
    pub token: i64,
    /// Version 1: the deadline (Unix ms; `-1` for none).
    pub deadline: i64,
    /// The lease id.
    pub id: Vec<u8>,
    /// Version 1: the claimed-from id (empty for none).
    pub from: Vec<u8>,
}

/// What version 2 writes after a lock's one lease: n = 1 and no further leases.
pub const V2_LOCK_TAIL: [u8; 4] = [2, 1, 2, 0];

/// An RDB length as `rdbSaveLen` writes it.
pub fn rdb_len_bytes(n: u64) -> Vec<u8> {
    if n < 1 << 6 {
        vec![n as u8]
    } else if n < 1 << 14 {
        vec![0x40 | (n >> 8) as u8, n as u8]
    } else if let Ok(n) = u32::try_from(n) {
        let mut v = vec![0x80];
        v.extend_from_slice(&n.to_be_bytes());
        v
    } else {
        len64(n)
    }
}

impl LockBody {
    /// The values of a body [`Layout::of`] read; strings stored as integers or LZF are not
    /// decoded (`None` then).
    pub fn read(body: &[u8], l: &Layout) -> Option<LockBody> {
        let uint = |r: &Range<usize>| match rdb_len(body, r.start)? {
            (Some(v), _) => Some(v as i64),
            (None, _) => None,
        };
        let raw = |header: &Range<usize>, data: &Range<usize>| {
            (body.get(header.start)? >> 6 != 3).then(|| body[data.clone()].to_vec())
        };
        Some(LockBody {
            encver: l.encver,
            token: uint(&l.token)?,
            deadline: match &l.deadline {
                Some((_, r)) => uint(r)?,
                None => -1,
            },
            id: raw(&l.id_header, &l.id_data)?,
            from: match &l.from {
                Some(f) => raw(&f.header, &f.data)?,
                None => Vec::new(),
            },
        })
    }

    /// The body, with the module type id `type_id` (8 bytes, as in a real dump of any version)
    /// given this body's encoding version.
    pub fn encode(&self, type_id: &[u8]) -> Vec<u8> {
        let mut out = vec![7, 0x81];
        out.extend_from_slice(type_id);
        out[8] = (out[8] & !0x03) | (self.encver >> 8) as u8 & 0x03;
        out[9] = self.encver as u8;
        let uint = |out: &mut Vec<u8>, v: i64| {
            out.push(2);
            out.extend(rdb_len_bytes(v as u64));
        };
        let string = |out: &mut Vec<u8>, s: &[u8]| {
            out.push(5);
            out.extend(rdb_len_bytes(s.len() as u64));
            out.extend_from_slice(s);
        };
        uint(&mut out, self.token);
        if self.encver != 0 {
            uint(&mut out, self.deadline);
        }
        string(&mut out, &self.id);
        if self.encver != 0 {
            string(&mut out, &self.from);
        }
        if self.encver >= 2 {
            out.extend_from_slice(&V2_LOCK_TAIL);
        }
        out.push(0);
        out
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

/// Fills a body to `len` bytes: the id of 129 bytes, a claimed-from of `len` bytes.
fn raw_string(len: usize, byte: u8) -> Vec<u8> {
    let mut v = rdb_len_bytes(len as u64);
    v.extend(std::iter::repeat_n(byte, len));
    v
}

/// The named edge cases for one lock's body: every truncation, huge and short id lengths,
/// wrong opcodes, bad tokens, other string encodings, another type version and encoding
/// version; for a version 1 body also bad deadlines, bad claimed-from ids and missing fields.
/// Each is a body; seal it with [`Dump::seal`].
pub fn edge_cases(body: &[u8], l: &Layout) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut case = |name: String, b: Vec<u8>| out.push((name, b));
    for n in 0..body.len() {
        case(format!("truncated to {n} bytes"), body[..n].to_vec());
    }
    let rest_of_id = &body[l.id_data.start..];
    let huge_lengths = [
        ("2^32-1", vec![0x80, 0xff, 0xff, 0xff, 0xff]),
        ("2^40", len64(1 << 40)),
        ("2^62", len64(1 << 62)),
        ("2^64-1", len64(u64::MAX)),
        ("129", vec![0x40, 129]),
        ("0", vec![0]),
    ];
    for (name, len) in &huge_lengths {
        case(
            format!("id length {name}, id and EOF after it"),
            splice(body, l.id_header.clone(), len),
        );
        case(format!("id length {name}, nothing after it"), {
            let mut b = body[..l.id_header.start].to_vec();
            b.extend_from_slice(len);
            b
        });
    }
    case("id length 200, 2 bytes present".into(), {
        let mut b = body[..l.id_header.start].to_vec();
        b.extend_from_slice(&[0x40, 200]);
        b.extend_from_slice(&rest_of_id[..2.min(rest_of_id.len())]);
        b
    });
    case(
        "id of 129 bytes".into(),
        splice(
            body,
            l.id_header.start..l.id_data.end,
            &raw_string(129, b'y'),
        ),
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
            splice(body, l.id_header.start..l.id_data.end, &enc),
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
    case(
        "no token (the next value right after the module id)".into(),
        splice(body, l.token_opcode..l.token.end, &[]),
    );
    case("two tokens".into(), {
        let t = body[l.token_opcode..l.token.end].to_vec();
        splice(body, l.token.end..l.token.end, &t)
    });
    case("two ids".into(), {
        let id = body[l.id_opcode..l.id_data.end].to_vec();
        splice(body, l.id_data.end..l.id_data.end, &id)
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
    // ^1 turns version 0 into 1 and back (each misreads the other's fields), ^2 makes version
    // 2 or 3 and ^0xff a version over 250: none of them loads.
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
    let (Some((deadline_opcode, deadline)), Some(from)) = (&l.deadline, &l.from) else {
        return out;
    };
    // Version 1 only: the deadline and the claimed-from id.
    for (name, d) in [
        ("-2", len64(u64::MAX - 1)),
        ("i64::MIN", len64(1 << 63)),
        ("-1000", len64(-1000i64 as u64)),
        ("32-bit, 2 bytes present", vec![0x80, 1, 2]),
        ("special encoding 0xc0", vec![0xc0]),
    ] {
        case(
            format!("deadline {name}"),
            splice(body, deadline.clone(), &d),
        );
    }
    for op in [0u8, 1, 3, 4, 5, 0x3f, 0xff] {
        let mut b = body.to_vec();
        b[*deadline_opcode] = op;
        case(format!("opcode {op:#04x} before the deadline"), b);
    }
    for op in [0u8, 1, 2, 3, 4, 6, 0xff] {
        let mut b = body.to_vec();
        b[from.opcode] = op;
        case(format!("opcode {op:#04x} before the claimed-from id"), b);
    }
    for (name, len) in &huge_lengths[..4] {
        case(
            format!("claimed-from length {name}, EOF after it"),
            splice(body, from.header.clone(), len),
        );
        case(format!("claimed-from length {name}, nothing after it"), {
            let mut b = body[..from.header.start].to_vec();
            b.extend_from_slice(len);
            b
        });
    }
    case(
        "claimed-from of 129 bytes".into(),
        splice(
            body,
            from.header.start..from.data.end,
            &raw_string(129, b'f'),
        ),
    );
    case("claimed-from equal to the id".into(), {
        let id = body[l.id_header.start..l.id_data.end].to_vec();
        splice(body, from.header.start..from.data.end, &id)
    });
    case("claimed-from length 200, 2 bytes present".into(), {
        let mut b = body[..from.header.start].to_vec();
        b.extend_from_slice(&[0x40, 200, b'f', b'f']);
        b
    });
    case("no deadline (a version 0 body under version 1)".into(), {
        splice(body, *deadline_opcode..deadline.end, &[])
    });
    case("no claimed-from (EOF right after the id)".into(), {
        splice(body, from.opcode..from.data.end, &[])
    });
    out
}

/// Edge cases of a version 1 body that a loader must accept: a claimed-from id of 128 bytes,
/// a deadline of `-1` (none, as a lease loaded from version 0 keeps) and a far deadline. Each
/// restores a well-formed lock.
pub fn valid_v1_cases(body: &[u8], l: &Layout) -> Vec<(String, Vec<u8>)> {
    let (Some((_, deadline)), Some(from)) = (&l.deadline, &l.from) else {
        return Vec::new();
    };
    let mut from128 = raw_string(128, b'f');
    if body[l.id_data.clone()] == [b'f'; 128] {
        from128 = raw_string(128, b'g');
    }
    let year_3000 = 32_503_680_000_000u64;
    vec![
        (
            "claimed-from of 128 bytes".to_string(),
            splice(body, from.header.start..from.data.end, &from128),
        ),
        (
            "deadline -1 (none)".to_string(),
            splice(body, deadline.clone(), &len64(u64::MAX)),
        ),
        (
            "deadline in the year 3000".to_string(),
            splice(body, deadline.clone(), &rdb_len_bytes(year_3000)),
        ),
    ]
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
            let mut fields = vec![l.token.clone(), l.id_header.clone()];
            fields.extend(l.deadline.as_ref().map(|(_, r)| r.clone()));
            fields.extend(l.from.as_ref().map(|f| f.header.clone()));
            let field = rng.pick(&fields).clone();
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
            let mut opcodes = vec![
                ("token", l.token_opcode),
                ("id", l.id_opcode),
                ("EOF", l.eof),
            ];
            opcodes.extend(l.deadline.as_ref().map(|(at, _)| ("deadline", *at)));
            opcodes.extend(l.from.as_ref().map(|f| ("claimed-from", f.opcode)));
            let (name, at) = *rng.pick(&opcodes);
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
        /// Its TTL as `PYLOCK.INFO` gave it (`-1`: no deadline).
        ttl: i64,
    },
    /// `RESTORE` took a well-formed lock whose own deadline had passed (a version 1 payload
    /// with a deadline in the past): the key is gone or `PYLOCK.INFO` reads it as free.
    Expired,
}

/// The key each payload is restored to.
pub const VICTIM: &str = "payload:victim";

fn info_lease(v: &Value) -> Option<(Vec<u8>, i64, i64)> {
    let Value::Array(items) = v else {
        return None;
    };
    match items.as_slice() {
        [Value::BulkString(f0), Value::BulkString(id), Value::BulkString(f1), Value::Int(token), Value::BulkString(f2), Value::Int(ttl), Value::BulkString(f3), Value::Int(0)]
            if f0 == b"lease" && f1 == b"token" && f2 == b"ttl" && f3 == b"waiters" =>
        {
            Some((id.clone(), *token, *ttl))
        }
        // A semaphore (a mutated n): `limit <n> holders <count> waiters 0 leases [...]`, with
        // n in 1..=100000, at most n holders; its first lease stands for it.
        [Value::BulkString(f0), Value::Int(n), Value::BulkString(f1), Value::Int(holders), Value::BulkString(f2), Value::Int(0), Value::BulkString(f3), Value::Array(leases)]
            if f0 == b"limit"
                && f1 == b"holders"
                && f2 == b"waiters"
                && f3 == b"leases"
                && (2..=100_000).contains(n)
                && *holders >= 1
                && *holders <= *n
                && leases.len() as i64 == *holders =>
        {
            match leases.first() {
                Some(Value::Array(l)) => match l.as_slice() {
                    [Value::BulkString(id), Value::Int(token), Value::Int(ttl)] => {
                        Some((id.clone(), *token, *ttl))
                    }
                    _ => None,
                },
                _ => None,
            }
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
            if ty != "pylock-lk" && ty != "none" {
                return Err(format!("RESTORE made a key of type {ty:?}"));
            }
            let info = redis::cmd("PYLOCK.INFO")
                .arg(VICTIM)
                .query::<Value>(con)
                .map_err(|e| format!("PYLOCK.INFO on the restored lock: {e}"))?;
            let verdict = match info_lease(&info) {
                // A lease past its own deadline: the timer or a lookup ended it.
                None if info == Value::Nil => Verdict::Expired,
                None => return Err(format!("PYLOCK.INFO on the restored lock: {info:?}")),
                Some((id, token, ttl)) => {
                    if id.is_empty() || id.len() > 128 || token <= 0 || ttl < -1 {
                        return Err(format!(
                            "restored a lock no grant makes: id of {} bytes, token {token}, ttl {ttl}",
                            id.len()
                        ));
                    }
                    Verdict::Restored { id, token, ttl }
                }
            };
            redis::cmd("DEL")
                .arg(VICTIM)
                .query::<i64>(con)
                .map_err(|e| format!("DEL: {e}"))?;
            verdict
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
    /// Restored as a well-formed lock whose own deadline had passed.
    pub expired: u64,
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
            "restored {} mutated lock payloads with valid CRC64 (largest {} bytes): {} refused with ERR Bad data format, {} restored as well-formed locks, {} as locks already past their deadline",
            self.sent, self.largest, self.refused, self.restored, self.expired
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
            Ok(Verdict::Expired) => self.expired += 1,
            Err(e) => {
                let fatal = e.starts_with("connection failed") || e.starts_with("PING");
                self.violations.push(format!("{what}: {e}"));
                return !fatal;
            }
        }
        true
    }
}

/// A lock taken with `old` as its lease id, then claimed by `new`: its `DUMP` carries a
/// claimed-from id.
///
/// # Panics
///
/// When the server refuses: the run cannot start.
pub fn dump_claimed_lock(
    con: &mut redis::Connection,
    key: &str,
    old: &[u8],
    new: &[u8],
) -> Vec<u8> {
    dump_lock(con, key, Some(old));
    let _: Value = redis::cmd("PYLOCK.CONFIRM")
        .arg(key)
        .arg(old)
        .arg("CLAIM")
        .arg(new)
        .query(con)
        .expect("PYLOCK.CONFIRM … CLAIM");
    redis::cmd("DUMP").arg(key).query(con).expect("DUMP")
}

/// The same lock as encoding version 0 (its token and `id`; deadline and claimed-from
/// dropped), with the id stored as a length and raw bytes: what the module wrote before CLAIM.
pub fn as_version_0(body: &[u8], l: &Layout, id: &[u8]) -> Option<Vec<u8>> {
    let (Some(token), _) = rdb_len(body, l.token.start)? else {
        return None;
    };
    let lock = LockBody {
        encver: 0,
        token: token as i64,
        deadline: -1,
        id: id.to_vec(),
        from: Vec::new(),
    };
    Some(lock.encode(&body[l.module_id.clone()]))
}

/// The base locks of a run: `(description, dump, layout)`, each made on `server` (version 1),
/// then each again as version 0, and one claimed lock.
///
/// # Panics
///
/// When the base locks cannot be made or read.
pub fn bases(con: &mut redis::Connection) -> Vec<(String, Dump, Layout)> {
    let mut bases = Vec::new();
    for (i, id) in base_ids().into_iter().enumerate() {
        let key = format!("payload:base:{i}");
        let payload = dump_lock(con, &key, id.as_deref());
        let dump = Dump::parse(&payload).expect("a real DUMP has a valid CRC64");
        let layout =
            Layout::of(&dump.body).unwrap_or_else(|| panic!("not a lock body: {:02x?}", dump.body));
        let name = match (&id, dump.body.get(layout.id_header.start)) {
            (None, _) => "a server-made UUID".to_string(),
            (Some(_), Some(h)) if h >> 6 == 3 => format!("an id stored with encoding {h:#04x}"),
            (Some(id), _) => format!("a raw id of {} bytes", id.len()),
        };
        let real_id = match &id {
            Some(id) => id.clone(),
            None => holder_id(con, &key),
        };
        let v0 = as_version_0(&dump.body, &layout, &real_id).expect("a version 0 body");
        let v0_layout = Layout::of(&v0).expect("the version 0 body parses");
        let v0_dump = Dump {
            body: v0,
            version: dump.version,
        };
        bases.push((format!("v0 (id stored raw) of {name}"), v0_dump, v0_layout));
        bases.push((format!("v1, {name}"), dump, layout));
    }
    let payload = dump_claimed_lock(con, "payload:base:claimed", b"claim-old", b"claim-new");
    let dump = Dump::parse(&payload).expect("a real DUMP has a valid CRC64");
    let layout = Layout::of(&dump.body).expect("a claimed lock's body");
    bases.push(("v1, a claimed lease".to_string(), dump, layout));
    bases
}

fn holder_id(con: &mut redis::Connection, key: &str) -> Vec<u8> {
    let info: Value = redis::cmd("PYLOCK.INFO")
        .arg(key)
        .query(con)
        .expect("PYLOCK.INFO");
    info_lease(&info).expect("held").0
}

/// Sends payloads to `server`: the named edge cases of each base lock of both encoding
/// versions (see [`edge_cases`], [`valid_v1_cases`]), then `count` random mutations
/// ([`mutate`]) from `seed`. Afterwards the server must be running and its log free of crash
/// lines.
///
/// # Panics
///
/// When the base locks cannot be made or read.
pub fn run(server: &Server, count: u64, seed: u64) -> PayloadReport {
    let mut report = PayloadReport::default();
    let mut con = server.conn();
    let bases = bases(&mut con);
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    let mut queue: Vec<(usize, String, Vec<u8>)> = Vec::new();
    for (b, (_, dump, layout)) in bases.iter().enumerate() {
        for (what, body) in edge_cases(&dump.body, layout) {
            queue.push((b, what, body));
        }
        for (what, body) in valid_v1_cases(&dump.body, layout) {
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
        assert_eq!(
            (l.encver, l.deadline.clone(), l.from.clone()),
            (0, None, None)
        );
    }

    #[test]
    fn writes_and_reads_both_versions() {
        let type_id = [0xa7, 0x29, 0x68, 0x72, 0x4f, 0xa5, 0x90, 0x01];
        let v1 = LockBody {
            encver: 1,
            token: 1_796_193_638_728_000,
            deadline: 1_796_193_700_000,
            id: b"abc".to_vec(),
            from: b"old".to_vec(),
        };
        let body = v1.encode(&type_id);
        let mut want = vec![7, 0x81, 0xa7, 0x29, 0x68, 0x72, 0x4f, 0xa5, 0x90, 0x01];
        want.extend_from_slice(&[2, 0x81, 0, 6, 0x61, 0xa0, 0xeb, 0xc8, 0xc1, 0x40]);
        want.push(2);
        want.extend(len64(1_796_193_700_000));
        want.extend_from_slice(&[5, 3, b'a', b'b', b'c', 5, 3, b'o', b'l', b'd', 0]);
        assert_eq!(body, want);
        let l = Layout::of(&body).unwrap();
        assert_eq!(l.encver, 1);
        assert_eq!(l.deadline, Some((20, 21..30)));
        assert_eq!(
            (l.id_opcode, l.id_header.clone(), l.id_data.clone()),
            (30, 31..32, 32..35)
        );
        let from = l.from.clone().unwrap();
        assert_eq!((from.opcode, from.header, from.data), (35, 36..37, 37..40));
        assert_eq!(l.eof, 40);
        assert_eq!(LockBody::read(&body, &l), Some(v1.clone()));
        // Version 0 of the same lock: token and id, under version 0 of the same type id.
        let v0 = as_version_0(&body, &l, b"abc").unwrap();
        let l0 = Layout::of(&v0).unwrap();
        assert_eq!((l0.encver, v0[9]), (0, 0));
        assert_eq!(
            LockBody::read(&v0, &l0),
            Some(LockBody {
                encver: 0,
                deadline: -1,
                from: Vec::new(),
                ..v1
            })
        );
        // Each version's body under the other's number does not parse.
        let mut swapped = body.clone();
        swapped[9] = 0;
        assert!(Layout::of(&swapped).is_none());
        let mut names = Vec::new();
        for (name, b) in edge_cases(&body, &l)
            .into_iter()
            .chain(valid_v1_cases(&body, &l))
        {
            assert_ne!(b, body, "{name} changes nothing");
            names.push(name);
        }
        for name in [
            "deadline -2",
            "claimed-from equal to the id",
            "claimed-from of 129 bytes",
            "no deadline (a version 0 body under version 1)",
        ] {
            assert!(names.iter().any(|n| n == name), "{name}");
        }
        // The equal-id case really holds the id twice.
        let (_, equal) = edge_cases(&body, &l)
            .into_iter()
            .find(|(n, _)| n == "claimed-from equal to the id")
            .unwrap();
        let le = Layout::of(&equal).unwrap();
        assert_eq!(
            LockBody::read(&equal, &le).map(|b| b.from),
            Some(b"abc".to_vec())
        );
        for n in [0u64, 63, 64, 16383, 16384, u64::from(u32::MAX), 1 << 40] {
            let enc = rdb_len_bytes(n);
            assert_eq!(rdb_len(&enc, 0), Some((Some(n), 0..enc.len())), "{n}");
        }
    }
}
