//! The process setup of the `mrsampler` tool (`configure_process` in `cli/src/main.rs`), for the
//! examples that time its forward: mimalloc, freed memory kept for reuse, and candle's
//! element-wise thread pool parked as soon as an operation ends.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_t`, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Call first thing in `main`.
pub fn configure_process() {
    // SAFETY: `mi_option_set` stores one integer in mimalloc's option table, and `set_var`
    // writes the environment; both run before the process has a second thread.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
            std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1");
        }
    }
}
