package component

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Ahead starts some components early, in the background, while the ones
// between run: components that need nothing of those between (the node's
// container runtime and its images need no API server) then cost the
// start nothing. Put Ahead where they may begin, and Ahead.Joined where
// they would otherwise be: it is ready once they all are, and stops them.
// They start in order, each once the one before is ready, as a Runner
// starts its list.
type Ahead struct {
	Runner *Runner
	Parts  []Component

	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	mu      sync.Mutex
	started []Component
	stop    sync.Once
	stopErr error
}

// NewAhead returns an Ahead that starts parts with runner's timeouts.
func NewAhead(runner *Runner, parts ...Component) *Ahead {
	return &Ahead{Runner: runner, Parts: parts, done: make(chan struct{})}
}

// Name is the parts' names marked "ahead:"; Joined's is theirs alone.
func (a *Ahead) Name() string { return "ahead:" + a.parts() }

func (a *Ahead) parts() string {
	names := make([]string, len(a.Parts))
	for i, c := range a.Parts {
		names[i] = c.Name()
	}
	return strings.Join(names, "+")
}

// Start begins starting the parts and returns at once.
func (a *Ahead) Start(ctx context.Context) error {
	waitCtx, cancel := context.WithCancel(ctx)
	a.cancel = cancel
	go func() {
		defer close(a.done)
		a.err = a.Runner.startAll(ctx, waitCtx, a.Parts, func(c Component) {
			a.mu.Lock()
			a.started = append(a.started, c)
			a.mu.Unlock()
		})
		if a.err != nil {
			Fail(ctx, a.err)
		}
	}()
	return nil
}

// Ready is nil at once: Joined waits for the parts.
func (a *Ahead) Ready(context.Context) error { return nil }

// Stop stops the parts that started, in reverse order; only the first
// call, from Ahead or Joined, does.
func (a *Ahead) Stop() error {
	a.stop.Do(func() {
		if a.cancel == nil {
			return
		}
		a.cancel()
		<-a.done
		a.mu.Lock()
		started := a.started
		a.mu.Unlock()
		a.stopErr = a.Runner.stopAll(started)
	})
	return a.stopErr
}

// Joined is the place in the list where the parts must be ready.
func (a *Ahead) Joined() Component { return joined{a} }

type joined struct{ a *Ahead }

func (j joined) Name() string                { return j.a.parts() }
func (j joined) Start(context.Context) error { return nil }
func (j joined) Stop() error                 { return j.a.Stop() }

func (j joined) Ready(context.Context) error {
	select {
	case <-j.a.done:
		if j.a.err != nil {
			return fmt.Errorf("started ahead: %w", j.a.err)
		}
		return nil
	default:
		return errors.New("still starting")
	}
}
