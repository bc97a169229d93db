//! vmmtrace: where does the CPU of a KVM host go, to the guests or to the hypervisor?
//!
//! Data flows one way: [`probe`] (load the eBPF object, read raw counters) ->
//! [`account`] (pure attribution) -> [`report`] (JSON, text). [`host`] discovers VMs,
//! their threads and roles from /proc. [`record`] writes one report at the end of a
//! trace; [`serve`] exposes the trace so far to Prometheus at every scrape.
//! [`perfetto`] writes the optional timeline.

pub mod account;
pub mod bench;
pub mod check;
pub mod cli;
pub mod diagnose;
pub mod error;
pub mod experiment;
pub mod host;
pub mod kvm_reasons;
pub mod perfetto;
pub mod probe;
pub mod record;
pub mod report;
pub mod serve;
pub mod sys;
