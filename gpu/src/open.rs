//! Choosing the backend for a [`Device`] setting.

use crate::backend::{Device, WindowBackend};
use crate::cpu_backend::CpuBackend;
use crate::cuda::{probe, CudaBackend};
use crate::error::KernelError;
use std::sync::Arc;

/// The backends a job computes with under one device setting.
pub struct OpenedBackend {
    /// The GPU, when one is used.
    pub gpu: Option<Arc<dyn WindowBackend>>,
    /// The CPU kernels: always there, for inputs too small for the GPU.
    pub cpu: Arc<dyn WindowBackend>,
    /// Why no GPU is used under `auto`, for the run summary (`None` when one is).
    pub cpu_reason: Option<String>,
}

/// Opens the backends for `device`: `cpu` never touches CUDA; `auto` uses the GPU when a driver
/// and a GPU are found and says why not otherwise; `cuda` without a usable GPU is an error that
/// says what is missing.
pub fn open_backend(device: Device) -> Result<OpenedBackend, KernelError> {
    let cpu: Arc<dyn WindowBackend> = Arc::new(CpuBackend::new());
    let opened = |gpu: Arc<dyn WindowBackend>| OpenedBackend {
        gpu: Some(gpu),
        cpu: cpu.clone(),
        cpu_reason: None,
    };
    match device {
        Device::Cpu => Ok(OpenedBackend {
            gpu: None,
            cpu: cpu.clone(),
            cpu_reason: Some("device: cpu".into()),
        }),
        Device::Cuda => CudaBackend::open()
            .map(|b| opened(Arc::new(b)))
            .map_err(|e| {
                KernelError::Device(format!(
                    "`device: cuda` was asked for, but no GPU can be used: {}. Use `device: \
                     auto` or `cpu` (or --device) to compute on the CPU",
                    reason(e)
                ))
            }),
        Device::Auto => {
            if let Err(reason) = probe() {
                return Ok(OpenedBackend {
                    gpu: None,
                    cpu: cpu.clone(),
                    cpu_reason: Some(reason),
                });
            }
            match CudaBackend::open() {
                Ok(b) => Ok(opened(Arc::new(b))),
                Err(e) => Ok(OpenedBackend {
                    gpu: None,
                    cpu: cpu.clone(),
                    cpu_reason: Some(reason(e)),
                }),
            }
        }
    }
}

/// The message of a GPU error without its `GPU:` prefix.
fn reason(e: KernelError) -> String {
    match e {
        KernelError::Device(message) => message,
        other => other.to_string(),
    }
}
