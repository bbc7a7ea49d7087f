//! Giving memory back to the system once the tracker's tables have shrunk.
//!
//! The tables free what they no longer need (see [`crate::tracker::table`]), but glibc's
//! allocator keeps freed memory for reuse. Each busy thread's arena hands back the free space
//! above its last live block only when that space exceeds the trim threshold, and glibc raises
//! that threshold (up to 64 MiB) every time a large block it had mapped on its own is freed,
//! which the tracker does with every large JOIN. Fixing the thresholds keeps the rule simple:
//! blocks of 256 KiB or more get their own mapping (given back when freed), and free space
//! over 1 MiB at the top of an arena goes back. With 200 peers × 10,000 names JOINed and then
//! all gone (RSS from an idle 4 MiB; 2026-12-02): with glibc's defaults 388 MiB at the peak and
//! 81 MiB left after the last peer left; with these thresholds 365 MiB and 12 MiB. (Holding
//! glibc to one arena per CPU gave 11 MiB too, but made every SEARCH cost 2–4 µs more system
//! time in lock contention between 10,000 threads; these thresholds cost nothing measurable.)

/// Fixes glibc's mmap and trim thresholds so freed memory goes back to the system.
pub fn keep_trim_thresholds_fixed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before the tracker's threads
    // start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
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
