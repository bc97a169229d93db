//! Reading the run-queue states and the preemption ledger out of their maps.

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, PerCpuArray},
};
use tracer_common::ledger::{CpuHistory, PairCache, PairKey, PairStats, ThreadSched};

use super::{ProbeError, RawCounters, chain};

/// Fills `raw.sched`, `raw.cpu_history` and `raw.ledger`; leaves them empty when the
/// object was loaded without the ledger.
pub fn read(ebpf: &Ebpf, raw: &mut RawCounters) -> Result<(), ProbeError> {
    let map = |name: &'static str| ebpf.map(name).ok_or(ProbeError::Map(name, "missing from the object".into()));
    let err = |name: &'static str| move |e: aya::maps::MapError| ProbeError::Map(name, chain(&e));
    let sched: BpfHashMap<_, u32, ThreadSched> =
        BpfHashMap::try_from(map("THREAD_SCHED")?).map_err(err("THREAD_SCHED"))?;
    for item in sched.iter() {
        let (tid, t) = item.map_err(err("THREAD_SCHED"))?;
        raw.sched.insert(tid, t);
    }
    let history: Array<_, CpuHistory> = Array::try_from(map("CPU_HISTORY")?).map_err(err("CPU_HISTORY"))?;
    raw.cpu_history =
        (0..history.len()).map(|i| history.get(&i, 0)).collect::<Result<_, _>>().map_err(err("CPU_HISTORY"))?;
    let ledger: BpfHashMap<_, PairKey, PairStats> = BpfHashMap::try_from(map("LEDGER")?).map_err(err("LEDGER"))?;
    for item in ledger.iter() {
        let (k, v) = item.map_err(err("LEDGER"))?;
        raw.ledger.insert(k, v);
    }
    // Pairs still in the CPUs' caches.
    let cache: PerCpuArray<_, PairCache> = PerCpuArray::try_from(map("PAIR_CACHE")?).map_err(err("PAIR_CACHE"))?;
    for per_cpu in cache.get(&0, 0).map_err(err("PAIR_CACHE"))?.iter() {
        for (k, v) in per_cpu.pairs() {
            let p = raw.ledger.entry(k).or_default();
            p.ns += v.ns;
            p.intervals += v.intervals;
        }
    }
    Ok(())
}
