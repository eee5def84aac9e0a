//! A counting allocator: the runner measures each input's peak heap use, so an input that makes
//! a parser allocate in proportion to a length it claims (not to its size) is found before it
//! takes a device or fleetd down. Above a hard cap allocations fail (the process aborts with
//! the target's name printed), so a runaway input cannot swap the machine.

// The one place FleetD implements an unsafe trait: a global allocator must.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Heap in use, bytes.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
/// Highest heap in use since the last [`reset_peak`].
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Allocations beyond this fail.
const HARD_CAP: usize = 4 << 30;

/// The system allocator, counted. Install with `#[global_allocator]` in a binary.
pub struct Counting;

// SAFETY: every method forwards to the system allocator with the caller's layout and only adds
// atomic bookkeeping; a refused allocation returns null, which GlobalAlloc allows.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        if now > HARD_CAP {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's valid layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let grow = new_size - layout.size();
            let now = CURRENT.fetch_add(grow, Ordering::Relaxed) + grow;
            if now > HARD_CAP {
                CURRENT.fetch_sub(grow, Ordering::Relaxed);
                return std::ptr::null_mut();
            }
            PEAK.fetch_max(now, Ordering::Relaxed);
        } else {
            CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System` with `layout`; the new size is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts measuring a new peak from the heap in use now.
pub fn reset_peak() {
    PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Bytes allocated above `base` at the highest point since [`reset_peak`] (0 when the
/// counting allocator is not installed).
pub fn peak_above(base: usize) -> usize {
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

/// Heap in use now (0 when the counting allocator is not installed).
pub fn current() -> usize {
    CURRENT.load(Ordering::Relaxed)
}
