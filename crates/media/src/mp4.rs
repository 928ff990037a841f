//! MP4/MOV edit lists, which symphonia parses but does not apply.
//!
//! AAC encoders prepend priming samples (1024 for ffmpeg, 2112 for Apple) and pad the end; the
//! track's edit list says how many to skip and how long to play. Without it every timestamp
//! in an .m4a/.mp4 is 20-50 ms late and the duration too long, so we read the edit list
//! ourselves and trim the decoded audio to match what ffmpeg and players output.

use std::io::{Read, Seek, SeekFrom};

/// Largest `moov` box we read into memory; real ones are kilobytes to a few megabytes.
const MAX_MOOV: u64 = 64 << 20;

/// The part of a track its edit list plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EditTrim {
    /// Media samples to skip at the start, in the track's media timescale.
    skip: u64,
    /// Length to play, in the movie timescale; `None` means to the end.
    play: Option<u64>,
    media_timescale: u32,
    movie_timescale: u32,
}

impl EditTrim {
    /// Frames to drop at `rate` Hz.
    pub(crate) fn skip_frames(&self, rate: u32) -> u64 {
        scale(self.skip, rate, self.media_timescale)
    }

    /// Frames to keep at `rate` Hz, if the edit bounds the length.
    pub(crate) fn play_frames(&self, rate: u32) -> Option<u64> {
        self.play.map(|p| scale(p, rate, self.movie_timescale))
    }
}

fn scale(value: u64, rate: u32, timescale: u32) -> u64 {
    let num = u128::from(value) * u128::from(rate);
    let den = u128::from(timescale.max(1));
    u64::try_from((num + den / 2) / den).unwrap_or(u64::MAX)
}

/// Per `trak` in file order (symphonia's track ids for MP4), its trim; `None` when the
/// input is not MP4/MOV or its boxes cannot be read. Leaves the reader at offset 0.
pub(crate) fn edit_trims<R: Read + Seek>(reader: &mut R) -> Option<Vec<Option<EditTrim>>> {
    let moov = read_moov(reader);
    let _ = reader.seek(SeekFrom::Start(0));
    let moov = moov?;
    let mut movie_timescale = None;
    let mut traks = Vec::new();
    for (kind, body) in Boxes(&moov) {
        match &kind {
            b"mvhd" => movie_timescale = header_timescale(body),
            b"trak" => traks.push(body),
            _ => {}
        }
    }
    let movie_timescale = movie_timescale?;
    Some(
        traks
            .into_iter()
            .map(|trak| trak_trim(trak, movie_timescale))
            .collect(),
    )
}

fn trak_trim(trak: &[u8], movie_timescale: u32) -> Option<EditTrim> {
    let mut media_timescale = None;
    let mut edits = None;
    for (kind, body) in Boxes(trak) {
        match &kind {
            b"mdia" => {
                for (kind, body) in Boxes(body) {
                    if &kind == b"mdhd" {
                        media_timescale = header_timescale(body);
                    }
                }
            }
            b"edts" => {
                for (kind, body) in Boxes(body) {
                    if &kind == b"elst" {
                        edits = parse_elst(body);
                    }
                }
            }
            _ => {}
        }
    }
    let edits = edits?;
    // Leading empty edits (media time -1) delay the start; we do not insert silence for
    // them. More than one real edit is a cut list we do not apply.
    let mut real = edits.iter().filter(|(_, media_time)| *media_time >= 0);
    let (duration, media_time) = *real.next()?;
    if real.next().is_some() {
        return None;
    }
    Some(EditTrim {
        skip: u64::try_from(media_time).ok()?,
        play: (duration > 0).then_some(duration),
        media_timescale: media_timescale?,
        movie_timescale,
    })
}

/// `(segment_duration, media_time)` per edit.
fn parse_elst(body: &[u8]) -> Option<Vec<(u64, i64)>> {
    let version = *body.first()?;
    let count = be_u32(body, 4)? as usize;
    let entry = if version == 1 { 20 } else { 12 };
    let mut edits = Vec::with_capacity(count.min(64));
    for i in 0..count.min(1024) {
        let at = 8 + i * entry;
        let edit = if version == 1 {
            (be_u64(body, at)?, be_u64(body, at + 8)? as i64)
        } else {
            (
                u64::from(be_u32(body, at)?),
                i64::from(be_u32(body, at + 4)? as i32),
            )
        };
        edits.push(edit);
    }
    Some(edits)
}

/// The timescale field of an `mvhd` or `mdhd` box (same layout up to it).
fn header_timescale(body: &[u8]) -> Option<u32> {
    let at = if *body.first()? == 1 { 20 } else { 12 };
    be_u32(body, at).filter(|&t| t > 0)
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn be_u64(data: &[u8], at: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Finds the top-level `moov` box and reads its body.
fn read_moov<R: Read + Seek>(reader: &mut R) -> Option<Vec<u8>> {
    let len = reader.seek(SeekFrom::End(0)).ok()?;
    let mut pos = 0u64;
    while pos.checked_add(8)? <= len {
        reader.seek(SeekFrom::Start(pos)).ok()?;
        let mut head = [0u8; 16];
        reader.read_exact(&mut head[..8]).ok()?;
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind = [head[4], head[5], head[6], head[7]];
        // Anything else first means this is not an ISO BMFF / QuickTime file.
        if pos == 0
            && !matches!(
                &kind,
                b"ftyp" | b"moov" | b"free" | b"skip" | b"wide" | b"mdat" | b"pnot"
            )
        {
            return None;
        }
        let (size, header) = match size32 {
            0 => (len - pos, 8),
            1 => {
                reader.read_exact(&mut head[8..16]).ok()?;
                (u64::from_be_bytes(head[8..16].try_into().ok()?), 16)
            }
            n => (u64::from(n), 8),
        };
        if size < header || pos.checked_add(size)? > len {
            return None;
        }
        if &kind == b"moov" {
            let body = size - header;
            if body > MAX_MOOV {
                return None;
            }
            let mut data = vec![0u8; usize::try_from(body).ok()?];
            reader.read_exact(&mut data).ok()?;
            return Some(data);
        }
        pos += size;
    }
    None
}

/// Child boxes of a box body: `(type, body)`; stops at the first malformed header.
struct Boxes<'a>(&'a [u8]);

impl<'a> Iterator for Boxes<'a> {
    type Item = ([u8; 4], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let data = self.0;
        let size32 = be_u32(data, 0)?;
        let kind: [u8; 4] = data.get(4..8)?.try_into().ok()?;
        let (size, header) = match size32 {
            0 => (data.len(), 8),
            1 => (usize::try_from(be_u64(data, 8)?).ok()?, 16),
            n => (n as usize, 8),
        };
        if size < header || size > data.len() {
            self.0 = &[];
            return None;
        }
        self.0 = &data[size..];
        Some((kind, &data[header..size]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn timescale_box(kind: &[u8; 4], timescale: u32) -> Vec<u8> {
        let mut body = vec![0u8; 12];
        body.extend_from_slice(&timescale.to_be_bytes());
        body.extend_from_slice(&[0; 4]);
        mp4_box(kind, &body)
    }

    #[test]
    fn reads_priming_and_length() {
        let mut elst = vec![0, 0, 0, 0];
        elst.extend_from_slice(&2u32.to_be_bytes());
        for (duration, media_time) in [(500u32, -1i32), (3000, 1024)] {
            elst.extend_from_slice(&duration.to_be_bytes());
            elst.extend_from_slice(&media_time.to_be_bytes());
            elst.extend_from_slice(&[0, 1, 0, 0]);
        }
        let trak = mp4_box(
            b"trak",
            &[
                mp4_box(b"edts", &mp4_box(b"elst", &elst)),
                mp4_box(b"mdia", &timescale_box(b"mdhd", 44_100)),
            ]
            .concat(),
        );
        let moov = mp4_box(b"moov", &[timescale_box(b"mvhd", 1000), trak].concat());
        let file = [
            mp4_box(b"ftyp", b"M4A \0\0\0\0"),
            mp4_box(b"mdat", &[0; 32]),
            moov,
        ]
        .concat();
        let trims = edit_trims(&mut std::io::Cursor::new(file));
        let trim = trims.and_then(|t| t.first().copied().flatten());
        assert_eq!(
            trim.map(|t| (t.skip_frames(44_100), t.play_frames(44_100))),
            Some((1024, Some(132_300)))
        );
        assert_eq!(
            edit_trims(&mut std::io::Cursor::new(b"RIFF....WAVE".to_vec())),
            None
        );
    }
}
