//! CPU kernels where candle's own CPU path is slow (measured in `docs/benchmarks.md`): dense
//! convolutions as one row-chunked im2col and matrix product in NCHW, depthwise 3 × 3
//! convolutions computed directly, and the attention's softmax in one pass per row. Other
//! devices and dtypes use candle's operations.

mod depthwise;
mod im2col;
mod matmul;
mod softmax;

pub use depthwise::conv3x3 as depthwise_conv3x3;
pub(crate) use im2col::conv2d;
pub(crate) use matmul::matmul;
pub(crate) use softmax::scaled_softmax_last;
