//! One module per sub-command, each with its `Args` and `run`; what several share lives beside
//! (`sampling`, `loading`, `images`, `arrays`, `files`, `grid_file`).

pub mod calibrate;
pub mod convert;
pub mod encode;
pub mod eval;
pub mod info;
pub mod net;
pub mod restore;
pub mod serve;
