package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	tests := []struct {
		name      string
		opts      options
		cancelled bool // context already cancelled, as after SIGTERM
		wantCode  int
		wantFiles int
	}{
		{name: "no flags", wantCode: 0},
		{name: "exit code", opts: options{exitCode: 3}, wantCode: 3},
		{name: "write files", opts: options{files: 2}, wantFiles: 2},
		{name: "short sleep", opts: options{sleep: time.Millisecond}, wantCode: 0},
		{name: "sleep interrupted", opts: options{sleep: time.Hour}, cancelled: true, wantCode: interruptedCode},
		{name: "serve until signal", opts: options{serve: true, exitCode: 0}, cancelled: true, wantCode: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			if tt.wantFiles > 0 {
				tt.opts.writeDir = dir
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancelled {
				cancel()
			}
			if got := run(ctx, tt.opts); got != tt.wantCode {
				t.Errorf("run = %d, want %d", got, tt.wantCode)
			}
			for i := 1; i <= tt.wantFiles; i++ {
				name := fmt.Sprintf("file-%d", i)
				b, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					t.Fatalf("reading %s: %v", name, err)
				}
				if want := name + "\n"; string(b) != want {
					t.Errorf("%s = %q, want %q", name, b, want)
				}
			}
		})
	}
}
