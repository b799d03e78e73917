package controller

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

func TestLoopRetriesFailuresAndForgetsSuccesses(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	done := make(chan struct{})
	l := &Loop{Name: "test", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Reconcile: func(_ context.Context, key string) error {
		mu.Lock()
		defer mu.Unlock()
		calls[key]++
		if key == "flaky" && calls[key] < 3 {
			return errors.New("not yet")
		}
		if key == "flaky" {
			close(done)
		}
		return nil
	}}
	if l.Ready() == nil {
		t.Fatal("ready before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error)
	go func() { ran <- l.Run(ctx, 2, func() bool { return true }) }()
	l.Add("ok")
	l.Add("flaky")
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("flaky key not retried to success")
	}
	if err := l.Ready(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["ok"] != 1 || calls["flaky"] != 3 {
		t.Fatalf("calls %v", calls)
	}
}

func TestLoopRecoversFromPanics(t *testing.T) {
	done := make(chan struct{})
	var once sync.Once
	n := 0
	l := &Loop{Name: "test", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Reconcile: func(context.Context, string) error {
		n++
		if n == 1 {
			panic("boom")
		}
		once.Do(func() { close(done) })
		return nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx, 1)
	l.Add("k")
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a panicking reconcile was not retried")
	}
}

func TestHandlerKeys(t *testing.T) {
	l := &Loop{Name: "test"}
	h := l.Handler(KeyOf)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}}
	h.OnAdd(pod, false)
	h.OnDelete(cache.DeletedFinalStateUnknown{Key: "ns/p", Obj: pod})
	if got := l.queue.Len(); got != 1 {
		t.Fatalf("queue holds %d keys, want 1 (ns/p, deduplicated)", got)
	}
	if k, _ := l.queue.Get(); k != "ns/p" {
		t.Fatalf("key %q", k)
	}
}
