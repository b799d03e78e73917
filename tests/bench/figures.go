package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kedge-dev/kedge/pkg/payload"
)

const (
	clockTicks  = 100 // USER_HZ on Linux
	testImage   = "kedge.test/hello:v1"
	latencyPods = 30
	burstPods   = 240
	apiCreates  = 1000
	apiClients  = 8
	apiLists    = 20
)

// procStats is what /proc says about one process.
type procStats struct {
	RSSKiB, PSSKiB int64
	CPUTicks       int64
	WriteBytes     int64
}

func readProc(pid int) (procStats, error) {
	var s procStats
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return s, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Rss:":
			s.RSSKiB = v
		case "Pss:":
			s.PSSKiB = v
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	str := string(stat)
	f := strings.Fields(str[strings.LastIndexByte(str, ')')+1:])
	// After "(comm)": state is field 3, utime 14 and stime 15.
	if len(f) > 12 {
		u, _ := strconv.ParseInt(f[11], 10, 64)
		k, _ := strconv.ParseInt(f[12], 10, 64)
		s.CPUTicks = u + k
	}
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return s, err
	}
	for _, l := range strings.Split(string(io), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			s.WriteBytes, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return s, nil
}

// measureIdle waits until idleAfter since exec, takes RSS and PSS, then
// CPU time and bytes written over idleWindow, summed over the system's
// control plane and agent processes (not pods or shims), and which files
// under dir (outside its tmpfs run dir) the window wrote.
func measureIdle(ctx context.Context, sys system, dir string, t0 time.Time, res *runResult) error {
	if err := sleepCtx(ctx, time.Until(t0.Add(idleAfter))); err != nil {
		return err
	}
	procs := sys.processes()
	before := map[string]procStats{}
	var rss, pss int64
	for _, p := range procs {
		s, err := readProc(p.pid)
		if err != nil {
			return fmt.Errorf("%s (pid %d): %w", p.name, p.pid, err)
		}
		before[p.name] = s
		rss += s.RSSKiB
		pss += s.PSSKiB
	}
	filesBefore := diskFiles(dir)
	start := time.Now()
	if err := sleepCtx(ctx, idleWindow); err != nil {
		return err
	}
	elapsed := time.Since(start).Seconds()
	res.Raw["idle_files_written"] = filesWritten(dir, filesBefore, diskFiles(dir))
	var ticks, written int64
	perProc := map[string]map[string]float64{}
	for _, p := range procs {
		s, err := readProc(p.pid)
		if err != nil {
			return fmt.Errorf("%s (pid %d) during the idle window: %w", p.name, p.pid, err)
		}
		b := before[p.name]
		ticks += s.CPUTicks - b.CPUTicks
		written += s.WriteBytes - b.WriteBytes
		perProc[p.name] = map[string]float64{
			"rssMiB":     float64(b.RSSKiB) / 1024,
			"pssMiB":     float64(b.PSSKiB) / 1024,
			"millicores": float64(s.CPUTicks-b.CPUTicks) / clockTicks / elapsed * 1000,
			"writeKiBs":  float64(s.WriteBytes-b.WriteBytes) / 1024 / elapsed,
		}
	}
	res.Values["idle_rss"] = float64(rss) / 1024
	res.Values["idle_pss"] = float64(pss) / 1024
	res.Values["idle_cpu"] = float64(ticks) / clockTicks / elapsed * 1000
	res.Values["idle_write"] = float64(written) / 1024 / elapsed
	res.Raw["idle_per_process"] = perProc
	return nil
}

// measureAPI creates 1000 ConfigMaps from 8 clients, then lists them all
// 20 times.
func measureAPI(ctx context.Context, c *kubernetes.Clientset, res *runResult) error {
	ns, err := newNamespace(ctx, c, "bench-api")
	if err != nil {
		return err
	}
	lat := make([]float64, apiCreates)
	errs := make(chan error, apiClients)
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < apiClients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%04d", i)},
					Data: map[string]string{"key": strings.Repeat("v", 64)}}
				t := time.Now()
				if _, err := c.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
				lat[i] = ms(time.Since(t))
			}
		}()
	}
	for i := 0; i < apiCreates; i++ {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			return fmt.Errorf("create ConfigMap: %w", err)
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return fmt.Errorf("create ConfigMap: %w", err)
	default:
	}
	var lists []float64
	for i := 0; i < apiLists; i++ {
		t := time.Now()
		l, err := c.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("list ConfigMaps: %w", err)
		}
		lists = append(lists, ms(time.Since(t)))
		if len(l.Items) < apiCreates {
			return fmt.Errorf("listed %d ConfigMaps, want %d", len(l.Items), apiCreates)
		}
	}
	res.Values["api_create_p50"] = percentile(lat, 50)
	res.Values["api_create_p99"] = percentile(lat, 99)
	res.Values["api_list_p50"] = percentile(lists, 50)
	res.Values["api_list_p99"] = percentile(lists, 99)
	res.Raw["api_create_ms"] = lat
	res.Raw["api_list_ms"] = lists
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// newNamespace creates a namespace and waits for its default
// ServiceAccount, without which pods are refused.
func newNamespace(ctx context.Context, c *kubernetes.Clientset, name string) (string, error) {
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create namespace %s: %w", name, err)
	}
	for deadline := time.Now().Add(time.Minute); ; {
		if _, err := c.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			return name, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("namespace %s: no default ServiceAccount after a minute", name)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return "", err
		}
	}
}

// runningWatch records when each pod of a namespace is first seen Running
// by an informer (a watch that relists if it breaks).
type runningWatch struct {
	mu      sync.Mutex
	running map[string]time.Time
	// added is when each pod was first seen at all.
	added   map[string]time.Time
	changed chan struct{}
	stop    chan struct{}
}

func watchRunning(c *kubernetes.Clientset, ns string) (*runningWatch, error) {
	w := &runningWatch{running: map[string]time.Time{}, added: map[string]time.Time{}, changed: make(chan struct{}, 1), stop: make(chan struct{})}
	f := informers.NewSharedInformerFactoryWithOptions(c, 0, informers.WithNamespace(ns))
	inf := f.Core().V1().Pods().Informer()
	seen := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		now := time.Now()
		w.mu.Lock()
		if _, ok := w.added[p.Name]; !ok {
			w.added[p.Name] = now
		}
		if _, ok := w.running[p.Name]; !ok && p.Status.Phase == corev1.PodRunning {
			w.running[p.Name] = now
			select {
			case w.changed <- struct{}{}:
			default:
			}
		}
		w.mu.Unlock()
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    seen,
		UpdateFunc: func(_, obj any) { seen(obj) },
	}); err != nil {
		return nil, err
	}
	f.Start(w.stop)
	if !cache.WaitForCacheSync(w.stop, inf.HasSynced) {
		return nil, fmt.Errorf("pod watch in %s did not sync", ns)
	}
	return w, nil
}

// waitCount waits until n pods were seen Running.
func (w *runningWatch) waitCount(ctx context.Context, n int) error {
	for {
		w.mu.Lock()
		got := len(w.running)
		w.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d pods Running: %w", got, n, ctx.Err())
		case <-w.changed:
		case <-time.After(time.Second):
		}
	}
}

func (w *runningWatch) at(name string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.running[name]
	return t, ok
}

func podSpec() corev1.PodSpec {
	grace := int64(1)
	return corev1.PodSpec{
		TerminationGracePeriodSeconds: &grace,
		Containers:                    []corev1.Container{{Name: "hello", Image: testImage, ImagePullPolicy: corev1.PullNever}},
	}
}

// measurePods creates 30 pods one per second and takes, for each, the
// time from its create request to its first Running seen by a watch. The
// pods are deleted afterwards, so the burst has the node to itself.
func measurePods(ctx context.Context, c *kubernetes.Clientset, res *runResult) error {
	ns, err := newNamespace(ctx, c, "bench-pods")
	if err != nil {
		return err
	}
	w, err := watchRunning(c, ns)
	if err != nil {
		return err
	}
	defer close(w.stop)
	sent := map[string]time.Time{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; i < latencyPods; i++ {
		name := fmt.Sprintf("latency-%02d", i)
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: podSpec()}
		sent[name] = time.Now()
		if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create pod: %w", err)
		}
		if i < latencyPods-1 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
			}
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := w.waitCount(wctx, latencyPods); err != nil {
		return err
	}
	var lat []float64
	for name, t := range sent {
		r, _ := w.at(name)
		lat = append(lat, ms(r.Sub(t)))
	}
	sort.Float64s(lat)
	res.Values["pod_p50"] = percentile(lat, 50)
	res.Values["pod_p99"] = percentile(lat, 99)
	res.Raw["pod_startup_ms"] = lat
	return deleteAllPods(ctx, c, ns)
}

// deleteAllPods deletes the namespace's pods gracefully and waits until
// the kubelet has removed them (and freed their addresses).
func deleteAllPods(ctx context.Context, c *kubernetes.Clientset, ns string) error {
	if err := c.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		return fmt.Errorf("delete pods: %w", err)
	}
	for deadline := time.Now().Add(3 * time.Minute); ; {
		l, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err == nil && len(l.Items) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pods of %s not gone after 3 minutes", ns)
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

// measureBurst creates a 240-replica Deployment and times it until every
// pod was seen Running.
func measureBurst(ctx context.Context, c *kubernetes.Clientset, res *runResult) error {
	w, t0, err := runDeployment(ctx, c, "burst", burstPods, podSpec(), 12*time.Minute)
	if err != nil {
		return err
	}
	defer close(w.stop)
	secs := time.Since(t0).Seconds()
	res.Values["burst_time"] = secs
	res.Values["burst_rate"] = burstPods / (secs / 60)
	var times []float64
	w.mu.Lock()
	for _, t := range w.running {
		times = append(times, t.Sub(t0).Seconds())
	}
	w.mu.Unlock()
	sort.Float64s(times)
	res.Raw["burst_running_s"] = times
	return nil
}

// runDeployment creates a Deployment of replicas pods of spec in a new
// namespace bench-<name> and waits, up to timeout, until a watch saw them
// all Running. It returns that watch (close its stop) and when it created
// the Deployment.
func runDeployment(ctx context.Context, c *kubernetes.Clientset, name string, replicas int, spec corev1.PodSpec, timeout time.Duration) (*runningWatch, time.Time, error) {
	ns, err := newNamespace(ctx, c, "bench-"+name)
	if err != nil {
		return nil, time.Time{}, err
	}
	w, err := watchRunning(c, ns)
	if err != nil {
		return nil, time.Time{}, err
	}
	n := int32(replicas)
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &n,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
	created := time.Now()
	if _, err := c.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		close(w.stop)
		return nil, created, fmt.Errorf("create Deployment: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := w.waitCount(wctx, replicas); err != nil {
		close(w.stop)
		return nil, created, err
	}
	return w, created, nil
}

// measureSizes sums what each system runs from disk: kedge's one binary;
// the baseline's binaries plus the runc, shim, CNI plugins and crictl it
// shares with kedge (kedge carries them inside) and the pause and CoreDNS
// image archives (likewise).
func measureSizes(o options, res *results) error {
	st, err := os.Stat(o.kedge)
	if err != nil {
		return err
	}
	res.record(systemKedge, "size", float64(st.Size())/(1<<20))
	if o.release != "" {
		st, err := os.Stat(o.release)
		if err != nil {
			return err
		}
		res.record(systemKedge, "size_release", float64(st.Size())/(1<<20))
	}
	files := map[string]int64{}
	var total int64
	entries, err := os.ReadDir(o.baselineDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if i, err := e.Info(); err == nil && i.Mode().IsRegular() {
			files[e.Name()] = i.Size()
			total += i.Size()
		}
	}
	shared, err := sharedPayloadSizes()
	if err != nil {
		return err
	}
	for n, s := range shared {
		files[n] = s
		total += s
	}
	res.record(systemBaseline, "size", float64(total)/(1<<20))
	res.Notes["size_baseline_files_bytes"] = files
	return nil
}

// sharedPayloadSizes are the sizes of the payload executables and image
// archives kedge carries, unpacked.
func sharedPayloadSizes() (map[string]int64, error) {
	dir, err := os.MkdirTemp("", "kedge-bench-payload-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin, err := payload.Extract(dir)
	if err != nil {
		return nil, err
	}
	sizes := map[string]int64{}
	entries, _ := os.ReadDir(bin)
	for _, e := range entries {
		if i, err := e.Info(); err == nil && i.Mode().IsRegular() {
			sizes[filepath.Join("payload", e.Name())] = i.Size()
		}
	}
	for _, n := range []string{"pause.tar", "coredns.tar"} {
		if data, ok := payload.Image(n); ok {
			sizes[filepath.Join("images", n)] = int64(len(data))
		}
	}
	return sizes, nil
}

// fileState is what the bench can see of a file without tracing writes.
type fileState struct {
	size  int64
	mtime time.Time
}

// diskFiles lists the regular files under dir, but for its run dir (a
// tmpfs: what is written there reaches no disk).
func diskFiles(dir string) map[string]fileState {
	files := map[string]fileState{}
	run := filepath.Join(dir, "run")
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && path == run {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				files[path] = fileState{size: info.Size(), mtime: info.ModTime()}
			}
		}
		return nil
	})
	return files
}

// filesWritten names the files modified between two listings, with how
// much each grew (a SQLite WAL that is reused after a checkpoint is
// written without growing), biggest growth first, and logs them: which
// files the idle writes go to, not how many bytes each got.
func filesWritten(dir string, before, after map[string]fileState) map[string]int64 {
	grew := map[string]int64{}
	var names []string
	for path, a := range after {
		b, existed := before[path]
		if existed && a.mtime.Equal(b.mtime) && a.size == b.size {
			continue
		}
		rel, _ := filepath.Rel(dir, path)
		grew[rel] = a.size - b.size
		names = append(names, rel)
	}
	sort.Slice(names, func(i, j int) bool { return grew[names[i]] > grew[names[j]] })
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s (%+d B)", n, grew[n]))
	}
	logf("files written in the idle window (growth): %s", strings.Join(parts, ", "))
	return grew
}
