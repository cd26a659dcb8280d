//! Shared-memory segments created by a client and tracked by the server, as
//! CPython's `SharedMemoryManager.SharedMemory(size)` does: the segment is created
//! and mapped here, then registered with `track_segment`, so the server unlinks it
//! when it shuts down even if this process has died.

use std::ffi::CString;
use std::fmt;
use std::io;

use crate::error::{Error, Result};

/// A mapped POSIX shared-memory segment. Dropping it unmaps it; the name stays
/// until the server releases it (`Manager::release_segment`) or shuts down.
///
/// Made by [`Manager::create_segment`](crate::Manager::create_segment); another
/// process (a CPython one too: `SharedMemory(name=...)`) opens it by
/// [`name`](Self::name).
///
/// ```
/// # let (tx, rx) = std::sync::mpsc::channel();
/// # let server = std::thread::spawn(move || -> mgr::Result<()> {
/// #     let config = mgr::ServerConfig::new("127.0.0.1:0".parse()?, b"secret");
/// #     let mut s = mgr::Server::bind(config)?;
/// #     s.register_builtins();
/// #     tx.send(s.address().to_string()).unwrap();
/// #     s.run()
/// # });
/// # let address: String = rx.recv()?;
/// let m = mgr::Manager::connect(&address, b"secret")?;
/// let mut seg = m.create_segment(4096)?;
/// seg.as_mut_slice()[..3].copy_from_slice(b"abc");
/// assert_eq!(&seg.as_slice()[..3], b"abc");
/// assert!(seg.name().starts_with("psm_"));
/// m.release_segment(seg.name())?; // unlinked now, still mapped here
/// assert_eq!(seg.as_slice()[0], b'a');
/// # m.shutdown()?;
/// # server.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Segment {
    name: String,
    ptr: *mut u8,
    len: usize,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("len", &self.len)
            .finish()
    }
}

impl Segment {
    /// Creates and maps a new segment of `len` bytes (zero-filled) with a fresh
    /// name of CPython's form (`psm_` and 8 hex digits).
    pub(crate) fn create(len: usize) -> Result<Segment> {
        if len == 0 {
            return Err(Error::Config(
                "a shared memory segment needs a size > 0".into(),
            ));
        }
        for _ in 0..16 {
            let random = crate::entropy::challenge_bytes();
            let name: String = std::iter::once("psm_".to_owned())
                .chain(random[..4].iter().map(|b| format!("{b:02x}")))
                .collect();
            let c = CString::new(format!("/{name}")).expect("no NUL in a hex name");
            // SAFETY: `c` is a valid C string.
            let fd = unsafe {
                libc::shm_open(
                    c.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                    0o600,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::AlreadyExists {
                    continue;
                }
                return Err(Error::Io(e));
            }
            let mapped = Segment::map(fd, len);
            // SAFETY: `fd` is open and ours; the mapping (if any) keeps the memory.
            unsafe { libc::close(fd) };
            return match mapped {
                Ok(ptr) => Ok(Segment { name, ptr, len }),
                Err(e) => {
                    // SAFETY: `c` names the segment just created.
                    unsafe { libc::shm_unlink(c.as_ptr()) };
                    Err(Error::Io(e))
                }
            };
        }
        Err(Error::Io(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "could not find a free shared memory name",
        )))
    }

    fn map(fd: libc::c_int, len: usize) -> io::Result<*mut u8> {
        let size = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
        // SAFETY: `fd` is an open shared memory object.
        if unsafe { libc::ftruncate(fd, size) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh shared mapping of `len` bytes of `fd`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(ptr.cast())
    }

    /// Removes the name from the system (when the server could not track it).
    pub(crate) fn unlink(&self) {
        if let Ok(c) = CString::new(format!("/{}", self.name)) {
            // SAFETY: `c` is a valid C string.
            unsafe { libc::shm_unlink(c.as_ptr()) };
        }
    }

    /// The segment's name, as Python's `SharedMemory(name=...)` takes it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: segments have a size > 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapped bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` bytes for as long as `self` lives. Other
        // processes may write concurrently: the bytes are plain data.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The mapped bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only slice here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `create`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
