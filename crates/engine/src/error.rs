//! The engine's error: each model crate's error, media and model-file errors, and the
//! engine's own (no task, cancelled), each with the [`ErrorKind`] a caller acts on.

use mica_core::error::ErrorKind;

/// Anything [`crate::Analyzer`] building or analysing can return.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No task was asked for.
    #[error("no task asked for; pick at least one of vad, asr, diarize, shots")]
    NoTasks,
    /// A task name that is not one of the four.
    #[error("unknown task {0:?}; the tasks are vad, asr, diarize and shots")]
    UnknownTask(String),
    /// A task asked of an analyzer that did not load its models.
    #[error("the {} task is not loaded here (loaded: {})", task.name(), names(loaded))]
    TaskNotLoaded {
        /// The task asked for.
        task: crate::Task,
        /// The tasks that are loaded.
        loaded: Vec<crate::Task>,
    },
    /// An option out of its range (the message says which and why).
    #[error("{0}")]
    Options(String),
    /// A plan and its parts do not fit together (a missing or duplicate part, another
    /// plan's part, different tasks, an input changed since it was planned).
    #[error("{0}")]
    Plan(String),
    /// The caller cancelled the analysis; nothing was returned.
    #[error("the analysis was cancelled")]
    Cancelled,
    /// Reading the input failed (a reader given as input, or its temporary copy).
    #[error("reading the input: {0}")]
    Io(#[from] std::io::Error),
    /// The compute device is not usable.
    #[error(transparent)]
    Device(#[from] mica_core::device::DeviceError),
    /// The media could not be opened or decoded.
    #[error(transparent)]
    Media(Box<mica_media::MediaError>),
    /// A model could not be resolved, fetched or verified.
    #[error(transparent)]
    Model(Box<mica_models::ModelError>),
    /// Voice activity detection failed.
    #[error(transparent)]
    Vad(Box<mica_vad::VadError>),
    /// Speech recognition failed.
    #[error(transparent)]
    Asr(Box<mica_asr::AsrError>),
    /// Diarization failed.
    #[error(transparent)]
    Diarize(Box<mica_diarize::DiarizeError>),
    /// Shot detection failed.
    #[error(transparent)]
    Shots(Box<mica_scenes::ScenesError>),
}

/// Boxed, so that every `Result` of the engine stays small.
macro_rules! boxed_from {
    ($($variant:ident: $ty:ty),* $(,)?) => {$(
        impl From<$ty> for Error {
            fn from(e: $ty) -> Error {
                Error::$variant(Box::new(e))
            }
        }
    )*};
}

boxed_from! {
    Media: mica_media::MediaError,
    Model: mica_models::ModelError,
    Vad: mica_vad::VadError,
    Asr: mica_asr::AsrError,
    Diarize: mica_diarize::DiarizeError,
    Shots: mica_scenes::ScenesError,
}

impl Error {
    /// What the caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        use mica_models::ModelError;
        match self {
            Error::NoTasks
            | Error::UnknownTask(_)
            | Error::TaskNotLoaded { .. }
            | Error::Options(_) => ErrorKind::Options,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Io(_) | Error::Media(_) => ErrorKind::Media,
            Error::Plan(_) => ErrorKind::Input,
            Error::Device(_) => ErrorKind::Device,
            Error::Model(e)
                if matches!(
                    **e,
                    ModelError::UnknownAsset { .. } | ModelError::BadSpec(_)
                ) =>
            {
                ErrorKind::Options
            }
            Error::Model(_) => ErrorKind::Model,
            Error::Vad(e) => e.kind(),
            Error::Asr(e) => e.kind(),
            Error::Diarize(e) => e.kind(),
            Error::Shots(e) => e.kind(),
        }
    }
}

/// Task names joined by commas.
fn names(tasks: &[crate::Task]) -> String {
    let names: Vec<&str> = tasks.iter().map(|t| t.name()).collect();
    names.join(", ")
}
