//! Text in: file reading, the labelled and corpus formats, and the tokenizer.

pub mod corpus;
pub mod labelled;
pub mod reader;
pub mod tokenizer;
