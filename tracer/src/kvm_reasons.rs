//! KVM exit reason names (VMX, SVM, userspace exits).
