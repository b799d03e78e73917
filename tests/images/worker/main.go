// Command worker is the tiny batch program packed into the
// kedge.test/worker test image, used by Job and volume tests.
//
// In order it: prints --message, writes --files files named file-<i>
// (i from 1) into --write DIR, sleeps --sleep, blocks until SIGTERM if
// --serve is set, and finally exits with --exit CODE. With no flags it
// prints the default message and exits 0, so a bare Job completes and
// leaves a recognisable line in its logs.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// interruptedCode is the conventional 128+SIGTERM status, used when a
// signal cuts --sleep short so tests can tell "killed" from "done".
const interruptedCode = 128 + int(syscall.SIGTERM)

const defaultMessage = "hello from kedge worker"

type options struct {
	writeDir string
	files    int
	sleep    time.Duration
	exitCode int
	message  string
	serve    bool
}

func main() {
	var o options
	flag.StringVar(&o.writeDir, "write", "", "directory to write files into (created if missing)")
	flag.IntVar(&o.files, "files", 3, "number of files to write with --write")
	flag.DurationVar(&o.sleep, "sleep", 0, "how long to sleep before exiting")
	flag.IntVar(&o.exitCode, "exit", 0, "exit code")
	flag.StringVar(&o.message, "message", defaultMessage, "message printed to stdout at start")
	flag.BoolVar(&o.serve, "serve", false, "block until SIGTERM/SIGINT instead of exiting")
	flag.Parse()

	// Handle signals ourselves: as PID 1 in a container the kernel would
	// otherwise ignore SIGTERM and the kubelet would have to SIGKILL us.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, o))
}

func run(ctx context.Context, o options) int {
	fmt.Println(o.message)

	if o.writeDir != "" {
		if err := writeFiles(o.writeDir, o.files); err != nil {
			fmt.Fprintf(os.Stderr, "worker: %v\n", err)
			return 1
		}
	}

	if o.sleep > 0 {
		select {
		case <-time.After(o.sleep):
		case <-ctx.Done():
			fmt.Println("worker: interrupted while sleeping")
			return interruptedCode
		}
	}

	if o.serve {
		<-ctx.Done()
		fmt.Println("worker: signal received, exiting")
	}
	return o.exitCode
}

// writeFiles writes file-1..file-n into dir, each containing its own name,
// so tests can verify content through a shared volume.
func writeFiles(dir string, n int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	for i := 1; i <= n; i++ {
		p := filepath.Join(dir, fmt.Sprintf("file-%d", i))
		if err := os.WriteFile(p, fmt.Appendf(nil, "file-%d\n", i), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
		fmt.Printf("wrote %s\n", p)
	}
	return nil
}
