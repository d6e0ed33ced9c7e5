//! `mrsampler`: run and convert published MR diffusion checkpoints.
//!
//! ```text
//! mrsampler info    WEIGHTS [--options YML]
//! mrsampler net     --weights WEIGHTS [--options YML] --xt X.npy --mu MU.npy --t T --out OUT.npy
//!                   [--image-context IC.npy --degra-context DC.npy]
//! mrsampler encode  --weights DACLIP --image IMG --out-image-context IC.npy
//!                   --out-degra-context DC.npy
//! mrsampler convert INPUT OUTPUT.safetensors [--options YML] [--dtype f32|f16|bf16]
//! mrsampler restore INPUT... --out DIR --model WEIGHTS (--preset NAME | --options YML)
//!                   [--clip DACLIP] [--sampler mrs-sde|mrs-ode|posterior|euler] [--nfe N] …
//! mrsampler eval    [--set test|val] [--samplers SPEC,…] [--nfe N,…] [--converged own|teacher] …
//! mrsampler calibrate --nfe K --out GRID.json [--sampler SPEC] [--images DIR] …
//! ```
//!
//! `net` is the porting check: it evaluates the network once on given inputs, so a
//! conversion can be compared with the PyTorch module number for number.
#![deny(unsafe_code)] // one exception: `configure_process`, before any thread exists

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod arrays;
mod classical;
mod commands;
mod error;
mod files;
mod grid_file;
mod images;
mod loading;
mod metrics;
mod sampling;
mod serve;
mod shipped;
mod spec;

use commands::{calibrate, convert, encode, eval, info, net, restore, serve as serve_command};

#[derive(Parser)]
#[command(
    name = "mrsampler",
    version,
    about = "Mean-Reverting diffusion restoration tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a checkpoint's architecture, inferred configuration and parameter count (a
    /// denoiser, or DA-CLIP's image encoder), or an ONNX model's inputs and output.
    Info(info::Args),
    /// Evaluate the network once on `.npy` inputs and write its output (the porting check).
    Net(net::Args),
    /// Compute DA-CLIP's contexts of an image with its encoder, as upstream preprocesses it.
    Encode(encode::Args),
    /// Write a clean safetensors file (unwrapped, unprefixed, checked) from a checkpoint; of a
    /// DA-CLIP checkpoint, only the image encoder's tensors.
    Convert(convert::Args),
    /// Restore image files (or folders of them) with a checkpoint and a sampler.
    Restore(restore::RestoreArgs),
    /// Compare samplers on (clean, degraded) image pairs: the shipped test set by default.
    Eval(eval::EvalArgs),
    /// Fit a sampler's time grid to the network on a few images; write it as a grid file for
    /// `restore --grid` and `eval --samplers`.
    Calibrate(calibrate::CalibrateArgs),
    /// Serve restoration over HTTP (`POST /v1/restore`), batching the requests' network calls
    /// at the step level.
    Serve(serve_command::ServeArgs),
}

/// mimalloc keeps the large tensor buffers of a batched evaluation mapped between network
/// calls; with the system allocator each call mapped and unmapped them afresh, and `eval`'s
/// default batch spent more time in the kernel than in the network (`docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_t` in mimalloc's header, v2 and
/// v3; `libmimalloc-sys` names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Two process-wide settings that the network forward's speed depends on, made first thing in
/// `main` (`docs/benchmarks.md`, "Faster than ONNX Runtime"):
///
/// * mimalloc keeps freed memory for reuse instead of returning it to the system (by default it
///   returns it after 1 s; a 10 s delay still returned 1.2 GiB over five DA-CLIP forwards). A
///   forward frees and allocates hundreds of MiB of layer outputs; returned and touched again,
///   every 2 MiB of it was zeroed by the kernel anew, which took a third of an IR-SDE U-Net
///   forward. The peak is unchanged: what is kept is what the next forward reuses.
/// * candle's pool for element-wise operations parks its threads as soon as an operation ends
///   (`CANDLE_BARRIER_POOL_SPIN_LIMIT=1`, unless the environment sets it): by default they spin
///   for 25 000 rounds, on the cores the next matrix product needs, which took a fifth of the
///   CPU time of a NAFNet forward on two cores.
#[allow(unsafe_code)]
fn configure_process() {
    // SAFETY: `mi_option_set` stores one integer in mimalloc's option table, and `set_var`
    // writes the environment; both run before this process has a second thread.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
            std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1");
        }
    }
}

fn main() -> ExitCode {
    configure_process();
    let result = match Cli::parse().command {
        Command::Info(args) => info::run(args),
        Command::Net(args) => net::run(args),
        Command::Encode(args) => encode::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Serve(args) => serve_command::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
