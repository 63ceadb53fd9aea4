//! The CUDA backend of the batch window contract (cudarc, dynamic loading, NVRTC).
//!
//! Nothing here needs CUDA at build time: the driver and NVRTC are loaded when a backend is
//! opened, after [`probe`] has checked they exist. The kernels (`windows.cu`) are compiled for
//! the GPU found, once per process.

mod backend;
mod probe;

pub use backend::CudaBackend;
pub use probe::{probe, Unavailable};
