// Command conformance runs the upstream Kubernetes conformance suite
// against a two-node kedge cluster. scripts/conformance builds what it
// needs and calls it twice:
//
//	conformance images ...   the test images, one docker archive
//	conformance run ...      a server and an agent in network namespaces,
//	                         the suite in parallel, then its [Serial] tests,
//	                         JUnit reports and a summary
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: conformance images|run [flags] (see scripts/conformance --help)")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "images":
		err = imagesMain(os.Args[2:])
	case "run":
		err = runMain(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (images or run)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
}

// logf prints a progress line, time-stamped.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s conformance: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
