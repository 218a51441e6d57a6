//! What the gateway tells operators: Prometheus metrics (with the SLO measures: jobs' end-to-end time), each
//! queue's recent behaviour, which job kinds may be named publicly, and what each engine last reported.

pub mod end_to_end;
pub mod engine_presence;
pub mod kind_labels;
pub mod metrics;
pub mod queue_metrics;
