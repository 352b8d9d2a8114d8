//! A fill of the disk tier in progress: a temp file that becomes an object on commit.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pingora_cache::key::HashBinary;

use super::super::format::{encode_table, BlockHasher, Fixed, FIXED_LEN};
use super::{now_nanos, read_verified, DiskStore, Entry, RawMeta, READ_STEP, WRITE_STEP};

impl DiskStore {
    /// Start a fill (blocking): a temp file with room for the header, then path and meta.
    pub fn begin_fill(&self, hash: HashBinary, path: Arc<str>, meta: &RawMeta) -> Option<Fill> {
        let (internal, header) = (&meta.internal, &meta.header);
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join("tmp").join(format!(
            "{}.{}.{generation}.tmp",
            crate::cache::key::HashBinaryExt::to_hex(&hash),
            std::process::id()
        ));
        let mut meta_bytes = Vec::with_capacity(path.len() + internal.len() + header.len());
        meta_bytes.extend_from_slice(path.as_bytes());
        meta_bytes.extend_from_slice(internal);
        meta_bytes.extend_from_slice(header);
        let fixed = Fixed {
            generation,
            path_len: path.len() as u32,
            internal_len: internal.len() as u32,
            header_len: header.len() as u32,
            body_len: 0,
            meta_crc: crc32fast::hash(&meta_bytes),
            table_crc: 0,
        };
        let create = || -> std::io::Result<File> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(&[0u8; FIXED_LEN])?;
            f.write_all(&meta_bytes)?;
            Ok(f)
        };
        match create() {
            Ok(file) => Some(Fill {
                hash,
                path,
                tmp,
                file: Some(file),
                fixed,
                hasher: BlockHasher::default(),
                committed: false,
            }),
            Err(e) => {
                log::warn!("disk cache: cannot start a fill: {e}");
                self.error("write");
                let _ = fs::remove_file(&tmp);
                None
            }
        }
    }

    /// Complete a fill (blocking): block table, header, rename into place, index.
    pub fn commit(&self, mut fill: Fill) -> bool {
        let Some(mut file) = fill.file.take() else {
            return false;
        };
        let table = std::mem::take(&mut fill.hasher).finish();
        let table_bytes = encode_table(&table);
        fill.fixed.table_crc = crc32fast::hash(&table_bytes);
        let header = fill.fixed.encode();
        let written = file
            .write_all(&table_bytes)
            .and_then(|_| file.write_all_at(&header, 0))
            .and_then(|_| file.metadata());
        let size = match written {
            Ok(md) if md.len() == fill.fixed.file_len() => md.len(),
            Ok(_) => {
                self.error("write");
                return false;
            }
            Err(e) => {
                log::warn!("disk cache: cannot finish a fill: {e}");
                self.error("write");
                return false;
            }
        };
        drop(file);
        let dest = self.object_path(&fill.hash);
        {
            let _g = self.stripe(&fill.hash);
            let renamed = dest
                .parent()
                .map_or(Ok(()), fs::create_dir_all)
                .and_then(|_| fs::rename(&fill.tmp, &dest));
            if let Err(e) = renamed {
                log::warn!("disk cache: cannot commit a fill: {e}");
                self.error("write");
                return false;
            }
            fill.committed = true;
            // a cached handle would still read the replaced file
            self.fds.remove(&fill.hash);
            self.index_insert(
                fill.hash,
                Entry {
                    generation: fill.fixed.generation,
                    size,
                    path: fill.path.clone(),
                    atime: AtomicU64::new(now_nanos()),
                },
                true,
            );
        }
        self.publish();
        self.evict_if_needed();
        true
    }

    /// Rewrite an object's meta (after a 304 revalidation), keeping its body. Blocking.
    pub fn rewrite_meta(&self, hash: &HashBinary, meta: &RawMeta) -> bool {
        let Some(opened) = self.open_object(hash) else {
            return false;
        };
        let Some(mut fill) = self.begin_fill(*hash, opened.path.clone(), meta) else {
            return false;
        };
        let mut offset = 0;
        while offset < opened.fixed.body_len {
            let to = (offset + READ_STEP).min(opened.fixed.body_len);
            match read_verified(&opened.file, &opened.fixed, &opened.table, offset, to) {
                Ok(chunk) => {
                    if !fill.write(&chunk) {
                        self.error("write");
                        return false;
                    }
                }
                Err(c) => {
                    self.error(c.as_str());
                    return false;
                }
            }
            offset = to;
        }
        self.commit(fill)
    }
}

/// A fill in progress (a temp file). Dropped without [`DiskStore::commit`], its temp file is
/// removed.
pub struct Fill {
    pub(super) hash: HashBinary,
    pub(super) path: Arc<str>,
    pub(super) tmp: PathBuf,
    pub(super) file: Option<File>,
    pub(super) fixed: Fixed,
    pub(super) hasher: BlockHasher,
    pub(super) committed: bool,
}

impl Fill {
    /// Append body bytes (blocking). Returns false on an I/O error (the fill is then dead).
    pub fn write(&mut self, data: &[u8]) -> bool {
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        if let Err(e) = file.write_all(data) {
            log::warn!("disk cache: write failed: {e}");
            self.file = None;
            return false;
        }
        self.hasher.update(data);
        self.fixed.body_len += data.len() as u64;
        true
    }

    /// Body bytes written so far.
    pub fn body_len(&self) -> u64 {
        self.fixed.body_len
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Fill data is buffered to this many bytes between writes.
pub const fn write_step() -> usize {
    WRITE_STEP
}
