//! `bertlu embed`: one vector a text line, from any bertlu model with a backbone.

use anyhow::{bail, Context, Result};
use bertlu::infer::embed::{EmbedPooling, Embedder};
use bertlu::store::atomic::write_via_tmp;
use bertlu::text::labelled::split_line;
use bertlu::text::reader::Lines;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Model directory: pre-trained (`pretrain`, `import-hf`) or fine-tuned.
    #[arg(long)]
    pub model: PathBuf,
    /// Text file (.txt or .txt.gz), one text a line (`a<TAB>b` is a pair; label words are ignored).
    #[arg(long)]
    pub data: PathBuf,
    /// Output, in input order: JSON lines (one array of floats a text), or with a `.npy` name a
    /// NumPy float32 array `[texts, dim]`.
    #[arg(long)]
    pub out: PathBuf,
    /// How a text's position states become one vector: `cls`, `mean`, `max`, or `pooler` (BERT's
    /// dense + tanh on the pooled vector: HuggingFace's pooler_output) (default: mean).
    #[arg(long, value_enum, default_value_t = EmbedPooling::Mean)]
    pub pooling: EmbedPooling,
    /// Scale every vector to unit length (cosine similarity is then a dot product).
    #[arg(long)]
    pub normalize: bool,
    /// Texts a pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[command(flatten)]
    pub prediction: super::PredictionOptions,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Texts embedded between two progress updates (sorted by length within, as `predict` does).
const CHUNK: usize = 256;

/// Runs `embed`.
pub fn run(a: EmbedArgs) -> Result<()> {
    let embedder = Embedder::open(&a.model)?.with_precision(a.prediction.checked("embed")).with_max_len(a.prediction.max_len)?;
    if a.pooling == EmbedPooling::Pooler && !embedder.has_pooler() {
        bail!("{}: --pooling pooler: the model has no pooler (a pre-trained model without a next-sentence head, or a label-attention classifier)", a.model.display());
    }
    let mut texts = Vec::new();
    for line in Lines::open(&a.data)? {
        let line = line?;
        let (text, _) = split_line(&line.text).map_err(|e| anyhow::anyhow!("{}:{}: {e}", a.data.display(), line.number))?;
        if text.is_empty() {
            bail!("{}:{}: empty text", a.data.display(), line.number);
        }
        texts.push(text);
    }
    let mut progress = bertlu::train::progress::Progress::new(texts.len().div_ceil(CHUNK) as u64, "embed", a.quiet);
    let mut vectors = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(CHUNK) {
        vectors.extend(embedder.embed(chunk, a.pooling, a.normalize, a.batch_size));
        progress.inc();
    }
    progress.finish();
    let npy = a.out.extension().is_some_and(|e| e == "npy");
    write_via_tmp(&a.out, |tmp| {
        let mut f = std::io::BufWriter::new(std::fs::File::create(tmp)?);
        if npy {
            write_npy(&mut f, &vectors, embedder.dim())?;
        } else {
            for v in &vectors {
                serde_json::to_writer(&mut f, v)?;
                f.write_all(b"\n")?;
            }
        }
        f.flush()?;
        Ok(())
    })
    .with_context(|| format!("{}", a.out.display()))?;
    println!("{} vectors of dimension {} written to {}", vectors.len(), embedder.dim(), a.out.display());
    Ok(())
}

/// Writes `[rows, dim]` float32 values in NumPy's `.npy` format (version 1.0, little-endian, C order).
fn write_npy(out: &mut impl Write, rows: &[Vec<f32>], dim: usize) -> std::io::Result<()> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {dim}), }}", rows.len());
    // magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64, ending in a newline
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - 10 - header.len() - 1));
    header.push('\n');
    out.write_all(b"\x93NUMPY\x01\x00")?;
    out.write_all(&(header.len() as u16).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    for v in rows {
        for x in v {
            out.write_all(&x.to_le_bytes())?;
        }
    }
    Ok(())
}
