//! The stages every example goes through, for `run` and `serve` alike: [`decode`] an
//! input line or request row, [`dispatch`] it to its model set's queue, form
//! [`batch`]es, run them on the plugin's warm instances, and pair each result back
//! with its line into a prediction or a dead letter ([`sink`]).

pub mod batch;
pub mod decode;
pub mod dispatch;
pub mod sink;
