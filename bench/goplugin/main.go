// A volume plugin the way go-plugins-helpers serves one (sdk/handler.go,
// sdk/encoder.go, volume/api.go): net/http on a unix socket, one handler per
// call that decodes the JSON request and encodes the response with
// encoding/json and the v1.1 media type. Only the two calls the benchmark
// sends are answered; the driver behind them is trivial, like the Python
// ones it is compared with.
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

const contentType = "application/vnd.docker.plugins.v1.1+json"

type getRequest struct {
	Name string
}

type volume struct {
	Name       string
	Mountpoint string
}

type getResponse struct {
	Volume *volume
}

type capability struct {
	Scope string
}

type capabilitiesResponse struct {
	Capabilities capability
}

type errorResponse struct {
	Err string
}

func encode(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: goplugin SOCKET")
		os.Exit(2)
	}
	path := os.Args[1]
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/VolumeDriver.Capabilities", func(w http.ResponseWriter, r *http.Request) {
		encode(w, 200, capabilitiesResponse{capability{"local"}})
	})
	mux.HandleFunc("/VolumeDriver.Get", func(w http.ResponseWriter, r *http.Request) {
		var req getRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			encode(w, 400, errorResponse{err.Error()})
			return
		}
		encode(w, 200, getResponse{&volume{req.Name, "/mnt/volumes/" + req.Name}})
	})
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		l.Close()
		os.Remove(path)
		os.Exit(0)
	}()
	http.Serve(l, mux)
}
