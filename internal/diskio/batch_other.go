//go:build !linux

package diskio

import (
	"errors"
	"os"
)

// DatasyncAll fdatasyncs files together (each in its own goroutine here: io_uring is Linux's) and
// returns their errors joined; errs, when not nil (of len(files)), receives each file's own.
func DatasyncAll(files []*os.File, errs []error) error {
	if len(files) == 0 {
		return nil
	}
	if errs == nil {
		errs = make([]error, len(files))
	}
	datasyncEach(files, errs)
	return errors.Join(errs...)
}
