//! What a caller watches and steers a running analysis with: [`Progress`] reports and a
//! [`CancelToken`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A stage of an analysis, as progress reports name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Decoding the audio (voice activity and diarization run on it as it arrives).
    Decode,
    /// Speech recognition.
    Asr,
    /// Shot detection over the video frames.
    Shots,
}

/// One progress report: how far `stage` has come through the media.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// The stage reporting.
    pub stage: Stage,
    /// Seconds of media this stage has done.
    pub media_seconds: f64,
    /// Seconds of media in all (the probed duration; 0 when unknown).
    pub duration: f64,
}

/// A flag shared with a running analysis: once cancelled, the analysis stops at its next
/// check (between decoded chunks, video frames or Whisper windows) and returns
/// [`crate::Error::Cancelled`]. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Asks every analysis holding this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A progress callback, called from the threads doing the work.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// A transcript segment callback, called from the threads doing the work as soon as each
/// segment is decoded: times are the input's, no speaker is set yet (speakers are
/// clustered once at the end), and parts decoded side by side interleave. The final
/// [`crate::Analysis`] is what counts: segments at a part's edge may be joined there.
pub type SegmentFn = Arc<dyn Fn(&mica_core::document::Segment) + Send + Sync>;

/// How one call of [`crate::Analyzer::analyze_with`] is watched and steered.
#[derive(Clone, Default)]
pub struct RunControl {
    /// Called as each stage advances.
    pub progress: Option<ProgressFn>,
    /// Called with each transcript segment as it is decoded.
    pub segments: Option<SegmentFn>,
    /// Stops the analysis when cancelled.
    pub cancel: CancelToken,
}

impl std::fmt::Debug for RunControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunControl")
            .field("progress", &self.progress.is_some())
            .field("segments", &self.segments.is_some())
            .field("cancel", &self.cancel)
            .finish()
    }
}

impl RunControl {
    /// Reports progress; `Err(Cancelled)` once the token is cancelled.
    pub(crate) fn report(
        &self,
        stage: Stage,
        media_seconds: f64,
        duration: f64,
    ) -> Result<(), crate::Error> {
        if let Some(progress) = &self.progress {
            progress(Progress {
                stage,
                media_seconds,
                duration,
            });
        }
        if self.cancel.is_cancelled() {
            return Err(crate::Error::Cancelled);
        }
        Ok(())
    }
}
