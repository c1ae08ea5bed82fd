//! Text in: file reading, the labelled and corpus formats, the tokenizer, and word vectors.

pub mod corpus;
pub mod labelled;
pub mod reader;
pub mod tokenizer;
pub mod word_vectors;
