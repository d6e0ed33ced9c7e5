//! The allocator setup of the `mrsampler` tool (`cli/src/main.rs`), for the examples that time
//! its forward: mimalloc, with freed memory kept committed for 10 s (mimalloc's default, 1 s,
//! let the kernel zero every re-touched 2 MiB page anew: a third of a U-Net forward).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_t`, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Call first thing in `main`.
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set` stores one integer in mimalloc's option table; called before any
    // other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) }
}
