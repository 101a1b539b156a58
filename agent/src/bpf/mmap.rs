//! A `BPF_F_MMAPABLE` array's values through small shared mappings made on
//! demand. The kernel maps every page of an array map at `mmap` time and
//! counts them in the mapping process's RSS: a whole mapping of the fast
//! table (two halves of 65,536 buckets, 8 MiB) would sit in the agent's
//! RSS for ever, though the memory is the kernel's. So values are reached
//! through at most [`WINDOWS`] windows of [`WINDOW_BYTES`], mapped when a
//! value outside them is touched and unmapped by [`Mmap::release`]; the
//! few values a partial change moves go through the syscall ([`Cells`]).

use aya::{
    maps::{Array, Map, MapData},
    Pod,
};
use std::{
    io,
    marker::PhantomData,
    os::fd::{AsRawFd, BorrowedFd, OwnedFd},
    ptr::NonNull,
};

/// The size of one window: 1,024 buckets of the table, 8,192 bitmap words.
const WINDOW_BYTES: usize = 1 << 16;
/// Windows kept at once: a copy between halves reads one and writes the
/// other.
const WINDOWS: usize = 2;

/// The values of an array map, `len` of them, mapped a window at a time.
pub struct Mmap<T> {
    fd: OwnedFd,
    len: usize,
    /// The map's values in bytes, rounded up to whole pages.
    bytes: usize,
    /// Most recently used first.
    windows: [Option<Window>; WINDOWS],
    _values: PhantomData<T>,
}

/// One shared mapping of the map's bytes `offset..offset + bytes`.
struct Window {
    offset: usize,
    bytes: usize,
    ptr: NonNull<u8>,
}

// SAFETY: the windows are plain memory shared with the kernel; every access
// goes through volatile reads and writes of whole `T`s.
unsafe impl<T: Send> Send for Mmap<T> {}

impl<T: Copy> Mmap<T> {
    /// The first `len` values of the array map behind `fd`. Maps one
    /// window and drops it, so a map without `BPF_F_MMAPABLE` fails here.
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        if !WINDOW_BYTES.is_multiple_of(page) || !page.is_multiple_of(std::mem::size_of::<T>()) {
            return Err(io::Error::other(format!(
                "page size {page} does not suit windows of {WINDOW_BYTES} bytes"
            )));
        }
        let mut map = Self {
            fd: fd.try_clone_to_owned()?,
            len,
            bytes: (len * std::mem::size_of::<T>()).div_ceil(page) * page,
            windows: [None, None],
            _values: PhantomData,
        };
        if len > 0 {
            map.slot(0)?;
        }
        map.release();
        Ok(map)
    }

    pub fn get(&mut self, i: usize) -> io::Result<T> {
        let p = self.slot(i)?;
        // SAFETY: `slot` points inside a live window; values of an array
        // map are 8-byte aligned and T is a Pod of at most that alignment.
        Ok(unsafe { p.read_volatile() })
    }

    pub fn set(&mut self, i: usize, v: T) -> io::Result<()> {
        let p = self.slot(i)?;
        // SAFETY: as in get.
        unsafe { p.write_volatile(v) };
        Ok(())
    }

    /// Unmaps every window: the map's pages leave this process's RSS.
    pub fn release(&mut self) {
        self.windows = [None, None];
    }

    /// Where value `i` is, its window mapped first if it is not.
    fn slot(&mut self, i: usize) -> io::Result<*mut T> {
        assert!(i < self.len, "value {i} of {}", self.len);
        let byte = i * std::mem::size_of::<T>();
        let offset = byte - byte % WINDOW_BYTES;
        let hit = self
            .windows
            .iter()
            .position(|w| w.as_ref().is_some_and(|w| w.offset == offset));
        match hit {
            Some(k) => self.windows[..=k].rotate_right(1),
            None => {
                let bytes = WINDOW_BYTES.min(self.bytes - offset);
                let window = Window::map(self.fd.as_raw_fd(), offset, bytes)?;
                self.windows.rotate_right(1);
                self.windows[0] = Some(window);
            }
        }
        let window = self.windows[0].as_ref().expect("just mapped");
        // SAFETY: `byte - offset` is inside the window (its values fit in
        // whole pages, and the window covers every page up to `bytes`).
        Ok(unsafe { window.ptr.as_ptr().add(byte - offset) }.cast::<T>())
    }
}

impl<T: Copy + PartialEq> Mmap<T> {
    /// Copies `len` values from `src..` to `dst..`, writing only those that
    /// differ; how many it wrote.
    pub fn copy_differing(&mut self, (src, dst, len): (usize, usize, usize)) -> io::Result<usize> {
        let mut written = 0;
        for i in 0..len {
            let v = self.get(src + i)?;
            if self.get(dst + i)? != v {
                self.set(dst + i, v)?;
                written += 1;
            }
        }
        Ok(written)
    }
}

impl Window {
    fn map(fd: i32, offset: usize, bytes: usize) -> io::Result<Self> {
        let at = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks
        // the range against the map and refuses maps without
        // BPF_F_MMAPABLE.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                at,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Self { offset, bytes, ptr })
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}

/// The same array's values one at a time through the bpf syscall
/// (`BPF_MAP_LOOKUP_ELEM`, `BPF_MAP_UPDATE_ELEM`), for the few buckets and
/// words a partial change moves: mapping and unmapping a window per value
/// touched (each unmapping flushes the agent's TLBs on every CPU) made a
/// Service change's `sets` step about ten times slower in the VM.
pub struct Cells<T: Pod> {
    array: Array<MapData, T>,
}

impl<T: Pod> Cells<T> {
    pub fn new(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let data = MapData::from_fd(fd.try_clone_to_owned()?).map_err(io::Error::other)?;
        let array = Array::try_from(Map::Array(data)).map_err(io::Error::other)?;
        Ok(Self { array })
    }

    pub fn get(&self, i: usize) -> io::Result<T> {
        let index = u32::try_from(i).map_err(io::Error::other)?;
        self.array.get(&index, 0).map_err(io::Error::other)
    }

    pub fn set(&mut self, i: usize, v: T) -> io::Result<()> {
        let index = u32::try_from(i).map_err(io::Error::other)?;
        self.array.set(index, v, 0).map_err(io::Error::other)
    }
}
