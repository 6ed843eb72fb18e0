// The compiler accepts the bodiless, linknamed runtime functions of syscall_linux.go only in a
// package that has an assembly file: this one is empty.
