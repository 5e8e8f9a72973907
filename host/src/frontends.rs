//! How examples reach the pipeline: [`run`] (a JSONL job), [`serve`] (the Open
//! Inference Protocol over HTTP) and [`watch`] (the drop-in plugin root both use).

pub mod run;
pub mod serve;
pub mod watch;
