package diskio

import (
	"os"
	"sync"
)

// datasyncEach fdatasyncs files side by side, one goroutine each beyond the first, each one's error
// into errs: the portable form of DatasyncAll.
func datasyncEach(files []*os.File, errs []error) {
	switch len(files) {
	case 0:
		return
	case 1:
		errs[0] = Datasync(files[0])
		return
	}
	var wg sync.WaitGroup
	for i, f := range files[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i+1] = Datasync(f)
		}()
	}
	errs[0] = Datasync(files[0])
	wg.Wait()
}
