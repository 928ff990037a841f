//! Compute device selection and CPU thread count.
//!
//! A [`DeviceSpec`] is what a user writes (`--device auto|cpu|cuda|cuda:N|metal|metal:N`);
//! [`DeviceSpec::resolve`] turns it into a candle [`Device`] at run time. `Auto` never fails:
//! it takes CUDA when this build has it and a GPU answers, then Metal, then the CPU, and logs
//! what it picked and why it passed over the others. An explicit `cuda:N` or `metal:N` that
//! cannot be honoured is an error instead, so a job never silently runs 50x slower than asked.
//!
//! [`set_threads`] (or [`ComputeOptions::apply`]) fixes the CPU thread count once per process.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use candle_core::Device;

/// Errors from device selection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The device string could not be parsed.
    #[error("invalid device {0:?}: expected auto, cpu, cuda, cuda:N, metal or metal:N")]
    Parse(String),
    /// The device kind was not compiled into this build.
    #[error(
        "device {spec} requested but this build has no {feature} support: rebuild with \
         the cargo feature `{feature}`, or pick the device cpu (or auto)"
    )]
    NotCompiled {
        /// The device asked for.
        spec: DeviceSpec,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// The device kind is compiled in but the device could not be opened.
    #[error(
        "device {spec} is not available: {reason}; check the driver and the device index \
         (`nvidia-smi`), or pick the device cpu (or auto)"
    )]
    Unavailable {
        /// The device asked for.
        spec: DeviceSpec,
        /// What the backend said.
        reason: String,
    },
    /// The CPU thread count could not be applied.
    #[error("cannot use {requested} CPU threads: {reason}")]
    Threads {
        /// The thread count asked for.
        requested: usize,
        /// Why it was refused.
        reason: String,
    },
}

/// Which compute device to run models on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceSpec {
    /// CUDA if compiled in and present, then Metal, then CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The CUDA GPU with this ordinal.
    Cuda(usize),
    /// The Metal GPU with this ordinal.
    Metal(usize),
}

/// The variable every test reads its device from (see [`test_device`]).
pub const TEST_DEVICE_ENV: &str = "MICA_TEST_DEVICE";

/// The device the tests run on: [`TEST_DEVICE_ENV`] (`cpu` when unset; `cuda` on a GPU
/// machine, where the same goldens and tolerances must hold). The one place it is read.
pub fn test_device() -> Result<Device, DeviceError> {
    test_device_spec()?.resolve()
}

/// [`test_device`] as a [`DeviceSpec`] (for builders that take one).
pub fn test_device_spec() -> Result<DeviceSpec, DeviceError> {
    match std::env::var(TEST_DEVICE_ENV) {
        Ok(s) => s.parse(),
        Err(_) => Ok(DeviceSpec::Cpu),
    }
}

/// The device named by the environment variable `var` (`cpu` when unset): how tests
/// ([`TEST_DEVICE_ENV`]) and benches (`MICA_BENCH_DEVICE`) are pointed at a GPU.
pub fn from_env(var: &str) -> Result<Device, DeviceError> {
    match std::env::var(var) {
        Ok(s) => s.parse::<DeviceSpec>()?.resolve(),
        Err(_) => DeviceSpec::Cpu.resolve(),
    }
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    /// Parses `auto`, `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N`, ignoring case and
    /// surrounding white space.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (kind, index) = match lower.split_once(':') {
            Some((kind, index)) => {
                let index = index
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| DeviceError::Parse(s.to_string()))?;
                (kind.trim(), Some(index))
            }
            None => (lower.as_str(), None),
        };
        match (kind, index) {
            ("auto", None) => Ok(DeviceSpec::Auto),
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("cuda", index) => Ok(DeviceSpec::Cuda(index.unwrap_or(0))),
            ("metal", index) => Ok(DeviceSpec::Metal(index.unwrap_or(0))),
            _ => Err(DeviceError::Parse(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Metal(i) => write!(f, "metal:{i}"),
        }
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl DeviceSpec {
    /// Opens the device. `Auto` falls back to the CPU (never an error); an explicit GPU that
    /// is not compiled in or not present is an error naming the fix.
    pub fn resolve(&self) -> Result<Device, DeviceError> {
        match *self {
            DeviceSpec::Cpu => {
                tracing::info!("device: cpu (requested)");
                Ok(Device::Cpu)
            }
            DeviceSpec::Cuda(i) => {
                let device = open_cuda(i)?;
                tracing::info!("device: cuda:{i} (requested)");
                Ok(device)
            }
            DeviceSpec::Metal(i) => {
                let device = open_metal(i)?;
                tracing::info!("device: metal:{i} (requested)");
                Ok(device)
            }
            DeviceSpec::Auto => Ok(resolve_auto()),
        }
    }

    /// Whether this spec names a GPU (CUDA or Metal).
    pub fn is_gpu(&self) -> bool {
        matches!(self, DeviceSpec::Cuda(_) | DeviceSpec::Metal(_))
    }
}

fn resolve_auto() -> Device {
    let mut passed_over = Vec::new();
    match open_cuda(0) {
        Ok(device) => {
            tracing::info!("device: cuda:0 (auto)");
            return device;
        }
        Err(e) => passed_over.push(skip_reason(&e)),
    }
    match open_metal(0) {
        Ok(device) => {
            tracing::info!("device: metal:0 (auto; {})", passed_over.join("; "));
            return device;
        }
        Err(e) => passed_over.push(skip_reason(&e)),
    }
    tracing::info!("device: cpu (auto; {})", passed_over.join("; "));
    Device::Cpu
}

fn skip_reason(e: &DeviceError) -> String {
    match e {
        DeviceError::NotCompiled { feature, .. } => format!("{feature} not compiled in"),
        DeviceError::Unavailable { spec, reason } => format!("{spec} unavailable: {reason}"),
        other => other.to_string(),
    }
}

fn open_cuda(ordinal: usize) -> Result<Device, DeviceError> {
    open_gpu(
        DeviceSpec::Cuda(ordinal),
        "cuda",
        cfg!(feature = "cuda"),
        "the CUDA driver",
        || Device::new_cuda(ordinal),
    )
}

fn open_metal(ordinal: usize) -> Result<Device, DeviceError> {
    open_gpu(
        DeviceSpec::Metal(ordinal),
        "metal",
        cfg!(feature = "metal"),
        "the Metal device",
        || Device::new_metal(ordinal),
    )
}

/// Opens the GPU `spec` with `open`: [`DeviceError::NotCompiled`] naming `feature` when
/// `compiled` is false, else [`DeviceError::Unavailable`] when `open` fails or panics
/// (`backend` names what failed to initialise in the latter case).
fn open_gpu(
    spec: DeviceSpec,
    feature: &'static str,
    compiled: bool,
    backend: &str,
    open: impl FnOnce() -> candle_core::Result<Device> + std::panic::UnwindSafe,
) -> Result<Device, DeviceError> {
    if !compiled {
        return Err(DeviceError::NotCompiled { spec, feature });
    }
    // The CUDA driver bindings panic rather than return an error on some broken driver
    // installs; a device probe must degrade to "unavailable", not abort the job.
    match std::panic::catch_unwind(open) {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(e)) => Err(DeviceError::Unavailable {
            spec,
            reason: e.to_string(),
        }),
        Err(_) => Err(DeviceError::Unavailable {
            spec,
            reason: format!("{backend} failed to initialise"),
        }),
    }
}

/// Device and CPU threads for a process, as the CLI and server take them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ComputeOptions {
    /// Which device models run on.
    #[serde(default)]
    pub device: DeviceSpec,
    /// CPU threads; `None` or 0 keeps the default (the physical core count, or
    /// `RAYON_NUM_THREADS` when set).
    #[serde(default)]
    pub threads: Option<usize>,
}

impl ComputeOptions {
    /// Applies the thread count (see [`set_threads`]) and resolves the device.
    pub fn apply(&self) -> Result<Device, DeviceError> {
        if let Some(n) = self.threads.filter(|&n| n > 0) {
            set_threads(n)?;
        }
        self.device.resolve()
    }
}

/// The thread count [`set_threads`] applied, if it has run.
static THREADS: Mutex<Option<usize>> = Mutex::new(None);

/// Sets the number of CPU threads used by candle's CPU kernels and by rayon, once per process.
///
/// It exports `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS` (candle sizes its matmul split and
/// its private pool from them the first time it runs a CPU op) and builds rayon's global pool
/// with `n` threads. Call it at the top of `main`, before any other thread starts and before
/// the first tensor op: environment writes race with readers on other threads, and both pools
/// are sized once. Calling it again with the same `n` is a no-op; a different `n`, `n == 0`, or
/// a rayon pool that something else already started is a [`DeviceError::Threads`].
/// Returns the thread count now in effect.
pub fn set_threads(n: usize) -> Result<usize, DeviceError> {
    if n == 0 {
        return Err(DeviceError::Threads {
            requested: n,
            reason: "the count must be at least 1".to_string(),
        });
    }
    let mut applied = THREADS.lock().unwrap_or_else(|poison| poison.into_inner());
    if let Some(current) = *applied {
        if current == n {
            return Ok(n);
        }
        return Err(DeviceError::Threads {
            requested: n,
            reason: format!("already set to {current}; set the thread count once at start-up"),
        });
    }
    let value = n.to_string();
    // SAFETY: documented precondition: called at start-up before other threads exist, so no
    // concurrent getenv can observe a torn environment. The mutex serialises our own callers.
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", &value);
        std::env::set_var("CANDLE_NUM_THREADS", &value);
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| DeviceError::Threads {
            requested: n,
            reason: format!(
                "the rayon pool was already started with {} threads ({e}); call set_threads \
                 before any parallel work",
                rayon::current_num_threads()
            ),
        })?;
    *applied = Some(n);
    tracing::info!("cpu threads: {n}");
    Ok(n)
}

/// The number of threads rayon's global pool runs (what CPU work is spread over).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let cases = [
            ("auto", DeviceSpec::Auto, "auto"),
            ("CPU", DeviceSpec::Cpu, "cpu"),
            ("cuda", DeviceSpec::Cuda(0), "cuda:0"),
            (" Cuda:3 ", DeviceSpec::Cuda(3), "cuda:3"),
            ("metal", DeviceSpec::Metal(0), "metal:0"),
            ("METAL:1", DeviceSpec::Metal(1), "metal:1"),
        ];
        for (text, spec, shown) in cases {
            assert_eq!(text.parse::<DeviceSpec>().ok(), Some(spec), "{text}");
            assert_eq!(spec.to_string(), shown);
            assert_eq!(shown.parse::<DeviceSpec>().ok(), Some(spec));
        }
        for bad in ["", "tpu", "cuda:", "cuda:x", "cpu:1", "auto:0", "cuda:-1"] {
            assert!(
                matches!(bad.parse::<DeviceSpec>(), Err(DeviceError::Parse(_))),
                "{bad}"
            );
        }
        assert_eq!(DeviceSpec::default(), DeviceSpec::Auto);
    }

    #[test]
    fn serde_uses_the_same_strings() -> Result<(), serde_json::Error> {
        let json = serde_json::to_string(&DeviceSpec::Cuda(2))?;
        assert_eq!(json, "\"cuda:2\"");
        let back: DeviceSpec = serde_json::from_str("\"Metal\"")?;
        assert_eq!(back, DeviceSpec::Metal(0));
        assert!(serde_json::from_str::<DeviceSpec>("\"vulkan\"").is_err());
        let opts: ComputeOptions = serde_json::from_str("{}")?;
        assert_eq!(opts, ComputeOptions::default());
        Ok(())
    }

    #[test]
    fn auto_and_cpu_resolve() {
        assert!(matches!(DeviceSpec::Cpu.resolve(), Ok(Device::Cpu)));
        assert!(DeviceSpec::Auto.resolve().is_ok());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_is_typed() {
        match DeviceSpec::Cuda(0).resolve() {
            Err(e @ DeviceError::NotCompiled { .. }) => {
                assert!(e.to_string().contains("cargo feature `cuda`"), "{e}");
            }
            other => panic!("expected NotCompiled, got {other:?}"),
        }
    }

    #[test]
    fn zero_threads_is_an_error() {
        assert!(matches!(set_threads(0), Err(DeviceError::Threads { .. })));
    }

    #[test]
    fn threads_are_set_once() {
        match set_threads(2) {
            Ok(n) => {
                assert_eq!(n, 2);
                assert_eq!(threads(), 2);
                assert_eq!(
                    std::env::var("RAYON_NUM_THREADS").ok().as_deref(),
                    Some("2")
                );
                assert!(matches!(set_threads(2), Ok(2)));
                assert!(matches!(set_threads(3), Err(DeviceError::Threads { .. })));
            }
            // Another test in this process started rayon first: that is the documented error.
            Err(e) => assert!(e.to_string().contains("already"), "{e}"),
        }
    }
}
