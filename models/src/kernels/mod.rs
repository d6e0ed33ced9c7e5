//! CPU kernels for the convolutions where candle's own CPU path is slow (measured in
//! `docs/benchmarks.md`): dense convolutions as one row-chunked im2col and matrix product in
//! NCHW, and depthwise 3 × 3 convolutions computed directly. Other devices and dtypes use
//! candle's convolution.

mod depthwise;
mod im2col;

pub use depthwise::conv3x3 as depthwise_conv3x3;
pub(crate) use im2col::conv2d;
