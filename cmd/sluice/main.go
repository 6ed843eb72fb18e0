// Command sluice is the Sluice broker.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "sluice: the broker is not built yet")
	os.Exit(1)
}
