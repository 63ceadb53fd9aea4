//! Finding a usable GPU without letting the CUDA libraries panic.
//!
//! cudarc loads `libcuda` and `libnvrtc` on first use and panics when either is missing, so the
//! libraries are looked up first and the driver is only called once both are known to load.

use cudarc::driver::CudaContext;

/// Why no GPU can be used, in words for the user.
pub type Unavailable = String;

/// Checks that the CUDA driver and NVRTC libraries load and that the driver sees a GPU.
pub fn probe() -> Result<(), Unavailable> {
    // SAFETY: these only try to open the shared libraries by name (dlopen), calling nothing.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver found (libcuda.so could not be loaded)".into());
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(
            "the CUDA driver is present but NVRTC is not (libnvrtc.so.13 could not be loaded): \
             install the CUDA 13 runtime compiler or add its lib folder to LD_LIBRARY_PATH"
                .into(),
        );
    }
    let count = std::panic::catch_unwind(CudaContext::device_count)
        .map_err(|_| "the CUDA driver failed while counting GPUs".to_string())?
        .map_err(|e| format!("the CUDA driver reports an error: {e}"))?;
    if count < 1 {
        return Err("the CUDA driver found no GPU".into());
    }
    Ok(())
}
