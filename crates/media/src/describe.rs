//! One description of an input, audio and video together, as documents carry it.

use std::path::Path;

use super::{AudioOptions, AudioStream, MediaError, Tools, probe_with};
use mica_core::document::{AudioInfo, MediaInfo, VideoInfo};

/// Describes the audio and video streams of `path` without decoding them all.
///
/// A file with only one kind of stream describes that one; a file with neither is the
/// error the audio decoders gave, since that names what was tried.
pub fn describe(path: impl AsRef<Path>, tools: &Tools) -> Result<MediaInfo, MediaError> {
    let path = path.as_ref();
    // What ffprobe could not read as video may still be audio symphonia reads; if it is
    // not that either, its reason is the one to give.
    let mut not_media = None;
    let video = match probe_with(path, tools) {
        Ok(v) => Some(v),
        // Audio-only inputs, and audio inputs on a machine without ffprobe, still describe.
        Err(MediaError::NoVideoStream { .. } | MediaError::ToolMissing { .. }) => None,
        Err(e @ MediaError::NotMedia { .. }) => {
            not_media = Some(e);
            None
        }
        Err(e) => return Err(e),
    };
    let options = AudioOptions {
        tools: tools.clone(),
        ..AudioOptions::default()
    };
    let audio = match AudioStream::open_with(path, &options) {
        Ok(stream) => Some(stream.info().clone()),
        Err(MediaError::NoAudioStream { .. }) if video.is_some() => None,
        Err(e) => return Err(not_media.unwrap_or(e)),
    };
    let duration = audio
        .as_ref()
        .and_then(|a| a.duration)
        .or(video.as_ref().and_then(|v| v.duration))
        .or(video
            .as_ref()
            .filter(|v| v.fps_f64 > 0.0)
            .map(|v| v.frame_count as f64 / v.fps_f64))
        .unwrap_or(0.0);
    Ok(MediaInfo {
        source: path.display().to_string(),
        duration,
        audio: audio.map(|a| AudioInfo {
            sample_rate: a.sample_rate.unwrap_or(0),
            channels: a.channels.and_then(|c| u16::try_from(c).ok()).unwrap_or(0),
        }),
        video: video.map(|v| VideoInfo {
            width: v.width,
            height: v.height,
            fps: v.fps_f64,
            frames: v.frame_count_exact.then_some(v.frame_count),
        }),
    })
}
