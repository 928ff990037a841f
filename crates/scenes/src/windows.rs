//! The reference's windowing: windows of 100 frames that advance by 50, each predicting its
//! middle 50 frames with 25 frames of context on either side.
//!
//! The stream is padded as `TransNetV2.predict_frames` pads the whole video: 25 copies of
//! the first frame before it, and after it copies of the last frame up to the next multiple
//! of 50 plus 25, so the last window still has its 25 frames of right context. Windows are
//! cut while frames arrive, so only the frames of the window being filled are held.

use std::collections::VecDeque;

use crate::model::FRAME_BYTES;

/// Frames per window.
pub const WINDOW: usize = 100;
/// Frames of context before (and after) the frames a window predicts.
pub const CONTEXT: usize = 25;
/// Frames a window advances by, and the frames it predicts.
pub const STEP: usize = 50;

/// One window: `WINDOW` rgb24 48x27 frames, and which stream frames it predicts.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Stream index of the frame at position [`CONTEXT`] (the first predicted one).
    pub first_frame: u64,
    /// `WINDOW * FRAME_BYTES` bytes, frames in order.
    pub frames: Vec<u8>,
}

/// Turns a stream of frames into the reference's windows.
#[derive(Debug, Default)]
pub struct Windower {
    /// Padded frames from the start of the next window on.
    buffer: VecDeque<Vec<u8>>,
    /// Frames pushed.
    frames: u64,
    /// Windows cut.
    windows: u64,
    finished: bool,
}

impl Windower {
    /// An empty windower.
    pub fn new() -> Windower {
        Windower::default()
    }

    /// Frames pushed so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Adds the next frame (`FRAME_BYTES` bytes, the caller checks the size); returns the
    /// window it completes, if any.
    pub fn push(&mut self, frame: &[u8]) -> Option<Window> {
        debug_assert_eq!(frame.len(), FRAME_BYTES);
        if self.frames == 0 {
            for _ in 0..CONTEXT {
                self.buffer.push_back(frame.to_vec());
            }
        }
        self.frames += 1;
        self.buffer.push_back(frame.to_vec());
        self.cut()
    }

    /// Pads the end as the reference does and returns the windows left (none when no frame
    /// was pushed). Further calls return nothing.
    pub fn finish(&mut self) -> Vec<Window> {
        if self.finished || self.frames == 0 {
            self.finished = true;
            return Vec::new();
        }
        self.finished = true;
        let rem = (self.frames % STEP as u64) as usize;
        let pad = CONTEXT + STEP - if rem == 0 { STEP } else { rem };
        if let Some(last) = self.buffer.back().cloned() {
            for _ in 0..pad {
                self.buffer.push_back(last.clone());
            }
        }
        let mut out = Vec::new();
        while let Some(w) = self.cut() {
            out.push(w);
        }
        self.buffer.clear();
        out
    }

    fn cut(&mut self) -> Option<Window> {
        if self.buffer.len() < WINDOW {
            return None;
        }
        let mut frames = Vec::with_capacity(WINDOW * FRAME_BYTES);
        for f in self.buffer.iter().take(WINDOW) {
            frames.extend_from_slice(f);
        }
        self.buffer.drain(..STEP);
        let first_frame = self.windows * STEP as u64;
        self.windows += 1;
        Some(Window {
            first_frame,
            frames,
        })
    }
}

/// How many windows the reference runs over `frames` frames: `ceil(frames / 50)`.
pub fn window_count(frames: u64) -> u64 {
    frames.div_ceil(STEP as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame whose bytes all equal `v`.
    fn frame(v: u8) -> Vec<u8> {
        vec![v; FRAME_BYTES]
    }

    /// The reference's padded sequence and windows, as frame ids.
    fn reference(n: usize) -> Vec<Vec<u8>> {
        let ids: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let rem = n % STEP;
        let end = CONTEXT + STEP - if rem == 0 { STEP } else { rem };
        let mut padded = vec![ids[0]; CONTEXT];
        padded.extend(&ids);
        padded.extend(std::iter::repeat_n(ids[n - 1], end));
        let mut out = Vec::new();
        let mut ptr = 0;
        while ptr + WINDOW <= padded.len() {
            out.push(padded[ptr..ptr + WINDOW].to_vec());
            ptr += STEP;
        }
        out
    }

    #[test]
    fn windows_match_the_reference_padding() {
        for n in [1usize, 2, 49, 50, 51, 99, 100, 101, 149, 150, 151, 255] {
            let mut w = Windower::new();
            let mut got = Vec::new();
            for i in 0..n {
                got.extend(w.push(&frame(i as u8)));
            }
            got.extend(w.finish());
            let want = reference(n);
            assert_eq!(got.len(), want.len(), "n={n}");
            assert_eq!(got.len() as u64, window_count(n as u64), "n={n}");
            for (k, (g, r)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.first_frame, (k * STEP) as u64);
                let ids: Vec<u8> = g.frames.chunks(FRAME_BYTES).map(|f| f[0]).collect();
                assert_eq!(&ids, r, "n={n} window {k}");
            }
        }
    }

    #[test]
    fn memory_is_bounded_however_long_the_stream() {
        // A 2-hour film at 24 fps is 172,800 frames; the buffer never holds more than one
        // window plus one step, whatever the length.
        let mut w = Windower::new();
        let f = frame(7);
        let mut windows = 0u64;
        for _ in 0..20_000 {
            windows += u64::from(w.push(&f).is_some());
            assert!(w.buffer.len() < WINDOW + STEP, "{}", w.buffer.len());
        }
        windows += w.finish().len() as u64;
        assert_eq!(windows, window_count(20_000));
    }

    #[test]
    fn empty_stream_has_no_windows() {
        let mut w = Windower::new();
        assert!(w.finish().is_empty());
        assert_eq!(window_count(0), 0);
    }
}
