//! `mica live INPUT|URL`: captions of a live source as they settle.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use mica::{CancelToken, FeedOptions, LiveEvent, LiveOptions};
use mica_asr::{Precision, TranscribeOptions};
use mica_core::document::{Segment, Transcript, Word};
use mica_core::writers::{WriterOptions, subtitle};
use mica_media::{LiveAudio, LiveOptions as SourceOptions, LiveRecorder, RecordOptions};

use crate::clips;

/// What `mica live` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LiveFormat {
    /// JSON lines: every partial, final and status event.
    Json,
    /// WebVTT cues, each printed once its sentence or utterance has settled.
    Vtt,
    /// The settled text, a line per utterance.
    Txt,
}

/// Arguments of `mica live`.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// A live source ffmpeg reads (srt://, rtmp://, udp://, rtp://, an HLS .m3u8 URL) or a
    /// media file (as fast as it decodes, or at its own speed with --realtime).
    input: String,
    /// Tasks: asr, and diarize for `speaker` events (who spoke each stretch of settled
    /// words, in --format json). Shot cuts are not available live yet.
    #[arg(
        long,
        default_value = "asr",
        value_delimiter = ',',
        value_parser = clap::builder::PossibleValuesParser::new(["asr", "diarize"])
    )]
    tasks: Vec<String>,
    /// Model: a name (tiny.en, base), a directory, or hf:owner/repo.
    #[arg(long, default_value = "tiny.en")]
    model: String,
    /// Spoken language code (en, es, ...), or auto to detect it on the first utterance.
    #[arg(long, default_value = "auto")]
    language: String,
    /// Beams per pass (1 = greedy, the fastest).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    beam_size: u16,
    /// Weights precision: f32, f16, bf16, q8 or q4k.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Seconds of new audio between two decodes of the utterance (partials' cadence),
    /// 0.1 to 10.
    #[arg(long, default_value_t = 0.5, value_parser = seconds_in(0.1, 10.0))]
    step: f64,
    /// Silence (ms) that ends an utterance and settles its words, 100 to 5000.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(100..=5000))]
    min_silence_ms: u32,
    /// Text that precedes the stream (names, spelling, style).
    #[arg(long)]
    initial_prompt: Option<String>,
    /// Play a file at its own speed, as if broadcast (ffmpeg -re).
    #[arg(long)]
    realtime: bool,
    /// Seconds without audio before a `stalled` event, 0.5 to 60.
    #[arg(long, default_value_t = 3.0, value_parser = seconds_in(0.5, 60.0))]
    stall_seconds: f64,
    /// Seconds a network source that went away is tried again before the session ends,
    /// 0 to 3600 (0: end with it). Files are never reopened.
    #[arg(long, default_value_t = 30.0, value_parser = seconds_in(0.0, 3600.0))]
    reconnect_seconds: f64,
    /// Output: json (events), vtt or txt.
    #[arg(long, value_enum, default_value = "json")]
    format: LiveFormat,
    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<std::path::PathBuf>,
    /// Also write a rolling WebVTT subtitle playlist (HLS) into DIR: subtitles.m3u8 and
    /// its segments, each written once its words have settled, for a player to load
    /// beside the stream.
    #[arg(long, value_name = "DIR")]
    hls: Option<std::path::PathBuf>,
    /// Keep the stream as it arrives (stream copy, MPEG-TS segments) in DIR, for clips:
    /// each line `clip SECONDS` (the last seconds) or `clip START END` (stream seconds) on
    /// standard input writes DIR/clip-NNNN.ts with its .srt and .vtt, and answers with a
    /// `clip` line (in the JSON output, else on standard error).
    #[arg(long, value_name = "DIR")]
    record: Option<std::path::PathBuf>,
    /// Seconds of stream --record keeps, 10 to 86400.
    #[arg(long, default_value_t = 600.0, value_parser = seconds_in(10.0, 86_400.0))]
    record_seconds: f64,
    /// Seconds per HLS subtitle segment, 1 to 60.
    #[arg(long, default_value_t = 6.0, value_parser = seconds_in(1.0, 60.0))]
    hls_segment_seconds: f64,
    #[command(flatten)]
    compute: crate::ComputeArgs,
}

/// A parser of seconds between `low` and `high` (bad values exit 2, as usage errors).
fn seconds_in(low: f64, high: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |s| match s.parse::<f64>() {
        Ok(v) if (low..=high).contains(&v) => Ok(v),
        Ok(_) => Err(format!("must be {low} to {high} seconds")),
        Err(e) => Err(format!("not a number of seconds: {e}")),
    }
}

/// Runs `mica live`.
pub fn run(args: LiveArgs) -> Result<()> {
    let transcribe = TranscribeOptions {
        language: match args.language.as_str() {
            "auto" => None,
            code => Some(code.to_string()),
        },
        initial_prompt: args.initial_prompt.clone(),
        decode: mica_asr::DecodeOptions {
            beam_size: usize::from(args.beam_size),
            // The temperature fallback runs on an utterance's last pass only.
            ..mica_asr::DecodeOptions::default()
        },
        ..TranscribeOptions::default()
    };
    transcribe.validate()?;
    let defaults = LiveOptions::default();
    let speakers = args.tasks.iter().any(|t| t == "diarize");
    anyhow::ensure!(
        args.tasks.iter().any(|t| t == "asr"),
        "--tasks must include asr: live speakers label the settled words"
    );
    let live_options = LiveOptions {
        step_seconds: args.step,
        speech: mica::SpeechOptions {
            min_silence_duration_ms: args.min_silence_ms,
            ..defaults.speech.clone()
        },
        speakers: speakers.then(mica::OnlineOptions::default),
        ..defaults
    };
    live_options.validate()?;
    // A local file is checked before anything is printed (missing, empty, not media).
    if !mica_media::is_url(&args.input) {
        drop(mica_media::AudioStream::open(&args.input)?);
    }
    let device = args.compute.apply()?;
    let analyzer = mica::Analyzer::builder()
        .tasks(if speakers {
            vec![mica::Task::Asr, mica::Task::Diarize]
        } else {
            vec![mica::Task::Asr]
        })
        .asr_model(&args.model)
        .precision(args.precision)
        .transcribe_options(transcribe)
        .on_device(device)
        .build()?;
    let mut session = analyzer.live(live_options)?;
    let recorder = match &args.record {
        Some(dir) => Some(Arc::new(
            LiveRecorder::new(RecordOptions::new(dir, args.record_seconds))
                .with_context(|| format!("{}: the recording directory", dir.display()))?,
        )),
        None => None,
    };
    let source = LiveAudio::open(
        &args.input,
        &SourceOptions {
            realtime: args.realtime,
            record: recorder.clone(),
            ..SourceOptions::default()
        },
    )?;
    let mut hls = match &args.hls {
        Some(dir) => Some(
            mica::HlsSubtitles::create(
                dir,
                mica::HlsOptions {
                    segment_seconds: args.hls_segment_seconds,
                    ..mica::HlsOptions::default()
                },
            )
            .with_context(|| format!("{}: the HLS subtitle directory", dir.display()))?,
        ),
        None => None,
    };
    let out: clips::Shared = Arc::new(Mutex::new(crate::open_output(args.output.as_deref())?));
    let words = Arc::new(Mutex::new(clips::Words::default()));
    if let (Some(recorder), Some(dir)) = (recorder, &args.record) {
        let answers: clips::Shared = match args.format {
            LiveFormat::Json => Arc::clone(&out),
            _ => Arc::new(Mutex::new(Box::new(std::io::stderr()))),
        };
        let (words, dir) = (Arc::clone(&words), dir.clone());
        std::thread::Builder::new()
            .name("mica-live-clips".into())
            .spawn(move || clips::serve(recorder, words, dir, answers))?;
    }
    let mut printer = Printer::new(args.format);
    let mut failed = None;
    let feed = FeedOptions {
        stall_after: Duration::from_secs_f64(args.stall_seconds),
        reconnect_for: Duration::from_secs_f64(args.reconnect_seconds),
    };
    session
        .run(source, &feed, &CancelToken::new(), &mut |event| {
            if let LiveEvent::Final(c) = event {
                words.lock().unwrap_or_else(PoisonError::into_inner).push(
                    &c.words,
                    c.utterance,
                    args.record_seconds,
                );
            }
            let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
            let written = printer
                .print(event, &mut *out)
                .and_then(|()| Ok(out.flush()?))
                .and_then(|()| match &mut hls {
                    Some(hls) => hls
                        .on_event(event)
                        .context("writing the HLS subtitle playlist"),
                    None => Ok(()),
                });
            match written {
                Ok(()) => true,
                Err(e) => {
                    // The reader went away (a closed pipe): stop quietly.
                    failed = Some(e);
                    false
                }
            }
        })
        .with_context(|| format!("{}: live captions", args.input))?;
    if let Some(e) = failed {
        let broken_pipe = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe);
        if !broken_pipe {
            return Err(e.context("writing the captions"));
        }
    }
    Ok(())
}

/// Turns events into the chosen format as they come.
struct Printer {
    format: LiveFormat,
    started: bool,
    /// Settled words not yet printed as cues (vtt).
    words: Vec<Word>,
    /// The current text line has words (txt).
    open_line: bool,
}

impl Printer {
    fn new(format: LiveFormat) -> Printer {
        Printer {
            format,
            started: false,
            words: Vec::new(),
            open_line: false,
        }
    }

    fn print(&mut self, event: &LiveEvent, out: &mut dyn Write) -> Result<()> {
        match self.format {
            LiveFormat::Json => {
                serde_json::to_writer(&mut *out, event)?;
                writeln!(out)?;
            }
            LiveFormat::Txt => match event {
                LiveEvent::Final(c) => {
                    let text = if self.open_line {
                        c.text.as_str()
                    } else {
                        c.text.trim_start()
                    };
                    write!(out, "{text}")?;
                    self.open_line |= !text.is_empty();
                    if c.end_of_utterance && self.open_line {
                        writeln!(out)?;
                        self.open_line = false;
                    }
                }
                LiveEvent::Status { state, .. } if state == "ended" && self.open_line => {
                    writeln!(out)?;
                    self.open_line = false;
                }
                _ => {}
            },
            LiveFormat::Vtt => {
                if !self.started {
                    writeln!(out, "WEBVTT\n")?;
                    self.started = true;
                }
                match event {
                    LiveEvent::Final(c) => {
                        self.words.extend(c.words.iter().cloned());
                        let sentence = c
                            .words
                            .last()
                            .is_some_and(|w| w.text.trim_end().ends_with(['.', '?', '!']));
                        if c.end_of_utterance || sentence {
                            self.cues(out)?;
                        }
                    }
                    LiveEvent::Status { state, .. } if state == "ended" => self.cues(out)?,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Prints the held words as cues (subtitle rules: 2 lines of 42, 1-7 s).
    fn cues(&mut self, out: &mut dyn Write) -> Result<()> {
        let words = std::mem::take(&mut self.words);
        let (Some(first), Some(last)) = (words.first(), words.last()) else {
            return Ok(());
        };
        let transcript = Transcript {
            language: String::new(),
            duration: last.end,
            segments: vec![Segment {
                start: first.start,
                end: last.end,
                text: words.iter().map(|w| w.text.as_str()).collect(),
                speaker: None,
                words,
                avg_logprob: 0.0,
                no_speech_prob: 0.0,
            }],
        };
        let cues = subtitle::cues(&transcript, None, &WriterOptions::default())?;
        subtitle::write_vtt_cues(&cues, out)?;
        Ok(())
    }
}
