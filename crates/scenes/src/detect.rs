//! Shot detection over a stream of frames: windows through the network in batches, per-frame
//! probabilities, then shots and transitions.
//!
//! Memory stays flat however long the video: a bounded queue of decoded 48x27 frames, the
//! window being filled and one batch of windows. Per-frame results (a timestamp and two
//! probabilities, 16 bytes a frame, about 3 MB for a 2-hour film) are kept for the output.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use candle_core::{Device, Tensor};
use mica_core::document::{Shot, Shots};
use mica_media::{
    FrameOptions, FrameSource, MediaWarning, Rational, Tools, VideoFrame, VideoInfo, extract_jpeg,
    smpte_timecode,
};
use serde::{Deserialize, Serialize};

use crate::error::ScenesError;
use crate::model::{FRAME_BYTES, HEIGHT, TransNetV2, WIDTH};
use crate::windows::{CONTEXT, STEP, WINDOW, Window, Windower};

/// How shots are detected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShotOptions {
    /// A frame whose boundary probability is above this is a transition frame (0..1).
    pub threshold: f32,
    /// Windows of 100 frames run per forward pass; 0 picks for the device (1 on the CPU,
    /// where larger batches only add memory traffic; 32 on GPUs).
    pub batch_windows: usize,
    /// Decode at the stream's constant base rate, as the reference pipeline does (repeated
    /// pictures for gaps); off gives each decoded picture once with its own timestamp.
    pub constant_rate: bool,
    /// Decoded frames queued ahead of the network (decoding runs in its own thread).
    pub queue_frames: usize,
}

impl Default for ShotOptions {
    fn default() -> Self {
        ShotOptions {
            threshold: 0.5,
            batch_windows: 0,
            constant_rate: true,
            queue_frames: 256,
        }
    }
}

impl ShotOptions {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ScenesError> {
        if !(self.threshold.is_finite() && (0.0..1.0).contains(&self.threshold)) {
            return Err(crate::error::invalid_option(format!(
                "threshold {} must be at least 0 and below 1",
                self.threshold
            )));
        }
        if self.batch_windows > 256 {
            return Err(crate::error::invalid_option(format!(
                "batch_windows {} must be between 0 (automatic) and 256",
                self.batch_windows
            )));
        }
        if self.queue_frames == 0 {
            return Err(crate::error::invalid_option(
                "queue_frames must be at least 1".to_string(),
            ));
        }
        Ok(())
    }
}

/// Per-frame network outputs and timestamps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameScores {
    /// Presentation time of each frame in seconds.
    pub pts: Vec<f64>,
    /// Shot-boundary probability of each frame (single-frame head).
    pub single: Vec<f32>,
    /// Transition probability of each frame (many-hot head).
    pub many: Vec<f32>,
}

impl FrameScores {
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.single.len()
    }

    /// Whether there are no frames.
    pub fn is_empty(&self) -> bool {
        self.single.is_empty()
    }
}

/// One shot with its timecodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShotSpan {
    /// First frame of the shot.
    pub start_frame: u64,
    /// One past the last frame of the shot.
    pub end_frame: u64,
    /// Start in seconds (the first frame's timestamp).
    pub start: f64,
    /// End in seconds (the timestamp of the frame after the shot).
    pub end: f64,
    /// SMPTE timecode of `start`.
    pub start_timecode: String,
    /// SMPTE timecode of `end` (exclusive, as an EDL out point).
    pub end_timecode: String,
    /// The shot's middle-frame JPEG, when thumbnails were written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<PathBuf>,
}

/// A run of frames whose boundary probability is above the threshold: a cut (one or two
/// frames) or a gradual transition (a dissolve, a fade).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// First frame above the threshold.
    pub start_frame: u64,
    /// One past the last frame above the threshold.
    pub end_frame: u64,
    /// Start in seconds.
    pub start: f64,
    /// End in seconds.
    pub end: f64,
    /// The frame with the highest probability.
    pub peak_frame: u64,
    /// The highest boundary probability in the run.
    pub probability: f32,
}

/// Shots and transitions of one video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShotList {
    /// Frame rate the frame indices count at.
    pub fps: f64,
    /// The same rate as an exact ratio.
    pub rate: Rational,
    /// Frames analysed.
    pub frames: u64,
    /// Seconds from the start to the end of the last frame.
    pub duration: f64,
    /// The threshold used.
    pub threshold: f32,
    /// Shots, as `TransNetV2.predictions_to_scenes` makes them: a shot ends on the first
    /// frame of a transition and the next starts after its last frame.
    pub shots: Vec<ShotSpan>,
    /// Transitions between the shots, with their probability.
    pub transitions: Vec<Transition>,
    /// Problems met while decoding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<MediaWarning>,
    /// Per-frame probabilities (left out of the JSON).
    #[serde(skip)]
    pub scores: FrameScores,
}

impl ShotList {
    /// Builds shots and transitions from per-frame scores.
    pub fn from_scores(scores: FrameScores, rate: Rational, threshold: f32) -> ShotList {
        let n = scores.len();
        let fps = rate.as_f64();
        let step = if fps > 0.0 { 1.0 / fps } else { 0.0 };
        let duration = scores.pts.last().map_or(0.0, |p| p + step);
        // The time a frame starts; one past the last frame is the end of the video.
        let time = |i: usize| scores.pts.get(i).copied().unwrap_or(duration);
        let tc = |secs: f64| smpte_timecode((secs * fps).round().max(0.0) as u64, rate);
        let span = |s: usize, e: usize| ShotSpan {
            start_frame: s as u64,
            end_frame: e as u64,
            start: time(s),
            end: time(e),
            start_timecode: tc(time(s)),
            end_timecode: tc(time(e)),
            thumbnail: None,
        };
        let above: Vec<bool> = scores.single.iter().map(|&p| p > threshold).collect();
        let mut shots = Vec::new();
        let mut transitions = Vec::new();
        let (mut prev, mut start) = (false, 0usize);
        let mut run: Option<usize> = None;
        for (i, &t) in above.iter().enumerate() {
            if prev && !t {
                start = i;
            }
            if !prev && t && i != 0 {
                // The reference's scene is [start, i] inclusive.
                shots.push(span(start, i + 1));
            }
            match (run, t) {
                (None, true) => run = Some(i),
                (Some(a), false) => {
                    transitions.push(transition(&scores, a, i, &time));
                    run = None;
                }
                _ => {}
            }
            prev = t;
        }
        if let Some(a) = run {
            transitions.push(transition(&scores, a, n, &time));
        }
        if n > 0 && !prev {
            shots.push(span(start, n));
        }
        if shots.is_empty() && n > 0 {
            shots.push(span(0, n));
        }
        ShotList {
            fps,
            rate,
            frames: n as u64,
            duration,
            threshold,
            shots,
            transitions,
            warnings: Vec::new(),
            scores,
        }
    }

    /// Writes one JPEG per shot into `dir` (created if missing): the shot's middle frame
    /// from `input` at its own resolution, named `shot-0001.jpg`, ...; records each path in
    /// [`ShotSpan::thumbnail`].
    pub fn write_thumbnails(
        &mut self,
        input: &Path,
        dir: &Path,
        tools: &Tools,
    ) -> Result<(), ScenesError> {
        std::fs::create_dir_all(dir).map_err(|e| ScenesError::Thumbnail {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let quarter = if self.fps > 0.0 { 0.25 / self.fps } else { 0.0 };
        for (i, shot) in self.shots.iter_mut().enumerate() {
            let middle = ((shot.start_frame + shot.end_frame.saturating_sub(1)) / 2) as usize;
            let pts = self.scores.pts.get(middle).copied().unwrap_or(shot.start);
            let path = dir.join(format!("shot-{:04}.jpg", i + 1));
            // A quarter frame early: ffmpeg keeps the first picture at or after the time.
            extract_jpeg(input, (pts - quarter).max(0.0), &path, 2, tools)?;
            shot.thumbnail = Some(path);
        }
        Ok(())
    }

    /// The shots as mica's document type (for the CSV and EDL writers).
    pub fn to_shots(&self) -> Shots {
        Shots {
            fps: self.fps,
            frames: self.frames,
            shots: self
                .shots
                .iter()
                .map(|s| Shot {
                    start_frame: s.start_frame,
                    end_frame: s.end_frame,
                    start: s.start,
                    end: s.end,
                })
                .collect(),
        }
    }
}

fn transition(
    scores: &FrameScores,
    a: usize,
    b: usize,
    time: &impl Fn(usize) -> f64,
) -> Transition {
    let (mut peak, mut best) = (a, f32::MIN);
    for (i, &p) in scores.single[a..b].iter().enumerate() {
        if p > best {
            best = p;
            peak = a + i;
        }
    }
    Transition {
        start_frame: a as u64,
        end_frame: b as u64,
        start: time(a),
        end: time(b),
        peak_frame: peak as u64,
        probability: best,
    }
}

/// TransNetV2 shot detection with its options; cheap to clone (the model is shared).
#[derive(Debug, Clone)]
pub struct ShotDetector {
    model: Arc<TransNetV2>,
    options: ShotOptions,
}

impl ShotDetector {
    /// A detector over a loaded model.
    pub fn new(model: Arc<TransNetV2>, options: ShotOptions) -> Result<ShotDetector, ScenesError> {
        options.validate()?;
        Ok(ShotDetector { model, options })
    }

    /// The options.
    pub fn options(&self) -> &ShotOptions {
        &self.options
    }

    /// The model.
    pub fn model(&self) -> &Arc<TransNetV2> {
        &self.model
    }

    /// A stream to push frames into.
    pub fn stream(&self) -> ShotStream {
        let batch = match self.options.batch_windows {
            0 if self.model.device().is_cpu() => 1,
            0 => 32,
            n => n,
        };
        ShotStream {
            model: Arc::clone(&self.model),
            batch,
            windower: Windower::new(),
            pending: Vec::new(),
            scores: FrameScores::default(),
        }
    }

    /// Decodes `path` (any container ffmpeg reads) and detects its shots.
    pub fn detect_path(&self, path: impl AsRef<Path>) -> Result<ShotList, ScenesError> {
        let path = path.as_ref();
        let options = FrameOptions {
            constant_rate: self.options.constant_rate,
            ..FrameOptions::new(WIDTH as u32, HEIGHT as u32)
        };
        let source = FrameSource::open(path, &options)?;
        self.detect_source(source, path)
    }

    /// Detects the shots of an opened 48x27 frame source. Decoding runs in its own thread,
    /// `queue_frames` ahead of the network.
    pub fn detect_source(&self, source: FrameSource, path: &Path) -> Result<ShotList, ScenesError> {
        self.detect_source_observed(source, path, &|_| true)
    }

    /// [`ShotDetector::detect_source`], calling `observer` with each frame's time in
    /// seconds once it is scored: it reports progress, and returning `false` stops the
    /// detection with [`ScenesError::Cancelled`].
    pub fn detect_source_observed(
        &self,
        source: FrameSource,
        path: &Path,
        observer: &(dyn Fn(f64) -> bool + Sync),
    ) -> Result<ShotList, ScenesError> {
        let info: VideoInfo = source.info().clone();
        let rate = if self.options.constant_rate {
            info.base_rate
        } else {
            info.fps
        };
        let (tx, rx) =
            mpsc::sync_channel::<Result<VideoFrame, ScenesError>>(self.options.queue_frames);
        let decoder = std::thread::Builder::new()
            .name("mica-frames".to_string())
            .spawn(move || {
                let mut source = source;
                loop {
                    let item = match source.next_frame() {
                        Ok(Some(f)) => Ok(f),
                        Ok(None) => break,
                        Err(e) => Err(ScenesError::from(e)),
                    };
                    let stop = item.is_err();
                    // The receiver is gone when the network failed; stop decoding.
                    if tx.send(item).is_err() || stop {
                        break;
                    }
                }
                source.warnings().to_vec()
            })
            .map_err(|e| {
                crate::error::invalid_option(format!("cannot start the decoding thread: {e}"))
            })?;
        let mut stream = self.stream();
        let mut failed = None;
        for item in rx.iter() {
            let pushed = item.and_then(|frame| {
                stream.push(&frame)?;
                if observer(frame.pts) {
                    Ok(())
                } else {
                    Err(ScenesError::Cancelled)
                }
            });
            if let Err(e) = pushed {
                failed = Some(e);
                break;
            }
        }
        drop(rx);
        let warnings = decoder.join().unwrap_or_default();
        if let Some(e) = failed {
            return Err(e);
        }
        let scores = stream.finish()?;
        if scores.is_empty() {
            return Err(ScenesError::NoFrames {
                path: path.to_path_buf(),
            });
        }
        let mut list = ShotList::from_scores(scores, rate, self.options.threshold);
        list.warnings = warnings;
        Ok(list)
    }
}

/// Frames in, per-frame probabilities out, with the reference's windowing.
#[derive(Debug)]
pub struct ShotStream {
    model: Arc<TransNetV2>,
    batch: usize,
    windower: Windower,
    pending: Vec<Window>,
    scores: FrameScores,
}

impl ShotStream {
    /// Adds a decoded 48x27 frame.
    pub fn push(&mut self, frame: &VideoFrame) -> Result<(), ScenesError> {
        if frame.data.len() != FRAME_BYTES
            || frame.width as usize != WIDTH
            || frame.height as usize != HEIGHT
        {
            return Err(ScenesError::FrameSize {
                index: frame.index,
                width: frame.width,
                height: frame.height,
                bytes: frame.data.len(),
            });
        }
        self.push_rgb(&frame.data, frame.pts)
    }

    /// Adds a 48x27 rgb24 frame given as bytes, with its timestamp in seconds.
    pub fn push_rgb(&mut self, rgb: &[u8], pts: f64) -> Result<(), ScenesError> {
        if rgb.len() != FRAME_BYTES {
            return Err(ScenesError::FrameSize {
                index: self.windower.frames(),
                width: WIDTH as u32,
                height: HEIGHT as u32,
                bytes: rgb.len(),
            });
        }
        self.scores.pts.push(pts);
        if let Some(w) = self.windower.push(rgb) {
            self.pending.push(w);
            if self.pending.len() >= self.batch {
                self.run()?;
            }
        }
        Ok(())
    }

    /// Frames pushed so far.
    pub fn frames(&self) -> u64 {
        self.windower.frames()
    }

    /// Runs the last windows and returns the scores of every frame pushed.
    pub fn finish(mut self) -> Result<FrameScores, ScenesError> {
        let rest = self.windower.finish();
        self.pending.extend(rest);
        while !self.pending.is_empty() {
            self.run()?;
        }
        let n = self.scores.pts.len();
        self.scores.single.truncate(n);
        self.scores.many.truncate(n);
        Ok(self.scores)
    }

    /// Runs up to `batch` pending windows.
    fn run(&mut self) -> Result<(), ScenesError> {
        let take = self.pending.len().min(self.batch);
        let windows: Vec<Window> = self.pending.drain(..take).collect();
        let mut bytes = Vec::with_capacity(take * WINDOW * FRAME_BYTES);
        for w in &windows {
            bytes.extend_from_slice(&w.frames);
        }
        let input = Tensor::from_vec(bytes, (take, WINDOW, HEIGHT, WIDTH, 3), &Device::Cpu)?
            .to_device(self.model.device())?;
        let pred = self.model.forward_frames(&input, CONTEXT, STEP)?;
        let single = pred.single.to_vec2::<f32>()?;
        let many = pred.many.to_vec2::<f32>()?;
        for (s, m) in single.into_iter().zip(many) {
            self.scores.single.extend(s);
            self.scores.many.extend(m);
        }
        Ok(())
    }
}
