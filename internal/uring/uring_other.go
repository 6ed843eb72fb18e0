//go:build !linux

// Package uring is a minimal io_uring binding; io_uring exists on Linux only.
package uring

import "errors"

// ErrUnsupported says io_uring cannot be used here.
var ErrUnsupported = errors.New("io_uring unavailable: not Linux")

// Probe reports whether io_uring can be set up here: never outside Linux.
func Probe() error { return ErrUnsupported }
