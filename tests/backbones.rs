//! The backbone contract: TextCNN shapes and "same" padding, and every backbone learning the
//! digit-sum toy task through the shared classification code path.

mod common;

use bertlu::data::batch::TokenBatch;
use bertlu::config::{BackboneKind, Config, Preset};
use bertlu::model::backbone::Backbone;
use bertlu::data::classify::Problem;
use bertlu::data::toy;
use bertlu::train::finetune::{finetune, Init};
use bertlu::train::RunOptions;
use burn::prelude::*;

fn cnn_config(widths: Vec<usize>, filters: usize) -> Config {
    let mut cfg = Config::preset(Preset::Tiny).with_backbone(BackboneKind::TextCnn);
    cfg.model.vocab_size = 50;
    cfg.model.d_model = 8;
    cfg.model.textcnn.filter_widths = widths;
    cfg.model.textcnn.filters = filters;
    cfg
}

fn rows(t: Tensor<3>) -> Vec<Vec<f32>> {
    let [b, l, d] = t.dims();
    let v: Vec<f32> = t.into_data().convert::<f32>().try_into_vec().unwrap();
    (0..b * l).map(|i| v[i * d..(i + 1) * d].to_vec()).collect()
}

#[test]
fn textcnn_shapes_locality_and_padding() {
    let device = Device::flex();
    device.seed(5);
    let cfg = cnn_config(vec![2, 3, 5], 4);
    assert_eq!(cfg.model.output_dim(), 12);
    let cnn = Backbone::init(&cfg.model, &device);
    let a: Vec<u32> = vec![2, 10, 11, 12, 13, 14, 15, 16, 17, 3];
    let short: Vec<u32> = vec![2, 20, 21, 3];
    let out = cnn.forward(&TokenBatch::new(&[&a, &short], bertlu::text::tokenizer::SpecialIds::BERTLU, &device));
    assert_eq!(out.states.dims(), [2, 10, 12], "same padding keeps every position");
    assert_eq!(out.pooled.dims(), [2, 12]);
    let states = rows(out.states.clone());
    // padding positions of the short sequence carry zeros
    for p in 4..10 {
        assert!(states[10 + p].iter().all(|&x| x == 0.0), "padding position {p}");
    }
    // the short sequence encodes the same whether batched with a longer one or alone
    let alone = rows(cnn.forward(&TokenBatch::new(&[&short], bertlu::text::tokenizer::SpecialIds::BERTLU, &device)).states);
    for p in 0..4 {
        for (x, y) in states[10 + p].iter().zip(&alone[p]) {
            assert!((x - y).abs() < 1e-6, "position {p}: {x} vs {y}");
        }
    }
    // a position only sees its window: widest filter 5 reaches 2 positions each side
    let mut b = a.clone();
    b[8] = 40;
    let changed = rows(cnn.forward(&TokenBatch::new(&[&b], bertlu::text::tokenizer::SpecialIds::BERTLU, &device)).states);
    let same = |p: usize| states[p].iter().zip(&changed[p]).all(|(x, y)| (x - y).abs() < 1e-6);
    assert!(same(0) && same(1) && same(2) && same(3) && same(4), "positions 0–4 are out of reach of position 8");
    assert!(!same(7) && !same(8) && !same(9), "positions next to 8 change");
    // pooled = max over the real positions of each feature
    let pooled: Vec<f32> = out.pooled.into_data().convert::<f32>().try_into_vec().unwrap();
    for f in 0..12 {
        let want = (0..4).map(|p| states[10 + p][f]).fold(f32::MIN, f32::max);
        assert_eq!(pooled[12 + f], want, "feature {f}");
    }
}

#[test]
fn every_backbone_learns_the_toy_task() {
    let tok = toy::tokenizer().unwrap();
    let train = toy::examples(1200, 8, 1);
    let valid = toy::examples(300, 8, 2);
    for (kind, want) in [(BackboneKind::TextCnn, 0.85), (BackboneKind::Transformer, 0.85)] {
        let mut cfg = Config::preset(Preset::Tiny).merged(common::TINY_TOML).unwrap().with_backbone(kind);
        cfg.model.vocab_size = tok.vocab_size();
        cfg.model.max_len = 10;
        cfg.model.transformer.pooling = bertlu::config::Pooling::Mean;
        cfg.finetune.optim.epochs = 8;
        let report = finetune(&cfg, Init::Scratch, &tok, &train, &valid, Problem::SingleLabel, None, None, &RunOptions { quiet: true, ..Default::default() }).unwrap();
        let best = report.epochs.iter().map(|e| e.micro_f1).fold(0.0, f64::max);
        let first = report.epochs[0].micro_f1;
        eprintln!("{kind}: toy accuracy epoch 1 {first:.3}, best {best:.3}");
        assert!(best >= want, "{kind}: accuracy {best} (epoch 1: {first})");
    }
}
