//! CTranslate2 Whisper (`WhisperSpec`, binary version 6) to the Hugging Face
//! `WhisperForConditionalGeneration` layout.
//!
//! The container is little-endian: `u32` version; string spec name; `u32` spec revision;
//! `u32` variable count; per variable a string name, `u8` rank, `u32` dims, `u8` dtype
//! (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16), `u32` byte count and the raw bytes; then a
//! `u32` alias count and (alias, target) string pairs. A string is a `u16` length and that
//! many bytes, the last one NUL.
//!
//! CTranslate2 fuses the attention projections (self-attention q|k|v, cross-attention
//! k|v) and gives the key projection a zero bias that Hugging Face does not have; the
//! fused tensors are split by rows and the key bias dropped after checking it is zero.
//! Quantized weights (`int8`/`int16` with a `weight_scale`) are dequantized to f32; every
//! other tensor keeps its stored dtype.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use safetensors::Dtype;
use serde_json::{Map, Value, json};

use super::tensor::{ByteReader, OutTensor, TensorSet, dtype_size, float_values, numel};
use super::{ConvertError, read_file};

/// The only binary version whose layout is described above.
const BINARY_VERSION: u32 = 6;
const SPEC_NAME: &str = "WhisperSpec";
/// No CTranslate2 tensor has more dimensions; a larger rank means a damaged file.
const MAX_RANK: u8 = 8;

/// Scalars and flags that configure CTranslate2's runtime and have no Hugging Face weight.
const RUNTIME_SCALARS: &[&str] = &[
    "encoder/num_heads",
    "decoder/num_heads",
    "decoder/activation",
    "decoder/alibi",
    "decoder/alignment_heads",
    "decoder/alignment_layer",
    "decoder/pre_norm",
    "decoder/scale_embeddings",
    "decoder/start_from_zero_embedding",
];

/// One stored variable, borrowing its bytes from the file.
#[derive(Debug, Clone)]
struct Var<'a> {
    dims: Vec<usize>,
    dtype: Dtype,
    data: &'a [u8],
}

impl Var<'_> {
    fn scalar_int(&self) -> Option<i64> {
        if numel(&self.dims) != Some(1) {
            return None;
        }
        let d = self.data;
        Some(match self.dtype {
            Dtype::I8 => i64::from(*d.first()? as i8),
            Dtype::I16 => i64::from(i16::from_le_bytes([*d.first()?, *d.get(1)?])),
            Dtype::I32 => i64::from(i32::from_le_bytes(d.get(..4)?.try_into().ok()?)),
            _ => return None,
        })
    }
}

/// A parsed `model.bin`.
struct Model<'a> {
    revision: u32,
    vars: BTreeMap<String, Var<'a>>,
    aliases: BTreeMap<String, String>,
}

fn read_string(r: &mut ByteReader<'_>, path: &Path, what: &str) -> Result<String, ConvertError> {
    let len = r.u16(what)? as usize;
    let at = r.position();
    let bytes = r.bytes(len, what)?;
    let Some((&0, text)) = bytes.split_last() else {
        return Err(ConvertError::malformed(
            path,
            format!("{what} at offset {at} is not NUL-terminated"),
        ));
    };
    String::from_utf8(text.to_vec())
        .map_err(|_| ConvertError::malformed(path, format!("{what} at offset {at} is not UTF-8")))
}

fn dtype_of(code: u8) -> Option<Dtype> {
    Some(match code {
        0 => Dtype::F32,
        1 => Dtype::I8,
        2 => Dtype::I16,
        3 => Dtype::I32,
        4 => Dtype::F16,
        5 => Dtype::BF16,
        _ => return None,
    })
}

fn parse<'a>(path: &'a Path, bytes: &'a [u8]) -> Result<Model<'a>, ConvertError> {
    let mut r = ByteReader::new(path, bytes);
    let version = r.u32("binary version")?;
    if version != BINARY_VERSION {
        return Err(ConvertError::UnsupportedVersion {
            path: path.to_path_buf(),
            format: "CTranslate2 model.bin",
            found: version,
            supported: BINARY_VERSION.to_string(),
        });
    }
    let spec = read_string(&mut r, path, "spec name")?;
    if spec != SPEC_NAME {
        return Err(ConvertError::malformed(
            path,
            format!("spec {spec:?} is not a Whisper model ({SPEC_NAME})"),
        ));
    }
    let revision = r.u32("spec revision")?;
    let count = r.u32("variable count")?;
    let mut vars = BTreeMap::new();
    for i in 0..count {
        let name = read_string(&mut r, path, &format!("name of variable {i}"))?;
        let rank = r.u8(&format!("rank of {name}"))?;
        if rank > MAX_RANK {
            return Err(ConvertError::malformed(
                path,
                format!("{name}: rank {rank} exceeds {MAX_RANK}"),
            ));
        }
        let mut dims = Vec::with_capacity(usize::from(rank));
        for _ in 0..rank {
            dims.push(r.u32(&format!("dims of {name}"))? as usize);
        }
        let code = r.u8(&format!("dtype of {name}"))?;
        let dtype = dtype_of(code).ok_or_else(|| ConvertError::UnsupportedDtype {
            path: path.to_path_buf(),
            tensor: name.clone(),
            dtype: format!("CTranslate2 type code {code}"),
        })?;
        let byte_count = r.u32(&format!("byte count of {name}"))? as usize;
        let expected = numel(&dims).and_then(|n| n.checked_mul(dtype_size(dtype)));
        if expected != Some(byte_count) {
            return Err(ConvertError::malformed(
                path,
                format!("{name}: {byte_count} bytes do not hold shape {dims:?} of {dtype:?}"),
            ));
        }
        let data = r.bytes(byte_count, &format!("data of {name}"))?;
        if vars
            .insert(name.clone(), Var { dims, dtype, data })
            .is_some()
        {
            return Err(ConvertError::malformed(
                path,
                format!("variable {name} stored twice"),
            ));
        }
    }
    let alias_count = r.u32("alias count")?;
    let mut aliases = BTreeMap::new();
    for i in 0..alias_count {
        let alias = read_string(&mut r, path, &format!("alias {i}"))?;
        let target = read_string(&mut r, path, &format!("target of alias {alias}"))?;
        if !vars.contains_key(&target) {
            return Err(ConvertError::malformed(
                path,
                format!("alias {alias} points to missing variable {target}"),
            ));
        }
        aliases.insert(alias, target);
    }
    if r.remaining() != 0 {
        // Extra bytes mean a wrong concatenation of split parts, not a newer format.
        return Err(ConvertError::malformed(
            path,
            format!(
                "{} unexpected bytes after the alias table at offset {}",
                r.remaining(),
                r.position()
            ),
        ));
    }
    Ok(Model {
        revision,
        vars,
        aliases,
    })
}

/// Builds the Hugging Face tensors, taking each CTranslate2 variable exactly once.
struct Mapper<'m, 'a> {
    path: &'m Path,
    model: &'m Model<'a>,
    used: BTreeSet<String>,
    out: TensorSet,
}

impl<'a> Mapper<'_, 'a> {
    fn var(&mut self, name: &str) -> Result<&Var<'a>, ConvertError> {
        let var = self
            .model
            .vars
            .get(name)
            .ok_or_else(|| ConvertError::Mapping {
                path: self.path.to_path_buf(),
                name: name.to_string(),
                reason: "missing from model.bin".into(),
            })?;
        self.used.insert(name.to_string());
        Ok(var)
    }

    /// A weight as stored, or dequantized when CTranslate2 stored it with a scale.
    fn weight(&mut self, name: &str) -> Result<OutTensor, ConvertError> {
        let var = self.var(name)?.clone();
        let scale_name = format!("{name}_scale");
        if !self.model.vars.contains_key(&scale_name) {
            if matches!(var.dtype, Dtype::I8 | Dtype::I16 | Dtype::I32) {
                return Err(self.mapping_error(name, "integer weight without a scale"));
            }
            return Ok(OutTensor {
                dtype: var.dtype,
                shape: var.dims.clone(),
                data: var.data.to_vec(),
            });
        }
        let scale = self.var(&scale_name)?.clone();
        let scales = float_values(scale.dtype, scale.data)
            .ok_or_else(|| self.mapping_error(&scale_name, "scale is not a float tensor"))?;
        let values: Vec<f32> = match var.dtype {
            Dtype::I8 => var.data.iter().map(|&b| f32::from(b as i8)).collect(),
            Dtype::I16 => var
                .data
                .chunks_exact(2)
                .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])))
                .collect(),
            _ => return Err(self.mapping_error(name, "scaled weight is not int8 or int16")),
        };
        let rows = var.dims.first().copied().unwrap_or(1);
        let per_row = if scales.len() == 1 {
            false
        } else if scales.len() == rows && rows > 0 {
            true
        } else {
            return Err(self.mapping_error(
                &scale_name,
                &format!("{} scales for {rows} rows", scales.len()),
            ));
        };
        let cols = values.len().checked_div(rows).unwrap_or(0).max(1);
        // CTranslate2 stores round(w * scale); w = q / scale.
        let dequant: Vec<f32> = values
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let s = if per_row { scales[i / cols] } else { scales[0] };
                if s == 0.0 { 0.0 } else { q / s }
            })
            .collect();
        tracing::debug!(name, "dequantized CTranslate2 weight to f32");
        Ok(OutTensor::from_f32(var.dims, &dequant))
    }

    fn mapping_error(&self, name: &str, reason: &str) -> ConvertError {
        ConvertError::Mapping {
            path: self.path.to_path_buf(),
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }

    fn put(&mut self, name: String, tensor: OutTensor) -> Result<(), ConvertError> {
        self.out.insert(self.path, name, tensor)
    }

    fn copy(&mut self, ct2: &str, hf: &str) -> Result<(), ConvertError> {
        let t = self.weight(ct2)?;
        self.put(hf.to_string(), t)
    }

    fn layer_norm(&mut self, ct2: &str, hf: &str) -> Result<(), ConvertError> {
        self.copy(&format!("{ct2}/gamma"), &format!("{hf}.weight"))?;
        self.copy(&format!("{ct2}/beta"), &format!("{hf}.bias"))
    }

    fn linear(&mut self, ct2: &str, hf: &str) -> Result<(), ConvertError> {
        self.copy(&format!("{ct2}/weight"), &format!("{hf}.weight"))?;
        self.copy(&format!("{ct2}/bias"), &format!("{hf}.bias"))
    }

    /// Splits a fused linear layer by rows into `parts`; a part named `k_proj` loses its
    /// bias (Hugging Face has none) once the bias is checked to be zero.
    fn fused(&mut self, ct2: &str, parts: &[&str]) -> Result<(), ConvertError> {
        let weight_name = format!("{ct2}/weight");
        let bias_name = format!("{ct2}/bias");
        let weight = self.weight(&weight_name)?;
        let bias = self.weight(&bias_name)?;
        let n = parts.len();
        let rows = weight.shape.first().copied().unwrap_or(0);
        if weight.shape.len() != 2 || rows % n != 0 || bias.shape != [rows] {
            return Err(self.mapping_error(
                &weight_name,
                &format!(
                    "fused weight {:?} / bias {:?} do not split into {n} equal parts",
                    weight.shape, bias.shape
                ),
            ));
        }
        let part_rows = rows / n;
        let w_chunk = weight.data.len() / n;
        let b_chunk = bias.data.len() / n;
        for (i, part) in parts.iter().enumerate() {
            let mut shape = weight.shape.clone();
            shape[0] = part_rows;
            self.put(
                format!("{part}.weight"),
                OutTensor {
                    dtype: weight.dtype,
                    shape,
                    data: weight.data[i * w_chunk..(i + 1) * w_chunk].to_vec(),
                },
            )?;
            let b = &bias.data[i * b_chunk..(i + 1) * b_chunk];
            if part.ends_with(".k_proj") {
                let values = float_values(bias.dtype, b)
                    .ok_or_else(|| self.mapping_error(&bias_name, "bias is not a float tensor"))?;
                if let Some(v) = values.iter().find(|v| **v != 0.0) {
                    return Err(self.mapping_error(
                        &bias_name,
                        &format!(
                            "key-projection bias is non-zero ({v}); the Hugging Face layout has no k_proj bias"
                        ),
                    ));
                }
                continue;
            }
            self.put(
                format!("{part}.bias"),
                OutTensor {
                    dtype: bias.dtype,
                    shape: vec![part_rows],
                    data: b.to_vec(),
                },
            )?;
        }
        Ok(())
    }

    /// One layer's self-attention block: the fused q/k/v projection, the output
    /// projection and its layer norm (`c` is the CTranslate2 layer, `h` the Hugging Face one).
    fn self_attention(&mut self, c: &str, h: &str) -> Result<(), ConvertError> {
        self.fused(
            &format!("{c}/self_attention/linear_0"),
            &[
                &format!("{h}.self_attn.q_proj"),
                &format!("{h}.self_attn.k_proj"),
                &format!("{h}.self_attn.v_proj"),
            ],
        )?;
        self.linear(
            &format!("{c}/self_attention/linear_1"),
            &format!("{h}.self_attn.out_proj"),
        )?;
        self.layer_norm(
            &format!("{c}/self_attention/layer_norm"),
            &format!("{h}.self_attn_layer_norm"),
        )
    }

    /// One layer's feed-forward block: `fc1`, `fc2` and the final layer norm.
    fn ffn(&mut self, c: &str, h: &str) -> Result<(), ConvertError> {
        self.linear(&format!("{c}/ffn/linear_0"), &format!("{h}.fc1"))?;
        self.linear(&format!("{c}/ffn/linear_1"), &format!("{h}.fc2"))?;
        self.layer_norm(
            &format!("{c}/ffn/layer_norm"),
            &format!("{h}.final_layer_norm"),
        )
    }

    fn num_layers(&self, side: &str) -> Result<usize, ConvertError> {
        let prefix = format!("{side}/layer_");
        let indices: BTreeSet<usize> = self
            .model
            .vars
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|rest| rest.split('/').next()?.parse().ok())
            .collect();
        let n = indices.len();
        if indices.iter().copied().ne(0..n) {
            return Err(ConvertError::malformed(
                self.path,
                format!("{side} layers are not numbered 0..{n}: {indices:?}"),
            ));
        }
        Ok(n)
    }

    fn dims(&self, name: &str) -> Result<Vec<usize>, ConvertError> {
        self.model
            .vars
            .get(name)
            .map(|v| v.dims.clone())
            .ok_or_else(|| self.mapping_error(name, "missing from model.bin"))
    }

    fn heads(&mut self, side: &str, d_model: usize) -> Result<usize, ConvertError> {
        let name = format!("{side}/num_heads");
        match self.model.vars.get(&name) {
            Some(v) => {
                let heads = v
                    .scalar_int()
                    .filter(|h| *h > 0)
                    .ok_or_else(|| self.mapping_error(&name, "not a positive integer scalar"))?;
                Ok(heads as usize)
            }
            None => {
                // Older revisions did not store it; every Whisper size uses 64-wide heads.
                tracing::warn!(side, "model.bin has no num_heads; assuming 64-wide heads");
                Ok(d_model / 64)
            }
        }
    }
}

/// What the Hugging Face config needs from the weights.
struct Shapes {
    d_model: usize,
    encoder_layers: usize,
    decoder_layers: usize,
    encoder_heads: usize,
    decoder_heads: usize,
    encoder_ffn: usize,
    decoder_ffn: usize,
    num_mel_bins: usize,
    max_source_positions: usize,
    max_target_positions: usize,
    vocab_size: usize,
    /// Hugging Face's name for the stored float type.
    torch_dtype: &'static str,
}

fn map_weights(path: &Path, model: &Model<'_>) -> Result<(TensorSet, Shapes), ConvertError> {
    let mut m = Mapper {
        path,
        model,
        used: BTreeSet::new(),
        out: TensorSet::default(),
    };
    let conv1 = m.dims("encoder/conv1/weight")?;
    let (d_model, num_mel_bins) = match conv1.as_slice() {
        [d, mels, 3] => (*d, *mels),
        other => {
            return Err(m.mapping_error(
                "encoder/conv1/weight",
                &format!("shape {other:?} is not [d_model, n_mels, 3]"),
            ));
        }
    };
    let encoder_layers = m.num_layers("encoder")?;
    let decoder_layers = m.num_layers("decoder")?;
    let enc_pos = m.dims("encoder/position_encodings/encodings")?;
    let dec_pos = m.dims("decoder/position_encodings/encodings")?;
    let embed = m.dims("decoder/embeddings/weight")?;
    let encoder_ffn = m.dims("encoder/layer_0/ffn/linear_0/weight")?;
    let decoder_ffn = m.dims("decoder/layer_0/ffn/linear_0/weight")?;
    let shapes = Shapes {
        d_model,
        encoder_layers,
        decoder_layers,
        encoder_heads: m.heads("encoder", d_model)?,
        decoder_heads: m.heads("decoder", d_model)?,
        encoder_ffn: encoder_ffn.first().copied().unwrap_or(0),
        decoder_ffn: decoder_ffn.first().copied().unwrap_or(0),
        num_mel_bins,
        max_source_positions: enc_pos.first().copied().unwrap_or(0),
        max_target_positions: dec_pos.first().copied().unwrap_or(0),
        vocab_size: embed.first().copied().unwrap_or(0),
        torch_dtype: match model.vars.get("decoder/embeddings/weight").map(|v| v.dtype) {
            Some(Dtype::F32) => "float32",
            Some(Dtype::BF16) => "bfloat16",
            _ => "float16",
        },
    };

    m.linear("encoder/conv1", "model.encoder.conv1")?;
    m.linear("encoder/conv2", "model.encoder.conv2")?;
    m.copy(
        "encoder/position_encodings/encodings",
        "model.encoder.embed_positions.weight",
    )?;
    m.layer_norm("encoder/layer_norm", "model.encoder.layer_norm")?;
    for i in 0..encoder_layers {
        let (c, h) = (
            format!("encoder/layer_{i}"),
            format!("model.encoder.layers.{i}"),
        );
        m.self_attention(&c, &h)?;
        m.ffn(&c, &h)?;
    }

    m.copy(
        "decoder/embeddings/weight",
        "model.decoder.embed_tokens.weight",
    )?;
    m.copy(
        "decoder/position_encodings/encodings",
        "model.decoder.embed_positions.weight",
    )?;
    m.layer_norm("decoder/layer_norm", "model.decoder.layer_norm")?;
    for i in 0..decoder_layers {
        let (c, h) = (
            format!("decoder/layer_{i}"),
            format!("model.decoder.layers.{i}"),
        );
        m.self_attention(&c, &h)?;
        m.linear(
            &format!("{c}/attention/linear_0"),
            &format!("{h}.encoder_attn.q_proj"),
        )?;
        m.fused(
            &format!("{c}/attention/linear_1"),
            &[
                &format!("{h}.encoder_attn.k_proj"),
                &format!("{h}.encoder_attn.v_proj"),
            ],
        )?;
        m.linear(
            &format!("{c}/attention/linear_2"),
            &format!("{h}.encoder_attn.out_proj"),
        )?;
        m.layer_norm(
            &format!("{c}/attention/layer_norm"),
            &format!("{h}.encoder_attn_layer_norm"),
        )?;
        m.ffn(&c, &h)?;
    }

    // proj_out is tied to embed_tokens in Hugging Face Whisper; CTranslate2 normally
    // stores it as an alias. A stored copy must equal the embeddings, else it is kept.
    let projection = "decoder/projection/weight";
    if !model.aliases.contains_key(projection) && model.vars.contains_key(projection) {
        let proj = m.weight(projection)?;
        let tied = model
            .vars
            .get("decoder/embeddings/weight")
            .is_some_and(|e| e.data == proj.data.as_slice());
        if !tied {
            m.put("proj_out.weight".into(), proj)?;
        }
    }
    if let Some(target) = model.aliases.get(projection)
        && target != "decoder/embeddings/weight"
    {
        return Err(m.mapping_error(
            projection,
            &format!("aliases {target}, not the token embeddings"),
        ));
    }
    if let Some(bias) = model.vars.get("decoder/projection/bias") {
        if float_values(bias.dtype, bias.data).is_some_and(|v| v.iter().any(|x| *x != 0.0)) {
            return Err(m.mapping_error(
                "decoder/projection/bias",
                "output projection has a non-zero bias; Hugging Face Whisper has none",
            ));
        }
        m.used.insert("decoder/projection/bias".into());
    }

    let left: Vec<&String> = model
        .vars
        .keys()
        .filter(|k| !m.used.contains(*k) && !RUNTIME_SCALARS.contains(&k.as_str()))
        .collect();
    if let Some(first) = left.first() {
        return Err(m.mapping_error(
            first,
            &format!(
                "no place in the Hugging Face layout for {} variable(s): {}",
                left.len(),
                left.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    check_flag(path, model, "decoder/scale_embeddings", 0)?;
    check_flag(path, model, "decoder/pre_norm", 1)?;
    Ok((m.out, shapes))
}

/// Fails when a CTranslate2 runtime flag asks for a behaviour Whisper does not have.
fn check_flag(path: &Path, model: &Model<'_>, name: &str, want: i64) -> Result<(), ConvertError> {
    match model.vars.get(name).map(|v| v.scalar_int()) {
        None => Ok(()),
        Some(Some(v)) if v == want => Ok(()),
        Some(v) => Err(ConvertError::Mapping {
            path: path.to_path_buf(),
            name: name.to_string(),
            reason: format!("is {v:?}, Whisper needs {want}"),
        }),
    }
}

/// Token ids from `tokenizer.json` (added tokens first, then the BPE vocabulary).
fn token_id(tokenizer: &Value, token: &str) -> Option<u64> {
    let added = tokenizer
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|t| t.get("content").and_then(Value::as_str) == Some(token))
        .and_then(|t| t.get("id"))
        .and_then(Value::as_u64);
    added.or_else(|| tokenizer.pointer("/model/vocab")?.get(token)?.as_u64())
}

fn read_json(path: &Path) -> Result<Value, ConvertError> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).map_err(|source| ConvertError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn hf_config(
    shapes: &Shapes,
    ct2_config: &Map<String, Value>,
    tokenizer: &Value,
    tokenizer_path: &Path,
) -> Result<Value, ConvertError> {
    let id = |token: &str| {
        token_id(tokenizer, token).ok_or_else(|| ConvertError::MissingInput {
            dir: tokenizer_path.to_path_buf(),
            what: format!("special token {token}"),
        })
    };
    let eot = id("<|endoftext|>")?;
    let sot = id("<|startoftranscript|>")?;
    let list = |key: &str| ct2_config.get(key).cloned().unwrap_or_else(|| json!([]));
    let mut config = json!({
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "activation_function": "gelu",
        "d_model": shapes.d_model,
        "encoder_layers": shapes.encoder_layers,
        "decoder_layers": shapes.decoder_layers,
        "num_hidden_layers": shapes.encoder_layers,
        "encoder_attention_heads": shapes.encoder_heads,
        "decoder_attention_heads": shapes.decoder_heads,
        "encoder_ffn_dim": shapes.encoder_ffn,
        "decoder_ffn_dim": shapes.decoder_ffn,
        "num_mel_bins": shapes.num_mel_bins,
        "max_source_positions": shapes.max_source_positions,
        "max_target_positions": shapes.max_target_positions,
        "max_length": shapes.max_target_positions,
        "vocab_size": shapes.vocab_size,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": sot,
        "scale_embedding": false,
        "tie_word_embeddings": true,
        "is_encoder_decoder": true,
        "use_cache": true,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "init_std": 0.02,
        "torch_dtype": shapes.torch_dtype,
        "suppress_tokens": list("suppress_ids"),
        "begin_suppress_tokens": list("suppress_ids_begin"),
    });
    if let Some(obj) = config.as_object_mut() {
        for key in [
            "alignment_heads",
            "lang_ids",
            "suppress_ids",
            "suppress_ids_begin",
        ] {
            obj.insert(key.to_string(), list(key));
        }
    }
    Ok(config)
}

/// Converts `input/{model.bin,config.json,tokenizer.json}` into `output`.
pub(super) fn convert(input: &Path, output: &Path) -> Result<(), ConvertError> {
    let dir = if input.is_file() {
        input.parent().unwrap_or(Path::new("."))
    } else {
        input
    };
    let model_path = dir.join("model.bin");
    let tokenizer_path = dir.join("tokenizer.json");
    let config_path = dir.join("config.json");
    for (path, what) in [
        (&model_path, "CTranslate2 model.bin"),
        (&tokenizer_path, "tokenizer.json"),
    ] {
        if !path.is_file() {
            return Err(ConvertError::MissingInput {
                dir: dir.to_path_buf(),
                what: what.to_string(),
            });
        }
    }
    let bytes = read_file(&model_path)?;
    let model = parse(&model_path, &bytes)?;
    tracing::debug!(
        revision = model.revision,
        variables = model.vars.len(),
        aliases = model.aliases.len(),
        "parsed CTranslate2 model.bin"
    );
    let (tensors, shapes) = map_weights(&model_path, &model)?;

    let ct2_config = if config_path.is_file() {
        match read_json(&config_path)? {
            Value::Object(map) => map,
            _ => {
                return Err(ConvertError::malformed(&config_path, "not a JSON object"));
            }
        }
    } else {
        tracing::warn!(dir = %dir.display(), "no CTranslate2 config.json; suppress lists left empty");
        Map::new()
    };
    let tokenizer = read_json(&tokenizer_path)?;
    let config = hf_config(&shapes, &ct2_config, &tokenizer, &tokenizer_path)?;

    tensors.write(
        output,
        &model_path,
        "ct2-whisper",
        &[("mica.ct2_revision", model.revision.to_string())],
    )?;
    let out_config = output.join("config.json");
    let text = serde_json::to_string_pretty(&config).map_err(|source| ConvertError::Json {
        path: out_config.clone(),
        source,
    })?;
    std::fs::write(&out_config, text).map_err(|e| ConvertError::io(&out_config, e))?;
    let out_tokenizer = output.join("tokenizer.json");
    std::fs::copy(&tokenizer_path, &out_tokenizer)
        .map_err(|e| ConvertError::io(&out_tokenizer, e))?;
    tracing::info!(
        d_model = shapes.d_model,
        encoder_layers = shapes.encoder_layers,
        decoder_layers = shapes.decoder_layers,
        vocab = shapes.vocab_size,
        tensors = tensors.len(),
        "converted CTranslate2 Whisper"
    );
    Ok(())
}
