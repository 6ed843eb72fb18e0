//go:build !linux

package diskio

const syncRingEntriesForTest = 32
