//! [`LiveRecorder`]: the recent past of a live source kept as it arrived (stream copy, no
//! re-encode) in short MPEG-TS segments, and clips cut from it by stream time.
//!
//! The same ffmpeg that decodes a [`crate::LiveAudio`] writes the segments (one read of the
//! source: a UDP or SRT stream can only be read once) and appends each to a CSV list with
//! its start and end. Segment times start at 0 with the source's first packet, as the
//! decoded audio's do, so a segment's times are stream times. A reconnected source starts a
//! new generation of segments, placed after the audio received before it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::MediaError;
use crate::audio::SAMPLE_RATE;
use crate::ffmpeg::{self, Subprocess, Tool, Tools};

/// How a [`LiveRecorder`] keeps the stream.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// Where the segments go (created if missing).
    pub dir: PathBuf,
    /// Seconds of stream kept; older segments are removed.
    pub keep_seconds: f64,
    /// Seconds per segment (a clip's start and end snap to segment packets and, for
    /// video, to the keyframe before the start).
    pub segment_seconds: f64,
}

impl RecordOptions {
    /// Keeps `keep_seconds` of the stream in `dir`, in 2 s segments.
    pub fn new(dir: impl Into<PathBuf>, keep_seconds: f64) -> RecordOptions {
        RecordOptions {
            dir: dir.into(),
            keep_seconds,
            segment_seconds: 2.0,
        }
    }
}

/// One recorded segment, in stream time.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedSegment {
    /// The file.
    pub path: PathBuf,
    /// Stream time of its first packet.
    pub start: f64,
    /// Stream time of its end.
    pub end: f64,
}

/// A clip written from the recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    /// The file written.
    pub path: PathBuf,
    /// Stream time the clip was asked to start at (the file starts at the packet, or the
    /// video keyframe, at or before it).
    pub start: f64,
    /// Stream time the clip ends at.
    pub end: f64,
}

#[derive(Debug)]
struct Generation {
    prefix: String,
    /// Stream time of its 0.
    offset: f64,
}

/// The recording of one live source; shared (it is `Sync`) between the thread that reads
/// the source and whoever asks for clips.
#[derive(Debug)]
pub struct LiveRecorder {
    options: RecordOptions,
    generations: Mutex<Vec<Generation>>,
}

impl LiveRecorder {
    /// A recorder into `options.dir`, which is created.
    pub fn new(options: RecordOptions) -> Result<LiveRecorder, MediaError> {
        if !(options.keep_seconds.is_finite() && (10.0..=86_400.0).contains(&options.keep_seconds))
        {
            return Err(MediaError::InvalidOption(
                "a live recording keeps 10 s to 24 h of the stream".into(),
            ));
        }
        if !(0.5..=30.0).contains(&options.segment_seconds) {
            return Err(MediaError::InvalidOption(
                "live recording segments are 0.5 to 30 s".into(),
            ));
        }
        std::fs::create_dir_all(&options.dir).map_err(|source| MediaError::Io {
            path: options.dir.clone(),
            source,
        })?;
        Ok(LiveRecorder {
            options,
            generations: Mutex::new(Vec::new()),
        })
    }

    /// ffmpeg's arguments for the segment output of a new generation, which starts
    /// `received` samples after the previous one did (`None` for the first).
    pub(crate) fn output_args(&self, received: Option<u64>) -> Vec<OsString> {
        let mut generations = self.lock();
        let offset = match (generations.last(), received) {
            (Some(last), Some(n)) => last.offset + n as f64 / SAMPLE_RATE as f64,
            (Some(last), None) => last.offset,
            (None, _) => 0.0,
        };
        let prefix = format!("g{:04}-", generations.len());
        let list = self.options.dir.join(format!("{prefix}list.csv"));
        let pattern = self.options.dir.join(format!("{prefix}%06d.ts"));
        generations.push(Generation { prefix, offset });
        let mut args: Vec<OsString> = [
            "-map",
            "0:v:0?",
            "-map",
            "0:a:0?",
            "-c",
            "copy",
            "-f",
            "segment",
            "-segment_format",
            "mpegts",
            "-segment_list_type",
            "csv",
            "-segment_list_flags",
            "live",
            "-segment_time",
        ]
        .map(OsString::from)
        .to_vec();
        args.push(self.options.segment_seconds.to_string().into());
        args.push("-segment_list".into());
        args.push(list.into());
        args.push(pattern.into());
        args
    }

    /// The segments written so far, in stream-time order (the one being written last).
    pub fn segments(&self) -> Vec<RecordedSegment> {
        let generations = self.lock();
        let mut out = Vec::new();
        for g in generations.iter() {
            let list = self.options.dir.join(format!("{}list.csv", g.prefix));
            let Ok(text) = std::fs::read_to_string(&list) else {
                continue;
            };
            for line in text.lines() {
                let mut fields = line.rsplitn(3, ',');
                let (Some(end), Some(start), Some(name)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                let (Ok(start), Ok(end)) = (start.parse::<f64>(), end.parse::<f64>()) else {
                    continue;
                };
                let path = self.options.dir.join(name);
                if path.exists() {
                    out.push(RecordedSegment {
                        path,
                        start: g.offset + start,
                        end: g.offset + end,
                    });
                }
            }
        }
        out
    }

    /// Removes the segments that ended more than the kept seconds before the latest one.
    pub fn prune(&self) {
        let segments = self.segments();
        let Some(now) = segments.last().map(|s| s.end) else {
            return;
        };
        let before = now - self.options.keep_seconds;
        for s in segments {
            if s.end < before {
                let _ = std::fs::remove_file(&s.path);
            }
        }
    }

    /// Writes stream time `start..end` to `out` (its container from the extension, e.g.
    /// `.ts`, `.mp4`, `.mkv`) by stream copy from the recorded segments. The range must
    /// lie inside what is kept and what has been written (a segment is listed once it is
    /// complete).
    pub fn clip(
        &self,
        start: f64,
        end: f64,
        out: &Path,
        tools: &Tools,
    ) -> Result<Clip, MediaError> {
        let bad = |m: String| Err(MediaError::InvalidOption(m));
        if !(start.is_finite() && end.is_finite() && start >= 0.0 && end > start) {
            return bad(format!(
                "a clip runs from a start to a later end, not {start} to {end}"
            ));
        }
        let segments = self.segments();
        let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
            return bad("nothing has been recorded yet".into());
        };
        if start < first.start - 0.05 || end > last.end + 0.05 {
            return bad(format!(
                "the recording holds {:.1} s to {:.1} s of the stream, not {start:.1} s to {end:.1} s",
                first.start, last.end
            ));
        }
        let used: Vec<&RecordedSegment> = segments
            .iter()
            .filter(|s| s.end > start && s.start < end)
            .collect();
        let Some(head) = used.first() else {
            return bad(format!(
                "no recorded segment covers {start:.1} s to {end:.1} s"
            ));
        };
        // MPEG-TS segments join byte for byte (ffmpeg's concat protocol), keeping their
        // timestamps continuous, so the input seek is relative to the first one's start.
        let mut joined = OsString::from("concat:");
        for (i, s) in used.iter().enumerate() {
            let path = s.path.as_os_str();
            if path.to_string_lossy().contains('|') {
                return bad(format!(
                    "the recording directory {} holds a '|', which ffmpeg's concat cannot take",
                    self.options.dir.display()
                ));
            }
            if i > 0 {
                joined.push("|");
            }
            joined.push(path);
        }
        let mut args: Vec<OsString> = ["-nostdin", "-hide_banner", "-v", "error", "-y", "-ss"]
            .map(OsString::from)
            .to_vec();
        args.push(format!("{:.3}", (start - head.start).max(0.0)).into());
        args.push("-t".into());
        args.push(format!("{:.3}", end - start).into());
        args.push("-i".into());
        args.push(joined);
        args.extend(["-map", "0", "-c", "copy"].map(OsString::from));
        args.push(out.into());
        let mut proc = Subprocess::spawn(
            Tool::Ffmpeg,
            tools,
            &args,
            out,
            "clips are cut by ffmpeg",
            |_| true,
        )?;
        let mut sink = [0u8; 4096];
        while proc.read(&mut sink).map_err(|source| MediaError::Io {
            path: out.to_path_buf(),
            source,
        })? > 0
        {}
        let status = proc.finish().map_err(|source| MediaError::Io {
            path: out.to_path_buf(),
            source,
        })?;
        if !status.success() {
            return Err(MediaError::ToolFailed {
                path: out.to_path_buf(),
                tool: Tool::Ffmpeg.name(),
                status: status.to_string(),
                stderr: ffmpeg::lock(&proc.log).tail(4),
            });
        }
        Ok(Clip {
            path: out.to_path_buf(),
            start,
            end,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Generation>> {
        self.generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a generation's list and (empty) segment files as ffmpeg would.
    fn fake(dir: &Path, prefix: &str, spans: &[(f64, f64)]) {
        let mut list = String::new();
        for (i, (a, b)) in spans.iter().enumerate() {
            let name = format!("{prefix}{i:06}.ts");
            std::fs::write(dir.join(&name), b"x").unwrap();
            list.push_str(&format!("{name},{a:.6},{b:.6}\n"));
        }
        std::fs::write(dir.join(format!("{prefix}list.csv")), list).unwrap();
    }

    #[test]
    fn generations_follow_each_other_and_old_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = LiveRecorder::new(RecordOptions::new(dir.path(), 10.0)).unwrap();
        let args = recorder.output_args(None);
        assert!(
            args.iter()
                .any(|a| a.to_string_lossy().ends_with("g0000-list.csv"))
        );
        fake(dir.path(), "g0000-", &[(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]);
        // The source came back after 6 s of audio: its segments start at 0 again.
        recorder.output_args(Some(6 * 16_000));
        fake(
            dir.path(),
            "g0001-",
            &[(0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 8.0)],
        );
        let segments = recorder.segments();
        let spans: Vec<(f64, f64)> = segments.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(spans.len(), 7);
        assert_eq!(spans[3], (6.0, 8.0));
        assert_eq!(spans[6], (12.0, 14.0));
        recorder.prune();
        let left = recorder.segments();
        assert_eq!(left.first().map(|s| s.start), Some(2.0), "{left:?}");
        // A range outside what is kept, or backwards, is refused before ffmpeg runs.
        let out = dir.path().join("clip.ts");
        let tools = Tools::default();
        for (a, b) in [(0.0, 3.0), (5.0, 20.0), (6.0, 5.0), (f64::NAN, 3.0)] {
            assert!(recorder.clip(a, b, &out, &tools).is_err(), "{a} {b}");
        }
        assert!(LiveRecorder::new(RecordOptions::new(dir.path(), 1.0)).is_err());
    }
}
