//! The native module `mica._mica`: the engine's [`mica::Analyzer`] for Python. The
//! Python package (`python/mica`) wraps it in the API users see; this layer converts
//! arguments, releases the GIL while models run, and maps errors to exceptions.

use std::io::Cursor;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use mica::{DeviceSpec, ErrorKind, PartResult, PartSize, Plan, Precision, Task};
use mica_core::writers::{self, Format, WriterOptions};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

create_exception!(
    _mica,
    MicaError,
    PyException,
    "Any error mica raises; the subclasses say what to do about it."
);
create_exception!(
    _mica,
    MediaError,
    MicaError,
    "The media could not be opened or decoded."
);
create_exception!(
    _mica,
    InputError,
    MicaError,
    "An input (samples, a plan or a part) is malformed."
);
create_exception!(
    _mica,
    OptionsError,
    MicaError,
    "An option is unknown, out of range or contradicts another."
);
create_exception!(
    _mica,
    UnknownModelError,
    OptionsError,
    "No model of that name exists."
);
create_exception!(
    _mica,
    ModelError,
    MicaError,
    "A model's files are missing, unreadable or not the model expected."
);
create_exception!(
    _mica,
    DeviceError,
    MicaError,
    "The compute device failed or is not usable."
);
create_exception!(
    _mica,
    CancelledError,
    MicaError,
    "The analysis was cancelled."
);

/// The exception of an engine error, by what the caller can do about it.
fn raise(e: mica::Error) -> PyErr {
    let message = e.to_string();
    match e.kind() {
        ErrorKind::Media => MediaError::new_err(message),
        ErrorKind::Input => InputError::new_err(message),
        ErrorKind::Options if matches!(e, mica::Error::Model(_)) => {
            UnknownModelError::new_err(message)
        }
        ErrorKind::Options => OptionsError::new_err(message),
        ErrorKind::Model => ModelError::new_err(message),
        ErrorKind::Device => DeviceError::new_err(message),
        ErrorKind::Cancelled => CancelledError::new_err(message),
        _ => MicaError::new_err(message),
    }
}

fn options_error(message: impl std::fmt::Display) -> PyErr {
    OptionsError::new_err(message.to_string())
}

/// Every model of the tasks asked for, loaded once; safe to share between threads.
#[pyclass(frozen, module = "mica._mica", name = "Analyzer")]
struct PyAnalyzer {
    inner: Arc<mica::Analyzer>,
}

#[pymethods]
impl PyAnalyzer {
    #[new]
    #[pyo3(signature = (
        tasks, model, device, precision, workers, part_seconds, language, beam_size,
        num_speakers, min_speakers, max_speakers, threads
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        tasks: Vec<String>,
        model: String,
        device: &str,
        precision: &str,
        workers: usize,
        part_seconds: f64,
        language: Option<String>,
        beam_size: usize,
        num_speakers: Option<usize>,
        min_speakers: Option<usize>,
        max_speakers: Option<usize>,
        threads: Option<usize>,
    ) -> PyResult<PyAnalyzer> {
        let tasks = tasks
            .iter()
            .map(|t| Task::from_str(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(raise)?;
        let device = DeviceSpec::from_str(device).map_err(options_error)?;
        let precision = Precision::from_str(precision).map_err(options_error)?;
        let mut transcribe = mica::TranscribeOptions {
            language: language.filter(|l| l != "auto"),
            word_timestamps: true,
            ..mica::TranscribeOptions::default()
        };
        transcribe.decode.beam_size = beam_size;
        let diarize = mica::DiarizeOptions {
            num_speakers,
            min_speakers,
            max_speakers,
            ..mica::DiarizeOptions::default()
        };
        let builder = mica::Analyzer::builder()
            .tasks(tasks)
            .device(device)
            .asr_model(model)
            .precision(precision)
            .workers(workers)
            .part_seconds(part_seconds)
            .transcribe_options(transcribe)
            .diarize_options(diarize);
        let analyzer = py.detach(|| builder.build()).map_err(raise)?;
        let analyzer = match threads {
            Some(0) => return Err(options_error("threads must be at least 1")),
            Some(n) => analyzer.with_threads(n),
            None => analyzer,
        };
        Ok(PyAnalyzer {
            inner: Arc::new(analyzer),
        })
    }

    /// The tasks loaded, in order.
    #[getter]
    fn tasks(&self) -> Vec<&'static str> {
        self.inner.tasks().iter().map(|t| t.name()).collect()
    }

    /// Analyses a media file.
    fn analyze_path(&self, py: Python<'_>, path: PathBuf) -> PyResult<PyAnalysis> {
        let analyzer = Arc::clone(&self.inner);
        let analysis = py.detach(move || analyzer.analyze(&path)).map_err(raise)?;
        Ok(PyAnalysis { inner: analysis })
    }

    /// Analyses media bytes (any container and codec mica reads).
    fn analyze_bytes(&self, py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<PyAnalysis> {
        let bytes = data.as_bytes().to_vec();
        let analyzer = Arc::clone(&self.inner);
        let analysis = py
            .detach(move || analyzer.analyze(mica::Input::Reader(Box::new(Cursor::new(bytes)))))
            .map_err(raise)?;
        Ok(PyAnalysis { inner: analysis })
    }

    /// Analyses 16 kHz mono samples given as little-endian float32 bytes.
    fn analyze_samples(&self, py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<PyAnalysis> {
        let bytes = data.as_bytes();
        if bytes.len() % 4 != 0 {
            return Err(InputError::new_err(format!(
                "{} bytes are not whole float32 samples",
                bytes.len()
            )));
        }
        let samples: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(i) = samples.iter().position(|s| !s.is_finite()) {
            return Err(InputError::new_err(format!(
                "sample {i} is {}; samples must be finite",
                samples[i]
            )));
        }
        let analyzer = Arc::clone(&self.inner);
        let analysis = py
            .detach(move || analyzer.analyze(&samples[..]))
            .map_err(raise)?;
        Ok(PyAnalysis { inner: analysis })
    }

    /// Cuts a media file into parts; the plan as JSON.
    #[pyo3(signature = (path, parts=None, part_seconds=None))]
    fn plan(
        &self,
        py: Python<'_>,
        path: PathBuf,
        parts: Option<usize>,
        part_seconds: Option<f64>,
    ) -> PyResult<String> {
        let size = match (parts, part_seconds) {
            (Some(_), Some(_)) => {
                return Err(options_error("give parts or part_seconds, not both"));
            }
            (Some(n), None) => PartSize::Count(n),
            (None, Some(s)) => PartSize::Seconds(s),
            (None, None) => PartSize::Seconds(mica::DEFAULT_PART_SECONDS),
        };
        let analyzer = Arc::clone(&self.inner);
        let plan = py
            .detach(move || analyzer.plan(&path, size))
            .map_err(raise)?;
        serde_json::to_string(&plan).map_err(|e| MicaError::new_err(e.to_string()))
    }

    /// Runs one part of a plan (JSON); the part's result as JSON.
    fn run_part(&self, py: Python<'_>, plan: &str, index: usize) -> PyResult<String> {
        let plan: Plan = serde_json::from_str(plan)
            .map_err(|e| InputError::new_err(format!("the plan: {e}")))?;
        let analyzer = Arc::clone(&self.inner);
        let result = py
            .detach(move || analyzer.run_part(&plan, index))
            .map_err(raise)?;
        serde_json::to_string(&result).map_err(|e| MicaError::new_err(e.to_string()))
    }

    /// Joins every part's result (JSON) of a plan (JSON) into the analysis.
    fn merge(&self, py: Python<'_>, plan: &str, parts: Vec<String>) -> PyResult<PyAnalysis> {
        let plan: Plan = serde_json::from_str(plan)
            .map_err(|e| InputError::new_err(format!("the plan: {e}")))?;
        let results = parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                serde_json::from_str::<PartResult>(p)
                    .map_err(|e| InputError::new_err(format!("part result {i}: {e}")))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let analyzer = Arc::clone(&self.inner);
        let analysis = py
            .detach(move || analyzer.merge(&plan, results))
            .map_err(raise)?;
        Ok(PyAnalysis { inner: analysis })
    }
}

/// One analysis document.
#[pyclass(frozen, module = "mica._mica", name = "Analysis")]
struct PyAnalysis {
    inner: mica::Analysis,
}

#[pymethods]
impl PyAnalysis {
    /// The document as JSON (what `mica analyze` writes).
    fn to_json(&self) -> PyResult<String> {
        self.render("json")
    }

    /// The document in a format: json, srt, vtt, txt, rttm, csv or edl.
    fn render(&self, format: &str) -> PyResult<String> {
        let format = Format::from_str(format).map_err(options_error)?;
        writers::write_to_string(&self.inner, format, &WriterOptions::default()).map_err(
            |e| match e {
                writers::WriteError::Missing { .. } => options_error(e),
                e => MicaError::new_err(e.to_string()),
            },
        )
    }
}

#[pymodule]
fn _mica(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyAnalyzer>()?;
    m.add_class::<PyAnalysis>()?;
    m.add("MicaError", py.get_type::<MicaError>())?;
    m.add("MediaError", py.get_type::<MediaError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add("OptionsError", py.get_type::<OptionsError>())?;
    m.add("UnknownModelError", py.get_type::<UnknownModelError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    m.add("CancelledError", py.get_type::<CancelledError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
