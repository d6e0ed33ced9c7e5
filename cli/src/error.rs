//! The tool's result type: every error is reported as its message (`main` prints it).

/// A result whose error is any error, boxed.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
