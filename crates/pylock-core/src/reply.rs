//! Reply shapes, written once for the module and read back by clients.
//!
//! The module implements [`ReplySink`] over the Redis reply API, so a reply is emitted with no
//! allocation. A client converts what its driver returns into a [`Frame`] and reads it back with
//! [`LeaseReply::from_frame`] or [`InfoReply::from_frame`].

/// Something a reply can be written into: the Redis reply API, or a [`FrameBuilder`].
pub trait ReplySink {
    /// Starts an array of `len` elements; the next `len` calls fill it.
    fn array(&mut self, len: usize);
    /// A bulk string.
    fn bulk(&mut self, bytes: &[u8]);
    /// An integer.
    fn int(&mut self, value: i64);
    /// The null reply.
    fn nil(&mut self);
}

/// `[lease-id, fencing-token, ttl-ms]`: what ACQUIRE and CONFIRM answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseReply<'a> {
    /// The lease id.
    pub id: &'a [u8],
    /// The fencing token.
    pub token: i64,
    /// Milliseconds left on the lease when the reply was made (-1: no deadline).
    pub ttl_ms: i64,
}

/// `lease <id> token <int> ttl <ms> waiters <int>`: what INFO answers for a held lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoReply<'a> {
    /// The holder.
    pub lease: LeaseReply<'a>,
    /// Clients waiting for the lock with BLOCK.
    pub waiters: i64,
}

/// The field names of an INFO reply on a semaphore (n > 1), in order.
pub const SEM_INFO_FIELDS: [&str; 4] = ["limit", "holders", "waiters", "leases"];

/// Writes INFO's reply for a semaphore (n > 1): `limit <n> holders <count> waiters <int>
/// leases <array of lease replies>`, the `holders` leases given earliest deadline first.
pub fn write_sem_info<'a>(
    out: &mut impl ReplySink,
    limit: u32,
    waiters: i64,
    holders: usize,
    leases: impl Iterator<Item = LeaseReply<'a>>,
) {
    out.array(8);
    out.bulk(SEM_INFO_FIELDS[0].as_bytes());
    out.int(i64::from(limit));
    out.bulk(SEM_INFO_FIELDS[1].as_bytes());
    out.int(holders as i64);
    out.bulk(SEM_INFO_FIELDS[2].as_bytes());
    out.int(waiters);
    out.bulk(SEM_INFO_FIELDS[3].as_bytes());
    out.array(holders);
    for lease in leases.take(holders) {
        lease.write(out);
    }
}

/// The field names of an INFO reply, in order.
pub const INFO_FIELDS: [&str; 4] = ["lease", "token", "ttl", "waiters"];

impl LeaseReply<'_> {
    /// Writes the three-element lease reply.
    pub fn write(&self, out: &mut impl ReplySink) {
        out.array(3);
        out.bulk(self.id);
        out.int(self.token);
        out.int(self.ttl_ms);
    }

    /// Reads a lease reply back.
    ///
    /// # Errors
    ///
    /// [`ShapeError`] when the frame is not a three-element `[bulk, int, int]` array.
    pub fn from_frame(frame: &Frame) -> Result<LeaseReply<'_>, ShapeError> {
        match frame {
            Frame::Array(items) => match items.as_slice() {
                [Frame::Bulk(id), Frame::Int(token), Frame::Int(ttl_ms)] => Ok(LeaseReply {
                    id,
                    token: *token,
                    ttl_ms: *ttl_ms,
                }),
                _ => Err(ShapeError("a lease reply is [bulk, int, int]")),
            },
            _ => Err(ShapeError("a lease reply is an array")),
        }
    }
}

impl InfoReply<'_> {
    /// Writes the flat field/value array.
    pub fn write(&self, out: &mut impl ReplySink) {
        out.array(8);
        out.bulk(INFO_FIELDS[0].as_bytes());
        out.bulk(self.lease.id);
        out.bulk(INFO_FIELDS[1].as_bytes());
        out.int(self.lease.token);
        out.bulk(INFO_FIELDS[2].as_bytes());
        out.int(self.lease.ttl_ms);
        out.bulk(INFO_FIELDS[3].as_bytes());
        out.int(self.waiters);
    }

    /// Reads an INFO reply back; `Ok(None)` for nil (the lock is free).
    ///
    /// # Errors
    ///
    /// [`ShapeError`] when the frame is neither nil nor the eight-element field/value array.
    pub fn from_frame(frame: &Frame) -> Result<Option<InfoReply<'_>>, ShapeError> {
        let items = match frame {
            Frame::Nil => return Ok(None),
            Frame::Array(items) => items,
            _ => return Err(ShapeError("an info reply is nil or an array")),
        };
        let field = |i: usize, name: &str| match items.get(i * 2) {
            Some(Frame::Bulk(n)) if n.as_slice() == name.as_bytes() => Ok(items.get(i * 2 + 1)),
            _ => Err(ShapeError("info fields are lease, token, ttl, waiters")),
        };
        match (
            field(0, INFO_FIELDS[0])?,
            field(1, INFO_FIELDS[1])?,
            field(2, INFO_FIELDS[2])?,
            field(3, INFO_FIELDS[3])?,
            items.len(),
        ) {
            (
                Some(Frame::Bulk(id)),
                Some(Frame::Int(token)),
                Some(Frame::Int(ttl_ms)),
                Some(Frame::Int(waiters)),
                8,
            ) => Ok(Some(InfoReply {
                lease: LeaseReply {
                    id,
                    token: *token,
                    ttl_ms: *ttl_ms,
                },
                waiters: *waiters,
            })),
            _ => Err(ShapeError("info values are bulk, int, int, int")),
        }
    }
}

/// A reply did not have the shape the contract gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeError(pub &'static str);

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected reply shape: {}", self.0)
    }
}

impl std::error::Error for ShapeError {}

/// A decoded reply, as far as PYLOCK replies need: clients build one from their driver's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The null reply.
    Nil,
    /// An integer.
    Int(i64),
    /// A bulk (or simple) string.
    Bulk(Vec<u8>),
    /// An array.
    Array(Vec<Frame>),
}

/// A [`ReplySink`] that builds a [`Frame`]; used to test that what the module writes, a client
/// reads back unchanged.
#[derive(Debug, Default)]
pub struct FrameBuilder {
    done: Vec<Frame>,
    open: Vec<(usize, Vec<Frame>)>,
}

impl FrameBuilder {
    /// The frames written so far (complete top-level replies only).
    pub fn finish(self) -> Vec<Frame> {
        self.done
    }

    fn push(&mut self, frame: Frame) {
        let mut frame = frame;
        loop {
            match self.open.last_mut() {
                None => {
                    self.done.push(frame);
                    return;
                }
                Some((want, items)) => {
                    items.push(frame);
                    if items.len() < *want {
                        return;
                    }
                }
            }
            // The innermost array is complete: close it and push it into its parent.
            let Some((_, items)) = self.open.pop() else {
                return;
            };
            frame = Frame::Array(items);
        }
    }
}

impl ReplySink for FrameBuilder {
    fn array(&mut self, len: usize) {
        if len == 0 {
            self.push(Frame::Array(Vec::new()));
        } else {
            self.open.push((len, Vec::with_capacity(len)));
        }
    }
    fn bulk(&mut self, bytes: &[u8]) {
        self.push(Frame::Bulk(bytes.to_vec()));
    }
    fn int(&mut self, value: i64) {
        self.push(Frame::Int(value));
    }
    fn nil(&mut self) {
        self.push(Frame::Nil);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lease_reply_round_trips(id in proptest::collection::vec(any::<u8>(), 1..129),
                                   token: i64, ttl_ms: i64) {
            let reply = LeaseReply { id: &id, token, ttl_ms };
            let mut b = FrameBuilder::default();
            reply.write(&mut b);
            let frames = b.finish();
            prop_assert_eq!(frames.len(), 1);
            prop_assert_eq!(LeaseReply::from_frame(&frames[0]), Ok(reply));
        }

        #[test]
        fn info_reply_round_trips(id in proptest::collection::vec(any::<u8>(), 1..129),
                                  token: i64, ttl_ms: i64, waiters: i64) {
            let reply = InfoReply { lease: LeaseReply { id: &id, token, ttl_ms }, waiters };
            let mut b = FrameBuilder::default();
            reply.write(&mut b);
            let frames = b.finish();
            prop_assert_eq!(InfoReply::from_frame(&frames[0]), Ok(Some(reply)));
        }
    }

    #[test]
    fn info_nil_means_free() {
        assert_eq!(InfoReply::from_frame(&Frame::Nil), Ok(None));
    }

    #[test]
    fn wrong_shapes_are_rejected() {
        let bad = [
            Frame::Nil,
            Frame::Int(1),
            Frame::Array(vec![Frame::Int(1), Frame::Int(2), Frame::Int(3)]),
            Frame::Array(vec![Frame::Bulk(b"a".to_vec()), Frame::Int(2)]),
        ];
        for f in &bad {
            assert!(LeaseReply::from_frame(f).is_err(), "{f:?}");
        }
        let swapped = Frame::Array(vec![
            Frame::Bulk(b"token".to_vec()),
            Frame::Int(1),
            Frame::Bulk(b"lease".to_vec()),
            Frame::Bulk(b"a".to_vec()),
            Frame::Bulk(b"ttl".to_vec()),
            Frame::Int(1),
            Frame::Bulk(b"waiters".to_vec()),
            Frame::Int(0),
        ]);
        assert!(InfoReply::from_frame(&swapped).is_err());
    }

    #[test]
    fn nested_arrays_build() {
        let mut b = FrameBuilder::default();
        b.array(2);
        b.array(0);
        b.array(1);
        b.nil();
        b.int(4);
        assert_eq!(
            b.finish(),
            vec![
                Frame::Array(vec![Frame::Array(vec![]), Frame::Array(vec![Frame::Nil])]),
                Frame::Int(4)
            ]
        );
    }
}
