//! The process's allocator, and when it gives memory back to the system.
//!
//! mimalloc instead of the system allocator: after 20 s of webhook load
//! the system allocator still held 350 MiB in its per-thread arenas, while
//! mimalloc gives freed pages back and allocates the many small
//! per-request buffers faster (docs/benchmarks.md). It is built as v2 and
//! without transparent huge pages (`no_thp`): with huge pages, which many
//! kernels enable for every mapping, each thread's arena costs megabytes
//! of resident memory at idle.
//!
//! mimalloc returns memory lazily: a page whose blocks are all free goes
//! back to the system only when its thread next allocates enough to notice,
//! and a freed span is purged only after a delay, checked on the next
//! allocation. A server that goes quiet allocates nothing, so after a burst
//! it kept tens of MiB it no longer used. Two settings close that gap:
//! freed spans are purged at once, and each runtime worker collects its
//! heap when it runs out of work (at most every [`COLLECT_INTERVAL`], so a
//! busy worker, which parks thousands of times a second, does not pay for
//! it on every park).
#![allow(unsafe_code)]

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use libmimalloc_sys as ffi;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_t` (the bindings do
/// not name it): milliseconds before a freed span is returned to the
/// system; 0 returns it at once.
const MI_OPTION_PURGE_DELAY: ffi::mi_option_t = 15;

/// How often, at most, one worker thread collects its heap when it parks.
pub(crate) const COLLECT_INTERVAL: Duration = Duration::from_millis(200);

/// Purge freed memory at once instead of after mimalloc's default 10 ms
/// (100 ms for arenas): the delayed purge runs only when the allocator is
/// next called, which a quiet server may not do for hours.
pub(crate) fn return_freed_memory_promptly() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option
    // table; the purge delay is read on every free of a span, so setting it
    // after allocations have happened is supported.
    unsafe { ffi::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

thread_local! {
    static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// For `on_thread_park`: gives the pages this thread's heap no longer uses
/// back to the system, at most every [`COLLECT_INTERVAL`].
pub(crate) fn collect_when_idle() {
    let now = Instant::now();
    let due = LAST_COLLECT
        .get()
        .is_none_or(|last| now.duration_since(last) >= COLLECT_INTERVAL);
    if due {
        LAST_COLLECT.set(Some(now));
        // SAFETY: mi_collect(false) frees the calling thread's empty pages
        // and purges what is due; it is safe to call at any time from any
        // thread that may allocate.
        unsafe { ffi::mi_collect(false) };
    }
}
