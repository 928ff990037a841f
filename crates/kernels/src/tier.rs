//! The instruction-set tier the CPU kernels run at.
//!
//! Detected once per process from the CPU; `MICA_CPU_TIER` lowers it (never raises it past
//! what the CPU has), so every kernel path can be tested and timed on any machine:
//! `MICA_CPU_TIER=avx2 cargo test ...` runs a CPU without AVX-512 on one that has it.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// The environment variable that lowers the tier: `portable`, `avx2`, `avx512` or `vnni`.
pub const TIER_ENV: &str = "MICA_CPU_TIER";

/// Instruction-set tiers, lowest first; a CPU at one tier runs every tier below it.
///
/// On x86-64: [`Tier::Avx2`] is AVX2 with FMA (Haswell, Zen 1 and later), [`Tier::Avx512`]
/// adds AVX-512F (Skylake-SP, Zen 4), [`Tier::Vnni`] adds AVX-512 VNNI's int8 dot products
/// (Cascade Lake, Zen 4). Every other CPU (ARM included, until a NEON tier exists) runs
/// [`Tier::Portable`]: plain loops the compiler vectorises for the target's baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Tier {
    /// Plain Rust, vectorised by the compiler for the build's baseline (SSE2 on x86-64,
    /// NEON on aarch64).
    Portable,
    /// x86-64 with AVX2 and FMA: 8-lane f32 vectors, `vpmaddubsw` int8 products.
    Avx2,
    /// x86-64 with AVX-512F: 16-lane f32 vectors and masked tails.
    Avx512,
    /// AVX-512 with VNNI (`vpdpbusd`): int8 dot products in one instruction.
    Vnni,
}

/// A tier name that is not one of `portable`, `avx2`, `avx512`, `vnni`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown CPU tier {0:?}: expected portable, avx2, avx512 or vnni")]
pub struct TierError(String);

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 4] = [Tier::Portable, Tier::Avx2, Tier::Avx512, Tier::Vnni];

    /// The tier's name as `MICA_CPU_TIER` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Portable => "portable",
            Tier::Avx2 => "avx2",
            Tier::Avx512 => "avx512",
            Tier::Vnni => "vnni",
        }
    }

    /// The highest tier this CPU supports (detected once).
    pub fn hardware() -> Tier {
        static HARDWARE: OnceLock<Tier> = OnceLock::new();
        *HARDWARE.get_or_init(detect)
    }

    /// The tier the kernels run at: [`Tier::hardware`], lowered by `MICA_CPU_TIER` when it
    /// is set (read once per process). A value above the hardware's tier, or not a tier
    /// name, is ignored with a warning: running instructions the CPU lacks would crash.
    pub fn current() -> Tier {
        static CURRENT: OnceLock<Tier> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let hardware = Tier::hardware();
            let Ok(value) = std::env::var(TIER_ENV) else {
                return hardware;
            };
            match Tier::from_str(&value) {
                Ok(asked) if asked <= hardware => {
                    tracing::debug!("CPU kernels forced to the {asked} tier ({TIER_ENV})");
                    asked
                }
                Ok(asked) => {
                    tracing::warn!(
                        "{TIER_ENV}={value}: this CPU supports at most {hardware}, not {asked}; \
                         running {hardware}"
                    );
                    hardware
                }
                Err(e) => {
                    tracing::warn!("{TIER_ENV}: {e}; running {hardware}");
                    hardware
                }
            }
        })
    }

    /// Every tier this CPU runs, lowest first (for checking or timing each path in turn).
    pub fn supported() -> impl Iterator<Item = Tier> {
        Tier::ALL.into_iter().filter(|t| *t <= Tier::hardware())
    }

    /// Whether this tier includes `other` (a CPU at `self` runs `other`'s code).
    pub fn has(self, other: Tier) -> bool {
        self >= other
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Tier {
    type Err = TierError;

    fn from_str(s: &str) -> Result<Tier, TierError> {
        let lower = s.trim().to_ascii_lowercase();
        Tier::ALL
            .into_iter()
            .find(|t| t.name() == lower)
            .ok_or_else(|| TierError(s.to_string()))
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Tier {
    use std::arch::is_x86_feature_detected as has;
    if !(has!("avx2") && has!("fma")) {
        Tier::Portable
    } else if !has!("avx512f") {
        Tier::Avx2
    } else if !has!("avx512vnni") {
        Tier::Avx512
    } else {
        Tier::Vnni
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Tier {
    Tier::Portable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order() {
        for tier in Tier::ALL {
            assert_eq!(tier.name().parse::<Tier>(), Ok(tier));
            assert_eq!(tier.to_string().to_uppercase().parse::<Tier>(), Ok(tier));
        }
        assert!(Tier::Portable < Tier::Avx2 && Tier::Avx2 < Tier::Avx512);
        assert!(Tier::Vnni.has(Tier::Avx2) && !Tier::Avx2.has(Tier::Avx512));
    }

    #[test]
    fn unknown_names_are_errors_that_list_the_tiers() {
        for bad in ["", "sse4", "avx-512", "neon"] {
            let err = bad.parse::<Tier>().unwrap_err();
            assert!(
                err.to_string().contains("portable, avx2, avx512 or vnni"),
                "{err}"
            );
        }
    }

    #[test]
    fn current_never_exceeds_the_hardware() {
        assert!(Tier::current() <= Tier::hardware());
    }

    /// A forced tier (CI runs the model tests again with `MICA_CPU_TIER=avx2`) is the one
    /// the kernels run at, so such a run cannot pass on the wrong path unnoticed.
    #[test]
    fn current_is_the_forced_tier() {
        let Some(asked) = std::env::var(TIER_ENV)
            .ok()
            .and_then(|v| v.parse::<Tier>().ok())
        else {
            return;
        };
        if asked <= Tier::hardware() {
            assert_eq!(Tier::current(), asked);
        }
    }
}
