package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	_ "modernc.org/sqlite" // kine's database, read only
)

const (
	// churnRate is pods created, and as many deleted, per second.
	churnRate = 10
	// churnKept is how many churn pods exist at once.
	churnKept = 50
	// churnEarly is when the first size is taken.
	churnEarly = 5 * time.Minute
)

// variantChurn runs a system's control plane alone for the churn: its
// pods stay Pending, so no node is needed, and without kubelets the
// systems' churns can run side by side.
const variantChurn = "churn"

// measureChurnAll runs every system's churn at once, each control plane
// alone in its own sandbox. The figure is the datastore's size at a fixed
// pod rate, which sharing the cores does not change; side by side they
// take one churn period instead of one per system.
func measureChurnAll(ctx context.Context, o options, res *results) error {
	logf("%s at once: %s of churn, %d pods a second each", strings.Join(o.systems, " and "), o.churnFor, churnRate)
	runs := make([]*runResult, len(o.systems))
	errs := make([]error, len(o.systems))
	var wg sync.WaitGroup
	for i, sys := range o.systems {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runs[i], errs[i] = runSandboxed(ctx, o, sys, 1, []string{groupChurn}, variantChurn)
		}()
	}
	wg.Wait()
	for i, sys := range o.systems {
		if errs[i] != nil {
			return fmt.Errorf("%s churn: %w", sys, errs[i])
		}
		res.addPrefixed(sys, runs[i], "churn_")
	}
	return nil
}

// storeFiles are a system's datastore on disk: the database and its
// write-ahead log (a file or a directory).
type storeFiles struct {
	db, wal string
	// sqlite is kine's database, whose compaction can be read.
	sqlite bool
}

// measureChurn creates and deletes churnRate pods a second for d and
// records the datastore's size after churnEarly and at the end, the
// largest write-ahead log seen, and for kine how far compaction lags. The
// pods select a node label no node has, so they stay Pending: what churns
// is the datastore (pods, their scheduling Events, status updates), not
// containers, which a 2-core machine could not start 10 a second.
func measureChurn(ctx context.Context, c *kubernetes.Clientset, files storeFiles, d time.Duration, res *runResult) error {
	ns, err := newNamespace(ctx, c, "churn")
	if err != nil {
		return err
	}
	spec := podSpec()
	spec.NodeSelector = map[string]string{"kedge.io/bench-churn": "nowhere"}
	var lag *compactLag
	if files.sqlite {
		if lag, err = openCompactLag(files.db); err != nil {
			return err
		}
		defer lag.close()
	}
	var kept []string
	var walMax, lagMax int64
	var series []float64 // the datastore's size each minute, MiB
	var errs, n int
	tick := time.NewTicker(time.Second / churnRate)
	defer tick.Stop()
	sample := time.NewTicker(10 * time.Second)
	defer sample.Stop()
	begin := time.Now()
	early := false
	for time.Since(begin) < d {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sample.C:
			walMax = max(walMax, pathSize(files.wal))
			if lag != nil {
				if l, err := lag.read(); err == nil {
					lagMax = max(lagMax, l)
				}
			}
			if len(series) < int(time.Since(begin)/time.Minute) {
				series = append(series, mib(pathSize(files.db)+pathSize(files.wal)))
			}
			if !early && time.Since(begin) >= churnEarly {
				early = true
				res.Values["churn_db_early"] = mib(pathSize(files.db) + pathSize(files.wal))
			}
		case <-tick.C:
			n++
			name := fmt.Sprintf("churn-%d", n)
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
			if _, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				errs++
				continue
			}
			kept = append(kept, name)
			if len(kept) > churnKept {
				zero := int64(0)
				if err := c.CoreV1().Pods(ns).Delete(ctx, kept[0], metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
					errs++
				}
				kept = kept[1:]
			}
		}
	}
	res.Values["churn_db_end"] = mib(pathSize(files.db) + pathSize(files.wal))
	res.Values["churn_wal_max"] = mib(walMax)
	if files.sqlite {
		res.Values["churn_compact_lag"] = float64(lagMax)
	}
	res.Raw["churn"] = map[string]any{"seconds": d.Seconds(), "created": n, "errors": errs, "db_mib_each_minute": series}
	if errs > n/100 {
		return fmt.Errorf("%d of %d pod creates or deletes failed", errs, n)
	}
	return deleteAllPods(ctx, c, ns)
}

// storeOf is where sys keeps its datastore.
func storeOf(sys system) (storeFiles, error) {
	switch s := sys.(type) {
	case *kedgeSystem:
		db := filepath.Join(s.dataDir(), "server", "db", "state.db")
		return storeFiles{db: db, wal: db + "-wal", sqlite: true}, nil
	case *baselineSystem:
		return storeFiles{db: s.path("etcd", "member", "snap", "db"), wal: s.path("etcd", "member", "wal")}, nil
	}
	return storeFiles{}, fmt.Errorf("no churn figure for %T", sys)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// pathSize is a file's size, or the sum of a directory's files.
func pathSize(path string) int64 {
	var total int64
	filepath.WalkDir(path, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	return total
}

// compactLag reads how many revisions kine keeps uncompacted: its latest
// revision less the one it compacted to (kine records that in the row
// compact_rev_key). A lag that only grows is compaction stuck.
type compactLag struct{ db *sql.DB }

// openCompactLag opens kine's database read only, once for the churn.
func openCompactLag(dbFile string) (*compactLag, error) {
	db, err := sql.Open("sqlite", "file:"+dbFile+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return &compactLag{db: db}, nil
}

func (l *compactLag) read() (int64, error) {
	var latest, compacted int64
	if err := l.db.QueryRow("SELECT MAX(id) FROM kine").Scan(&latest); err != nil {
		return 0, err
	}
	if err := l.db.QueryRow("SELECT MAX(prev_revision) FROM kine WHERE name = 'compact_rev_key'").Scan(&compacted); err != nil {
		return 0, err
	}
	return latest - compacted, nil
}

func (l *compactLag) close() { l.db.Close() }
