//! Media input over real recordings and ffmpeg-made synthetic files: decoding, resampling,
//! downmixing, the ffmpeg fallback, video frames and timestamps, and every error case.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mica_media::{
    self, AudioOptions, AudioStream, Backend, BackendChoice, FrameOptions, FrameSource, MediaError,
    SAMPLE_RATE, Tools, WarningKind,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn sample(asset: &str, file: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    Ok(mica_models::ensure(asset)?.join(file))
}

/// Runs ffmpeg to make a test input; `args` go between the global flags and the output.
fn make(dir: &Path, name: &str, args: &[&str]) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let out = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y"])
        .args(args)
        .arg(&out)
        .status()?;
    if !status.success() {
        return Err(format!("ffmpeg could not make {name}").into());
    }
    Ok(out)
}

/// A sine of `freq` Hz at `rate` Hz for `secs` seconds, `channels` identical channels.
fn sine(
    dir: &Path,
    name: &str,
    freq: u32,
    rate: u32,
    secs: f64,
    channels: u32,
    codec: &[&str],
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let src = format!("sine=frequency={freq}:sample_rate={rate}:duration={secs}");
    let ac = channels.to_string();
    let mut args = vec!["-f", "lavfi", "-i", &src, "-ac", &ac];
    args.extend_from_slice(codec);
    make(dir, name, &args)
}

fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

/// The strongest frequency in `x` (16 kHz) between 50 Hz and 7.5 kHz, in 5 Hz steps (Goertzel).
fn peak_frequency(x: &[f32]) -> f64 {
    let mut best = (0.0, 0.0);
    let mut f = 50.0;
    while f < 7500.0 {
        let w = 2.0 * std::f64::consts::PI * f / f64::from(SAMPLE_RATE);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s0 = f64::from(v) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        if power > best.1 {
            best = (f, power);
        }
        f += 5.0;
    }
    best.0
}

/// Asserts a decoded sine: length within 20 ms, finite, tone at `freq` within 10 Hz.
fn check_sine(audio: &mica_media::Audio, secs: f64, freq: f64, what: &str) {
    let expected = secs * f64::from(SAMPLE_RATE);
    let got = audio.samples.len() as f64;
    assert!(
        (got - expected).abs() <= 0.020 * f64::from(SAMPLE_RATE),
        "{what}: {got} samples, expected {expected} (±20 ms); {:?}",
        audio.info
    );
    eprintln!(
        "{what}: {} samples ({:+.1} ms) via {:?}",
        audio.samples.len(),
        (got - expected) / 16.0,
        audio.info.backend
    );
    assert!(
        audio.samples.iter().all(|v| v.is_finite()),
        "{what}: non-finite sample"
    );
    assert_eq!(audio.sample_rate, SAMPLE_RATE);
    let mid = &audio.samples[audio.samples.len() / 4..audio.samples.len() * 3 / 4];
    let peak = peak_frequency(&mid[..mid.len().min(16_000)]);
    assert!(
        (peak - freq).abs() <= 10.0,
        "{what}: peak at {peak} Hz, expected {freq}"
    );
    // A lavfi sine has rms 0.088; upmixed to 5.1 it sits in one channel of six.
    assert!(rms(mid) > 0.01, "{what}: too quiet, rms {}", rms(mid));
}

#[test]
fn streams_can_move_to_worker_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<AudioStream>();
    assert_send::<FrameSource>();
    assert_send::<MediaError>();
}

fn missing_tools() -> Tools {
    Tools {
        ffmpeg: PathBuf::from("/nonexistent/mica/ffmpeg"),
        ffprobe: PathBuf::from("/nonexistent/mica/ffprobe"),
    }
}

// ---------------------------------------------------------------- real recordings

#[test]
fn jfk_exact_length_and_level() -> TestResult {
    let audio = mica_media::load_all(sample("jfk", "jfk.wav")?)?;
    assert_eq!(audio.samples.len(), 176_000);
    assert_eq!(audio.sample_rate, 16_000);
    assert!((audio.duration - 11.0).abs() < 1e-9);
    assert_eq!(audio.info.backend, Backend::Symphonia);
    assert_eq!(audio.info.expected_samples, Some(176_000));
    assert!(audio.warnings.is_empty(), "{:?}", audio.warnings);
    let level = rms(&audio.samples);
    assert!((0.01..0.5).contains(&level), "rms {level}");
    assert!(
        audio
            .samples
            .iter()
            .all(|v| v.is_finite() && v.abs() <= 1.0)
    );
    Ok(())
}

#[test]
fn jfk_streams_in_bounded_chunks() -> TestResult {
    let path = sample("jfk", "jfk.wav")?;
    let options = AudioOptions {
        chunk_samples: 4000,
        ..AudioOptions::default()
    };
    let mut stream = AudioStream::open_with(&path, &options)?;
    assert_eq!(stream.duration(), Some(11.0));
    let whole = mica_media::load_all(&path)?;
    let mut next_start = 0;
    let mut chunks = 0;
    while let Some(chunk) = stream.next_chunk()? {
        assert_eq!(chunk.start, next_start);
        assert!(chunk.samples.len() <= 4000 && !chunk.samples.is_empty());
        let range = chunk.start as usize..chunk.end() as usize;
        assert_eq!(chunk.samples[..], whole.samples[range]);
        next_start = chunk.end();
        chunks += 1;
    }
    assert_eq!(next_start, 176_000);
    assert_eq!(chunks, 44);
    assert_eq!(stream.position(), 176_000);
    assert!(stream.next_chunk()?.is_none(), "stream must stay finished");
    Ok(())
}

#[test]
fn librivox_cards_and_pyannote() -> TestResult {
    for asset in ["librivox", "cards", "pyannote-sample"] {
        let dir = mica_models::ensure(asset)?;
        let mut wavs: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wav"))
            .collect();
        wavs.sort();
        assert!(!wavs.is_empty(), "no wavs in {}", dir.display());
        for wav in wavs {
            let header = hound::WavReader::open(&wav)?;
            let spec = header.spec();
            let frames = u64::from(header.duration());
            let expected =
                (frames * 16_000 + u64::from(spec.sample_rate) / 2) / u64::from(spec.sample_rate);
            let audio = mica_media::load_all(&wav)?;
            assert_eq!(audio.samples.len() as u64, expected, "{}", wav.display());
            let level = rms(&audio.samples);
            assert!(
                (0.001..0.7).contains(&level),
                "{}: rms {level}",
                wav.display()
            );
            assert!(
                audio.warnings.is_empty(),
                "{}: {:?}",
                wav.display(),
                audio.warnings
            );
        }
    }
    let pyannote = mica_media::load_all(sample("pyannote-sample", "sample.wav")?)?;
    assert_eq!(pyannote.samples.len(), 480_000);
    Ok(())
}

// ---------------------------------------------------------------- synthetic formats

#[test]
fn every_format_decodes_with_duration_and_pitch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let cases: Vec<(PathBuf, f64, f64)> = vec![
        (sine(d, "s44.wav", 440, 44_100, 3.0, 2, &[])?, 3.0, 440.0),
        (sine(d, "s8k.wav", 1000, 8_000, 2.5, 1, &[])?, 2.5, 1000.0),
        (sine(d, "s48.flac", 440, 48_000, 3.0, 2, &[])?, 3.0, 440.0),
        (sine(d, "s22.flac", 3000, 22_050, 2.0, 1, &[])?, 2.0, 3000.0),
        (
            sine(
                d,
                "s44.mp3",
                440,
                44_100,
                3.0,
                2,
                &["-c:a", "libmp3lame", "-b:a", "128k"],
            )?,
            3.0,
            440.0,
        ),
        (
            sine(d, "s44.ogg", 440, 44_100, 3.0, 2, &["-c:a", "libvorbis"])?,
            3.0,
            440.0,
        ),
        (
            sine(d, "s44.m4a", 440, 44_100, 3.0, 2, &["-c:a", "aac"])?,
            3.0,
            440.0,
        ),
        (
            sine(d, "s48.opus", 440, 48_000, 3.0, 2, &["-c:a", "libopus"])?,
            3.0,
            440.0,
        ),
        (
            sine(d, "s11.wav", 2000, 11_025, 2.0, 1, &["-c:a", "pcm_u8"])?,
            2.0,
            2000.0,
        ),
        (
            sine(d, "s96.wav", 440, 96_000, 2.0, 1, &["-c:a", "pcm_s24le"])?,
            2.0,
            440.0,
        ),
        (
            sine(d, "s32f.wav", 440, 32_000, 2.0, 6, &["-c:a", "pcm_f32le"])?,
            2.0,
            440.0,
        ),
    ];
    for (path, secs, freq) in &cases {
        let audio = mica_media::load_all(path)?;
        check_sine(&audio, *secs, *freq, &path.display().to_string());
    }
    Ok(())
}

/// The shift of `b` against `a` (in samples, within ±`max`) that best lines them up.
fn best_lag(a: &[f32], b: &[f32], max: i64) -> i64 {
    let n = a.len().min(b.len()) as i64;
    let score = |lag: i64| -> f64 {
        (max..n - max)
            .map(|i| f64::from(a[i as usize]) * f64::from(b[(i + lag) as usize]))
            .sum()
    };
    (-max..=max)
        .max_by(|&x, &y| score(x).total_cmp(&score(y)))
        .unwrap_or(0)
}

#[test]
fn m4a_priming_is_trimmed_like_ffmpeg() -> TestResult {
    // AAC in MP4 starts with encoder priming the edit list tells players to skip; a
    // non-periodic signal makes any misalignment show.
    let dir = tempfile::tempdir()?;
    let chirp = "aevalsrc=0.5*sin(2*PI*(200+400*t)*t):s=44100:d=3";
    let m4a = make(
        dir.path(),
        "chirp.m4a",
        &["-f", "lavfi", "-i", chirp, "-c:a", "aac"],
    )?;
    let ours = mica_media::load_all(&m4a)?;
    assert_eq!(ours.info.backend, Backend::Symphonia);
    let reference = mica_media::load_all_with(
        &m4a,
        &AudioOptions {
            backend: BackendChoice::Ffmpeg,
            ..AudioOptions::default()
        },
    )?;
    // ffmpeg 5 skips the priming but keeps the end padding: compare the starts only.
    assert!(
        ours.samples.len().abs_diff(48_000) <= 2,
        "{}",
        ours.samples.len()
    );
    let lag = best_lag(&reference.samples, &ours.samples, 200);
    assert!(
        lag.abs() <= 1,
        "symphonia output is {lag} samples off ffmpeg's"
    );
    Ok(())
}

#[test]
fn video_containers_with_audio() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let video = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=3"];
    let tone = [
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000:duration=3",
    ];
    // (container, video codec, audio codec): AAC and Vorbis in Matroska carry no end trim
    // (ffmpeg too decodes them 20-30 ms long), so Matroska gets FLAC and Opus.
    let cases = [
        ("av-flac.mkv", "mpeg4", "flac"),
        ("av-opus.mkv", "mpeg4", "libopus"),
        ("av.mp4", "libx264", "aac"),
        ("av.mov", "mpeg4", "aac"),
        ("av.avi", "mpeg4", "pcm_s16le"),
    ];
    for (name, vcodec, acodec) in cases {
        let mut args = video.to_vec();
        args.extend(tone);
        args.extend(["-c:v", vcodec, "-c:a", acodec, "-shortest"]);
        let path = make(d, name, &args)?;
        let audio = mica_media::load_all(&path)?;
        check_sine(&audio, 3.0, 440.0, name);
        // symphonia has no AVI reader and no Opus decoder.
        let expected = match name {
            "av.avi" | "av-opus.mkv" => Backend::Ffmpeg,
            _ => Backend::Symphonia,
        };
        assert_eq!(audio.info.backend, expected, "{name}");
    }
    Ok(())
}

#[test]
fn chained_ogg_decodes_every_link() -> TestResult {
    let dir = tempfile::tempdir()?;
    let a = sine(
        dir.path(),
        "a.ogg",
        440,
        44_100,
        2.0,
        1,
        &["-c:a", "libvorbis"],
    )?;
    let b = sine(
        dir.path(),
        "b.ogg",
        440,
        44_100,
        3.0,
        1,
        &["-c:a", "libvorbis"],
    )?;
    let chained = dir.path().join("chained.ogg");
    std::fs::write(&chained, [std::fs::read(&a)?, std::fs::read(&b)?].concat())?;
    let audio = mica_media::load_all(&chained)?;
    for w in &audio.warnings {
        eprintln!("chained.ogg: {w}");
    }
    check_sine(&audio, 5.0, 440.0, "chained.ogg");
    // A link at another rate is resampled from its own rate: pitch and length hold.
    let c = sine(
        dir.path(),
        "c.ogg",
        440,
        22_050,
        2.0,
        1,
        &["-c:a", "libvorbis"],
    )?;
    let mixed = dir.path().join("mixed.ogg");
    std::fs::write(&mixed, [std::fs::read(&a)?, std::fs::read(&c)?].concat())?;
    let audio = mica_media::load_all(&mixed)?;
    check_sine(&audio, 4.0, 440.0, "mixed-rate chained.ogg");
    let second = &audio.samples[40_000..64_000];
    let peak = peak_frequency(&second[..16_000]);
    assert!((peak - 440.0).abs() <= 10.0, "second link at {peak} Hz");
    Ok(())
}

#[test]
fn stereo_downmix_is_the_channel_average() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Left a 0.5 sine, right silent: the average peaks at 0.25. Opposite channels cancel.
    let half = "aevalsrc=0.5*sin(2*PI*440*t)|0:s=44100:d=2";
    let opposite = "aevalsrc=0.5*sin(2*PI*440*t)|-0.5*sin(2*PI*440*t):s=44100:d=2";
    let half_wav = make(
        dir.path(),
        "half.wav",
        &["-f", "lavfi", "-i", half, "-c:a", "pcm_f32le"],
    )?;
    let half_opus = make(
        dir.path(),
        "half.opus",
        &["-f", "lavfi", "-i", half, "-c:a", "libopus"],
    )?;
    let opp_wav = make(
        dir.path(),
        "opp.wav",
        &["-f", "lavfi", "-i", opposite, "-c:a", "pcm_f32le"],
    )?;
    for (path, lo, hi) in [(&half_wav, 0.24, 0.26), (&half_opus, 0.22, 0.28)] {
        let audio = mica_media::load_all(path)?;
        let mid = &audio.samples[8000..24_000];
        let peak = mid.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!((lo..hi).contains(&peak), "{}: peak {peak}", path.display());
    }
    let cancelled = mica_media::load_all(&opp_wav)?;
    assert!(
        rms(&cancelled.samples) < 1e-4,
        "rms {}",
        rms(&cancelled.samples)
    );
    assert_eq!(cancelled.info.channels, Some(2));
    assert_eq!(cancelled.info.sample_rate, Some(44_100));
    Ok(())
}

#[test]
fn ffmpeg_fallback_path() -> TestResult {
    let dir = tempfile::tempdir()?;
    let opus = sine(
        dir.path(),
        "tone.opus",
        440,
        48_000,
        2.0,
        1,
        &["-c:a", "libopus"],
    )?;
    let stream = AudioStream::open(&opus)?;
    assert_eq!(stream.info().backend, Backend::Ffmpeg);
    assert_eq!(stream.info().codec.as_deref(), Some("opus"));
    assert!(stream.duration().is_some_and(|d| (d - 2.0).abs() < 0.05));
    check_sine(&stream.collect_all()?, 2.0, 440.0, "opus");
    // Forcing ffmpeg on a file symphonia reads gives the same audio, near enough.
    let wav = sine(dir.path(), "tone.wav", 440, 44_100, 2.0, 1, &[])?;
    let forced = mica_media::load_all_with(
        &wav,
        &AudioOptions {
            backend: BackendChoice::Ffmpeg,
            ..AudioOptions::default()
        },
    )?;
    assert_eq!(forced.info.backend, Backend::Ffmpeg);
    check_sine(&forced, 2.0, 440.0, "forced ffmpeg");
    // symphonia-only refuses what it cannot read.
    let only = AudioOptions {
        backend: BackendChoice::Symphonia,
        ..AudioOptions::default()
    };
    assert!(matches!(
        AudioStream::open_with(&opus, &only),
        Err(MediaError::UnsupportedCodec { .. })
    ));
    Ok(())
}

#[test]
fn reader_and_bytes_input() -> TestResult {
    let jfk = std::fs::read(sample("jfk", "jfk.wav")?)?;
    let stream = AudioStream::from_bytes(jfk, "upload.wav", &AudioOptions::default())?;
    assert_eq!(stream.collect_all()?.samples.len(), 176_000);
    let file = std::fs::File::open(sample("jfk", "jfk.wav")?)?;
    let from_file = AudioStream::from_reader(file, "jfk.wav", &AudioOptions::default())?;
    assert_eq!(from_file.collect_all()?.samples.len(), 176_000);
    // A reader symphonia cannot decode is spilled to a temp file for ffmpeg.
    let dir = tempfile::tempdir()?;
    let opus = std::fs::read(sine(
        dir.path(),
        "t.opus",
        440,
        48_000,
        1.0,
        1,
        &["-c:a", "libopus"],
    )?)?;
    let audio =
        AudioStream::from_bytes(opus, "upload.opus", &AudioOptions::default())?.collect_all()?;
    assert_eq!(audio.info.backend, Backend::Ffmpeg);
    check_sine(&audio, 1.0, 440.0, "opus bytes");
    assert!(matches!(
        AudioStream::from_bytes(Vec::new(), "empty.wav", &AudioOptions::default()),
        Err(MediaError::Empty { .. })
    ));
    match AudioStream::from_bytes(
        b"hello, not audio\n".repeat(100),
        "notes.txt",
        &AudioOptions::default(),
    ) {
        Err(e @ MediaError::NotMedia { .. }) => assert!(e.to_string().contains("notes.txt"), "{e}"),
        other => panic!("expected NotMedia, got {other:?}"),
    }
    Ok(())
}

// ---------------------------------------------------------------- damaged and odd inputs

#[test]
fn zero_length_audio_is_empty_not_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("empty.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 22_050,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    hound::WavWriter::create(&path, spec)?.finalize()?;
    let audio = mica_media::load_all(&path)?;
    assert!(audio.samples.is_empty());
    assert_eq!(audio.duration, 0.0);
    assert!(audio.warnings.is_empty(), "{:?}", audio.warnings);
    assert!(AudioStream::open(&path)?.next_chunk()?.is_none());
    Ok(())
}

#[test]
fn non_finite_samples_become_silence() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nan.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer = hound::WavWriter::create(&path, spec)?;
    for i in 0..16_000 {
        let v = match i % 1000 {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            _ => 0.1,
        };
        writer.write_sample(v)?;
    }
    writer.finalize()?;
    for path in [
        path.clone(),
        make(
            dir.path(),
            "nan48.wav",
            &[
                "-i",
                path.to_str().unwrap_or_default(),
                "-ar",
                "48000",
                "-c:a",
                "pcm_f32le",
            ],
        )?,
    ] {
        let audio = mica_media::load_all(&path)?;
        assert!(
            audio.samples.iter().all(|v| v.is_finite()),
            "{}",
            path.display()
        );
        assert!(
            audio
                .warnings
                .iter()
                .any(|w| w.kind == WarningKind::NonFinite),
            "{}: {:?}",
            path.display(),
            audio.warnings
        );
    }
    Ok(())
}

/// Writes the first `fraction` of `src`'s bytes to `dst`.
fn cut(src: &Path, dst: &Path, fraction: f64) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let bytes = std::fs::read(src)?;
    let keep = (bytes.len() as f64 * fraction) as usize;
    std::fs::write(dst, &bytes[..keep])?;
    Ok(dst.to_path_buf())
}

#[test]
fn truncated_files_give_the_part_before_the_cut() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let wav = sine(d, "full.wav", 440, 44_100, 4.0, 2, &[])?;
    let mp3 = sine(d, "full.mp3", 440, 44_100, 4.0, 2, &["-c:a", "libmp3lame"])?;
    let flac = sine(d, "full.flac", 440, 44_100, 4.0, 2, &[])?;
    for full in [wav, mp3, flac] {
        let name = full
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let half = cut(&full, &d.join(format!("half-{name}")), 0.5)?;
        let audio = mica_media::load_all(&half)?;
        for w in &audio.warnings {
            eprintln!("{name}: {w}");
        }
        let secs = audio.duration;
        assert!((1.5..2.5).contains(&secs), "{name}: {secs} s");
        assert!(audio.samples.iter().all(|v| v.is_finite()));
        assert!(
            audio
                .warnings
                .iter()
                .any(|w| w.kind == WarningKind::Truncated),
            "{name}: {:?}",
            audio.warnings
        );
    }
    Ok(())
}

/// Overwrites `len` bytes in the middle of a copy of `src` with deterministic noise.
fn garble_middle(
    src: &Path,
    dst: &Path,
    len: usize,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let mut bytes = std::fs::read(src)?;
    let mid = bytes.len() / 2;
    let mut x: u32 = 12345;
    for b in &mut bytes[mid..mid + len] {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    std::fs::write(dst, &bytes)?;
    Ok(dst.to_path_buf())
}

#[test]
fn damaged_middle_keeps_the_rest() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    // MP3 frames carry no timestamps: the decoder resyncs past the noise and the lost
    // stretch shows only as a shortfall against the header's length.
    let mp3 = sine(d, "tone.mp3", 440, 44_100, 6.0, 1, &["-c:a", "libmp3lame"])?;
    let damaged = garble_middle(&mp3, &d.join("damaged.mp3"), 3000)?;
    let audio = mica_media::load_all(&damaged)?;
    for w in &audio.warnings {
        eprintln!("damaged.mp3: {w}");
    }
    assert!(audio.duration > 5.0, "{} s", audio.duration);
    assert!(audio.samples.iter().all(|v| v.is_finite()));
    assert!(
        !audio.warnings.is_empty(),
        "expected warnings for the damaged frames"
    );
    // In MP4 each packet has a duration: a bad one becomes silence of that length, so the
    // audio after it stays in place.
    let m4a = sine(d, "tone.m4a", 440, 44_100, 6.0, 1, &["-c:a", "aac"])?;
    let damaged = garble_middle(&m4a, &d.join("damaged.m4a"), 3000)?;
    let audio = mica_media::load_all(&damaged)?;
    for w in &audio.warnings {
        eprintln!("damaged.m4a: {w}");
    }
    assert!(
        audio.samples.len().abs_diff(96_000) <= 2,
        "{}",
        audio.samples.len()
    );
    assert!(audio.samples.iter().all(|v| v.is_finite()));
    assert!(
        audio
            .warnings
            .iter()
            .any(|w| w.kind == WarningKind::DecodeError),
        "{:?}",
        audio.warnings
    );
    let clean = mica_media::load_all(&m4a)?;
    // Same place, same signal (the decoder's noise state may differ in the last bits).
    let tail = 80_000..95_000;
    let diff = tail
        .clone()
        .map(|i| (audio.samples[i] - clean.samples[i]).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff < 1e-3,
        "audio after the damage moved or changed: max diff {diff}"
    );
    assert_eq!(
        best_lag(&clean.samples[tail.clone()], &audio.samples[tail], 50),
        0
    );
    Ok(())
}

#[test]
fn input_errors_name_the_path_and_reason() -> TestResult {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("nope.wav");
    let empty = dir.path().join("empty.mp3");
    std::fs::File::create(&empty)?;
    let text = dir.path().join("notes.txt");
    std::fs::File::create(&text)?.write_all(&b"this is not audio at all\n".repeat(200))?;
    let fake_wav = dir.path().join("fake.wav");
    std::fs::write(&fake_wav, b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunkjunk")?;

    let err = mica_media::load_all(&missing).err();
    assert!(matches!(err, Some(MediaError::NotFound { .. })), "{err:?}");
    let err = mica_media::load_all(dir.path()).err();
    assert!(
        matches!(err, Some(MediaError::IsDirectory { .. })),
        "{err:?}"
    );
    let err = mica_media::load_all(&empty).err();
    assert!(matches!(err, Some(MediaError::Empty { .. })), "{err:?}");
    let err = mica_media::load_all(&text).err();
    assert!(matches!(err, Some(MediaError::NotMedia { .. })), "{err:?}");
    let err = mica_media::load_all(&fake_wav).err();
    assert!(
        matches!(
            err,
            Some(MediaError::NotMedia { .. } | MediaError::Damaged { .. })
        ),
        "{err:?}"
    );
    for (path, e) in [
        (&missing, mica_media::load_all(&missing).err()),
        (&empty, mica_media::load_all(&empty).err()),
        (&text, mica_media::load_all(&text).err()),
    ] {
        let message = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
    let zero_chunk = AudioOptions {
        chunk_samples: 0,
        ..AudioOptions::default()
    };
    assert!(matches!(
        AudioStream::open_with(sample("jfk", "jfk.wav")?, &zero_chunk),
        Err(MediaError::InvalidOption(_))
    ));
    Ok(())
}

#[test]
fn ffmpeg_missing_is_a_clear_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let opus = sine(
        dir.path(),
        "tone.opus",
        440,
        48_000,
        1.0,
        1,
        &["-c:a", "libopus"],
    )?;
    let options = AudioOptions {
        tools: missing_tools(),
        ..AudioOptions::default()
    };
    match AudioStream::open_with(&opus, &options) {
        Err(e @ MediaError::ToolMissing { tool: "ffmpeg", .. }) => {
            let message = e.to_string();
            assert!(message.contains("tone.opus"), "{message}");
            assert!(message.contains("MICA_FFMPEG"), "{message}");
            assert!(message.contains("/nonexistent/mica/ffmpeg"), "{message}");
        }
        other => panic!("expected ToolMissing(ffmpeg), got {other:?}"),
    }
    // What symphonia reads needs no ffmpeg at all.
    let jfk = mica_media::load_all_with(sample("jfk", "jfk.wav")?, &options)?;
    assert_eq!(jfk.samples.len(), 176_000);
    // Video: ffprobe first, then ffmpeg.
    let megamind = sample("opencv-video", "Megamind.avi")?;
    let frames = FrameOptions {
        tools: missing_tools(),
        ..FrameOptions::default()
    };
    assert!(matches!(
        FrameSource::open(&megamind, &frames),
        Err(MediaError::ToolMissing {
            tool: "ffprobe",
            ..
        })
    ));
    let only_ffmpeg_missing = FrameOptions {
        tools: Tools {
            ffprobe: Tools::from_env().ffprobe,
            ..missing_tools()
        },
        ..FrameOptions::default()
    };
    match FrameSource::open(&megamind, &only_ffmpeg_missing) {
        Err(e @ MediaError::ToolMissing { tool: "ffmpeg", .. }) => {
            assert!(e.to_string().contains("Megamind.avi"), "{e}");
        }
        other => panic!("expected ToolMissing(ffmpeg), got {other:?}"),
    }
    Ok(())
}

/// The pids of running processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn dropping_a_stream_stops_ffmpeg() -> TestResult {
    let dir = tempfile::tempdir()?;
    let opus = sine(
        dir.path(),
        "long-drop-test.opus",
        440,
        48_000,
        120.0,
        1,
        &["-c:a", "libopus"],
    )?;
    let mut stream = AudioStream::open(&opus)?;
    assert!(stream.next_chunk()?.is_some());
    let pids = processes_mentioning("long-drop-test.opus");
    assert_eq!(pids.len(), 1, "expected one ffmpeg child, found {pids:?}");
    drop(stream);
    // Reaped, not a zombie: the pid is gone from /proc.
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "ffmpeg {pid} still present"
        );
    }
    let megamind = sample("opencv-video", "Megamind.avi")?;
    let mut frames = FrameSource::open(&megamind, &FrameOptions::default())?;
    assert!(frames.next_frame()?.is_some());
    drop(frames);
    Ok(())
}

// ---------------------------------------------------------------- video

#[test]
fn megamind_probe_and_frames() -> TestResult {
    let path = sample("opencv-video", "Megamind.avi")?;
    let info = mica_media::probe(&path)?;
    assert!(matches!(info.frame_count, 270 | 271), "{info:?}");
    assert!((info.fps_f64 - 23.976).abs() < 0.01, "{info:?}");
    assert!((info.fps.as_f64() - info.fps_f64).abs() < 1e-12);
    assert_eq!((info.width, info.height), (720, 528));
    assert_eq!(info.codec, "mpeg4");
    assert!(info.has_audio);
    assert!(
        info.duration.is_some_and(|d| (d - 11.26).abs() < 0.1),
        "{info:?}"
    );

    let mut source = FrameSource::open(&path, &FrameOptions::new(48, 27))?;
    let mut last: Option<f64> = None;
    let mut count = 0u64;
    let mut means = Vec::new();
    while let Some(frame) = source.next_frame()? {
        assert_eq!(frame.index, count);
        assert_eq!(frame.data.len(), 48 * 27 * 3);
        assert_eq!((frame.width, frame.height), (48, 27));
        if let Some(prev) = last {
            assert!(frame.pts > prev, "pts {} after {prev}", frame.pts);
            let step = frame.pts - prev;
            assert!((step - 1.0 / 23.976).abs() < 0.002, "step {step}");
        }
        last = Some(frame.pts);
        means.push(frame.data.iter().map(|&b| f64::from(b)).sum::<f64>() / frame.data.len() as f64);
        count += 1;
    }
    assert!(matches!(count, 270 | 271), "{count} frames");
    assert_eq!(source.frames_read(), count);
    // Frame 0 is black; the picture has content later.
    assert!(means[0] < 5.0, "frame 0 mean {}", means[0]);
    assert!(means.iter().any(|&m| m > 30.0));
    assert!(
        last.is_some_and(|t| (t - 11.26).abs() < 0.1),
        "last pts {last:?}"
    );
    Ok(())
}

#[test]
fn vtest_and_tree_stream_fully() -> TestResult {
    for name in ["vtest.avi", "tree.avi"] {
        let path = sample("opencv-video", name)?;
        let mut source = FrameSource::open(&path, &FrameOptions::new(64, 36))?;
        let info = source.info().clone();
        let mut count = 0u64;
        let mut last = f64::NEG_INFINITY;
        for frame in source.by_ref() {
            let frame = frame?;
            assert!(frame.pts > last, "{name}: pts {} after {last}", frame.pts);
            assert_eq!(frame.data.len(), 64 * 36 * 3);
            last = frame.pts;
            count += 1;
        }
        let duration = info.duration.unwrap_or(0.0);
        assert!(
            last <= duration + 0.1,
            "{name}: last pts {last}, duration {duration}"
        );
        assert!(
            source.warnings().is_empty(),
            "{name}: {:?}",
            source.warnings()
        );
        match name {
            // Every frame is stored.
            "vtest.avi" => assert_eq!(count, info.frame_count, "{info:?}"),
            // Mostly repeat-frame markers: 68 real pictures among 444 slots, at their times.
            _ => assert!(
                (60..=info.frame_count).contains(&count),
                "{name}: {count} frames"
            ),
        }
        // Constant-rate mode fills every slot.
        let options = FrameOptions {
            constant_rate: true,
            ..FrameOptions::new(48, 27)
        };
        let slots = FrameSource::open(&path, &options)?.collect::<Result<Vec<_>, _>>()?;
        // ffmpeg holds the last picture for its duration: tree.avi's last real picture
        // covers 6 slots past the container's 444.
        assert!(
            (info.frame_count..=info.frame_count + 8).contains(&(slots.len() as u64)),
            "{name}: {} constant-rate frames, probe {info:?}",
            slots.len()
        );
        let step = 1.0 / info.fps_f64;
        for pair in slots.windows(2) {
            assert!(
                (pair[1].pts - pair[0].pts - step).abs() < 1e-3,
                "{name}: uneven steps"
            );
        }
    }
    Ok(())
}

#[test]
fn variable_frame_rate_timestamps_come_from_the_stream() -> TestResult {
    // Frames at 0, 0.1, ... 0.9 s then at 2.0, 2.1, ...: a gap index/fps would miss.
    let dir = tempfile::tempdir()?;
    let vfr = make(
        dir.path(),
        "vfr.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=10:duration=2",
            "-vf",
            "setpts='if(gte(N,10),PTS+1.0/TB,PTS)'",
            "-c:v",
            "mpeg4",
            "-fps_mode",
            "vfr",
        ],
    )?;
    let frames: Vec<_> =
        FrameSource::open(&vfr, &FrameOptions::default())?.collect::<Result<_, _>>()?;
    assert_eq!(frames.len(), 20);
    assert!((frames[9].pts - 0.9).abs() < 0.01, "{}", frames[9].pts);
    assert!((frames[10].pts - 2.0).abs() < 0.01, "{}", frames[10].pts);
    assert!((frames[19].pts - 2.9).abs() < 0.01, "{}", frames[19].pts);
    Ok(())
}

#[test]
fn damaged_video_is_partial_or_a_clear_error() -> TestResult {
    let path = sample("opencv-video", "Megamind_bugy.avi")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let result = FrameSource::open(&path, &FrameOptions::default()).and_then(|mut source| {
            let mut frames = 0u64;
            let mut last = f64::NEG_INFINITY;
            let mut monotonic = true;
            while let Some(frame) = source.next_frame()? {
                monotonic &= frame.pts > last;
                last = frame.pts;
                frames += 1;
            }
            Ok((frames, monotonic, source.warnings().to_vec()))
        });
        let _ = tx.send(result);
    });
    match rx.recv_timeout(Duration::from_secs(120))? {
        Ok((frames, monotonic, warnings)) => {
            assert!(frames > 0);
            assert!(monotonic);
            eprintln!("Megamind_bugy.avi: {frames} frames, warnings {warnings:?}");
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("Megamind_bugy.avi"), "{message}");
            eprintln!("Megamind_bugy.avi: {message}");
        }
    }
    assert!(started.elapsed() < Duration::from_secs(120));

    // A video cut in half: the first half's frames, no hang.
    let dir = tempfile::tempdir()?;
    let half = cut(
        &sample("opencv-video", "Megamind.avi")?,
        &dir.path().join("half.avi"),
        0.5,
    )?;
    let frames: Vec<_> =
        FrameSource::open(&half, &FrameOptions::default())?.collect::<Result<_, _>>()?;
    assert!((80..200).contains(&frames.len()), "{} frames", frames.len());
    // Garbage after a valid header: a clear error or partial frames, never a panic.
    let mut bytes = std::fs::read(sample("opencv-video", "Megamind.avi")?)?;
    for b in bytes.iter_mut().skip(8192) {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    let garbled = dir.path().join("garbled.avi");
    std::fs::write(&garbled, &bytes)?;
    match FrameSource::open(&garbled, &FrameOptions::default()) {
        Ok(source) => {
            for frame in source {
                if let Err(e) = frame {
                    assert!(e.to_string().contains("garbled.avi"), "{e}");
                    break;
                }
            }
        }
        Err(e) => assert!(e.to_string().contains("garbled.avi"), "{e}"),
    }
    Ok(())
}

#[test]
fn video_input_errors() -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = FrameOptions::default();
    let jfk = sample("jfk", "jfk.wav")?;
    match FrameSource::open(&jfk, &options) {
        Err(e @ MediaError::NoVideoStream { .. }) => {
            assert!(e.to_string().contains("jfk.wav"), "{e}")
        }
        other => panic!("expected NoVideoStream, got {other:?}"),
    }
    // An mp3 with cover art still has no video, and its audio decodes.
    let cover = make(
        dir.path(),
        "cover.mp3",
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100:duration=2",
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=32x32:d=1",
            "-frames:v",
            "1",
            "-map",
            "0",
            "-map",
            "1",
            "-c:a",
            "libmp3lame",
            "-c:v",
            "mjpeg",
            "-disposition:v",
            "attached_pic",
            "-id3v2_version",
            "3",
        ],
    )?;
    assert!(matches!(
        FrameSource::open(&cover, &options),
        Err(MediaError::NoVideoStream { .. })
    ));
    check_sine(
        &mica_media::load_all(&cover)?,
        2.0,
        440.0,
        "mp3 with cover art",
    );
    let empty = dir.path().join("empty.mp4");
    std::fs::File::create(&empty)?;
    assert!(matches!(
        FrameSource::open(&empty, &options),
        Err(MediaError::Empty { .. })
    ));
    assert!(matches!(
        FrameSource::open(dir.path().join("missing.mp4"), &options),
        Err(MediaError::NotFound { .. })
    ));
    assert!(matches!(
        FrameSource::open(dir.path(), &options),
        Err(MediaError::IsDirectory { .. })
    ));
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, b"not a video\n".repeat(100))?;
    match mica_media::probe(&text) {
        Err(e @ MediaError::NotMedia { .. }) => assert!(e.to_string().contains("notes.txt"), "{e}"),
        other => panic!("expected NotMedia, got {other:?}"),
    }
    assert!(matches!(
        FrameSource::open(
            sample("opencv-video", "vtest.avi")?,
            &FrameOptions::new(0, 27)
        ),
        Err(MediaError::InvalidOption(_))
    ));
    Ok(())
}

/// Random bytes that ffmpeg's text-art demuxers would draw as a huge "video" are not media,
/// for the frame source, the probe and the description alike.
#[test]
fn bytes_ffmpeg_draws_as_text_art_are_not_media() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("random.bin");
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let bytes: Vec<u8> = (0..1_000_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect();
    std::fs::write(&path, bytes)?;
    let tools = Tools::from_env();
    for result in [
        mica_media::probe_with(&path, &tools).map(|_| ()),
        FrameSource::open(&path, &FrameOptions::default()).map(|_| ()),
        mica_media::describe(&path, &tools).map(|_| ()),
    ] {
        match result {
            Err(e @ MediaError::NotMedia { .. }) => {
                assert!(e.to_string().contains("random.bin"), "{e}")
            }
            other => panic!("expected NotMedia, got {other:?}"),
        }
    }
    Ok(())
}
