package testcluster

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// SaveCPUProfile saves a broker's CPU profile over d, read from the pprof endpoint of its
// --debug-addr, to path.
func SaveCPUProfile(debugAddr string, d time.Duration, path string) error {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", debugAddr, int(d.Seconds())))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
