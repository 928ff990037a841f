//! Spreading host work over rayon's pool.

use rayon::prelude::*;

/// Runs `f(offset, run)` on rayon's pool (the process's CPU thread count, which
/// `--threads` sets) over runs of `out` made of whole granules of `granule` floats (the
/// last may be short), one run per thread, `offset` being where the run starts.
pub(crate) fn par_granules(out: &mut [f32], granule: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let granules = out.len().div_ceil(granule.max(1));
    let threads = rayon::current_num_threads().min(granules).max(1);
    if threads == 1 {
        f(0, out);
        return;
    }
    let run = granules.div_ceil(threads) * granule;
    out.par_chunks_mut(run)
        .enumerate()
        .for_each(|(i, chunk)| f(i * run, chunk));
}
