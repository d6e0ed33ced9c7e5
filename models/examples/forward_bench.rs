//! Forward time and peak memory of the released network configurations on the CPU.
//!
//! ```text
//! cargo run --release -p mrsampler-models --example forward_bench -- ARCH SIZE [REPEATS]
//! cargo run --release -p mrsampler-models --example forward_bench -- depthwise
//! ```
//!
//! `ARCH` is `unet` (IR-SDE, nf 64, depth 4), `unet-deshadow` (nf 32, depth 5) or `nafnet`
//! (Refusion, width 64, [1, 1, 1, 28]); the network gets random weights and one
//! `[1, 3, SIZE, SIZE]` input. Prints one row: the median of `REPEATS` forwards (after one
//! warm-up) and the process's peak resident memory. Run one configuration per process so
//! that the peak belongs to it; `tools/torch_forward_bench.py` prints the same row for the
//! upstream PyTorch module. `depthwise` times NAFNet's depthwise 3 × 3 convolution at the
//! shapes of the released configuration, candle's grouped convolution against this crate's
//! kernel.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use mrsampler_models::{NafNetConfig, Network, NetworkConfig, UNetConfig};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<F: FnMut() -> candle_core::Result<Tensor>>(repeats: usize, mut f: F) -> f64 {
    f().unwrap();
    median(
        (0..repeats)
            .map(|_| {
                let t = Instant::now();
                f().unwrap();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn depthwise() {
    println!("| shape | candle grouped conv (ms) | depthwise kernel (ms) | speed-up |");
    println!("|---|---|---|---|");
    // NAFNet width 64: the depthwise layer has 2·c channels at every level.
    for (c, s) in [(128, 256), (256, 128), (512, 64), (1024, 32), (128, 512)] {
        let x = Tensor::randn(0f32, 1f32, (1, c, s, s), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 1f32, (c, 1, 3, 3), &Device::Cpu).unwrap();
        let grouped = time(5, || x.conv2d(&w, 1, 1, 1, c));
        let fast = time(5, || {
            mrsampler_models::depthwise_conv3x3(&x, &w, None).map_err(candle_core::Error::wrap)
        });
        println!(
            "| 1×{c}×{s}×{s} | {:.1} | {:.2} | {:.0}× |",
            grouped * 1e3,
            fast * 1e3,
            grouped / fast
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("depthwise") {
        depthwise();
        return;
    }
    let usage = "usage: forward_bench unet|unet-deshadow|nafnet SIZE [REPEATS] | depthwise";
    let (arch, size) = match (
        args.first(),
        args.get(1).and_then(|s| s.parse::<usize>().ok()),
    ) {
        (Some(a), Some(s)) => (a.as_str(), s),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let repeats = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let config = match arch {
        "unet" => NetworkConfig::UNet(UNetConfig::ir_sde(3, 3, 64, 4)),
        "unet-deshadow" => NetworkConfig::UNet(UNetConfig::ir_sde(3, 3, 32, 5)),
        "nafnet" => NetworkConfig::NafNet(NafNetConfig::refusion()),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let net = Network::random(config, &Device::Cpu, DType::F32).unwrap();
    let x = Tensor::randn(0f32, 1f32, (1, 3, size, size), &Device::Cpu).unwrap();
    let mu = Tensor::randn(0f32, 1f32, (1, 3, size, size), &Device::Cpu).unwrap();
    let secs = time(repeats, || {
        net.forward(&x, &mu, &[50.0])
            .map_err(candle_core::Error::wrap)
    });
    println!(
        "| candle | {arch} | {size}² | {:.3} | {:.0} |",
        secs,
        peak_rss_mib()
    );
}
