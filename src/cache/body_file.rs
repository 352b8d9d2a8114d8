//! Large bodies kept in sealed memory files, so the hit path can send them with `sendfile(2)`.
//!
//! A body copied into a socket with `writev` costs the sender a copy of every byte; `sendfile`
//! from a file hands the socket references to the file's pages instead (nginx serves its cache
//! files that way). A memory-tier body of at least [`FILE_BODY`] bytes is written once, at
//! fill time, into an anonymous memory file (`memfd_create`), sealed against any change
//! (`F_SEAL_WRITE`, `F_SEAL_SHRINK`, `F_SEAL_GROW`, then `F_SEAL_SEAL`), and read back through a
//! read-only map of that file: the stored [`Bytes`] *are* the file's pages, so the body is kept
//! once, and every other reader (the proxy path, ranges, the disk tier) sees the same bytes.
//!
//! Each file holds a descriptor, so at most [`max_files`] bodies are kept this way at once
//! (4,096, or a quarter of the descriptor limit if that is lower); beyond that, or if the
//! kernel refuses, a body stays on the heap and is written with `writev`, as before.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use rustix::fs::{MemfdFlags, SealFlags};

/// Bodies at least this large are kept in a file. Below it the copy is small and a second
/// system call for the body would cost more than it saves.
pub const FILE_BODY: usize = 64 * 1024;

/// Where the kernel says whether memory files may be backed by large folios.
///
/// `sendfile` from a memory file hands the socket one page reference per folio: a 100 KiB body
/// in 4 KiB pages is 25 of them, each looked up, spliced and released; most of the kernel time
/// of a large hit (`perf` on `benches/peers/run.sh`'s 100 KiB row: 23 % of the node's time in
/// `shmem_file_splice_read`, `filemap_get_entry`, `page_cache_pipe_buf_release` and their
/// kin). With `within_size` here (Linux 6.18 here chooses any folio size that fits inside the
/// file), the same body is a 64 KiB, a 32 KiB and a 4 KiB folio: the row took 12.6 µs of
/// server CPU per hit instead of 14.6 µs, and nginx, whose cache files on ext4 get large
/// folios by default, 14.7 to 14.8 µs (`benches/README.md`). Most distributions ship
/// `never`; the node works either way and logs which at start ([`report_large_folios`]).
pub const LARGE_FOLIOS: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// The word [`LARGE_FOLIOS`] selects (`never`, `within_size`, ...), if the file is there.
fn large_folios() -> Option<String> {
    selected(&std::fs::read_to_string(LARGE_FOLIOS).ok()?).map(str::to_owned)
}

/// The bracketed word of a sysfs choice list: `always within_size [never]` selects `never`.
fn selected(choices: &str) -> Option<&str> {
    let start = choices.find('[')? + 1;
    let end = start + choices[start..].find(']')?;
    Some(&choices[start..end])
}

/// Log, once per process, whether the kernel may back memory files with large folios.
pub fn report_large_folios() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| match large_folios().as_deref() {
        None => {}
        Some(word @ ("within_size" | "always" | "force")) => {
            log::info!("memory files: {LARGE_FOLIOS} is {word}: large bodies use large folios")
        }
        Some(word) => log::info!(
            "memory files: {LARGE_FOLIOS} is {word}: bodies of 64 KiB and more are sent in \
             4 KiB pages; within_size there lets the kernel use large folios, which took \
             14 % off a 100 KiB hit's CPU in the peer benchmark (README, Cache tiers)"
        ),
    });
}

/// At most this many bodies are kept in files at once (one descriptor each).
const MAX_FILES: usize = 4096;

/// Files alive now (a count of [`BodyFile`]s).
static FILES: AtomicUsize = AtomicUsize::new(0);

/// The cap on files: [`MAX_FILES`], or a quarter of the soft descriptor limit if lower, so the
/// files never starve the listener of descriptors for connections.
pub fn max_files() -> usize {
    static CAP: OnceLock<usize> = OnceLock::new();
    *CAP.get_or_init(|| {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        limit.map_or(MAX_FILES, |l| MAX_FILES.min((l / 4) as usize))
    })
}

/// One sealed memory file holding a stored body. Its contents can never change, so the pages
/// a socket still references after a send (or after the file is gone) keep their bytes.
#[derive(Debug)]
pub struct BodyFile {
    fd: OwnedFd,
    len: usize,
}

impl BodyFile {
    /// The body (the concatenation of `chunks`, `len` bytes in all) in a new sealed file, with
    /// a read-only map of it as `Bytes`. `None` when the body is below [`FILE_BODY`], when
    /// [`max_files`] are alive, or when the kernel refuses (logged): the caller keeps the body
    /// on the heap, nothing is lost.
    pub fn create(chunks: &[Bytes], len: usize) -> Option<(Bytes, Arc<BodyFile>)> {
        if len < FILE_BODY {
            return None;
        }
        // reserve a slot first, so concurrent fills never exceed the cap
        if FILES.fetch_add(1, Ordering::Relaxed) >= max_files() {
            FILES.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        match Self::write(chunks, len) {
            Ok(made) => Some(made),
            Err(e) => {
                FILES.fetch_sub(1, Ordering::Relaxed);
                log::warn!("memory tier: a {len}-byte body stays on the heap: memory file: {e}");
                None
            }
        }
    }

    fn write(chunks: &[Bytes], len: usize) -> io::Result<(Bytes, Arc<BodyFile>)> {
        if chunks.iter().map(Bytes::len).sum::<usize>() != len {
            return Err(io::Error::other("body length does not match its chunks"));
        }
        let fd = rustix::fs::memfd_create(
            "tollgate-body",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        let mut file = File::from(fd);
        // Sized first and written in one call: a kernel allowed to back memory files with large
        // folios ([`LARGE_FOLIOS`]) sizes them by the file's size and by the write's length (one
        // `write` per chunk of 16 KiB from the origin made 16 KiB folios).
        file.set_len(len as u64)?;
        let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = file.write_vectored(rest)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        rustix::fs::fcntl_add_seals(
            &file,
            SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
        )?;
        // SAFETY: the map is read-only and the file is sealed against writes, truncation and
        // growth (and against removing the seals), so its bytes cannot change under the map.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let file = BodyFile {
            fd: file.into(),
            len,
        };
        Ok((Bytes::from_owner(map), Arc::new(file)))
    }

    /// The file, for `sendfile`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The body's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: files hold bodies of at least [`FILE_BODY`] bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        FILES.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    fn body(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn the_selected_word_is_read_from_a_choice_list() {
        assert_eq!(
            selected("always within_size advise [never] deny force\n"),
            Some("never")
        );
        assert_eq!(selected("[always] never"), Some("always"));
        assert_eq!(selected("always never"), None);
        assert_eq!(selected("always [never"), None);
    }

    #[test]
    fn small_bodies_stay_on_the_heap() {
        let b = Bytes::from(body(FILE_BODY - 1));
        assert!(BodyFile::create(&[b], FILE_BODY - 1).is_none());
    }

    #[test]
    fn a_large_body_is_kept_once_in_a_sealed_file() {
        let whole = body(FILE_BODY + 12_345);
        let (a, b) = whole.split_at(5000);
        let chunks = [Bytes::copy_from_slice(a), Bytes::copy_from_slice(b)];
        let (mapped, file) = BodyFile::create(&chunks, whole.len()).expect("a file");
        assert_eq!(&mapped[..], &whole[..]);
        assert_eq!(file.len(), whole.len());

        // the file holds the same bytes, and refuses any change
        let mut f = File::from(file.fd().try_clone_to_owned().unwrap());
        let mut back = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut back).unwrap();
        assert_eq!(back, whole);
        f.seek(SeekFrom::Start(0)).unwrap();
        assert!(
            f.write_all(b"changed").is_err(),
            "a sealed body accepted a write"
        );
        assert!(f.set_len(10).is_err(), "a sealed body accepted truncation");
        assert!(
            f.set_len(whole.len() as u64 + 1).is_err(),
            "a sealed body accepted growth"
        );
        let seals = rustix::fs::fcntl_get_seals(&f).unwrap();
        assert!(seals.contains(SealFlags::SEAL | SealFlags::WRITE));
        assert_eq!(&mapped[..], &whole[..]);
    }

    #[test]
    fn more_chunks_than_one_write_takes_are_all_written() {
        // 2,000 chunks: more than the 1,024 buffers one `writev` accepts
        let whole = body(2000 * 64);
        let chunks: Vec<Bytes> = whole.chunks(64).map(Bytes::copy_from_slice).collect();
        let (mapped, file) = BodyFile::create(&chunks, whole.len()).expect("a file");
        assert_eq!(file.len(), whole.len());
        assert_eq!(&mapped[..], &whole[..]);
    }

    #[test]
    fn chunks_that_do_not_add_up_are_refused() {
        let b = Bytes::from(body(FILE_BODY));
        assert!(BodyFile::create(&[b], FILE_BODY + 1).is_none());
    }

    #[test]
    fn the_map_outlives_the_file() {
        let whole = body(FILE_BODY * 2);
        let (mapped, file) = BodyFile::create(&[Bytes::from(whole.clone())], whole.len()).unwrap();
        drop(file);
        assert_eq!(&mapped[..], &whole[..]);
    }
}
