//go:build !linux

package netio

func setGnetCopyWhenFull(bool) bool { return false }
