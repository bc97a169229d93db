//! Address ranges of kernel functions, from /proc/kallsyms.

use std::collections::HashMap;

/// [start, end) of each named function in a /proc/kallsyms text (end = the next
/// symbol's address); (0, 0) for a name that is absent or whose address is hidden
/// (kptr_restrict).
pub fn symbol_ranges(kallsyms: &str, names: &[&str]) -> Vec<(u64, u64)> {
    let mut addrs: Vec<u64> = Vec::new();
    let mut found: HashMap<&str, u64> = HashMap::new();
    for line in kallsyms.lines() {
        let mut it = line.split_whitespace();
        let (Some(a), Some(_kind), Some(name)) = (it.next(), it.next(), it.next()) else { continue };
        let Ok(a) = u64::from_str_radix(a, 16) else { continue };
        if a == 0 {
            continue;
        }
        addrs.push(a);
        if let Some(n) = names.iter().find(|n| **n == name) {
            found.entry(n).or_insert(a);
        }
    }
    addrs.sort_unstable();
    addrs.dedup();
    names
        .iter()
        .map(|n| match found.get(n) {
            Some(&start) => {
                let i = addrs.partition_point(|&x| x <= start);
                (start, addrs.get(i).copied().unwrap_or(start.saturating_add(1)))
            }
            None => (0, 0),
        })
        .collect()
}

/// The `GUEST_IRQ_TEXT` global: [start, end) of each of
/// `tracer_common::kvm::GUEST_IRQ_FUNCTIONS` on this kernel, zeros where unknown
/// (the guest sampler then only counts user-mode samples as guest time).
pub fn guest_irq_text() -> [u64; 2 * tracer_common::kvm::GUEST_IRQ_RANGES] {
    let mut text = [0u64; 2 * tracer_common::kvm::GUEST_IRQ_RANGES];
    match std::fs::read_to_string("/proc/kallsyms") {
        Ok(kallsyms) => {
            let ranges = symbol_ranges(&kallsyms, &tracer_common::kvm::GUEST_IRQ_FUNCTIONS);
            for (i, (start, end)) in ranges.into_iter().enumerate() {
                text[2 * i] = start;
                text[2 * i + 1] = end;
            }
        }
        Err(e) => log::warn!("cannot read /proc/kallsyms ({e}): guest samples in host interrupt code count as host"),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_ranges_end_at_the_next_symbol() {
        let text = "ffffffff821f1ab0 T pvm_do_event_irqoff\nffffffff821f1aa0 T __pfx_pvm_do_event_irqoff\n\
ffffffff821f1ae0 T __pvm_enter_tramp\n0000000000000000 T hidden\nffffffff81000000 t other [kvm]\n";
        let r = symbol_ranges(text, &["pvm_do_event_irqoff", "vmx_do_interrupt_irqoff", "hidden"]);
        assert_eq!(r, vec![(0xffffffff821f1ab0, 0xffffffff821f1ae0), (0, 0), (0, 0)]);
    }
}
