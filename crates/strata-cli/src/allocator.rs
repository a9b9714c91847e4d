//! Caps glibc's malloc arenas at start-up: the workspace's one `unsafe` block.
//!
//! glibc gives each thread that contends for the allocator an arena of its own, up to eight
//! per core, and an arena keeps the memory freed into it. A server has many threads (runtime
//! workers, the blocking pool, one per DIMSE association), so under a steady mixed load the
//! resident set settled near 170 MB while the live heap was about 50 MB; with the arenas capped
//! at one per core it stays near 50 MB with the same throughput (measured with
//! `strata-bench run --scenario mixed`; docs/benchmarks.md). mimalloc as the global allocator
//! was measured too: faster, but it kept even more (220 MB).
//!
//! An operator's own `MALLOC_ARENA_MAX` is respected (glibc reads it before `main`).

/// Sets `M_ARENA_MAX` to the number of cores unless `MALLOC_ARENA_MAX` is set. Call it first
/// in `main`, before any thread is spawned.
pub fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        let num_cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let max_arenas = libc::c_int::try_from(num_cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: `mallopt` only sets a tunable of glibc's allocator; it is called once, from
        // `main`, before any other thread exists, with a valid parameter and value.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, max_arenas) };
    }
}
