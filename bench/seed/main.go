// The design the classic version of this task starts from, as a yardstick
// for `deno task bench` (workload seed-b): a Go service on the chi router
// that answers the accept endpoint with one Redis SADD per request into the
// set of the current minute, on a Redis without persistence. It keeps no
// count of its own and reports nothing; only its accept path is measured.
//
// Built by the bench in GOPATH mode from Debian's packages, with no network:
// apt-get install golang-go golang-github-go-chi-chi-dev
// golang-github-gomodule-redigo-dev
//
// Settings: PORT (the port on 127.0.0.1), REDIS_ADDR (host:port).
package main

import (
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gomodule/redigo/redis"
)

func main() {
	addr := os.Getenv("REDIS_ADDR")
	pool := &redis.Pool{
		MaxIdle:     1024,
		IdleTimeout: time.Minute,
		Dial:        func() (redis.Conn, error) { return redis.Dial("tcp", addr) },
	}
	router := chi.NewRouter()
	router.Get("/api/verve/accept", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.URL.Query().Get("id"), 10, 64)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte("failed"))
			return
		}
		conn := pool.Get()
		defer conn.Close()
		key := "ids:" + strconv.FormatInt(time.Now().Unix()/60, 10)
		if _, err := conn.Do("SADD", key, id); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("failed"))
			return
		}
		w.Write([]byte("ok"))
	})
	log.Fatal(http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), router))
}
