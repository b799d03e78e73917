package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// runOptions are the flags of `run`.
type runOptions struct {
	kedge, images, e2e, ginkgo, kubectl, out, workDir string
	focus, skip, version                              string
	procs                                             int
	keep, noSerial                                    bool
}

func runMain(args []string) error {
	fl := flag.NewFlagSet("run", flag.ContinueOnError)
	var o runOptions
	fl.StringVar(&o.kedge, "kedge", "", "kedge binary (required)")
	fl.StringVar(&o.images, "images", "", "docker archive of the test images, from `conformance images` (required)")
	fl.StringVar(&o.e2e, "e2e", "", "e2e.test binary (required)")
	fl.StringVar(&o.ginkgo, "ginkgo", "", "ginkgo CLI (required)")
	fl.StringVar(&o.kubectl, "kubectl", "", "kubectl the kubectl tests run, of the suite's version (required)")
	fl.StringVar(&o.out, "out", "", "directory for the reports, logs and summary (required)")
	fl.StringVar(&o.workDir, "work-dir", os.TempDir(), "where the cluster's sandbox directory goes (short: containerd's socket paths must stay under 104 bytes)")
	fl.StringVar(&o.focus, "focus", `\[Conformance\]`, "regular expression of the tests to run")
	fl.StringVar(&o.skip, "skip", "", "regular expression of tests to leave out of both passes")
	fl.StringVar(&o.version, "version", "", "the suite's Kubernetes version, for the summary")
	fl.IntVar(&o.procs, "procs", 4, "parallel ginkgo processes of the first pass")
	fl.BoolVar(&o.keep, "keep", false, "keep the cluster's directory (node logs, data) after the run")
	fl.BoolVar(&o.noSerial, "no-serial", false, "leave out the [Serial] (and [Disruptive]) pass")
	if err := fl.Parse(args); err != nil {
		return err
	}
	for flagName, v := range map[string]string{"kedge": o.kedge, "images": o.images, "e2e": o.e2e, "ginkgo": o.ginkgo, "kubectl": o.kubectl, "out": o.out} {
		if v == "" {
			return fmt.Errorf("run: -%s is required", flagName)
		}
	}
	if o.procs < 1 {
		return fmt.Errorf("run: -procs %d: need at least 1", o.procs)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	onSignal(cancel)

	begin := time.Now()
	c, err := newCluster(o.workDir, o.images, o.kubectl)
	if err != nil {
		return err
	}
	defer func() {
		logf("stopping the cluster and removing its sandbox")
		c.stop(o.keep)
		if o.keep {
			logf("node logs: %s, %s", c.server.logFile(), c.agent.logFile())
		}
	}()
	if c.registries, err = c.startMirror(o.images); err != nil {
		return err
	}
	logf("registry mirror with the test images on %s:%d", serverIP, registryPort)
	if err := c.start(ctx, o.kedge); err != nil {
		return err
	}
	var passes []passResult
	for _, p := range o.passes() {
		r, err := c.runPass(ctx, o, p)
		if err != nil {
			return err
		}
		passes = append(passes, r)
		if ctx.Err() != nil {
			break
		}
	}
	sum := summarize(o, passes, time.Since(begin))
	if err := os.WriteFile(filepath.Join(o.out, "summary.txt"), []byte(sum), 0o644); err != nil {
		return err
	}
	fmt.Print(sum)
	logf("summary in %s", filepath.Join(o.out, "summary.txt"))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, p := range passes {
		if len(p.failed) > 0 {
			return errFailed
		}
	}
	return nil
}

// pass is one ginkgo run: the parallel tests, then the [Serial] and
// [Disruptive] ones, one at a time, as upstream's conformance runs do.
type pass struct {
	name        string
	procs       int
	skip        string
	labelFilter string
}

func (o runOptions) passes() []pass {
	skip := `\[Serial\]|\[Disruptive\]`
	if o.skip != "" {
		skip += "|" + o.skip
	}
	ps := []pass{{name: "parallel", procs: o.procs, skip: skip}}
	if !o.noSerial {
		// The two [Disruptive] conformance tests taint a node and
		// remove the taint: they are run, one at a time, as the
		// certified conformance runs do.
		ps = append(ps, pass{name: "serial", procs: 1, skip: o.skip, labelFilter: "Serial || Disruptive"})
	}
	return ps
}

// runPass runs one pass of the suite from the server's namespace, its
// output on the terminal and in <out>/<pass>.log, its JUnit report in
// <out>/junit-<pass>.xml.
func (c *cluster) runPass(ctx context.Context, o runOptions, p pass) (passResult, error) {
	junit := "junit-" + p.name + ".xml"
	args := []string{"--procs", fmt.Sprint(p.procs), "--focus", o.focus,
		"--timeout", "24h", "--output-dir", o.out, "--junit-report", junit, "--no-color",
		"--poll-progress-after", "10m", "--silence-skips"}
	if p.skip != "" {
		args = append(args, "--skip", p.skip)
	}
	if p.labelFilter != "" {
		args = append(args, "--label-filter", p.labelFilter)
	}
	args = append(args, o.e2e, "--",
		"--kubeconfig", c.kubeconfig, "--kubectl-path", o.kubectl, "--provider", "skeleton",
		"--e2e-output-dir", filepath.Join(o.out, "e2e-"+p.name), "--dump-logs-on-failure=false")
	logf("%s pass: ginkgo %s", p.name, strings.Join(args, " "))
	log, err := os.Create(filepath.Join(o.out, p.name+".log"))
	if err != nil {
		return passResult{}, err
	}
	defer log.Close()
	os.Remove(filepath.Join(o.out, junit))
	cmd := c.inServerNetns(ctx, o.ginkgo, args...)
	cmd.Stdout = io.MultiWriter(os.Stdout, log)
	cmd.Stderr = io.MultiWriter(os.Stderr, log)
	begin := time.Now()
	runErr := cmd.Run()
	logf("%s pass ended after %s (%v)", p.name, time.Since(begin).Round(time.Second), runErr)
	r, err := readJUnit(filepath.Join(o.out, junit))
	if err != nil {
		return passResult{}, fmt.Errorf("%s pass: %v (ginkgo: %v; see %s)", p.name, err, runErr, log.Name())
	}
	r.name, r.took = p.name, time.Since(begin)
	return r, nil
}
