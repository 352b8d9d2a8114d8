//! Reading object files: the stored meta, an object opened and verified for reading, and
//! positional reads that check every block they touch.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pingora_cache::CacheMeta;

use super::super::format::{Corrupt, Fixed, BLOCK};

/// A response's cache metadata in pingora's serialized form (internal meta, header), as stored
/// in object files. Fills serialize once; hits keep the bytes they read, so promoting a disk hit
/// to memory does not serialize again.
#[derive(Clone)]
pub struct RawMeta {
    /// pingora's internal meta.
    pub internal: Bytes,
    /// The serialized response header.
    pub header: Bytes,
}

impl RawMeta {
    /// Serialize a meta.
    pub fn of(meta: &CacheMeta) -> Option<RawMeta> {
        match meta.serialize() {
            Ok((internal, header)) => Some(RawMeta {
                internal: internal.into(),
                header: header.into(),
            }),
            Err(e) => {
                log::warn!("cache: cannot serialize meta: {e}");
                None
            }
        }
    }

    /// Deserialize.
    pub fn to_meta(&self) -> Option<CacheMeta> {
        CacheMeta::deserialize(&self.internal, &self.header).ok()
    }
}

/// A verified object opened for reading.
pub struct Opened {
    /// The open file.
    pub file: Arc<File>,
    /// Its fixed header.
    pub fixed: Fixed,
    /// The object's normalized request path.
    pub path: Arc<str>,
    /// The deserialized meta.
    pub meta: CacheMeta,
    /// The same meta as stored.
    pub raw_meta: RawMeta,
    /// The block table.
    pub table: Arc<Vec<u32>>,
    /// The whole body, when it was small enough to verify up front.
    pub body: Option<Bytes>,
}

pub(super) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub(super) fn mtime_nanos(m: &fs::Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub(super) enum ReadErr {
    Missing,
    Io(std::io::Error),
    Corrupt(Corrupt),
}

impl From<std::io::Error> for ReadErr {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            ReadErr::Missing
        } else {
            ReadErr::Io(e)
        }
    }
}

pub(super) fn read_exact_at(file: &File, len: u64, offset: u64) -> Result<Vec<u8>, ReadErr> {
    let mut buf = vec![0u8; len as usize];
    match file.read_exact_at(&mut buf, offset) {
        Ok(()) => Ok(buf),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(ReadErr::Corrupt(Corrupt::Length))
        }
        Err(e) => Err(ReadErr::Io(e)),
    }
}

/// Read `len` bytes from the start of `file` only if all of them are in the page cache:
/// `preadv2(RWF_NOWAIT)` returns `EAGAIN` instead of waiting for the device.
pub(super) fn read_cached(file: &File, len: u64) -> Option<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let len = usize::try_from(len).ok()?;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: `iov` describes `len` writable bytes owned by `buf`, which outlives the call;
    // the kernel writes at most `len` bytes, and `set_len` only covers what it reports written.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT) };
    if n < 0 || n as usize != len {
        return None;
    }
    // SAFETY: the kernel initialized exactly `len` bytes (checked above).
    unsafe { buf.set_len(len) };
    Some(buf)
}

/// Read `[from, to)` of the body, verifying every block it touches.
pub fn read_verified(
    file: &File,
    fixed: &Fixed,
    table: &[u32],
    from: u64,
    to: u64,
) -> Result<Bytes, Corrupt> {
    let first = from / BLOCK;
    let last = to.saturating_sub(1) / BLOCK;
    let start = first * BLOCK;
    let end = ((last + 1) * BLOCK).min(fixed.body_len);
    let buf =
        read_exact_at(file, end - start, fixed.body_offset() + start).map_err(|e| match e {
            ReadErr::Corrupt(c) => c,
            _ => Corrupt::Length,
        })?;
    for (i, block) in buf.chunks(BLOCK as usize).enumerate() {
        let want = table.get(first as usize + i).copied();
        if want != Some(crc32fast::hash(block)) {
            return Err(Corrupt::Body);
        }
    }
    let buf = Bytes::from(buf);
    Ok(buf.slice((from - start) as usize..(to - start) as usize))
}
