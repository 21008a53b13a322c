// An authorization plugin in Go that allows every request, the way
// go-plugins-helpers serves one (net/http on the plugin's unix socket, the
// request decoded with encoding/json): the floor bench/authz.py compares
// policyauthz with.
package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
)

type request struct {
	User            string            `json:"User,omitempty"`
	UserAuthNMethod string            `json:"UserAuthNMethod,omitempty"`
	RequestMethod   string            `json:"RequestMethod,omitempty"`
	RequestURI      string            `json:"RequestUri,omitempty"`
	RequestBody     []byte            `json:"RequestBody,omitempty"`
	RequestHeaders  map[string]string `json:"RequestHeaders,omitempty"`
	ResponseBody    []byte            `json:"ResponseBody,omitempty"`
	ResponseHeaders map[string]string `json:"ResponseHeaders,omitempty"`
	ResponseStatus  int               `json:"ResponseStatusCode,omitempty"`
}

func allow(w http.ResponseWriter, r *http.Request) {
	var req request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"Err": err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1.1+json")
	json.NewEncoder(w).Encode(map[string]interface{}{"Allow": true})
}

func main() {
	path := "/run/docker/plugins/goauthz.sock"
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/AuthZPlugin.AuthZReq", allow)
	mux.HandleFunc("/AuthZPlugin.AuthZRes", allow)
	panic(http.Serve(l, mux))
}
