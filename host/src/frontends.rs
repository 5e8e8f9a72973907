//! How examples reach the pipeline: [`run`] (a JSONL job), [`serve`] (the Open
//! Inference Protocol over HTTP), and what both use: [`watch`] (the drop-in plugin
//! root) and [`quota`] (the operator's per-tenant quotas and shares).

pub mod quota;
pub mod run;
pub mod serve;
pub mod watch;
