//! The Whisper network in candle: encoder, and a decoder with a self-attention KV cache and
//! cross-attention K/V computed once per audio item.
//!
//! Layout choices, all for speed:
//! - every projection is one matrix product over all rows and positions
//!   (`[rows * T, in] x [out, in]^T`); with few rows (a decoder step) on the CPU it is a
//!   memory-bound kernel that reads each weight row once for all rows (`model::ops`), since
//!   candle's GEMM would pack the whole matrix per call;
//! - q, k and v of self-attention are one fused projection, k and v of cross-attention
//!   another; the attention scale `d_head^-0.5` is folded into the q weights at load time;
//! - cross-attention K/V live once per audio item: the beam rows of an item are folded into
//!   the query dimension (`[items, heads, rows_per_item * T, d_head]`), so one GEMM per head
//!   serves every beam and nothing is copied per beam;
//! - the self-attention cache is a buffer with spare capacity, appended in place, so a step
//!   copies only the new position;
//! - softmax and GELU use vectorised CPU kernels (`model::ops`); candle's own ops elsewhere.
//!
//! Quantized precisions quantize the decoder's linear layers and the tied output projection;
//! activations stay f32. On the CPU, [`Precision::Q8_0`] uses mica's int8 kernels (block
//! scales of 32, like ggml's q8_0) and keeps the encoder f32, whose 1500-row products are
//! compute-bound and faster in the f32 GEMM. [`Precision::Q4K`] uses candle's quantized
//! matmuls for the same layers, and on a GPU both precisions use them for the encoder too.
//! candle's CPU quantized kernels are only vectorised when the build enables AVX2
//! (`-C target-cpu`), so Q4K is slow on a default CPU build.

mod attention;
mod int8;
mod ops;

pub(crate) use ops::sum_exp;

use mica_core::error::RunError;

use crate::error::MODEL;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use serde::{Deserialize, Serialize};

use crate::{AsrError, WhisperConfig};

/// Layer-norm epsilon of every Whisper checkpoint.
const LN_EPS: f32 = 1e-5;
/// The smallest self-attention cache capacity allocated, in positions.
const MIN_CACHE: usize = 32;

/// Numeric precision of the weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 weights and activations (CPU default).
    #[default]
    F32,
    /// f16 weights and activations (GPU).
    F16,
    /// bf16 weights and activations (GPU).
    BF16,
    /// 8-bit weights with a scale per 32 inputs (the q8_0 layout) for the decoder's
    /// linear layers and output projection, f32 activations: the CPU counterpart of
    /// CTranslate2's int8. The encoder stays f32 on the CPU.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 4-bit k-quantized decoder layers (candle `q4k`) where the input width is a multiple
    /// of 256, candle `q8_0` elsewhere; f32 activations.
    #[serde(rename = "q4k")]
    Q4K,
}

impl Precision {
    /// The dtype of activations and of the layers that stay dense.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F16 => DType::F16,
            Precision::BF16 => DType::BF16,
            Precision::F32 | Precision::Q8_0 | Precision::Q4K => DType::F32,
        }
    }

    /// Whether linear layers are quantized.
    pub fn is_quantized(self) -> bool {
        matches!(self, Precision::Q8_0 | Precision::Q4K)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::BF16 => "bf16",
            Precision::Q8_0 => "q8_0",
            Precision::Q4K => "q4k",
        })
    }
}

impl FromStr for Precision {
    type Err = AsrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Precision::F32),
            "f16" | "float16" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::BF16),
            "q8_0" | "q8" | "int8" => Ok(Precision::Q8_0),
            "q4k" | "q4_k" | "q4" => Ok(Precision::Q4K),
            other => Err(crate::error::invalid_option(format!(
                "unknown precision {other:?}: expected f32, f16, bf16, q8_0 or q4k"
            ))),
        }
    }
}

/// The weights of a projection `x @ w^T`.
#[derive(Debug, Clone)]
enum Proj {
    /// `[out, in]` dense weights (contiguous).
    Dense(Tensor),
    /// candle's block-quantized weights (q8_0 / q4k; the GPU path of the quantized
    /// precisions).
    Quant(QMatMul),
    /// mica's per-row int8 weights with the bias folded in (the CPU path of
    /// [`Precision::Q8_0`]).
    Int8(Arc<int8::Int8Weight>),
}

impl Proj {
    /// `x [m, in]` to `[m, out]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Proj::Dense(w) => dense_matmul(x, w),
            Proj::Quant(w) => w.forward(x),
            Proj::Int8(w) => w.matmul(x),
        }
    }
}

/// A linear layer: weights and an optional bias.
#[derive(Debug, Clone)]
struct Linear {
    w: Proj,
    b: Option<Tensor>,
}

impl Linear {
    /// `[..., in]` to `[..., out]`, as one GEMM over every leading index.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims();
        let k = dims[dims.len() - 1];
        let n: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((n, k))?;
        let y = self.w.forward(&x2)?;
        let y = match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims.to_vec();
        let last = out.len() - 1;
        out[last] = y.dim(1)?;
        y.reshape(out)
    }
}

#[derive(Debug, Clone)]
struct LayerNorm {
    w: Tensor,
    b: Tensor,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.w, &self.b, LN_EPS)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = ops::gelu(&self.fc1.forward(&self.ln.forward(x)?)?)?;
        x + self.fc2.forward(&h)?
    }
}

/// Self-attention with fused q|k|v.
#[derive(Debug, Clone)]
struct SelfAttn {
    ln: LayerNorm,
    qkv: Linear,
    out: Linear,
}

/// Cross-attention: q from the text, fused k|v from the audio.
#[derive(Debug, Clone)]
struct CrossAttn {
    ln: LayerNorm,
    q: Linear,
    kv: Linear,
    out: Linear,
}

#[derive(Debug, Clone)]
struct EncoderBlock {
    attn: SelfAttn,
    mlp: Mlp,
}

#[derive(Debug, Clone)]
struct DecoderBlock {
    attn: SelfAttn,
    cross: CrossAttn,
    mlp: Mlp,
}

/// `x [m, k] @ w [n, k]^T`.
fn dense_matmul(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.dim(0)?;
    if ops::use_small_matmul(x, w, m) {
        ops::small_matmul(x, w)
    } else {
        x.matmul(&w.t()?)
    }
}

/// `[B, T, H * dh]` to `[B, H, T, dh]`, contiguous.
fn split_heads(x: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    x.reshape((b, t, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// `[B, H, T, dh]` to `[B, T, H * dh]`.
fn merge_heads(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, t, dh) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, t, h * dh))
}

/// The loaded network. `Send + Sync`: load once, share through an `Arc`.
#[derive(Debug)]
pub struct Whisper {
    config: WhisperConfig,
    device: Device,
    precision: Precision,
    dtype: DType,
    conv1: (Tensor, Tensor),
    conv2: (Tensor, Tensor),
    enc_pos: Tensor,
    enc_blocks: Vec<EncoderBlock>,
    enc_ln: LayerNorm,
    /// `[vocab, d]` token embeddings (the dense copy, for the lookup).
    embed: Tensor,
    /// The tied output projection when quantized (`[vocab, d]`).
    embed_q: Option<Proj>,
    dec_pos: Tensor,
    dec_blocks: Vec<DecoderBlock>,
    dec_ln: LayerNorm,
    /// Alignment heads grouped by decoder layer: `(layer, [head...])`.
    align: Vec<(usize, Vec<usize>)>,
}

/// Reads tensors out of a loaded safetensors map with shape checks.
struct Weights<'a> {
    map: HashMap<String, Tensor>,
    path: &'a Path,
    device: Device,
    precision: Precision,
    /// Whether the linear layers being loaded are quantized.
    quantize: std::cell::Cell<bool>,
}

impl Weights<'_> {
    /// The tensor `name` as stored (host, file dtype), checked against `shape`.
    fn raw(&self, name: &str, shape: &[usize]) -> Result<Tensor, AsrError> {
        // A missing tensor names the file: the wrong file is the likely cause.
        let t =
            mica_core::error::weight_in(&self.map, MODEL, name, shape).map_err(|e| match e {
                e @ RunError::MissingWeight { .. } => e.in_file("tiny.en", self.path),
                e => e,
            })?;
        Ok(t.clone())
    }

    /// A dense tensor in the activation dtype on the device.
    fn dense(&self, name: &str, shape: &[usize]) -> Result<Tensor, AsrError> {
        let t = self.raw(name, shape)?;
        Ok(t.to_dtype(self.precision.dtype())?
            .to_device(&self.device)?)
    }

    fn layer_norm(&self, prefix: &str, d: usize) -> Result<LayerNorm, AsrError> {
        Ok(LayerNorm {
            w: self.dense(&format!("{prefix}.weight"), &[d])?,
            b: self.dense(&format!("{prefix}.bias"), &[d])?,
        })
    }

    /// A linear layer from host f32 `[out, in]` weights and an optional bias.
    fn linear_from(&self, w: Tensor, b: Option<Tensor>) -> Result<Linear, AsrError> {
        let dtype = self.precision.dtype();
        let b = match b {
            Some(b) => Some(b.to_dtype(dtype)?.to_device(&self.device)?),
            None => None,
        };
        if self.quantize.get() {
            if self.precision == Precision::Q8_0 && self.device.is_cpu() {
                // The int8 kernel adds the bias in its rescaling pass.
                let q = int8::Int8Weight::quantize(&w, b.as_ref())?;
                return Ok(Linear {
                    w: Proj::Int8(Arc::new(q)),
                    b: None,
                });
            }
            let w = quantize(&w, self.precision, &self.device)?;
            return Ok(Linear { w, b });
        }
        let w = w.contiguous()?.to_dtype(dtype)?.to_device(&self.device)?;
        Ok(Linear {
            w: Proj::Dense(w),
            b,
        })
    }

    fn linear(&self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear, AsrError> {
        let w = self
            .raw(&format!("{prefix}.weight"), &[out, inp])?
            .to_dtype(DType::F32)?;
        let b = if bias {
            Some(
                self.raw(&format!("{prefix}.bias"), &[out])?
                    .to_dtype(DType::F32)?,
            )
        } else {
            None
        };
        self.linear_from(w, b)
    }

    /// Fused self-attention projection `[q * scale | k | v]`, bias `[bq * scale | 0 | bv]`.
    fn self_attn(&self, prefix: &str, d: usize, heads: usize) -> Result<SelfAttn, AsrError> {
        let scale = ((d / heads) as f64).powf(-0.5);
        let f32w = |n: &str, s: &[usize]| -> Result<Tensor, AsrError> {
            Ok(self
                .raw(&format!("{prefix}.{n}"), s)?
                .to_dtype(DType::F32)?)
        };
        let wq = (f32w("q_proj.weight", &[d, d])? * scale)?;
        let wk = f32w("k_proj.weight", &[d, d])?;
        let wv = f32w("v_proj.weight", &[d, d])?;
        let bq = (f32w("q_proj.bias", &[d])? * scale)?;
        let bk = Tensor::zeros(d, DType::F32, &Device::Cpu)?;
        let bv = f32w("v_proj.bias", &[d])?;
        let qkv = self.linear_from(
            Tensor::cat(&[&wq, &wk, &wv], 0)?,
            Some(Tensor::cat(&[&bq, &bk, &bv], 0)?),
        )?;
        Ok(SelfAttn {
            ln: self.layer_norm(&format!("{prefix}_layer_norm"), d)?,
            qkv,
            out: self.linear(&format!("{prefix}.out_proj"), d, d, true)?,
        })
    }

    fn cross_attn(&self, prefix: &str, d: usize, heads: usize) -> Result<CrossAttn, AsrError> {
        let scale = ((d / heads) as f64).powf(-0.5);
        let f32w = |n: &str, s: &[usize]| -> Result<Tensor, AsrError> {
            Ok(self
                .raw(&format!("{prefix}.{n}"), s)?
                .to_dtype(DType::F32)?)
        };
        let wq = (f32w("q_proj.weight", &[d, d])? * scale)?;
        let bq = (f32w("q_proj.bias", &[d])? * scale)?;
        let wk = f32w("k_proj.weight", &[d, d])?;
        let wv = f32w("v_proj.weight", &[d, d])?;
        let bk = Tensor::zeros(d, DType::F32, &Device::Cpu)?;
        let bv = f32w("v_proj.bias", &[d])?;
        Ok(CrossAttn {
            ln: self.layer_norm(&format!("{prefix}_layer_norm"), d)?,
            q: self.linear_from(wq, Some(bq))?,
            kv: self.linear_from(
                Tensor::cat(&[&wk, &wv], 0)?,
                Some(Tensor::cat(&[&bk, &bv], 0)?),
            )?,
            out: self.linear(&format!("{prefix}.out_proj"), d, d, true)?,
        })
    }

    fn mlp(&self, prefix: &str, d: usize, ffn: usize) -> Result<Mlp, AsrError> {
        Ok(Mlp {
            ln: self.layer_norm(&format!("{prefix}.final_layer_norm"), d)?,
            fc1: self.linear(&format!("{prefix}.fc1"), ffn, d, true)?,
            fc2: self.linear(&format!("{prefix}.fc2"), d, ffn, true)?,
        })
    }
}

/// Quantizes host f32 `[out, in]` weights onto `device`: mica's int8 kernels for q8_0 on
/// the CPU, candle's quantized matmuls otherwise.
fn quantize(w: &Tensor, precision: Precision, device: &Device) -> Result<Proj, AsrError> {
    if precision == Precision::Q8_0 && device.is_cpu() {
        return Ok(Proj::Int8(Arc::new(int8::Int8Weight::quantize(w, None)?)));
    }
    let k = w.dim(1)?;
    let ty = match precision {
        Precision::Q4K if k.is_multiple_of(GgmlDType::Q4K.block_size()) => GgmlDType::Q4K,
        _ => GgmlDType::Q8_0,
    };
    if !k.is_multiple_of(ty.block_size()) {
        return Err(AsrError::Precision {
            precision: precision.to_string(),
            reason: format!(
                "a layer's input width {k} is not a multiple of {}; use f32",
                ty.block_size()
            ),
        });
    }
    let q = QTensor::quantize_onto(w, ty, device)?;
    Ok(Proj::Quant(QMatMul::from_arc(Arc::new(q))?))
}

impl Whisper {
    /// Loads `config.json` and `model.safetensors` (Hugging Face Whisper names) from `dir`.
    pub fn load(dir: &Path, device: &Device, precision: Precision) -> Result<Whisper, AsrError> {
        let config = WhisperConfig::from_file(&dir.join("config.json"))?;
        let path = dir.join("model.safetensors");
        let map =
            candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| RunError::Weights {
                model: MODEL,
                asset: "tiny.en",
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let w = Weights {
            map,
            path: &path,
            device: device.clone(),
            precision,
            // On the CPU the encoder is int8 only where the int8 kernels (AVX2, VNNI) make
            // its compute-bound 1500-row products faster than the f32 GEMM; the decoder's
            // memory-bound few-row steps gain from int8 weights everywhere.
            quantize: std::cell::Cell::new(
                precision.is_quantized() && (!device.is_cpu() || int8::fast_int8()),
            ),
        };
        let c = &config;
        let d = c.d_model;
        let dtype = precision.dtype();
        tracing::debug!(
            path = %path.display(),
            %precision,
            d_model = d,
            encoder_layers = c.encoder_layers,
            decoder_layers = c.decoder_layers,
            "loading Whisper"
        );

        let conv = |name: &str, c_in: usize| -> Result<(Tensor, Tensor), AsrError> {
            Ok((
                w.dense(&format!("model.encoder.{name}.weight"), &[d, c_in, 3])?,
                w.dense(&format!("model.encoder.{name}.bias"), &[d])?
                    .reshape((1, d, 1))?,
            ))
        };
        let conv1 = conv("conv1", c.num_mel_bins)?;
        let conv2 = conv("conv2", d)?;
        let enc_pos = w.dense(
            "model.encoder.embed_positions.weight",
            &[c.max_source_positions, d],
        )?;
        let enc_blocks = (0..c.encoder_layers)
            .map(|i| {
                let p = format!("model.encoder.layers.{i}");
                Ok(EncoderBlock {
                    attn: w.self_attn(&format!("{p}.self_attn"), d, c.encoder_attention_heads)?,
                    mlp: w.mlp(&p, d, c.encoder_ffn())?,
                })
            })
            .collect::<Result<Vec<_>, AsrError>>()?;
        let enc_ln = w.layer_norm("model.encoder.layer_norm", d)?;
        w.quantize.set(precision.is_quantized());

        let embed_raw = w.raw("model.decoder.embed_tokens.weight", &[c.vocab_size, d])?;
        let embed = embed_raw.to_dtype(dtype)?.to_device(device)?;
        let embed_q = if precision.is_quantized() {
            // The output projection is the largest matmul of a decode step.
            let e = embed_raw.to_dtype(DType::F32)?;
            Some(quantize(&e, precision, device)?)
        } else {
            None
        };
        let dec_pos = w.dense(
            "model.decoder.embed_positions.weight",
            &[c.max_target_positions, d],
        )?;
        let dec_blocks = (0..c.decoder_layers)
            .map(|i| {
                let p = format!("model.decoder.layers.{i}");
                let h = c.decoder_attention_heads;
                Ok(DecoderBlock {
                    attn: w.self_attn(&format!("{p}.self_attn"), d, h)?,
                    cross: w.cross_attn(&format!("{p}.encoder_attn"), d, h)?,
                    mlp: w.mlp(&p, d, c.decoder_ffn())?,
                })
            })
            .collect::<Result<Vec<_>, AsrError>>()?;
        let dec_ln = w.layer_norm("model.decoder.layer_norm", d)?;

        let mut align: Vec<(usize, Vec<usize>)> = Vec::new();
        for (l, h) in config.alignment_heads() {
            match align.last_mut() {
                Some((last, heads)) if *last == l => heads.push(h),
                _ => align.push((l, vec![h])),
            }
        }
        Ok(Whisper {
            config,
            device: device.clone(),
            precision,
            dtype,
            conv1,
            conv2,
            enc_pos,
            enc_blocks,
            enc_ln,
            embed,
            embed_q,
            dec_pos,
            dec_blocks,
            dec_ln,
            align,
        })
    }

    /// Whether the decoder keeps cross-attention keys transposed, for the fused CPU step
    /// kernel (f32 on the CPU).
    fn cross_k_transposed(&self) -> bool {
        self.device.is_cpu() && self.dtype == DType::F32
    }

    /// The checkpoint's configuration.
    pub fn config(&self) -> &WhisperConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The precision the weights were loaded in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Encodes a mel batch `[B, n_mels, 3000]` (f32, any device) into audio features
    /// `[B, 1500, d_model]` in the model's dtype on its device. A shorter even frame count
    /// (a reduced audio context, see `TranscribeOptions::min_audio_context`) gives as many
    /// features as half its frames.
    pub fn encode(&self, mel: &Tensor) -> Result<Tensor, AsrError> {
        let c = &self.config;
        let dims = mel.dims();
        let frames = dims.get(2).copied().unwrap_or(0);
        if dims.len() != 3
            || dims[1] != c.num_mel_bins
            || frames > 2 * c.max_source_positions
            || frames < 2
            || frames % 2 != 0
        {
            return Err(RunError::InputShape {
                what: "mel batch",
                found: dims.to_vec(),
                expected: format!(
                    "[batch, {}, {}] (or an even number of frames below that)",
                    c.num_mel_bins,
                    2 * c.max_source_positions
                ),
            }
            .into());
        }
        let _span = tracing::trace_span!("encode", batch = dims[0]).entered();
        let x = mel.to_device(&self.device)?.to_dtype(self.dtype)?;
        let x = x
            .conv1d(&self.conv1.0, 1, 1, 1, 1)?
            .broadcast_add(&self.conv1.1)?
            .apply(&ops::gelu)?;
        let x = x
            .conv1d(&self.conv2.0, 1, 2, 1, 1)?
            .broadcast_add(&self.conv2.1)?
            .apply(&ops::gelu)?;
        let positions = if frames == 2 * c.max_source_positions {
            self.enc_pos.clone()
        } else {
            self.enc_pos.narrow(0, 0, frames / 2)?
        };
        let mut x = x.transpose(1, 2)?.broadcast_add(&positions)?;
        let heads = c.encoder_attention_heads;
        for block in &self.enc_blocks {
            let a = &block.attn;
            let qkv = a.qkv.forward(&a.ln.forward(&x)?)?;
            let o = encoder_attention(&qkv, heads)?;
            x = (&x + a.out.forward(&o)?)?;
            x = block.mlp.forward(&x)?;
        }
        Ok(self.enc_ln.forward(&x)?)
    }

    /// Decoder state for `B` audio items (`features` `[B, 1500, d_model]` from
    /// [`Whisper::encode`]) with `rows_per_item` rows each (beam search: the beam size).
    ///
    /// Cross-attention K/V are computed here, once per item, and shared by the item's rows
    /// (never copied per beam). The self-attention cache starts empty.
    pub fn decoder_state(
        &self,
        features: &Tensor,
        rows_per_item: usize,
    ) -> Result<DecoderState, AsrError> {
        let c = &self.config;
        let dims = features.dims();
        if dims.len() != 3
            || dims[1] == 0
            || dims[1] > c.max_source_positions
            || dims[2] != c.d_model
        {
            return Err(RunError::InputShape {
                what: "audio features",
                found: dims.to_vec(),
                expected: format!("[batch, <= {}, {}]", c.max_source_positions, c.d_model),
            }
            .into());
        }
        if rows_per_item == 0 {
            return Err(AsrError::State("rows_per_item must be at least 1".into()));
        }
        let items = dims[0];
        let d = c.d_model;
        let heads = c.decoder_attention_heads;
        let features = features.to_device(&self.device)?.to_dtype(self.dtype)?;
        let layers = self
            .dec_blocks
            .iter()
            .map(|b| {
                let kv = b.cross.kv.forward(&features)?;
                let k = split_heads(&kv.narrow(2, 0, d)?, heads)?;
                let v = split_heads(&kv.narrow(2, d, d)?, heads)?;
                let k = if self.cross_k_transposed() {
                    k.transpose(2, 3)?.contiguous()?
                } else {
                    k
                };
                Ok(LayerState {
                    cross_k: k,
                    cross_v: v,
                    self_k: None,
                    self_v: None,
                })
            })
            .collect::<Result<Vec<_>, AsrError>>()?;
        Ok(DecoderState {
            items,
            rows_per_item,
            len: 0,
            cap: 0,
            layers,
        })
    }

    /// Feeds `tokens` `[rows, T]` (u32, the same `T` for every row; `T > 1` for the prompt
    /// prefill, 1 per step after) and appends their self-attention K/V to the cache.
    ///
    /// Returns f32 logits `[rows, T, vocab]` when `all` is set, else `[rows, vocab]` of the
    /// last position.
    pub fn decode(
        &self,
        state: &mut DecoderState,
        tokens: &Tensor,
        all: bool,
    ) -> Result<Tensor, AsrError> {
        self.decode_inner(state, tokens, all, None)
    }

    /// Cross-attention weights of the alignment heads (`config.alignment_heads`, sorted by
    /// layer then head) for the whole token sequence `tokens` of ONE item, in a fresh pass:
    /// `[n_alignment_heads, T, 1500]` f32, after softmax over all 1500 audio positions.
    ///
    /// openai's word timing takes the softmax over the first `n_frames / 2` positions only;
    /// renormalising a prefix of these rows to sum 1 gives exactly that.
    pub fn alignment_attention(
        &self,
        features: &Tensor,
        tokens: &[u32],
    ) -> Result<Tensor, AsrError> {
        Ok(self.alignment_pass(features, tokens)?.1)
    }

    /// One pass of the decoder over `tokens` of ONE item giving both what word timing
    /// needs: the f32 logits of every position `[T, vocab]` and the alignment heads'
    /// cross-attention `[n_alignment_heads, T, 1500]` ([`Self::alignment_attention`]).
    pub fn alignment_pass(
        &self,
        features: &Tensor,
        tokens: &[u32],
    ) -> Result<(Tensor, Tensor), AsrError> {
        if features.dim(0)? != 1 {
            return Err(RunError::InputShape {
                what: "alignment features",
                found: features.dims().to_vec(),
                expected: format!("[1, 1500, {}]", self.config.d_model),
            }
            .into());
        }
        if tokens.is_empty() {
            return Err(RunError::InputShape {
                what: "alignment tokens",
                found: vec![0],
                expected: "at least one token".into(),
            }
            .into());
        }
        let mut state = self.decoder_state(features, 1)?;
        let t = Tensor::from_slice(tokens, (1, tokens.len()), &self.device)?;
        let mut captured = Vec::new();
        let logits = self.decode_inner(&mut state, &t, true, Some(&mut captured))?;
        let mut rows = Vec::new();
        for (w, (_, heads)) in captured.iter().zip(&self.align) {
            // w: [1, H, T, 1500]
            for &h in heads {
                rows.push(w.i((0, h))?);
            }
        }
        let attention = Tensor::stack(&rows, 0)?.to_dtype(DType::F32)?;
        Ok((logits.i(0)?, attention))
    }

    fn decode_inner(
        &self,
        state: &mut DecoderState,
        tokens: &Tensor,
        all: bool,
        mut capture: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor, AsrError> {
        let c = &self.config;
        let (rows, t) = tokens.dims2().map_err(|_| RunError::InputShape {
            what: "tokens",
            found: tokens.dims().to_vec(),
            expected: format!("[{}, T]", state.rows()),
        })?;
        if rows != state.rows() || t == 0 {
            return Err(RunError::InputShape {
                what: "tokens",
                found: vec![rows, t],
                expected: format!("[{}, T >= 1]", state.rows()),
            }
            .into());
        }
        let offset = state.len;
        if offset + t > c.max_target_positions {
            return Err(AsrError::ContextFull {
                requested: offset + t,
                max: c.max_target_positions,
            });
        }
        let _span = tracing::trace_span!("decode", rows, t, offset).entered();
        let heads = c.decoder_attention_heads;
        let d = c.d_model;
        let tokens = tokens
            .to_device(&self.device)?
            .to_dtype(DType::U32)?
            .flatten_all()?;
        let x = self.embed.index_select(&tokens, 0)?.reshape((rows, t, d))?;
        let mut x = x.broadcast_add(&self.dec_pos.narrow(0, offset, t)?)?;
        state.reserve(offset + t, c.max_target_positions)?;
        let mask = if t > 1 {
            Some(causal_mask(t, offset, &self.device, self.dtype)?)
        } else {
            None
        };
        let (items, rpi) = (state.items, state.rows_per_item);
        let cap = state.cap;
        let mut align_idx = 0;
        for (li, (block, ls)) in self.dec_blocks.iter().zip(&mut state.layers).enumerate() {
            // Self-attention over the cache plus the new positions.
            let a = &block.attn;
            let qkv = a.qkv.forward(&a.ln.forward(&x)?)?;
            let k = split_heads(&qkv.narrow(2, d, d)?, heads)?;
            let v = split_heads(&qkv.narrow(2, 2 * d, d)?, heads)?;
            let (kbuf, vbuf) = match (&ls.self_k, &ls.self_v) {
                (Some(kb), Some(vb)) => (kb, vb),
                _ => return Err(AsrError::State("self-attention cache missing".into())),
            };
            debug_assert_eq!(kbuf.dim(2)?, cap);
            kbuf.slice_set(&k, 2, offset)?;
            vbuf.slice_set(&v, 2, offset)?;
            let o = if t == 1 && attention::applies(&qkv) {
                attention::self_attention_step(&qkv, kbuf, vbuf, offset + 1)?
            } else {
                let q = split_heads(&qkv.narrow(2, 0, d)?, heads)?;
                let keys = kbuf.narrow(2, 0, offset + t)?;
                let vals = vbuf.narrow(2, 0, offset + t)?;
                let mut s = q.matmul(&keys.t()?)?;
                if let Some(m) = &mask {
                    s = s.broadcast_add(m)?;
                }
                let p = ops::softmax_last_dim(&s)?;
                merge_heads(&p.matmul(&vals)?)?
            };
            x = (&x + a.out.forward(&o)?)?;

            // Cross-attention: the rows of an item share its K/V.
            let cr = &block.cross;
            let q = cr.q.forward(&cr.ln.forward(&x)?)?;
            let dh = d / heads;
            let capturing =
                capture.is_some() && self.align.get(align_idx).is_some_and(|(l, _)| *l == li);
            let o = if self.cross_k_transposed() && t == 1 && !capturing {
                attention::cross_attention_step(&q, &ls.cross_k, &ls.cross_v)?
            } else {
                let q = q
                    .reshape((items, rpi, t, heads, dh))?
                    .permute((0, 3, 1, 2, 4))?
                    .reshape((items, heads, rpi * t, dh))?;
                let s = if self.cross_k_transposed() {
                    q.matmul(&ls.cross_k)?
                } else {
                    q.matmul(&ls.cross_k.t()?)?
                };
                let p = ops::softmax_last_dim(&s)?;
                if capturing && let Some(cap) = capture.as_deref_mut() {
                    cap.push(p.clone());
                    align_idx += 1;
                }
                p.matmul(&ls.cross_v)?
                    .reshape((items, heads, rpi, t, dh))?
                    .permute((0, 2, 3, 1, 4))?
                    .reshape((rows, t, d))?
            };
            x = (&x + cr.out.forward(&o)?)?;

            x = block.mlp.forward(&x)?;
        }
        state.len = offset + t;
        let x = if all {
            x
        } else {
            x.narrow(1, t - 1, 1)?.contiguous()?
        };
        let x = self.dec_ln.forward(&x)?;
        let n = x.dim(1)?;
        let flat = x.reshape((rows * n, d))?;
        let logits = match &self.embed_q {
            Some(q) => q.forward(&flat)?,
            None => dense_matmul(&flat, &self.embed)?,
        };
        let logits = logits.to_dtype(DType::F32)?;
        Ok(if all {
            logits.reshape((rows, n, c.vocab_size))?
        } else {
            logits
        })
    }
}

/// `0` where key `j` may be seen by query `i` (`j <= offset + i`), `-inf` elsewhere:
/// `[t, offset + t]`.
fn causal_mask(
    t: usize,
    offset: usize,
    device: &Device,
    dtype: DType,
) -> candle_core::Result<Tensor> {
    let l = offset + t;
    let m: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..l).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(m, (t, l), device)?.to_dtype(dtype)
}

/// Scores `[B, H, 1500, 1500]` above this many elements are computed a few items at a time.
const ENC_SCORES_CHUNK: usize = 1 << 25;

/// Full (unmasked) attention of the encoder from the fused `[B, T, 3d]` projection.
fn encoder_attention(qkv: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    if attention::applies(qkv) {
        return attention::encoder_attention(qkv, heads);
    }
    let (b, t, d3) = qkv.dims3()?;
    let d = d3 / 3;
    let per_item = heads * t * t;
    let step = (ENC_SCORES_CHUNK / per_item.max(1)).clamp(1, b.max(1));
    let mut outs = Vec::with_capacity(b.div_ceil(step));
    let mut start = 0;
    while start < b {
        let n = step.min(b - start);
        let part = qkv.narrow(0, start, n)?;
        let q = split_heads(&part.narrow(2, 0, d)?, heads)?;
        let k = split_heads(&part.narrow(2, d, d)?, heads)?;
        let v = split_heads(&part.narrow(2, 2 * d, d)?, heads)?;
        let s = q.matmul(&k.t()?)?;
        let p = ops::softmax_last_dim(&s)?;
        outs.push(merge_heads(&p.matmul(&v)?)?);
        start += n;
    }
    if outs.len() == 1 {
        Ok(outs.remove(0))
    } else {
        Tensor::cat(&outs, 0)
    }
}

/// Per-layer decoder cache.
#[derive(Debug)]
struct LayerState {
    /// `[items, H, 1500, dh]`, or `[items, H, dh, 1500]` where
    /// [`Whisper::cross_k_transposed`] (the CPU step kernel's layout).
    cross_k: Tensor,
    /// `[items, H, 1500, dh]`.
    cross_v: Tensor,
    /// `[rows, H, cap, dh]`, the first `len` positions valid.
    self_k: Option<Tensor>,
    self_v: Option<Tensor>,
}

/// The decoder's cache for a batch of audio items with `rows_per_item` rows each.
///
/// Rows are item-major: rows `i * rows_per_item .. (i + 1) * rows_per_item` belong to item
/// `i`. Not `Clone`: the self-attention buffers are written in place.
#[derive(Debug)]
pub struct DecoderState {
    items: usize,
    rows_per_item: usize,
    len: usize,
    cap: usize,
    layers: Vec<LayerState>,
}

impl DecoderState {
    /// Number of decoder rows (`items * rows_per_item`).
    pub fn rows(&self) -> usize {
        self.items * self.rows_per_item
    }

    /// Rows per audio item (beam size).
    pub fn rows_per_item(&self) -> usize {
        self.rows_per_item
    }

    /// Number of audio items.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Positions cached: the position of the next token.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes room for `needed` positions (at most `max`), growing by doubling.
    fn reserve(&mut self, needed: usize, max: usize) -> Result<(), AsrError> {
        if needed <= self.cap && self.layers.iter().all(|l| l.self_k.is_some()) {
            return Ok(());
        }
        let cap = needed.max(2 * self.cap).max(MIN_CACHE).min(max).max(needed);
        let rows = self.rows();
        let len = self.len;
        for l in &mut self.layers {
            let (_, h, _, dh) = l.cross_v.dims4()?;
            let (dtype, dev) = (l.cross_v.dtype(), l.cross_v.device().clone());
            let grow = |old: &Option<Tensor>| -> candle_core::Result<Tensor> {
                let fresh = Tensor::zeros((rows, h, cap - len, dh), dtype, &dev)?;
                match old {
                    Some(o) if len > 0 => Tensor::cat(&[&o.narrow(2, 0, len)?, &fresh], 2),
                    _ => Ok(fresh),
                }
            };
            let k = grow(&l.self_k)?;
            let v = grow(&l.self_v)?;
            l.self_k = Some(k);
            l.self_v = Some(v);
        }
        self.cap = cap;
        Ok(())
    }

    /// New row `i` continues old row `src[i]` (beam search). Every row must stay within its
    /// item: `src[i] / rows_per_item == i / rows_per_item`.
    pub fn reorder(&mut self, src: &[u32]) -> Result<(), AsrError> {
        let rows = self.rows();
        if src.len() != rows {
            return Err(AsrError::State(format!(
                "reorder got {} sources for {rows} rows",
                src.len()
            )));
        }
        let mut identity = true;
        for (i, &s) in src.iter().enumerate() {
            let s = s as usize;
            if s >= rows || s / self.rows_per_item != i / self.rows_per_item {
                return Err(AsrError::State(format!(
                    "reorder: row {i} cannot continue row {s} (rows of an item are {} wide)",
                    self.rows_per_item
                )));
            }
            identity &= s == i;
        }
        if identity {
            return Ok(());
        }
        let len = self.len;
        for l in &mut self.layers {
            if let (Some(k), Some(v)) = (&l.self_k, &l.self_v) {
                let k = ops::reorder_rows(k, src, len)?;
                let v = ops::reorder_rows(v, src, len)?;
                l.self_k = Some(k);
                l.self_v = Some(v);
            }
        }
        Ok(())
    }

    /// Gives each item `rows_per_item` rows, copies of its single row (the cache of a
    /// prompt fed once, before beam search splits it into beams).
    pub fn expand_rows(&mut self, rows_per_item: usize) -> Result<(), AsrError> {
        if self.rows_per_item != 1 || rows_per_item == 0 {
            return Err(AsrError::State(format!(
                "expand_rows: {} rows per item to {rows_per_item}; only 1 row expands",
                self.rows_per_item
            )));
        }
        if rows_per_item == 1 {
            return Ok(());
        }
        let src: Vec<u32> = (0..self.items as u32)
            .flat_map(|i| std::iter::repeat_n(i, rows_per_item))
            .collect();
        self.select_rows(&src)?;
        self.rows_per_item = rows_per_item;
        Ok(())
    }

    /// Keeps only the items `keep` (indices into the current items, in the order given:
    /// drops finished items from a batch), their rows and cross K/V.
    pub fn keep_items(&mut self, keep: &[usize]) -> Result<(), AsrError> {
        let mut seen = vec![false; self.items];
        for &i in keep {
            if i >= self.items || std::mem::replace(&mut seen[i], true) {
                return Err(AsrError::State(format!(
                    "keep_items: item {i} is out of range (0..{}) or repeated",
                    self.items
                )));
            }
        }
        if keep.len() == self.items && keep.iter().enumerate().all(|(a, &b)| a == b) {
            return Ok(());
        }
        let rpi = self.rows_per_item;
        let rows: Vec<u32> = keep
            .iter()
            .flat_map(|&i| (i * rpi..(i + 1) * rpi).map(|r| r as u32))
            .collect();
        let items: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
        if keep.is_empty() {
            self.items = 0;
            for l in &mut self.layers {
                l.cross_k = l.cross_k.narrow(0, 0, 0)?;
                l.cross_v = l.cross_v.narrow(0, 0, 0)?;
                l.self_k = None;
                l.self_v = None;
            }
            self.cap = 0;
            return Ok(());
        }
        let dev = self.layers[0].cross_k.device().clone();
        let idx = Tensor::from_vec(items, keep.len(), &dev)?;
        for l in &mut self.layers {
            l.cross_k = l.cross_k.index_select(&idx, 0)?;
            l.cross_v = l.cross_v.index_select(&idx, 0)?;
        }
        self.select_rows(&rows)?;
        self.items = keep.len();
        Ok(())
    }

    /// Replaces the self-attention caches by their rows `src`.
    fn select_rows(&mut self, src: &[u32]) -> Result<(), AsrError> {
        let Some(first) = self.layers.first() else {
            return Ok(());
        };
        let dev = first.cross_k.device().clone();
        let idx = Tensor::from_slice(src, src.len(), &dev)?;
        for l in &mut self.layers {
            if let (Some(k), Some(v)) = (&l.self_k, &l.self_v) {
                let k = k.index_select(&idx, 0)?;
                let v = v.index_select(&idx, 0)?;
                l.self_k = Some(k);
                l.self_v = Some(v);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_parses_and_prints() {
        for p in [
            Precision::F32,
            Precision::F16,
            Precision::BF16,
            Precision::Q8_0,
            Precision::Q4K,
        ] {
            assert_eq!(p.to_string().parse::<Precision>().ok(), Some(p));
        }
        assert!("int4".parse::<Precision>().is_err());
    }

    #[test]
    fn mask_is_causal_with_offset() -> candle_core::Result<()> {
        let m = causal_mask(2, 3, &Device::Cpu, DType::F32)?.to_vec2::<f32>()?;
        assert_eq!(m[0][..4], [0.0; 4]);
        assert!(m[0][4].is_infinite());
        assert_eq!(m[1], vec![0.0; 5]);
        Ok(())
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn model_is_send_sync() {
        assert_send_sync::<Whisper>();
        assert_send_sync::<DecoderState>();
    }
}
