//! The categories of CPU time the charts show and their colours, defined once: every
//! chart and index.html take a category's colour from here, so that "VMM threads" is
//! the same colour in every picture. The colours are Okabe and Ito's colour-blind-safe
//! palette (idle is a light grey, so that busy time stands out).

use crate::host::Role;

/// What a stretch of CPU time was spent on, as the charts colour it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// Guest code of a vCPU (inside KVM_RUN where guest mode cannot be told apart from
    /// in-kernel exit handling), or the traced job's own threads.
    GuestOrJob,
    /// On vCPU threads: in-kernel exit handling (where kvm_exit fires) and the VMM's
    /// userspace work (outside KVM_RUN).
    VcpuOverhead,
    /// The VMM's other threads: emulator, iothreads, vhost workers.
    VmmThreads,
    HostKernel,
    Other,
    Idle,
    /// Time a thread was runnable but waited for a CPU.
    RunqWait,
}

/// An sRGB colour.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// `#rrggbb`, as SVG and CSS write it.
    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

impl Category {
    /// Every category, in the order of the charts' legends and stacks.
    pub const ALL: [Category; 7] = [
        Category::GuestOrJob,
        Category::VcpuOverhead,
        Category::VmmThreads,
        Category::HostKernel,
        Category::Other,
        Category::Idle,
        Category::RunqWait,
    ];

    pub fn colour(self) -> Rgb {
        match self {
            Category::GuestOrJob => Rgb(0x00, 0x72, 0xb2),   // blue
            Category::VcpuOverhead => Rgb(0xe6, 0x9f, 0x00), // orange
            Category::VmmThreads => Rgb(0xd5, 0x5e, 0x00),   // vermillion
            Category::HostKernel => Rgb(0x00, 0x9e, 0x73),   // bluish green
            Category::Other => Rgb(0xcc, 0x79, 0xa7),        // reddish purple
            Category::Idle => Rgb(0xdd, 0xdd, 0xdd),         // light grey
            Category::RunqWait => Rgb(0xf0, 0xe4, 0x42),     // yellow
        }
    }

    /// The legend's words.
    pub fn label(self) -> &'static str {
        match self {
            Category::GuestOrJob => "guest / job",
            Category::VcpuOverhead => "exit handling + VMM userspace on vCPU threads",
            Category::VmmThreads => "VMM threads",
            Category::HostKernel => "host kernel",
            Category::Other => "other",
            Category::Idle => "idle",
            Category::RunqWait => "run-queue wait",
        }
    }

    /// Where a thread's time goes when nothing finer is known (a vCPU thread's time
    /// is split into guest and overhead by the callers that know its split).
    pub fn of_role(role: Role) -> Category {
        match role {
            Role::Vcpu | Role::Workload => Category::GuestOrJob,
            Role::Vmm => Category::VmmThreads,
            Role::HostKernel => Category::HostKernel,
            Role::Other => Category::Other,
        }
    }

    /// The colour of a thief's role as the ledger spells it (`vcpu`, `vmm`, ...,
    /// `idle`; `unresolved` wait, whose thief is unknown, keeps the wait's colour).
    pub fn of_role_name(role: &str) -> Category {
        match role {
            "vcpu" | "workload" => Category::GuestOrJob,
            "vmm" => Category::VmmThreads,
            "host_kernel" => Category::HostKernel,
            "idle" => Category::Idle,
            "unresolved" => Category::RunqWait,
            _ => Category::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_category_has_a_colour_and_a_label_of_its_own() {
        let colours: HashSet<_> = Category::ALL.iter().map(|c| c.colour()).collect();
        let labels: HashSet<_> = Category::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(colours.len(), Category::ALL.len());
        assert_eq!(labels.len(), Category::ALL.len());
        assert_eq!(Category::VmmThreads.colour().hex(), "#d55e00");
        for role in [Role::Vcpu, Role::Vmm, Role::HostKernel, Role::Workload, Role::Other] {
            let name = crate::report::role_name(role);
            assert_eq!(Category::of_role_name(&name), Category::of_role(role), "{name}");
        }
    }
}
