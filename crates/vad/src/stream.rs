//! Running the network over audio: one stream's sequential state, chunk pushing with
//! events, and the offline entry points built on the same path.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use mica_core::document::SpeechRegions;
use mica_core::error::RunError;
#[cfg(feature = "media")]
use mica_media::AudioStream;

use crate::VadError;
use crate::error::MODEL;
use crate::model::{HIDDEN, SampleRate, SileroVad};
use crate::timestamps::{Padder, Raw, Segmenter, SpeechOptions, SpeechSegment, Transition};

/// Windows run through the state-free front end in one batch: large enough to amortise
/// per-op overhead, small enough (about 2.4 MB of input rows at 16 kHz) to stay in cache
/// and bound memory.
const MAX_BATCH_WINDOWS: usize = 1024;

/// One stream's network state and context, and the batched front end.
#[derive(Debug)]
struct Runner {
    model: Arc<SileroVad>,
    rate: SampleRate,
    h: Tensor,
    c: Tensor,
    /// The last `context` samples of the previous window (zeros at the start).
    context: Vec<f32>,
    /// Scratch: input rows `[n, context + window]`.
    rows: Vec<f32>,
    /// Scratch: each step's `h`, decoded together.
    hs: Vec<Tensor>,
    /// The state in host memory when the recurrence runs there (CPU): h, c, gate scratch,
    /// and each step's h.
    host: Option<HostState>,
}

#[derive(Debug)]
struct HostState {
    h: Vec<f32>,
    c: Vec<f32>,
    scratch: Vec<f32>,
    hs: Vec<f32>,
}

impl HostState {
    fn new() -> HostState {
        HostState {
            h: vec![0.0; HIDDEN],
            c: vec![0.0; HIDDEN],
            scratch: vec![0.0; 4 * HIDDEN],
            hs: Vec::new(),
        }
    }
}

impl Runner {
    fn new(model: Arc<SileroVad>, rate: SampleRate) -> Result<Runner, VadError> {
        let zeros = Tensor::zeros((1, HIDDEN), DType::F32, model.device())?;
        Ok(Runner {
            h: zeros.clone(),
            c: zeros,
            context: vec![0.0; rate.context()],
            rows: Vec::new(),
            hs: Vec::new(),
            host: model.device().is_cpu().then(HostState::new),
            model,
            rate,
        })
    }

    fn reset(&mut self) -> Result<(), VadError> {
        let zeros = Tensor::zeros((1, HIDDEN), DType::F32, self.model.device())?;
        self.h = zeros.clone();
        self.c = zeros;
        self.context.fill(0.0);
        if let Some(host) = &mut self.host {
            host.h.fill(0.0);
            host.c.fill(0.0);
        }
        Ok(())
    }

    /// Probabilities of whole windows (`samples.len()` a multiple of the window), in order.
    fn run(&mut self, samples: &[f32], probs: &mut Vec<f32>) -> Result<(), VadError> {
        let win = self.rate.window();
        let ctx = self.rate.context();
        let len = self.rate.input_len();
        let net = self.model.net(self.rate);
        for batch in samples.chunks(win * MAX_BATCH_WINDOWS) {
            let n = batch.len() / win;
            self.rows.clear();
            for w in batch.chunks_exact(win) {
                self.rows.extend_from_slice(&self.context);
                self.rows.extend_from_slice(w);
                self.context.copy_from_slice(&w[win - ctx..]);
            }
            let input = Tensor::from_slice(&self.rows, (n, len), self.model.device())?;
            let gates = net.input_gates(&net.encode(&input)?)?;
            let hs = match &mut self.host {
                Some(host) => {
                    let gates = gates.flatten_all()?.to_vec1::<f32>()?;
                    host.hs.clear();
                    for g in gates.chunks_exact(4 * HIDDEN) {
                        if !net.cell_host(g, &mut host.h, &mut host.c, &mut host.scratch) {
                            return Err(RunError::option(
                                MODEL,
                                "the CPU recurrence needs the weights in host memory",
                            )
                            .into());
                        }
                        host.hs.extend_from_slice(&host.h);
                    }
                    Tensor::from_slice(&host.hs, (n, HIDDEN), self.model.device())?
                }
                None => {
                    self.hs.clear();
                    for i in 0..n {
                        let (h, c) = net.cell(&gates.narrow(0, i, 1)?, &self.h, &self.c)?;
                        self.hs.push(h.clone());
                        self.h = h;
                        self.c = c;
                    }
                    let hs = Tensor::cat(&self.hs, 0)?;
                    self.hs.clear();
                    hs
                }
            };
            probs.extend(net.decode(&hs)?.to_vec1::<f32>()?);
        }
        Ok(())
    }
}

/// What a [`VadStream`] reports besides probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum VadEvent {
    /// Speech began at the window starting at this sample (unpadded). The region may still
    /// be dropped as too short; [`VadEvent::Segment`] is the final word.
    SpeechStart {
        /// Sample index at the stream's rate.
        sample: u64,
    },
    /// Speech ended at this sample (unpadded, the start of the first silent window).
    SpeechEnd {
        /// Sample index at the stream's rate.
        sample: u64,
        /// False when the region was shorter than `min_speech_duration_ms` and dropped.
        kept: bool,
    },
    /// A finished, padded speech region, exactly as the offline result has it. Emitted as
    /// soon as nothing later in the audio can change it.
    Segment(SpeechSegment),
}

/// What one [`VadStream::push`] or [`VadStream::finish`] produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamOutput {
    /// Index of the window of `probabilities[0]`.
    pub first_window: u64,
    /// Speech probability of each window completed by this call.
    pub probabilities: Vec<f32>,
    /// Start, end and region events, in order.
    pub events: Vec<VadEvent>,
}

/// Live VAD over one stream: push chunks of any size, get each completed window's
/// probability and speech events. State and context carry across pushes, so the result is
/// independent of how the audio is chunked and identical to the offline [`Vad::detect`].
#[derive(Debug)]
pub struct VadStream {
    runner: Runner,
    options: SpeechOptions,
    segmenter: Segmenter,
    padder: Padder,
    /// Samples of an incomplete window.
    pending: Vec<f32>,
    raws: Vec<Raw>,
    samples: u64,
    windows: u64,
    finished: bool,
    out: StreamOutput,
}

impl VadStream {
    /// A stream at `rate` over shared weights.
    pub fn new(
        model: Arc<SileroVad>,
        rate: SampleRate,
        options: SpeechOptions,
    ) -> Result<VadStream, VadError> {
        options.validate()?;
        Ok(VadStream {
            runner: Runner::new(model, rate)?,
            segmenter: Segmenter::new(&options, rate),
            padder: Padder::new(&options, rate),
            options,
            pending: Vec::with_capacity(rate.window()),
            raws: Vec::new(),
            samples: 0,
            windows: 0,
            finished: false,
            out: StreamOutput::default(),
        })
    }

    /// The stream's rate.
    pub fn rate(&self) -> SampleRate {
        self.runner.rate
    }

    /// Samples pushed so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// True while the last window left the segmenter in speech.
    pub fn in_speech(&self) -> bool {
        self.segmenter.open_start().is_some()
    }

    /// Starts over for a new recording (state, context and regions cleared).
    pub fn reset(&mut self) -> Result<(), VadError> {
        let rate = self.runner.rate;
        self.runner.reset()?;
        self.segmenter = Segmenter::new(&self.options, rate);
        self.padder = Padder::new(&self.options, rate);
        self.pending.clear();
        self.samples = 0;
        self.windows = 0;
        self.finished = false;
        self.out = StreamOutput::default();
        Ok(())
    }

    /// Pushes samples at the stream's rate. NaN or infinite samples fail the call before any
    /// of the chunk is used, leaving the stream as it was.
    pub fn push(&mut self, samples: &[f32]) -> Result<&StreamOutput, VadError> {
        if self.finished {
            return Err(VadError::Finished);
        }
        RunError::check_finite("audio sample", samples, self.samples)?;
        self.begin_output();
        let win = self.runner.rate.window();
        self.samples += samples.len() as u64;
        let mut rest = samples;
        if !self.pending.is_empty() {
            let need = (win - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..need]);
            rest = &rest[need..];
            if self.pending.len() == win {
                let window = std::mem::take(&mut self.pending);
                let result = self.process(&window, true);
                self.pending = window;
                self.pending.clear();
                result?;
            }
        }
        // Whole windows straight from the caller's slice: no copy of long inputs.
        let whole = rest.len() - rest.len() % win;
        self.process(&rest[..whole], true)?;
        self.pending.extend_from_slice(&rest[whole..]);
        Ok(&self.out)
    }

    /// Ends the stream: the incomplete last window is zero-padded (as silero does), the open
    /// region is closed at the last sample, and the remaining regions are emitted.
    pub fn finish(&mut self) -> Result<&StreamOutput, VadError> {
        if self.finished {
            return Err(VadError::Finished);
        }
        self.begin_output();
        if !self.pending.is_empty() {
            let mut window = std::mem::take(&mut self.pending);
            window.resize(self.runner.rate.window(), 0.0);
            let result = self.process(&window, false);
            self.pending = window;
            self.pending.clear();
            result?;
        }
        let len = i64::try_from(self.samples).unwrap_or(i64::MAX);
        let (raws, events) = (&mut self.raws, &mut self.out.events);
        self.segmenter.finish(len, &mut |r| raws.push(r), &mut |t| {
            push_transition(events, t)
        });
        for r in self.raws.drain(..) {
            self.padder
                .push(r, &mut |s| self.out.events.push(VadEvent::Segment(s)));
        }
        self.padder
            .finish(len, &mut |s| self.out.events.push(VadEvent::Segment(s)));
        self.finished = true;
        Ok(&self.out)
    }

    fn begin_output(&mut self) {
        self.out.first_window = self.windows;
        self.out.probabilities.clear();
        self.out.events.clear();
    }

    /// Runs whole windows and feeds their probabilities to the segmenter; `settle` is false
    /// for the zero-padded last window, whose end lies past the audio.
    fn process(&mut self, work: &[f32], settle: bool) -> Result<(), VadError> {
        if work.is_empty() {
            return Ok(());
        }
        let first = self.out.probabilities.len();
        self.runner.run(work, &mut self.out.probabilities)?;
        let win = self.runner.rate.window() as i64;
        for k in first..self.out.probabilities.len() {
            let p = self.out.probabilities[k];
            let (raws, events) = (&mut self.raws, &mut self.out.events);
            self.segmenter.push(p, &mut |r| raws.push(r), &mut |t| {
                push_transition(events, t)
            });
            for r in self.raws.drain(..) {
                self.padder
                    .push(r, &mut |s| self.out.events.push(VadEvent::Segment(s)));
            }
            self.windows += 1;
            if settle {
                let earliest = self
                    .segmenter
                    .open_start()
                    .unwrap_or(self.windows as i64 * win);
                self.padder.settle(earliest, &mut |s| {
                    self.out.events.push(VadEvent::Segment(s))
                });
            }
        }
        Ok(())
    }
}

fn push_transition(events: &mut Vec<VadEvent>, t: Transition) {
    events.push(match t {
        Transition::Start(at) => VadEvent::SpeechStart {
            sample: at.max(0) as u64,
        },
        Transition::End { at, kept } => VadEvent::SpeechEnd {
            sample: at.max(0) as u64,
            kept,
        },
    });
}

/// Probabilities and speech regions of a whole recording.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VadOutput {
    /// The rate the indices count at.
    pub sample_rate: u32,
    /// Samples in the recording.
    pub samples: u64,
    /// Speech probability per window ([`SampleRate::window`] samples); empty when the
    /// caller asked not to keep them.
    pub probabilities: Vec<f32>,
    /// Speech regions, in order, padded.
    pub segments: Vec<SpeechSegment>,
}

impl VadOutput {
    /// The regions in seconds, the document form.
    pub fn regions(&self) -> SpeechRegions {
        self.segments.iter().map(SpeechSegment::range).collect()
    }

    /// Length of the recording in seconds.
    pub fn duration(&self) -> f64 {
        self.samples as f64 / f64::from(self.sample_rate)
    }
}

/// Voice activity detection with shared weights and fixed options: offline over samples
/// or a decoding `AudioStream` (feature `media`), or live through [`Vad::stream`].
#[derive(Debug, Clone)]
pub struct Vad {
    model: Arc<SileroVad>,
    options: SpeechOptions,
}

impl Vad {
    /// A detector over `model` with `options` (checked here).
    pub fn new(model: Arc<SileroVad>, options: SpeechOptions) -> Result<Vad, VadError> {
        options.validate()?;
        Ok(Vad { model, options })
    }

    /// The options in use.
    pub fn options(&self) -> &SpeechOptions {
        &self.options
    }

    /// The shared weights.
    pub fn model(&self) -> &Arc<SileroVad> {
        &self.model
    }

    /// A live stream at `rate`.
    pub fn stream(&self, rate: SampleRate) -> Result<VadStream, VadError> {
        VadStream::new(Arc::clone(&self.model), rate, self.options.clone())
    }

    /// Per-window probabilities and regions of `samples` at `rate` (16 kHz or 8 kHz mono;
    /// other rates must be resampled first, e.g. by the mica decoder). Empty audio gives no
    /// windows and no regions; audio shorter than a window gives one zero-padded window.
    pub fn detect(&self, samples: &[f32], rate: SampleRate) -> Result<VadOutput, VadError> {
        let mut stream = self.stream(rate)?;
        let mut probabilities = Vec::with_capacity(samples.len().div_ceil(rate.window()));
        let mut segments = Vec::new();
        let mut collect = |out: &StreamOutput| {
            probabilities.extend_from_slice(&out.probabilities);
            segments.extend(segments_of(out));
        };
        collect(stream.push(samples)?);
        collect(stream.finish()?);
        Ok(VadOutput {
            sample_rate: rate.hz(),
            samples: samples.len() as u64,
            probabilities,
            segments,
        })
    }

    /// Regions of a decoding stream (16 kHz), chunk by chunk: memory stays flat however
    /// long the input. Probabilities are kept only when `keep_probabilities` is set.
    #[cfg(feature = "media")]
    pub fn detect_audio(
        &self,
        audio: &mut AudioStream,
        keep_probabilities: bool,
    ) -> Result<VadOutput, VadError> {
        let rate = SampleRate::Hz16000;
        let mut stream = self.stream(rate)?;
        let mut probabilities = Vec::new();
        let mut segments = Vec::new();
        let mut collect = |out: &StreamOutput| {
            if keep_probabilities {
                probabilities.extend_from_slice(&out.probabilities);
            }
            segments.extend(segments_of(out));
        };
        while let Some(chunk) = audio.next_chunk()? {
            collect(stream.push(&chunk.samples)?);
        }
        collect(stream.finish()?);
        Ok(VadOutput {
            sample_rate: rate.hz(),
            samples: stream.samples(),
            probabilities,
            segments,
        })
    }
}

/// The finished regions among an output's events.
fn segments_of(out: &StreamOutput) -> impl Iterator<Item = SpeechSegment> + '_ {
    out.events.iter().filter_map(|e| match e {
        VadEvent::Segment(s) => Some(*s),
        _ => None,
    })
}
