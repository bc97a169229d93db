//! KVM accounting state machines shared by the probes and userspace (see issue 4).
