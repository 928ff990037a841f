//! Clustering of speaker embeddings: agglomerative (average linkage on cosine distance, cut
//! at a threshold or at a speaker count) and spectral (pruned cosine affinity, normalised
//! Laplacian, eigengap count, k-means on the spectral embedding).
//!
//! Inputs are unit vectors; every routine is deterministic (no random initialisation), so
//! the same audio always gives the same speakers.

use serde::{Deserialize, Serialize};

/// Which clustering algorithm groups the embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Method {
    /// Agglomerative, average linkage on cosine distance.
    #[default]
    Agglomerative,
    /// Spectral clustering with an eigengap speaker count.
    Spectral,
}

/// How many clusters are wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeakerCount {
    /// At least this many (1 when free).
    pub min: usize,
    /// At most this many (`usize::MAX` when free).
    pub max: usize,
}

impl SpeakerCount {
    /// No constraint.
    pub const FREE: SpeakerCount = SpeakerCount {
        min: 1,
        max: usize::MAX,
    };
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Cosine distance between unit vectors.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    1.0 - dot(a, b)
}

/// Merges of an agglomerative clustering, sorted by height: `(a, b, height)` joins the
/// clusters holding points `a` and `b`.
#[derive(Debug, Clone)]
pub struct Dendrogram {
    points: usize,
    merges: Vec<(usize, usize, f32)>,
}

impl Dendrogram {
    /// Average-linkage dendrogram of unit vectors under cosine distance, built with the
    /// nearest-neighbour chain algorithm: O(n^2) time and one n x n distance matrix.
    pub fn average(points: &[Vec<f32>]) -> Dendrogram {
        let n = points.len();
        let mut d = vec![0.0f32; n * n];
        for i in 0..n {
            for j in i + 1..n {
                let v = cosine_distance(&points[i], &points[j]);
                d[i * n + j] = v;
                d[j * n + i] = v;
            }
        }
        let mut size = vec![1usize; n];
        let mut alive = vec![true; n];
        // Each live cluster is represented by one of its points.
        let mut merges = Vec::with_capacity(n.saturating_sub(1));
        let mut chain: Vec<usize> = Vec::new();
        let mut remaining = n;
        while remaining > 1 {
            if chain.is_empty()
                && let Some(first) = alive.iter().position(|&a| a)
            {
                chain.push(first);
            }
            let Some(&a) = chain.last() else { break };
            // Nearest live neighbour of a; ties prefer the previous chain element so the
            // chain ends in a reciprocal pair.
            let prev = chain.len().checked_sub(2).map(|i| chain[i]);
            let mut best = usize::MAX;
            let mut best_d = f32::INFINITY;
            if let Some(p) = prev {
                best = p;
                best_d = d[a * n + p];
            }
            for c in 0..n {
                if c != a && alive[c] && d[a * n + c] < best_d {
                    best = c;
                    best_d = d[a * n + c];
                }
            }
            if Some(best) == prev {
                chain.pop();
                chain.pop();
                let (keep, gone) = (a.min(best), a.max(best));
                merges.push((keep, gone, best_d));
                let (sk, sg) = (size[keep] as f32, size[gone] as f32);
                for c in 0..n {
                    if alive[c] && c != keep && c != gone {
                        let v = (sk * d[keep * n + c] + sg * d[gone * n + c]) / (sk + sg);
                        d[keep * n + c] = v;
                        d[c * n + keep] = v;
                    }
                }
                size[keep] += size[gone];
                alive[gone] = false;
                remaining -= 1;
            } else {
                chain.push(best);
            }
        }
        merges.sort_by(|x, y| x.2.total_cmp(&y.2));
        Dendrogram { points: n, merges }
    }

    /// Merge heights, ascending.
    pub fn heights(&self) -> impl Iterator<Item = f32> + '_ {
        self.merges.iter().map(|m| m.2)
    }

    /// Cluster count when every merge below `threshold` is applied.
    pub fn count_at(&self, threshold: f32) -> usize {
        self.points - self.merges.iter().filter(|m| m.2 < threshold).count()
    }

    /// Labels `0..k` (numbered by first point) after cutting to `k` clusters.
    pub fn cut(&self, k: usize) -> Vec<usize> {
        let k = k.clamp(1, self.points.max(1));
        let mut parent: Vec<usize> = (0..self.points).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        for &(a, b, _) in self.merges.iter().take(self.points - k) {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            if ra != rb {
                parent[rb.max(ra)] = rb.min(ra);
            }
        }
        relabel(
            &(0..self.points)
                .map(|i| find(&mut parent, i))
                .collect::<Vec<_>>(),
        )
    }
}

/// Renumbers arbitrary labels to `0..k` in order of first appearance.
fn relabel(raw: &[usize]) -> Vec<usize> {
    let mut map = std::collections::HashMap::new();
    raw.iter()
        .map(|&r| {
            let next = map.len();
            *map.entry(r).or_insert(next)
        })
        .collect()
}

/// Agglomerative clustering: labels `0..k` for `points` (unit vectors).
///
/// The dendrogram is cut where merging reaches `threshold` (cosine distance). Clusters of
/// at least `min_size` points are speakers; the points of smaller ones (stray windows:
/// overlap, noise, a speaker change inside a window) join the nearest speaker's centroid.
/// When the number of speakers falls outside `count`, the cut moves until the wanted
/// number of clusters of `min_size` points exists (or, with too few points, to exactly
/// that many clusters).
pub fn agglomerative(
    points: &[Vec<f32>],
    threshold: f32,
    min_size: usize,
    count: SpeakerCount,
) -> Vec<usize> {
    let n = points.len();
    if n == 0 {
        return Vec::new();
    }
    let tree = Dendrogram::average(points);
    let min_size = min_size.clamp(1, n);
    let large_of = |labels: &[usize]| -> Vec<usize> {
        let k = labels.iter().max().map_or(0, |m| m + 1);
        let mut sizes = vec![0usize; k];
        labels.iter().for_each(|&l| sizes[l] += 1);
        let mut large: Vec<usize> = (0..k).filter(|&c| sizes[c] >= min_size).collect();
        large.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
        large
    };
    let mut labels = tree.cut(tree.count_at(threshold));
    let mut large = large_of(&labels);
    let lo = count.min.max(1).min(n);
    let hi = count.max.max(lo);
    if large.len() < lo || large.len() > hi {
        let target = large.len().clamp(lo, hi);
        // Fewest clusters that hold `target` clusters of min_size points.
        let found = (target..=n).find_map(|k| {
            let l = tree.cut(k);
            let big = large_of(&l);
            (big.len() >= target).then_some((l, big))
        });
        match found {
            Some((l, mut big)) => {
                big.truncate(target);
                labels = l;
                large = big;
            }
            None => {
                labels = tree.cut(target);
                large = (0..target.min(n)).collect();
            }
        }
    }
    if large.is_empty() {
        return vec![0; n];
    }
    // Centroids of the speakers, then every point of a small cluster to the nearest.
    let cents: Vec<Vec<f32>> = large
        .iter()
        .map(|&c| {
            let members: Vec<Vec<f32>> = points
                .iter()
                .zip(&labels)
                .filter(|(_, l)| **l == c)
                .map(|(p, _)| p.clone())
                .collect();
            centroids(&members, &vec![0; members.len()]).remove(0)
        })
        .collect();
    let out: Vec<usize> = points
        .iter()
        .zip(&labels)
        .map(|(p, l)| match large.iter().position(|c| c == l) {
            Some(i) => i,
            None => (0..cents.len())
                .max_by(|&a, &b| {
                    dot(p, &cents[a])
                        .total_cmp(&dot(p, &cents[b]))
                        .then(b.cmp(&a))
                })
                .unwrap_or(0),
        })
        .collect();
    relabel(&out)
}

/// Spectral clustering of unit vectors: cosine affinity pruned to each row's `keep`
/// strongest neighbours (symmetrised), symmetric normalised Laplacian, speaker count from
/// the largest eigengap within `count` (at most `max_auto` when free), k-means on the
/// row-normalised eigenvectors.
pub fn spectral(points: &[Vec<f32>], count: SpeakerCount, max_auto: usize) -> Vec<usize> {
    let n = points.len();
    if n <= 2 {
        return agglomerative(points, 0.5, 1, count);
    }
    let keep = (n / 5).clamp(2, n - 1);
    let mut a = vec![0.0f64; n * n];
    for i in 0..n {
        let mut row: Vec<(f64, usize)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (f64::from(dot(&points[i], &points[j]).max(0.0)), j))
            .collect();
        row.sort_by(|x, y| y.0.total_cmp(&x.0));
        for &(v, j) in row.iter().take(keep) {
            a[i * n + j] = v;
        }
    }
    for i in 0..n {
        for j in i + 1..n {
            let v = 0.5 * (a[i * n + j] + a[j * n + i]);
            a[i * n + j] = v;
            a[j * n + i] = v;
        }
    }
    let deg: Vec<f64> = (0..n)
        .map(|i| a[i * n..(i + 1) * n].iter().sum::<f64>().max(1e-12))
        .collect();
    // L = I - D^-1/2 A D^-1/2.
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            let v = a[i * n + j] / (deg[i] * deg[j]).sqrt();
            l[i * n + j] = if i == j { 1.0 - v } else { -v };
        }
    }
    let (vals, vecs) = symmetric_eigen(&mut l, n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| vals[x].total_cmp(&vals[y]));
    let hi = count.max.min(max_auto.max(count.min)).min(n - 1).max(1);
    let lo = count.min.max(1).min(hi);
    let k = if lo == hi {
        lo
    } else {
        (lo..=hi)
            .max_by(|&x, &y| {
                let gx = vals[order[x]] - vals[order[x - 1]];
                let gy = vals[order[y]] - vals[order[y - 1]];
                gx.total_cmp(&gy).then(y.cmp(&x))
            })
            .unwrap_or(lo)
    };
    let rows: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let r: Vec<f64> = order[..k].iter().map(|&c| vecs[i * n + c]).collect();
            let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            r.iter().map(|v| (v / norm) as f32).collect()
        })
        .collect();
    kmeans(&rows, k)
}

/// Eigen-decomposition of a symmetric `n x n` matrix by cyclic Jacobi rotations: returns
/// the eigenvalues and the eigenvectors as columns of a row-major matrix. `m` is destroyed.
fn symmetric_eigen(m: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..50 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum();
        if off < 1e-18 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| m[i * n + i]).collect(), v)
}

/// k-means with farthest-point initialisation (deterministic): labels `0..k`.
pub fn kmeans(points: &[Vec<f32>], k: usize) -> Vec<usize> {
    let n = points.len();
    if n == 0 {
        return Vec::new();
    }
    let k = k.clamp(1, n);
    let dist =
        |a: &[f32], b: &[f32]| -> f32 { a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum() };
    let mut centres: Vec<Vec<f32>> = vec![points[0].clone()];
    while centres.len() < k {
        let far = (0..n)
            .max_by(|&x, &y| {
                let dx = centres
                    .iter()
                    .map(|c| dist(&points[x], c))
                    .fold(f32::INFINITY, f32::min);
                let dy = centres
                    .iter()
                    .map(|c| dist(&points[y], c))
                    .fold(f32::INFINITY, f32::min);
                dx.total_cmp(&dy).then(y.cmp(&x))
            })
            .unwrap_or(0);
        centres.push(points[far].clone());
    }
    let mut labels = vec![0usize; n];
    for _ in 0..100 {
        let mut changed = false;
        for (i, p) in points.iter().enumerate() {
            let best = (0..k)
                .min_by(|&x, &y| dist(p, &centres[x]).total_cmp(&dist(p, &centres[y])))
                .unwrap_or(0);
            if labels[i] != best {
                labels[i] = best;
                changed = true;
            }
        }
        for (c, centre) in centres.iter_mut().enumerate() {
            let members: Vec<&Vec<f32>> = points
                .iter()
                .zip(&labels)
                .filter(|(_, l)| **l == c)
                .map(|(p, _)| p)
                .collect();
            if members.is_empty() {
                continue;
            }
            for (d, v) in centre.iter_mut().enumerate() {
                *v = members.iter().map(|m| m[d]).sum::<f32>() / members.len() as f32;
            }
        }
        if !changed {
            break;
        }
    }
    relabel(&labels)
}

/// Joins clusters whose centroids (of `points`, which may differ from the vectors the
/// labels were found on) are closer than `below` in cosine distance, closest pair first,
/// recomputing the joined centroid each time, while more than `min_clusters` remain.
/// Returns labels `0..k` again.
///
/// Centroids average away the spread of single embeddings, so two halves of one voice sit
/// far closer than two voices do even when their members overlap.
pub fn merge_close_centroids(
    points: &[Vec<f32>],
    labels: &[usize],
    below: f32,
    min_clusters: usize,
) -> Vec<usize> {
    let mut labels = labels.to_vec();
    loop {
        let cents = centroids(points, &labels);
        let k = cents.len();
        if k <= min_clusters.max(1) {
            return relabel(&labels);
        }
        let mut best: Option<(f32, usize, usize)> = None;
        for a in 0..k {
            for b in a + 1..k {
                let d = cosine_distance(&cents[a], &cents[b]);
                if d < below && best.is_none_or(|(bd, _, _)| d < bd) {
                    best = Some((d, a, b));
                }
            }
        }
        let Some((_, a, b)) = best else {
            return relabel(&labels);
        };
        labels.iter_mut().filter(|l| **l == b).for_each(|l| *l = a);
        labels = relabel(&labels);
    }
}

/// Unit-length mean of the points with each label: one centroid per label `0..k`.
pub fn centroids(points: &[Vec<f32>], labels: &[usize]) -> Vec<Vec<f32>> {
    let k = labels.iter().map(|&l| l + 1).max().unwrap_or(0);
    let dim = points.first().map_or(0, Vec::len);
    let mut c = vec![vec![0.0f32; dim]; k];
    for (p, &l) in points.iter().zip(labels) {
        for (a, b) in c[l].iter_mut().zip(p) {
            *a += b;
        }
    }
    for v in &mut c {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    /// Three tight groups around orthogonal directions, interleaved.
    fn groups() -> Vec<Vec<f32>> {
        (0..30)
            .map(|i| {
                let g = i % 3;
                let mut v = vec![0.05f32 * ((i * 7 % 5) as f32); 3];
                v[g] = 1.0;
                unit(&v)
            })
            .collect()
    }

    #[test]
    fn agglomerative_finds_the_groups() {
        let p = groups();
        let labels = agglomerative(&p, 0.3, 2, SpeakerCount::FREE);
        for (i, l) in labels.iter().enumerate() {
            assert_eq!(*l, i % 3, "point {i}");
        }
        // Forced counts: two merges the closest groups, one merges all, more than the
        // points is capped at the points.
        let two = agglomerative(&p, 0.3, 2, SpeakerCount { min: 2, max: 2 });
        assert_eq!(two.iter().max(), Some(&1));
        assert!(
            agglomerative(&p, 0.3, 2, SpeakerCount { min: 1, max: 1 })
                .iter()
                .all(|&l| l == 0)
        );
        let many = agglomerative(&p[..4], 0.3, 2, SpeakerCount { min: 10, max: 10 });
        assert_eq!(many, vec![0, 1, 2, 3]);
    }

    #[test]
    fn close_centroids_join_and_distant_ones_stay() {
        let a = [unit(&[1.0, 0.1, 0.0]), unit(&[1.0, 0.0, 0.1])];
        let b = unit(&[0.0, 1.0, 0.0]);
        let points = vec![a[0].clone(), a[1].clone(), a[0].clone(), b.clone(), b];
        // One voice split in two clusters (0 and 1), another voice (2).
        let labels = [0, 1, 0, 2, 2];
        assert_eq!(
            merge_close_centroids(&points, &labels, 0.07, 1),
            vec![0, 0, 0, 1, 1]
        );
        // Never below the speakers asked for, nor when nothing is close.
        assert_eq!(merge_close_centroids(&points, &labels, 0.07, 3), labels);
        assert_eq!(merge_close_centroids(&points, &labels, 0.001, 1), labels);
    }

    #[test]
    fn spectral_finds_the_groups() {
        let p = groups();
        let labels = spectral(&p, SpeakerCount::FREE, 8);
        for (i, l) in labels.iter().enumerate() {
            assert_eq!(*l, i % 3, "point {i}");
        }
        let two = spectral(&p, SpeakerCount { min: 2, max: 2 }, 8);
        assert_eq!(two.iter().max(), Some(&1));
    }

    #[test]
    fn jacobi_diagonalises() {
        let mut m = vec![2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 5.0];
        let (mut vals, _) = symmetric_eigen(&mut m, 3);
        vals.sort_by(f64::total_cmp);
        for (v, w) in vals.iter().zip([1.0, 3.0, 5.0]) {
            assert!((v - w).abs() < 1e-9, "{vals:?}");
        }
    }
}
