package launcher

import (
	"bufio"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// These mirror pkg/config; the launcher does not import it, to stay small.
const (
	defaultDataDir    = "/var/lib/kedge"
	defaultConfigFile = "/etc/kedge/config.yaml"
	envDataDir        = "KEDGE_DATA_DIR"
	envConfigFile     = "KEDGE_CONFIG_FILE"
)

// Env is the process environment as the launcher sees it.
type Env struct {
	Args    []string // argv, argv[0] included
	Getenv  func(string) string
	UID     int
	HomeDir string // $HOME or the passwd entry's; may be empty
}

// passthrough are the names (argv[0] or first argument) of the built-in
// tools whose flags are not kedge's, so -d means something else there.
var passthrough = map[string]bool{"kubectl": true, "crictl": true, "ctr": true}

// DataDirs returns where the inner kedge is extracted, and, for a user
// other than root who named no data dir, the default root data dir, whose
// extracted copy is used if it is there (so every user need not hold their
// own copy). The data dir is the first of: --data-dir/-d on the command
// line, $KEDGE_DATA_DIR, data-dir in the config files (as kedge reads them:
// --config/-c, $KEDGE_CONFIG_FILE or /etc/kedge/config.yaml, then its .d/*.yaml,
// a later file winning), and /var/lib/kedge for root or
// $XDG_CACHE_HOME/kedge (~/.cache/kedge) for anyone else, as k3s does
// with ~/.rancher.
func DataDirs(e Env) (dir string, fallback string) {
	flags := kedgeFlags(e.Args)
	if d := flags["data-dir"]; d != "" {
		return d, ""
	}
	if d := e.Getenv(envDataDir); d != "" {
		return d, ""
	}
	config := flags["config"]
	if config == "" {
		config = e.Getenv(envConfigFile)
	}
	if config == "" {
		config = defaultConfigFile
	}
	if d := configDataDir(config); d != "" {
		return d, ""
	}
	if e.UID == 0 {
		return defaultDataDir, ""
	}
	cache := e.Getenv("XDG_CACHE_HOME")
	if cache == "" || !filepath.IsAbs(cache) {
		cache = filepath.Join(e.HomeDir, ".cache")
	}
	return filepath.Join(cache, "kedge"), defaultDataDir
}

// kedgeFlags returns the values of --data-dir/-d and --config/-c in args,
// unless args run a built-in tool.
func kedgeFlags(args []string) map[string]string {
	found := map[string]string{}
	if len(args) == 0 || passthrough[filepath.Base(args[0])] {
		return found
	}
	args = args[1:]
	if len(args) > 0 && passthrough[args[0]] {
		return found
	}
	long := map[string]string{"--data-dir": "data-dir", "-d": "data-dir", "--config": "config", "-c": "config"}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		name, value, hasValue := strings.Cut(a, "=")
		key, ok := long[name]
		if !ok {
			// -d/var/lib/x: a short flag with its value attached
			if len(a) > 2 && a[0] == '-' && a[1] != '-' {
				if k, ok := long[a[:2]]; ok {
					found[k] = a[2:]
				}
			}
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				break
			}
			i++
			value = args[i]
		}
		found[key] = value
	}
	return found
}

// configDataDir returns the data-dir key of the config file and its .d
// drop-ins, the last one setting it winning. It reads only top-level
// "data-dir: VALUE" lines: the launcher carries no YAML parser, and kedge
// itself validates the files in full.
func configDataDir(config string) string {
	files := []string{config}
	dropins, _ := filepath.Glob(filepath.Join(config+".d", "*.yaml"))
	sort.Strings(dropins)
	dir := ""
	for _, f := range append(files, dropins...) {
		if d := scanDataDir(f); d != "" {
			dir = d
		}
	}
	return dir
}

func scanDataDir(file string) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer f.Close()
	dir := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "data-dir:")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') {
			if end := strings.IndexByte(v[1:], v[0]); end >= 0 {
				dir = v[1 : 1+end]
				continue
			}
		}
		if i := strings.Index(v, " #"); i >= 0 {
			v = strings.TrimSpace(v[:i])
		}
		dir = v
	}
	return dir
}
