//! A real KVM VM with no image (see issue 3).
