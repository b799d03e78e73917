// Command kedge-launcher is the front of a kedge release binary: it
// extracts the kedge appended to it (pkg/launcher) and execs it. Built and
// wrapped by scripts/release.
package main

import (
	"fmt"
	"os"

	"github.com/kedge-dev/kedge/pkg/launcher"
)

func main() {
	err := launcher.Exec()
	fmt.Fprintf(os.Stderr, "kedge: error: %v\n", err)
	os.Exit(1)
}
