// The oracle of tests/unit/test_gojson.py: decodes each body with Go's
// encoding/json, as the daemon does, into types shaped like the daemon's
// container-create body (embedded structs and pointers, slices of structs,
// maps, interface{}, numbers of several sizes, fields hidden by a conflict).
//
// Input: one base64 body per line. Output: one JSON line per body,
// {"kind": "" | "syntax" | "type", "value": <the decoded value, marshaled>}.
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
)

type Driver struct {
	Name    string
	Options map[string]string
}

type VolumeOptions struct {
	NoCopy       bool
	Labels       map[string]string
	DriverConfig *Driver
}

type Mount struct {
	Type          string
	Source        string
	Target        string
	ReadOnly      bool
	VolumeOptions *VolumeOptions
}

type Resources struct {
	Memory    int64
	CPUShares int64
	PidsLimit *int64
	Weight    uint32
}

type HostConfig struct {
	Binds      []string
	Privileged bool
	Mounts     []Mount
	Resources
	Sysctls  map[string]string
	Ratio    float64
	Extra    interface{}
	Shared   string
	Tagged   string
	Nice     int32
	Devices  []*Mount
	Counters map[string]int64
}

type Config struct {
	Image       string
	Env         []string
	Labels      map[string]string
	StopTimeout *int
	Shared      string
	Tagged      string `json:"Tagged"`
	Port        uint64
}

type Wrapper struct {
	*Config
	InnerHostConfig *HostConfig `json:"HostConfig"`
	Cpuset          string
	*HostConfig
}

type result struct {
	Kind  string          `json:"kind"`
	Value json.RawMessage `json:"value"`
}

// The parts of a Wrapper, marshaled one by one (the embedded pointers would
// be flattened into one object otherwise).
type parts struct {
	Config     *Config
	HostConfig *HostConfig
	Cpuset     string
	Flat       *HostConfig
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	for in.Scan() {
		body, err := base64.StdEncoding.DecodeString(in.Text())
		if err != nil {
			panic(err)
		}
		var w Wrapper
		err = json.NewDecoder(strings.NewReader(string(body))).Decode(&w)
		kind := ""
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			kind = "type"
		} else if err != nil || errors.Is(err, io.EOF) {
			kind = "syntax"
		}
		value, merr := json.Marshal(parts{w.Config, w.InnerHostConfig, w.Cpuset, w.HostConfig})
		if merr != nil {
			panic(merr)
		}
		line, _ := json.Marshal(result{kind, value})
		out.Write(line)
		out.WriteByte('\n')
		out.Flush()
	}
}
