//! Shot lists: CSV with PySceneDetect's columns, and CMX3600 EDL.
//!
//! Both read frame indices (exact) rather than seconds, and both sort shots by start frame
//! and leave out empty ones (`end_frame <= start_frame`) with a warning.
//!
//! CSV follows PySceneDetect's `list-scenes` file without its leading "Timecode List" row:
//! scene numbers and start frames are 1-based, end frames are the last frame 1-based
//! (equal to our exclusive zero-based `end_frame`), timecodes are `HH:MM:SS.mmm`.
//!
//! EDL is CMX3600: one `AX` (auxiliary source) video cut per shot with a
//! `* FROM CLIP NAME:` comment naming the media. Source timecodes are the shot's frames from
//! `00:00:00:00`; the record timeline mirrors the source, offset to start at
//! `edl_record_start_hour` (default 1, the broadcast `01:00:00:00`), so gaps between shots
//! stay gaps. 29.97 and 59.94 fps use drop-frame (`FCM: DROP FRAME`, `;` separators) unless
//! `drop_frame` is off. CMX3600 allows 999 events; longer lists keep counting with a warning.

use std::io::Write;

use crate::document::{MediaInfo, Shot, Shots};
use crate::time::{FrameRate, format_vtt, to_millis};

use super::rttm::secs3;
use super::wrap::normalize;
use super::{WriteError, WriterOptions, check, file_stem};

/// The CSV header row.
pub const CSV_HEADER: &str = "Scene Number,Start Frame,Start Timecode,Start Time (seconds),End Frame,End Timecode,End Time (seconds),Length (frames),Length (timecode),Length (seconds)";

/// Non-empty shots in start order.
fn ordered(shots: &Shots) -> Vec<&Shot> {
    let mut v: Vec<&Shot> = shots
        .shots
        .iter()
        .filter(|s| {
            let keep = s.end_frame > s.start_frame;
            if !keep {
                tracing::warn!(
                    start_frame = s.start_frame,
                    end_frame = s.end_frame,
                    "skipping an empty shot"
                );
            }
            keep
        })
        .collect();
    v.sort_by_key(|s| (s.start_frame, s.end_frame));
    v
}

/// Write `shots` as CSV (header row even when there are no shots).
pub fn write_csv(shots: &Shots, out: &mut dyn Write) -> Result<(), WriteError> {
    check::shots(shots)?;
    let rate = FrameRate::new(shots.fps, false)?;
    let secs = |frames: u64| rate.seconds_at(frames);
    writeln!(out, "{CSV_HEADER}")?;
    for (i, s) in ordered(shots).into_iter().enumerate() {
        let len = s.len_frames();
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            i + 1,
            s.start_frame.saturating_add(1),
            format_vtt(secs(s.start_frame)),
            secs3(to_millis(secs(s.start_frame))),
            s.end_frame,
            format_vtt(secs(s.end_frame)),
            secs3(to_millis(secs(s.end_frame))),
            len,
            format_vtt(secs(len)),
            secs3(to_millis(secs(len))),
        )?;
    }
    Ok(())
}

/// Write `shots` of `media` as a CMX3600 EDL.
pub fn write_edl(
    shots: &Shots,
    media: &MediaInfo,
    opts: &WriterOptions,
    out: &mut dyn Write,
) -> Result<(), WriteError> {
    opts.validate()?;
    check::shots(shots)?;
    let drop = opts.drop_frame && FrameRate::supports_drop_frame(shots.fps);
    let rate = FrameRate::new(shots.fps, drop)?;
    let stem = file_stem(&media.source);
    let title = normalize(opts.edl_title.as_deref().unwrap_or(stem));
    let title = if title.is_empty() {
        "mica".to_owned()
    } else {
        title
    };
    writeln!(out, "TITLE: {title}")?;
    let fcm = if drop { "DROP FRAME" } else { "NON-DROP FRAME" };
    writeln!(out, "FCM: {fcm}")?;
    let clip = normalize(
        media
            .source
            .trim_end_matches(['/', '\\'])
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or_default(),
    );
    let offset = u64::from(opts.edl_record_start_hour) * rate.frames_per_hour();
    let list = ordered(shots);
    if list.len() > 999 {
        tracing::warn!(
            events = list.len(),
            "EDL has more than the 999 events CMX3600 allows"
        );
    }
    for (i, s) in list.into_iter().enumerate() {
        writeln!(out)?;
        writeln!(
            out,
            "{:03}  AX       V     C        {} {} {} {}",
            i + 1,
            rate.timecode(s.start_frame),
            rate.timecode(s.end_frame),
            rate.timecode(offset.saturating_add(s.start_frame)),
            rate.timecode(offset.saturating_add(s.end_frame)),
        )?;
        if !clip.is_empty() {
            writeln!(out, "* FROM CLIP NAME: {clip}")?;
        }
    }
    Ok(())
}
