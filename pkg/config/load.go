package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// EnvName returns the environment variable that sets the flag name:
// KEDGE_<FLAG>, except KEDGE_URL for --server, the name k3s users know.
func EnvName(flag string) string {
	if flag == "server" {
		return "KEDGE_URL"
	}
	return "KEDGE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// ApplySources fills every flag of fs that was not given on the command line
// from, in increasing precedence, the config file(s) and the KEDGE_*
// environment. getenv is os.Getenv outside tests. The config file is the
// "config" flag if set, else $KEDGE_CONFIG_FILE, else the default; only an
// explicitly named file must exist. Every problem found is returned.
func ApplySources(fs *pflag.FlagSet, getenv func(string) string) error {
	path, explicit := configPath(fs, getenv)
	values, err := readConfigFiles(path, explicit)
	if err != nil {
		return err
	}
	var errs []error
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		v := values[key]
		f := fs.Lookup(key)
		if f == nil || key == "config" {
			errs = append(errs, fmt.Errorf("%s: unknown key %q (keys are the long flag names of this command; see --help)", v.file, key))
			continue
		}
		if f.Changed || getenv(EnvName(key)) != "" {
			continue
		}
		if err := setFromYAML(f, v.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: key %q: %w", v.file, key, err))
		}
	}
	fs.VisitAll(func(f *pflag.Flag) {
		env := getenv(EnvName(f.Name))
		if env == "" || f.Changed || f.Name == "config" {
			return
		}
		if err := f.Value.Set(env); err != nil {
			errs = append(errs, fmt.Errorf("environment variable %s: invalid value %q: %w", EnvName(f.Name), env, err))
		}
	})
	return errors.Join(errs...)
}

func configPath(fs *pflag.FlagSet, getenv func(string) string) (string, bool) {
	if f := fs.Lookup("config"); f != nil && f.Changed {
		return f.Value.String(), true
	}
	if p := getenv(EnvName("config-file")); p != "" {
		return p, true
	}
	if f := fs.Lookup("config"); f != nil {
		return f.Value.String(), false
	}
	return DefaultConfigFile, false
}

type fileValue struct {
	file  string
	value any
}

// readConfigFiles reads path and then path.d/*.yaml in name order; a key in
// a later file replaces the same key of an earlier one.
func readConfigFiles(path string, explicit bool) (map[string]fileValue, error) {
	values := map[string]fileValue{}
	files := []string{path}
	if _, err := os.Stat(path); err != nil {
		if !os.IsNotExist(err) || explicit {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
		files = nil
	}
	dropins, err := filepath.Glob(filepath.Join(path+".d", "*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("config directory %s.d: %w", path, err)
	}
	sort.Strings(dropins)
	var errs []error
	for _, file := range append(files, dropins...) {
		m, err := decodeFile(file)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for k, v := range m {
			values[k] = fileValue{file: file, value: v}
		}
	}
	return values, errors.Join(errs...)
}

func decodeFile(file string) (map[string]any, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", file, err)
	}
	var m map[string]any
	// UnmarshalStrict rejects duplicate keys.
	if err := yaml.UnmarshalStrict(data, &m); err != nil {
		return nil, fmt.Errorf("config file %s: not a YAML mapping of flag names to values: %w", file, err)
	}
	return m, nil
}

// setFromYAML sets a flag from a decoded YAML value: scalars through the
// flag's own parser (so types are checked as on the command line), lists
// only for repeatable flags.
func setFromYAML(f *pflag.Flag, v any) error {
	if list, ok := v.([]any); ok {
		sv, ok := f.Value.(pflag.SliceValue)
		if !ok {
			return fmt.Errorf("expected a single %s value, got a list", f.Value.Type())
		}
		strs := make([]string, 0, len(list))
		for _, item := range list {
			s, err := scalar(item)
			if err != nil {
				return err
			}
			strs = append(strs, s)
		}
		return sv.Replace(strs)
	}
	s, err := scalar(v)
	if err != nil {
		return err
	}
	if err := f.Value.Set(s); err != nil {
		return fmt.Errorf("invalid %s value %q: %w", f.Value.Type(), s, err)
	}
	return nil
}

func scalar(v any) (string, error) {
	switch t := v.(type) {
	case string:
		return t, nil
	case bool:
		return strconv.FormatBool(t), nil
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), nil
	case int64:
		return strconv.FormatInt(t, 10), nil
	case nil:
		return "", fmt.Errorf("empty value")
	default:
		return "", fmt.Errorf("expected a scalar value, got %T", v)
	}
}
