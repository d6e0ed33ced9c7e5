//! The error type of the models crate.

use std::path::PathBuf;

/// Shorthand for `std::result::Result<T, mrsampler_models::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading a checkpoint or running a network.
///
/// Every variant says what is wrong and how to fix it; none of them is a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// The ONNX Runtime library is missing, cannot be loaded, or lacks what was asked of it.
    #[error("{reason}")]
    OnnxRuntime {
        /// What is wrong and how to get a library that works.
        reason: String,
    },

    /// An ONNX model cannot be loaded or does not fit the score-model call.
    #[error("{path}: {reason}")]
    OnnxModel {
        /// The `.onnx` file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },

    /// The file is not a readable checkpoint (truncated, corrupt, or another kind of file).
    #[error(
        "{path} is not a readable checkpoint ({reason}); expected a PyTorch `.pth` state dict \
         (torch.save zip format) or a safetensors file; re-download or re-convert it"
    )]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What the reader reported.
        reason: String,
    },

    /// The tensor names match no supported architecture.
    #[error(
        "cannot tell the architecture of {path}: {reason}; supported are IR-SDE's \
         ConditionalUNet (`init_conv.weight`, `downs.*`) and Refusion's ConditionalNAFNet \
         (`intro.weight`, `encoders.*`)"
    )]
    UnknownArchitecture {
        /// The file (or `<tensors>` for an in-memory checkpoint).
        path: PathBuf,
        /// Which tensors were looked for and not found.
        reason: String,
    },

    /// The options file names one architecture and the checkpoint holds another.
    #[error(
        "the options name `{stated}` but the checkpoint holds a {found}; pass the options file \
         that was trained with this checkpoint, or none (the configuration is inferred from the \
         tensors)"
    )]
    ArchitectureMismatch {
        /// `which_model_G` from the options.
        stated: String,
        /// The architecture the tensor names belong to.
        found: &'static str,
    },

    /// A tensor that the configuration needs is not in the checkpoint.
    #[error(
        "tensor `{name}` is missing from the checkpoint (configuration: {config}); the \
         checkpoint belongs to another configuration or is incomplete"
    )]
    MissingTensor {
        /// The state-dict name.
        name: String,
        /// The configuration that needed it.
        config: String,
    },

    /// A tensor has another shape than the configuration implies.
    #[error(
        "tensor `{name}` has shape {found:?} but the configuration ({config}) needs {expected:?}; \
         with an option file, it does not match this checkpoint (omit it to infer the \
         configuration from the tensors); without one, the checkpoint's tensors disagree with \
         each other (it was edited or truncated: export the state_dict again)"
    )]
    ShapeMismatch {
        /// The state-dict name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        found: Vec<usize>,
        /// The configuration.
        config: String,
    },

    /// The checkpoint holds a tensor that the configuration does not use.
    #[error(
        "tensor `{name}` of the checkpoint is not used by the configuration ({config}); the \
         checkpoint belongs to a larger configuration or another architecture"
    )]
    UnexpectedTensor {
        /// The state-dict name.
        name: String,
        /// The configuration.
        config: String,
    },

    /// An upstream option file could not be used.
    #[error("options file {path}: {reason}")]
    Options {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A network configuration is not valid.
    #[error("invalid network configuration: {reason}")]
    InvalidConfig {
        /// What is wrong and the valid range.
        reason: String,
    },

    /// The network was called with inputs it cannot take.
    #[error("invalid network input: {reason}")]
    Input {
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// An unknown preset name.
    #[error("unknown preset `{name}`; known presets: {known}")]
    UnknownPreset {
        /// The name given.
        name: String,
        /// The known names, comma separated.
        known: String,
    },

    /// An error of the tensor library while running the network.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// An error of the sampler crate (schedule construction from presets and options).
    #[error(transparent)]
    Sampler(#[from] mrsampler::Error),
}

impl Error {
    pub(crate) fn input(reason: impl Into<String>) -> Self {
        Self::Input {
            reason: reason.into(),
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            reason: reason.into(),
        }
    }
}
