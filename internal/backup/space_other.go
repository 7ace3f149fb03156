//go:build !linux

package backup

// freeSpace cannot tell on this system.
func freeSpace(dir string) int64 { return -1 }
