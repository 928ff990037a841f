//! TransNetV2 shot boundary detection in candle.
//!
//! Not built yet (issue 7); this crate holds only its place in the workspace.
