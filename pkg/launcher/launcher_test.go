package launcher

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// The test binary doubles as both halves of a release binary: wrapped, it
// runs as the launcher (it finds a trailer on /proc/self/exe); extracted,
// as the inner kedge, printing what it was started with.
func TestMain(m *testing.M) {
	if os.Getenv("KEDGE_LAUNCHER_TEST") == "1" {
		f, err := os.Open("/proc/self/exe")
		if err != nil {
			panic(err)
		}
		_, err = readBundle(f)
		f.Close()
		if err == nil {
			fmt.Fprintln(os.Stderr, Exec())
			os.Exit(1)
		}
		exe, _ := os.Readlink("/proc/self/exe")
		json.NewEncoder(os.Stdout).Encode(innerRun{Args: os.Args, Exe: exe, Env: os.Getenv("KEDGE_TEST_VAR")})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type innerRun struct {
	Args []string
	Exe  string
	Env  string
}

func compress(t *testing.T, data []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	return enc.EncodeAll(data, nil)
}

// wrap writes launcher+compressed(inner)+trailer to dir/kedge.
func wrap(t *testing.T, dir string, launcher, inner, compressed []byte) string {
	t.Helper()
	var out bytes.Buffer
	if err := Wrap(&out, bytes.NewReader(launcher), bytes.NewReader(inner), bytes.NewReader(compressed)); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "kedge")
	if err := os.WriteFile(p, out.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func hashName(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])[:hashLen]
}

func TestReleaseBinary(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	release := wrap(t, tmp, bin, bin, compress(t, bin))
	dataDir := filepath.Join(tmp, "data dir")
	want := filepath.Join(dataDir, "data", hashName(bin), "kedge")

	run := func(argv0 string, args ...string) innerRun {
		t.Helper()
		cmd := exec.Command(release, args...)
		cmd.Args[0] = argv0
		cmd.Env = append(os.Environ(), "KEDGE_LAUNCHER_TEST=1", "KEDGE_DATA_DIR="+dataDir, "KEDGE_TEST_VAR=kept")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %v\n%s", cmd.Args, err, stderr.String())
		}
		var got innerRun
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("inner printed %q: %v", out, err)
		}
		return got
	}

	// First run extracts; argv[0] (a kubectl symlink) and the environment
	// reach the inner binary unchanged.
	got := run("kubectl", "get", "pods", "-d", "x")
	if wantRun := (innerRun{Args: []string{"kubectl", "get", "pods", "-d", "x"}, Exe: want, Env: "kept"}); !reflect.DeepEqual(got, wantRun) {
		t.Fatalf("inner ran as %+v, want %+v", got, wantRun)
	}
	fi, err := os.Stat(want)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("%s: mode %v, want 0755", want, fi.Mode())
	}
	entries, _ := os.ReadDir(filepath.Dir(want))
	if len(entries) != 1 {
		t.Errorf("%s holds %d entries, want only kedge", filepath.Dir(want), len(entries))
	}

	// A later run execs the extracted file without writing it again.
	got = run("/usr/local/bin/kedge", "--version")
	if got.Exe != want || !reflect.DeepEqual(got.Args, []string{"/usr/local/bin/kedge", "--version"}) {
		t.Errorf("second run: %+v", got)
	}
	fi2, err := os.Stat(want)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(fi, fi2) || !fi.ModTime().Equal(fi2.ModTime()) {
		t.Error("second run extracted kedge again")
	}

	// --data-dir on kedge's own command line wins over the environment.
	other := filepath.Join(tmp, "other")
	got = run("kedge", "server", "--data-dir="+other)
	if wantExe := filepath.Join(other, "data", hashName(bin), "kedge"); got.Exe != wantExe {
		t.Errorf("with --data-dir: ran %s, want %s", got.Exe, wantExe)
	}
}

func TestBinaryCorrupt(t *testing.T) {
	inner := bytes.Repeat([]byte("kedge "), 1000)
	tmp := t.TempDir()
	release := wrap(t, tmp, []byte("launcher"), inner, compress(t, inner))
	data, err := os.ReadFile(release)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte of the compressed part: decoding fails or yields other
	// bytes; either way nothing may appear under the final name.
	data[len("launcher")+len(data[len("launcher"):])/3] ^= 0xff
	if err := os.WriteFile(release, data, 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(tmp, "data")
	_, err = Binary(release, Env{Args: []string{"kedge"}, Getenv: func(k string) string {
		if k == envDataDir {
			return dataDir
		}
		return ""
	}})
	if err == nil {
		t.Fatal("corrupt release binary extracted without error")
	}
	dir := filepath.Join(dataDir, "data", hashName(inner))
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("%s holds %d entries after a failed extraction", dir, len(entries))
	}
}

func TestBinaryNoBundle(t *testing.T) {
	p := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(p, bytes.Repeat([]byte{1}, 200), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Binary(p, Env{Args: []string{"kedge"}, Getenv: func(string) string { return "" }}); !errors.Is(err, ErrNoBundle) {
		t.Errorf("err = %v, want ErrNoBundle", err)
	}
}

func TestWrapRejectsMismatch(t *testing.T) {
	var out bytes.Buffer
	err := Wrap(&out, strings.NewReader("l"), strings.NewReader("inner"), bytes.NewReader(compress(t, []byte("other"))))
	if err == nil {
		t.Error("Wrap accepted a compressed stream of other bytes")
	}
}

func TestDataDirs(t *testing.T) {
	tmp := t.TempDir()
	config := filepath.Join(tmp, "config.yaml")
	os.WriteFile(config, []byte("token: x\ndata-dir: /srv/kedge # on the USB disk\n"), 0o600)
	dropins := filepath.Join(tmp, "dropin.yaml")
	os.MkdirAll(dropins+".d", 0o755)
	os.WriteFile(dropins, []byte("data-dir: /a\n"), 0o600)
	os.WriteFile(filepath.Join(dropins+".d", "10.yaml"), []byte("data-dir: \"/b\"\n"), 0o600)
	missing := filepath.Join(tmp, "none.yaml")

	tests := []struct {
		name         string
		args         []string
		env          map[string]string
		uid          int
		dir, fallbck string
	}{
		{"root default", []string{"kedge", "server"}, map[string]string{envConfigFile: missing}, 0, "/var/lib/kedge", ""},
		{"user default", []string{"kedge", "kubectl", "get", "pods"}, map[string]string{envConfigFile: missing}, 1000, "/home/u/.cache/kedge", "/var/lib/kedge"},
		{"user XDG", []string{"kedge"}, map[string]string{envConfigFile: missing, "XDG_CACHE_HOME": "/x"}, 1000, "/x/kedge", "/var/lib/kedge"},
		{"flag", []string{"kedge", "server", "--data-dir", "/f"}, map[string]string{envDataDir: "/e"}, 0, "/f", ""},
		{"flag =", []string{"kedge", "server", "--data-dir=/f"}, nil, 1000, "/f", ""},
		{"short flag", []string{"kedge", "agent", "-d", "/s"}, nil, 0, "/s", ""},
		{"short flag attached", []string{"kedge", "agent", "-d/s"}, nil, 0, "/s", ""},
		{"after --", []string{"kedge", "server", "--", "-d", "/s"}, map[string]string{envConfigFile: missing}, 0, "/var/lib/kedge", ""},
		{"kubectl's -d is not ours", []string{"kubectl", "-d", "/s"}, map[string]string{envConfigFile: missing}, 0, "/var/lib/kedge", ""},
		{"kedge kubectl's neither", []string{"kedge", "kubectl", "-d", "/s"}, map[string]string{envConfigFile: missing}, 0, "/var/lib/kedge", ""},
		{"env", []string{"kedge", "server"}, map[string]string{envDataDir: "/e", envConfigFile: config}, 0, "/e", ""},
		{"config file env", []string{"kedge", "server"}, map[string]string{envConfigFile: config}, 1000, "/srv/kedge", ""},
		{"config flag", []string{"kedge", "server", "-c", config}, nil, 0, "/srv/kedge", ""},
		{"drop-in wins", []string{"kedge", "server", "--config=" + dropins}, nil, 0, "/b", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, fallback := DataDirs(Env{Args: tt.args, Getenv: func(k string) string { return tt.env[k] }, UID: tt.uid, HomeDir: "/home/u"})
			if dir != tt.dir || fallback != tt.fallbck {
				t.Errorf("DataDirs = %q, %q; want %q, %q", dir, fallback, tt.dir, tt.fallbck)
			}
		})
	}
}
