//! Task examples built from word pieces, and the batches the models take: masked-LM sequences
//! (`mlm`), sentence pairs (`nsp`), labelled classification examples (`classify`), the toy task
//! (`toy`), and padding/bucketing into tensors (`batch`).

pub mod mlm;
pub mod nsp;
pub mod classify;
pub mod toy;
pub mod batch;
