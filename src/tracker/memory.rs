//! Giving memory back to the system once the tracker's tables have shrunk.
//!
//! The tables free what they no longer need (see [`crate::tracker::table`]), but glibc's
//! allocator keeps freed memory for reuse: in one arena per busy thread by default (up to
//! eight per CPU), and an arena's free space above its last live block is handed back only by
//! the main arena. Measured with 200 peers × 10,000 names JOINed and then all gone (RSS from
//! idle 4 MiB): with the default arenas 388 MiB at the peak and 81 MiB left after the last
//! peer left; with one arena per CPU (2 here) 341 MiB and 11 MiB. The tracker's threads
//! allocate little per request, so fewer arenas cost no measurable speed (see
//! docs/benchmarks.md).

/// Limits glibc to one allocator arena per CPU, so freed memory can be handed back.
pub fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = libc::c_int::try_from(cpus).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets an allocator parameter; called before the tracker's
        // threads start.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Asks the allocator to hand free memory back to the system: whole free pages inside its
/// arenas, and the free top of the main one.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
