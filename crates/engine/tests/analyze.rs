//! The Analyzer against the model crates called one by one on the same recordings, every
//! input form, cancellation, bad inputs and sharing between threads.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use mica::{
    Analysis, Analyzer, CancelToken, Error, ErrorKind, Input, RunControl, Stage, Task,
    TranscribeOptions,
};
use mica_asr::{Precision, Transcriber};
use mica_diarize::{DiarizeOptions, Diarizer, Segmentation, SpeakerEncoder};
use mica_scenes::{ShotDetector, ShotOptions, TransNetV2};
use mica_vad::{SampleRate, SileroVad, SpeechOptions, Vad};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn sample(asset: &str, file: &str) -> Res<PathBuf> {
    Ok(mica_models::ensure(asset)?.join(file))
}

fn builder() -> Res<mica::AnalyzerBuilder> {
    Ok(Analyzer::builder().device(mica_core::device::test_device_spec()?))
}

/// Every task, loaded once for the tests of this file.
fn analyzer() -> Res<&'static Analyzer> {
    static A: OnceLock<Analyzer> = OnceLock::new();
    if let Some(a) = A.get() {
        return Ok(a);
    }
    let a = builder()?.tasks(Task::ALL).build()?;
    Ok(A.get_or_init(|| a))
}

/// What the model crates give one by one for `path` (shots too for a video).
fn one_by_one(path: &std::path::Path, video: bool) -> Res<Analysis> {
    let device = mica_core::device::test_device()?;
    let samples = mica_media::load_all(path)?.samples;
    let silero = SileroVad::from_path(mica_models::ensure(SileroVad::ASSET)?, &device)?;
    let vad = Vad::new(silero, SpeechOptions::default())?;
    let whisper = Transcriber::load(&mica_models::ensure("tiny.en")?, &device, Precision::F32)?;
    let options = TranscribeOptions {
        word_timestamps: true,
        ..TranscribeOptions::default()
    };
    let mut transcript = whisper.transcribe(&samples, &options)?;
    let diarizer = Diarizer::new(
        Segmentation::from_path(mica_models::ensure(Segmentation::ASSET)?, &device)?,
        SpeakerEncoder::from_path(mica_models::ensure(SpeakerEncoder::ASSET)?, &device)?,
        DiarizeOptions::default(),
    )?;
    let turns = diarizer.diarize(&samples)?.turns;
    mica_diarize::attach_speakers(&mut transcript, &turns, &Default::default());
    let shots = if video {
        let detector = ShotDetector::new(
            TransNetV2::from_path(mica_models::ensure(TransNetV2::ASSET)?, &device)?,
            ShotOptions::default(),
        )?;
        Some(detector.detect_path(path)?.to_shots())
    } else {
        None
    };
    Ok(Analysis {
        speech: Some(vad.detect(&samples, SampleRate::Hz16000)?.regions()),
        transcript: Some(transcript),
        speakers: Some(turns),
        shots,
        ..Analysis::default()
    })
}

fn assert_same_results(got: &Analysis, want: &Analysis, what: &str) {
    assert_eq!(got.speech, want.speech, "{what}: speech");
    assert_eq!(got.transcript, want.transcript, "{what}: transcript");
    assert_eq!(got.speakers, want.speakers, "{what}: speakers");
    if want.shots.is_some() {
        assert_eq!(got.shots, want.shots, "{what}: shots");
    }
}

/// One pass over a film with sound gives what each model gives on its own, speakers
/// attached to the words, every stage timed.
#[test]
fn one_pass_equals_the_models_one_by_one() -> Res<()> {
    let path = sample("opencv-video", "Megamind.avi")?;
    let got = analyzer()?.analyze(&path)?;
    let want = one_by_one(&path, true)?;
    assert_same_results(&got, &want, "Megamind.avi");
    assert!(got.media.video.is_some() && got.media.audio.is_some());
    let stages: Vec<&str> = got.timings.stages.keys().map(String::as_str).collect();
    assert_eq!(stages, ["asr", "decode", "diarize", "shots", "vad"]);
    assert!(got.timings.total > 0.0);
    let transcript = got.transcript.as_ref().ok_or("no transcript")?;
    if !got.speakers.as_ref().ok_or("no turns")?.is_empty() {
        assert!(transcript.segments.iter().all(|s| s.speaker.is_some()));
    }

    // Speech with two speakers: the words carry their speakers.
    let path = sample("pyannote-sample", "sample.wav")?;
    let got = builder()?
        .tasks([Task::Asr, Task::Diarize, Task::Vad])
        .build()?
        .analyze(&path)?;
    let want = one_by_one(&path, false)?;
    assert_same_results(&got, &want, "pyannote sample");
    let transcript = got.transcript.ok_or("no transcript")?;
    assert!(transcript.segments.len() > 3);
    let speakers: std::collections::BTreeSet<_> = transcript
        .segments
        .iter()
        .filter_map(|s| s.speaker.clone())
        .collect();
    assert!(speakers.len() >= 2, "{speakers:?}");
    Ok(())
}

/// Samples and a reader of the file's bytes give what the path gives.
#[test]
fn every_input_form_gives_the_same_result() -> Res<()> {
    let path = sample("jfk", "jfk.wav")?;
    let a = builder()?
        .tasks([Task::Vad, Task::Asr, Task::Diarize])
        .build()?;
    let from_path = a.analyze(&path)?;
    let samples = mica_media::load_all(&path)?.samples;
    let from_samples = a.analyze(samples.as_slice())?;
    assert_same_results(&from_samples, &from_path, "samples");
    assert_eq!(from_samples.media.source, "samples");
    let bytes = std::fs::File::open(&path)?;
    let from_reader = a.analyze(Input::Reader(Box::new(bytes)))?;
    assert_same_results(&from_reader, &from_path, "reader");
    assert_eq!(from_reader.media.source, "-");
    // Bytes that are not media: the error names them as given, not by a temporary path.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let e = a
        .analyze(Input::Reader(Box::new(std::io::Cursor::new(garbage))))
        .err()
        .ok_or("garbage bytes analysed")?;
    let message = e.to_string();
    assert_eq!(e.kind(), mica::ErrorKind::Media, "{message}");
    assert!(
        message.starts_with("the media bytes: ") && !message.contains("mica-input-"),
        "{message}"
    );
    let text = &from_path.transcript.ok_or("no transcript")?.segments[0].text;
    assert!(
        text.contains("ask not what your country can do for you"),
        "{text}"
    );
    Ok(())
}

/// A token cancelled during decoding or during Whisper stops the call with Cancelled,
/// promptly; progress arrives in order for each stage.
#[test]
fn cancelling_stops_promptly() -> Res<()> {
    let path = sample("pyannote-sample", "sample.wav")?;
    let a = analyzer()?;
    for stop_at in [Stage::Decode, Stage::Asr, Stage::Shots] {
        let token = CancelToken::new();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let control = RunControl {
            progress: Some({
                let (token, seen) = (token.clone(), Arc::clone(&seen));
                Arc::new(move |p: mica::Progress| {
                    seen.lock().unwrap().push(p);
                    if p.stage == stop_at && p.media_seconds > 0.0 {
                        token.cancel();
                    }
                })
            }),
            cancel: token,
            ..RunControl::default()
        };
        let input = if stop_at == Stage::Shots {
            sample("opencv-video", "Megamind.avi")?
        } else {
            path.clone()
        };
        let started = std::time::Instant::now();
        let err = a
            .analyze_with(&input, &control)
            .err()
            .ok_or("not cancelled")?;
        assert!(matches!(err, Error::Cancelled), "{stop_at:?}: {err}");
        assert_eq!(err.kind(), ErrorKind::Cancelled);
        assert!(started.elapsed().as_secs_f64() < 30.0, "{stop_at:?}");
        let seen = seen.lock().unwrap();
        let decode: Vec<f64> = seen
            .iter()
            .filter(|p| p.stage == Stage::Decode)
            .map(|p| p.media_seconds)
            .collect();
        assert!(decode.windows(2).all(|w| w[0] <= w[1]), "{decode:?}");
    }
    Ok(())
}

/// Empty, missing and garbage files, no tasks, unknown models and bad options are typed
/// errors; audio without pictures gives the audio results and a warning.
#[test]
fn bad_inputs_and_options_are_typed_errors() -> Res<()> {
    let a = analyzer()?;
    let dir = tempfile::tempdir()?;
    let empty = dir.path().join("empty.wav");
    std::fs::write(&empty, b"")?;
    let garbage = dir.path().join("garbage.mp4");
    std::fs::write(&garbage, b"this is not a video at all, not even close")?;
    for path in [empty, garbage, dir.path().join("missing.wav")] {
        let err = a.analyze(&path).err().ok_or("analysed a bad file")?;
        assert_eq!(err.kind(), ErrorKind::Media, "{}: {err}", path.display());
    }
    let err = builder()?.tasks([]).build().err().ok_or("built nothing")?;
    assert!(matches!(err, Error::NoTasks), "{err}");
    assert_eq!(err.kind(), ErrorKind::Options);
    let err = "speech".parse::<Task>().err().ok_or("parsed a bad task")?;
    assert_eq!(err.kind(), ErrorKind::Options);
    let err = builder()?
        .asr_model("no-such-whisper")
        .build()
        .err()
        .ok_or("loaded an unknown model")?;
    assert_eq!(err.kind(), ErrorKind::Options, "{err}");
    let err = builder()?
        .diarize_options(DiarizeOptions {
            num_speakers: Some(0),
            ..Default::default()
        })
        .build()
        .err()
        .ok_or("accepted 0 speakers")?;
    assert_eq!(err.kind(), ErrorKind::Options, "{err}");

    // Audio only, shots asked for: the audio tasks run, the document says why shots did not.
    let jfk = sample("jfk", "jfk.wav")?;
    let got = a.analyze(&jfk)?;
    assert!(got.shots.is_none() && got.transcript.is_some());
    assert!(
        got.warnings.iter().any(|w| w.contains("no video stream")),
        "{:?}",
        got.warnings
    );
    Ok(())
}

/// One Analyzer shared by threads at once gives each the result it gives alone.
#[test]
fn one_analyzer_shared_by_threads() -> Res<()> {
    fn shared<T: Send + Sync>(_: &T) {}
    let a = analyzer()?;
    shared(a);
    let path = sample("jfk", "jfk.wav")?;
    let alone = a.analyze(&path)?;
    let results: Vec<Analysis> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| a.analyze(&path).map_err(|e| e.to_string())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("analysis thread"))
            .collect::<Result<_, _>>()
    })?;
    for got in results {
        assert_same_results(&got, &alone, "shared");
    }
    Ok(())
}

/// Many inputs in one batch: each gets the result it gets alone, a damaged one fails
/// without stopping the others, and every index is reported once.
#[test]
fn a_batch_gives_each_input_its_own_result() -> Res<()> {
    let a = analyzer()?;
    let dir = tempfile::tempdir()?;
    let garbage = dir.path().join("noise.wav");
    std::fs::write(&garbage, b"RIFF\x10\x00\x00\x00WAVEnot really a wave file")?;
    let inputs = vec![
        sample("jfk", "jfk.wav")?,
        garbage,
        sample("pyannote-sample", "sample.wav")?,
        sample("opencv-video", "Megamind.avi")?,
    ];
    let results = std::sync::Mutex::new(Vec::new());
    a.analyze_batch(&inputs, &RunControl::default(), &|i, r| {
        results.lock().expect("results").push((i, r));
    });
    let mut results = results.into_inner()?;
    results.sort_by_key(|(i, _)| *i);
    assert_eq!(
        results.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    for (i, result) in results {
        match (i, result) {
            (1, Err(e)) => assert_eq!(e.kind(), ErrorKind::Media, "{e}"),
            (1, Ok(_)) => return Err("the damaged input analysed".into()),
            (i, r) => assert_same_results(&r?, &a.analyze(&inputs[i])?, "batch"),
        }
    }
    // A cancelled batch reports every input as cancelled.
    let control = RunControl::default();
    control.cancel.cancel();
    let cancelled = std::sync::atomic::AtomicUsize::new(0);
    a.analyze_batch(&inputs, &control, &|_, r| {
        if matches!(r, Err(Error::Cancelled)) {
            cancelled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    assert_eq!(cancelled.into_inner(), inputs.len());
    Ok(())
}

#[test]
fn segments_stream_out_as_decoded_and_views_narrow_the_tasks() -> Res<()> {
    let analyzer = analyzer()?;
    // Two parts (70 s of the pyannote sample and JFK), so segments of both parts stream.
    let pyannote = mica_media::load_all(&sample("pyannote-sample", "sample.wav")?)?.samples;
    let jfk = mica_media::load_all(&sample("jfk", "jfk.wav")?)?.samples;
    let mut samples = pyannote.clone();
    samples.extend_from_slice(&jfk);
    samples.extend_from_slice(&pyannote);
    let view = analyzer.with_tasks([Task::Asr])?.with_threads(2);
    assert_eq!(view.tasks(), &[Task::Asr]);
    let streamed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let control = RunControl {
        segments: Some({
            let streamed = Arc::clone(&streamed);
            Arc::new(move |s: &mica_core::document::Segment| {
                streamed.lock().unwrap().push(s.clone())
            })
        }),
        ..RunControl::default()
    };
    let analysis = view.analyze_with(&samples[..], &control)?;
    assert!(analysis.speakers.is_none() && analysis.speech.is_none());
    let mut streamed = streamed.lock().unwrap().clone();
    streamed.sort_by(|a, b| a.start.total_cmp(&b.start));
    let transcript = analysis.transcript.expect("asr ran");
    // Every final segment was streamed first, with its times on the input's timeline.
    assert!(!transcript.segments.is_empty());
    for segment in &transcript.segments {
        assert!(
            streamed.iter().any(|s| s.text == segment.text
                && (s.start - segment.start).abs() < 0.05
                && (s.end - segment.end).abs() < 0.05),
            "{segment:?} was not streamed"
        );
    }
    let jfk_start = pyannote.len() as f64 / 16_000.0;
    assert!(
        streamed
            .iter()
            .any(|s| s.text.to_lowercase().contains("ask not") && s.start >= jfk_start - 1.0),
        "{streamed:?}"
    );

    // A view asks only for what was loaded.
    let asr_only = builder()?.tasks([Task::Asr]).build()?;
    let e = asr_only.with_tasks([Task::Diarize]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Options);
    assert!(e.to_string().contains("diarize"), "{e}");
    let e = asr_only
        .with_diarize_options(DiarizeOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Options);
    let mut bad = TranscribeOptions::default();
    bad.decode.beam_size = 0;
    assert_eq!(
        asr_only.with_transcribe_options(bad).unwrap_err().kind(),
        ErrorKind::Options
    );
    Ok(())
}
