package diskio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func openFiles(t *testing.T, n int) []*os.File {
	t.Helper()
	dir := t.TempDir()
	files := make([]*os.File, n)
	for i := range files {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("f%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if _, err := f.Write([]byte("data")); err != nil {
			t.Fatal(err)
		}
		files[i] = f
	}
	return files
}

// DatasyncAll syncs any number of files, from several goroutines at once.
func TestDatasyncAll(t *testing.T) {
	for _, n := range []int{0, 1, 3, 37} {
		files := openFiles(t, n)
		errs := make([]error, n)
		if err := DatasyncAll(files, errs); err != nil {
			t.Fatalf("%d files: %v", n, err)
		}
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("%d files, per file: %v", n, err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		files := openFiles(t, 4)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if err := DatasyncAll(files, nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A file that cannot be synced fails the call with its name; the others are still synced and the
// next call works.
func TestDatasyncAllReportsTheFailedFile(t *testing.T) {
	files := openFiles(t, 3)
	files[1].Close()
	errs := make([]error, 3)
	err := DatasyncAll(files, errs)
	if err == nil || !strings.Contains(err.Error(), files[1].Name()) {
		t.Fatalf("syncing a closed file: %v", err)
	}
	if errs[0] != nil || errs[1] == nil || errs[2] != nil {
		t.Fatalf("errors per file: %v", errs)
	}
	if err := DatasyncAll([]*os.File{files[0], files[2]}, nil); err != nil {
		t.Fatal(err)
	}
}
