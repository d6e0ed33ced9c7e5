//! `serve`: the restoration service (`crate::serve`) with its flags.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use mrsampler::SamplerSpec;
use mrsampler::schedule::Schedule;

use crate::error::Result;
use crate::sampling::{Model, ModelArgs};
use crate::serve::{self, Limits};
use crate::spec::{ToolSpec, parse_spec};

/// `serve`'s flags.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Most requests sampled at once, and most samples in one network call (on a 2-core CPU,
    /// 2 gave the best throughput; `docs/serve.md`).
    #[arg(long, default_value_t = 2)]
    max_batch: usize,
    /// Most pixels sampled at once over the running requests, the memory budget (default:
    /// --max-pixels); one request alone is always admitted.
    #[arg(long)]
    max_batch_pixels: Option<usize>,
    /// Requests that may wait beyond the running ones; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 32)]
    queue: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 32 << 20)]
    max_body: usize,
    /// Largest image in pixels (width × height).
    #[arg(long, default_value_t = 2048 * 2048)]
    max_pixels: usize,
    /// Seconds a request may take from arrival to answer (answered 504 past it).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// The sampler of a request that names none (`KIND[-ORDER][:PARAM][:GRID]`, or a grid file).
    #[arg(long, default_value = "mrs-ode-2:data:linspace", value_parser = parse_spec)]
    sampler: SamplerSpec,
    /// The NFE of a request that gives none (a grid file's own with a grid file).
    #[arg(long)]
    nfe: Option<usize>,
    /// Evaluate the network on overlapping SIZE × SIZE tiles (as `restore --tile`); tiles of
    /// same-size images share the network's calls.
    #[arg(long)]
    tile: Option<usize>,
    /// Overlap of neighbouring tiles in pixels (default 32).
    #[arg(long, requires = "tile")]
    overlap: Option<usize>,
    /// Tiles per network call and image (default 16).
    #[arg(long, requires = "tile")]
    tile_batch: Option<usize>,
}

/// Runs `serve`.
pub fn run(args: ServeArgs) -> Result<()> {
    if args.max_batch == 0 {
        return Err("--max-batch must be at least 1".into());
    }
    let (net, schedule) = args.model.load()?;
    let nfe = match (args.sampler.calibrated_steps()?, args.nfe) {
        (Some(steps), Some(n)) if n != steps => {
            return Err(
                format!("--nfe {n}: the grid file has {steps} steps; leave --nfe out").into(),
            );
        }
        (Some(steps), _) => steps,
        (None, n) => n.unwrap_or(10),
    };
    // The default sampler must build (a wrong one is named before the service starts).
    args.sampler.for_images(&schedule, nfe)?;
    let tiles = crate::sampling::tile_spec(args.tile, args.overlap, args.tile_batch)?;
    if let Some(size) = args.tile {
        net.check_tile(size)?;
    }
    let channels = net.channels();
    let model = Model::new(net, args.model.border(), tiles);
    let limits = Limits {
        max_batch: args.max_batch,
        max_batch_pixels: args.max_batch_pixels.unwrap_or(args.max_pixels),
        max_body: args.max_body,
        max_pixels: args.max_pixels,
        queue: args.queue,
        timeout: Duration::from_secs(args.timeout),
        sampler: args.sampler,
        nfe,
        max_nfe: schedule.t_max().round() as usize,
    };
    let description = args.model.describe();
    serve::run(
        model,
        schedule,
        channels,
        limits,
        args.listen,
        move |addr| {
            eprintln!("mrsampler serve: {description}, listening on http://{addr}");
        },
    )
}
