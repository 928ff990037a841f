//! CPU kernels shared by mica's model crates, with no candle dependency.
//!
//! - [`Tier`]: the instruction-set tier the kernels run at, detected once per process and
//!   lowered on request (`MICA_CPU_TIER=portable|avx2|avx512|vnni`), so that tests and
//!   benches exercise every path on any machine.
//! - [`simd`]: one vector interface ([`simd::Simd`]) with an AVX-512, an AVX2+FMA and a
//!   portable implementation, so a kernel is written once and compiled per tier.
//! - [`math`]: a branch-free `exp` that loops vectorise, and
//!   [`lstm_cell`], the LSTM cell update at every tier.
//! - [`PackedMatrix`]: weights packed once in panels of 64 columns and a register-blocked
//!   product of a few rows against them, at every tier.
//! - [`LaneMatrix`]: weights packed for products over a batch of sequences held in vector
//!   lanes, so a recurrence reads each weight once per step for all of them.
//! - [`SharedMut`]: a pointer that parallel tasks write disjoint parts of one buffer through.
#![deny(missing_docs)]

mod lanes;
mod lstm;
pub mod math;
mod packed;
mod shared;
pub mod simd;
mod tier;

pub use lanes::{LANE_ROWS, LANES, LaneMatrix};
pub use lstm::lstm_cell;
pub use packed::{MAX_ROWS, PANEL, PackedMatrix, panel_product};
pub use shared::SharedMut;
pub use tier::{TIER_ENV, Tier, TierError};
