//! Padding sequences into tensors, and length-bucketed batch order.

use crate::data::mlm::MlmExample;
use crate::text::tokenizer::SpecialIds;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::seq::SliceRandom;
use rand::Rng;

/// Token ids padded to the longest sequence of the batch.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// Ids, `[batch, seq]`.
    pub ids: Tensor<2, Int>,
    /// True at padding positions, `[batch, seq]`.
    pub pad_mask: Tensor<2, Bool>,
    /// Segment of each position, `[batch, seq]`: 0 up to the first [SEP], 1 after it (the B side
    /// of a pair `[CLS] A [SEP] B [SEP]`). `None` when no sequence of the batch is a pair: all 0.
    pub segments: Option<Tensor<2, Int>>,
}

/// Segment ids of one sequence: 0 through the first [SEP] (id `sep`), 1 after it. Derived from
/// the ids so that every producer of sequences (chunks, pairs, classification inputs) gets them
/// for free.
pub fn segment_ids(seq: &[u32], sep: u32) -> Vec<u8> {
    let split = seq.iter().position(|&t| t == sep).map_or(seq.len(), |p| p + 1);
    (0..seq.len()).map(|j| u8::from(j >= split)).collect()
}

/// Whether a sequence is a pair: something follows its first [SEP].
pub fn is_pair(seq: &[u32], sep: u32) -> bool {
    seq.iter().position(|&t| t == sep).is_some_and(|p| p + 1 < seq.len())
}

impl TokenBatch {
    /// Pads `seqs` with [PAD] to the longest one (the ids of the vocabulary's `specials`).
    pub fn new(seqs: &[&[u32]], specials: SpecialIds, device: &Device) -> Self {
        let b = seqs.len();
        let l = seqs.iter().map(|s| s.len()).max().unwrap_or(1).max(1);
        let mut ids = vec![specials.pad as i64; b * l];
        let mut mask = vec![true; b * l];
        for (i, s) in seqs.iter().enumerate() {
            for (j, &t) in s.iter().enumerate() {
                ids[i * l + j] = t as i64;
                mask[i * l + j] = false;
            }
        }
        let segments = seqs.iter().any(|s| is_pair(s, specials.sep)).then(|| {
            let mut seg = vec![0i64; b * l];
            for (i, s) in seqs.iter().enumerate() {
                for (j, t) in segment_ids(s, specials.sep).into_iter().enumerate() {
                    seg[i * l + j] = t as i64;
                }
            }
            Tensor::from_data(TensorData::new(seg, [b, l]), device)
        });
        Self {
            ids: Tensor::from_data(TensorData::new(ids, [b, l]), device),
            pad_mask: Tensor::from_data(TensorData::new(mask, [b, l]), device),
            segments,
        }
    }

    /// `[batch, seq]`.
    pub fn dims(&self) -> [usize; 2] {
        self.ids.dims()
    }
}

/// A pre-training batch: the masked inputs, the chosen positions flattened over the batch, and
/// for pairs whether B follows A.
#[derive(Debug, Clone)]
pub struct PretrainBatch {
    /// Masked inputs.
    pub tokens: TokenBatch,
    /// Index of each chosen position in the flattened `[batch * seq]` states, `[n]`.
    pub positions: Tensor<1, Int>,
    /// The original id at each chosen position, `[n]`.
    pub targets: Tensor<1, Int>,
    /// Next-sentence targets (1: B follows A), `[batch]`; `None` without pairs.
    pub is_next: Option<Tensor<1, Int>>,
}

impl PretrainBatch {
    /// Stacks masked examples.
    pub fn new(examples: &[MlmExample], specials: SpecialIds, device: &Device) -> Self {
        let seqs: Vec<&[u32]> = examples.iter().map(|e| e.input_ids.as_slice()).collect();
        let tokens = TokenBatch::new(&seqs, specials, device);
        let l = tokens.dims()[1];
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        for (i, e) in examples.iter().enumerate() {
            for (&p, &t) in e.positions.iter().zip(&e.targets) {
                positions.push((i * l + p) as i64);
                targets.push(t as i64);
            }
        }
        let n = positions.len();
        Self {
            tokens,
            positions: Tensor::from_data(TensorData::new(positions, [n]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n]), device),
            is_next: None,
        }
    }

    /// The batch with next-sentence targets, one an example.
    pub fn with_is_next(mut self, is_next: &[bool]) -> Self {
        let device = self.targets.device();
        let t: Vec<i64> = is_next.iter().map(|&x| i64::from(x)).collect();
        self.is_next = Some(Tensor::from_data(TensorData::new(t, [is_next.len()]), &device));
        self
    }
}

/// Batches of indices into `lengths`, shuffled, with similar lengths grouped together to cut
/// padding: the shuffled indices are sorted by length inside windows of 50 batches, cut into
/// batches, and the batches shuffled again.
pub fn bucketed_batches<R: Rng>(lengths: &[usize], batch_size: usize, rng: &mut R) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(rng);
    let window = batch_size * 50;
    let mut batches = Vec::new();
    for chunk in order.chunks_mut(window) {
        chunk.sort_by_key(|&i| lengths[i]);
        batches.extend(chunk.chunks(batch_size).map(|c| c.to_vec()));
    }
    batches.shuffle(rng);
    batches
}

/// How many batches [`bucketed_batches`] makes of `n` items.
pub fn bucketed_batch_count(n: usize, batch_size: usize) -> usize {
    let window = batch_size * 50;
    (n / window) * 50 + (n % window).div_ceil(batch_size)
}

/// Batches in the original order, sorted by length inside each window to cut padding while
/// staying easy to map back (the caller scatters results by index).
pub fn eval_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    order.chunks(batch_size).map(|c| c.to_vec()).collect()
}

/// Splits texts of the given lengths into groups of at most `max_batch` that cost the least to
/// run padded: each group is a run of the length-sorted order and costs
/// `pass_cost + size × its longest length` (a pass's fixed cost, in length units, against the
/// padding it saves). Dynamic programming over the sorted lengths; groups in ascending length.
pub fn length_groups(lengths: &[usize], max_batch: usize, pass_cost: f64) -> Vec<Vec<usize>> {
    let n = lengths.len();
    let max_batch = max_batch.max(1);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| lengths[i]);
    // best[j]: least cost of the first j sorted texts; cut[j]: where their last group starts
    let mut best = vec![0.0f64; n + 1];
    let mut cut = vec![0usize; n + 1];
    for j in 1..=n {
        best[j] = f64::INFINITY;
        let longest = lengths[order[j - 1]] as f64;
        for i in j.saturating_sub(max_batch)..j {
            let c = best[i] + pass_cost + (j - i) as f64 * longest;
            if c < best[j] {
                best[j] = c;
                cut[j] = i;
            }
        }
    }
    let mut groups = Vec::new();
    let mut j = n;
    while j > 0 {
        groups.push(order[cut[j]..j].to_vec());
        j = cut[j];
    }
    groups.reverse();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn length_groups_split_where_padding_costs_more_than_a_pass() {
        // 32 short and 32 long texts: one pass pads 32 × 90 positions, far more than a pass costs
        let lengths: Vec<usize> = (0..64).map(|i| if i % 2 == 0 { 10 } else { 100 }).collect();
        let groups = length_groups(&lengths, 64, 200.0);
        assert_eq!(groups.len(), 2);
        assert!(groups[0].iter().all(|&i| lengths[i] == 10) && groups[1].iter().all(|&i| lengths[i] == 100));
        // equal lengths: one pass; the same with a pass dearer than any padding
        assert_eq!(length_groups(&[7; 64], 64, 200.0).len(), 1);
        assert_eq!(length_groups(&lengths, 64, 1e9).len(), 1);
        // never more than max_batch a group, every index once
        let groups = length_groups(&lengths, 16, 0.0);
        assert!(groups.iter().all(|g| g.len() <= 16));
        let mut all: Vec<usize> = groups.concat();
        all.sort();
        assert_eq!(all, (0..64).collect::<Vec<_>>());
        assert!(length_groups(&[], 8, 1.0).is_empty());
    }

    #[test]
    fn padding_and_mask() {
        let d = Device::flex();
        let b = TokenBatch::new(&[&[2, 7, 3], &[2, 3]], SpecialIds::BERTLU, &d);
        assert_eq!(b.dims(), [2, 3]);
        let ids: Vec<i64> = b.ids.into_data().convert::<i64>().try_into_vec::<i64>().unwrap();
        assert_eq!(ids, vec![2, 7, 3, 2, 3, 0]);
        let m: Vec<bool> = b.pad_mask.into_data().try_into_vec::<bool>().unwrap();
        assert_eq!(m, vec![false, false, false, false, false, true]);
    }

    #[test]
    fn segments_follow_the_first_sep() {
        let d = Device::flex();
        assert_eq!(segment_ids(&[2, 7, 3, 8, 9, 3], 3), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(segment_ids(&[2, 7, 3], 3), vec![0, 0, 0]);
        assert!(is_pair(&[2, 7, 3, 8, 3], 3) && !is_pair(&[2, 7, 3], 3));
        assert!(TokenBatch::new(&[&[2, 7, 3], &[2, 3]], SpecialIds::BERTLU, &d).segments.is_none(), "single texts carry no segment tensor");
        let b = TokenBatch::new(&[&[2, 7, 3, 8, 3], &[2, 5, 3]], SpecialIds::BERTLU, &d);
        let seg: Vec<i64> = b.segments.unwrap().into_data().convert::<i64>().try_into_vec::<i64>().unwrap();
        assert_eq!(seg, vec![0, 0, 0, 1, 1, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn buckets_cover_everything_once() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 300).collect();
        let mut rng = StdRng::seed_from_u64(3);
        let batches = bucketed_batches(&lengths, 32, &mut rng);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        // grouping by length cuts padding compared with a plain shuffle
        let pad = |bs: &[Vec<usize>]| -> usize { bs.iter().map(|b| { let m = b.iter().map(|&i| lengths[i]).max().unwrap(); b.iter().map(|&i| m - lengths[i]).sum::<usize>() }).sum() };
        let mut order: Vec<usize> = (0..1000).collect();
        order.shuffle(&mut rng);
        let plain: Vec<Vec<usize>> = order.chunks(32).map(|c| c.to_vec()).collect();
        assert!(pad(&batches) * 5 < pad(&plain));
    }

    #[test]
    fn a_bert_vocabulary_pads_and_splits_segments_at_its_own_ids() {
        let d = Device::flex();
        let hf = SpecialIds { pad: 0, unk: 100, cls: 101, sep: 102, mask: 103 };
        let b = TokenBatch::new(&[&[101, 7, 102, 8, 9, 102], &[101, 3, 102]], hf, &d);
        let seg: Vec<i64> = b.segments.expect("a pair in the batch").into_data().convert::<i64>().try_into_vec().unwrap();
        assert_eq!(seg, vec![0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]);
        // bertlu's [SEP] id (3) inside a BERT-vocabulary text is an ordinary word piece
        assert!(TokenBatch::new(&[&[101, 3, 4, 102]], hf, &d).segments.is_none());
    }
}
