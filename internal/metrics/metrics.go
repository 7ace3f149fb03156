// Package metrics exposes a server's counters, gauges and latency
// histograms in the Prometheus format, with the Prometheus Go client.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"securefastchat/internal/server"
	"securefastchat/shard"
)

// Metrics is a registry. Its Observer goes into the shard options before
// the server starts; Register adds what is read off the running server.
type Metrics struct {
	reg       *prometheus.Registry
	latency   prometheus.Histogram
	fanout    prometheus.Histogram
	commit    prometheus.Histogram
	commitOps prometheus.Histogram
}

// New makes a registry with the Go runtime's and the process's metrics.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "securefastchat_message_latency_seconds",
		Help:    "From the server accepting a message to the receiver's client acknowledging it, for receivers online.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 2.5, 14), // 50 µs .. ~7.5 min
	})
	m.fanout = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "securefastchat_group_fanout_members",
		Help:    "Members a group message went to, besides its sender.",
		Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
	})
	m.commit = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "securefastchat_store_commit_seconds",
		Help:    "Duration of the queue's group-commit transactions, fsync included.",
		Buckets: prometheus.ExponentialBuckets(100e-6, 2, 14), // 100 µs .. ~1.6 s
	})
	m.commitOps = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "securefastchat_store_commit_ops",
		Help:    "Queue writes per group-commit transaction.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 8), // 1 .. 16384
	})
	m.reg.MustRegister(m.latency, m.fanout, m.commit, m.commitOps)
	return m
}

// Delivered implements shard.Observer.
func (m *Metrics) Delivered(d time.Duration) { m.latency.Observe(d.Seconds()) }

// FannedOut implements shard.Observer.
func (m *Metrics) FannedOut(n int) { m.fanout.Observe(float64(n)) }

// Committed implements shard.Observer.
func (m *Metrics) Committed(d time.Duration, ops int) {
	m.commit.Observe(d.Seconds())
	m.commitOps.Observe(float64(ops))
}

// Register adds the running server's counters and gauges.
func (m *Metrics) Register(s *server.Server) {
	st := &s.Set.Stats
	counter := func(name, help string, f func() int64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "securefastchat_" + name, Help: help}, func() float64 { return float64(f()) }))
	}
	gauge := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "securefastchat_" + name, Help: help}, f))
	}
	for i := 0; i < s.Set.Len(); i++ {
		sh := s.Set.Shard(i)
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "securefastchat_shard_connections", Help: "Open connections per shard, logged in or not.",
			ConstLabels: prometheus.Labels{"shard": strconv.Itoa(i)},
		}, func() float64 { return float64(sh.Conns()) }))
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "securefastchat_shard_messages_total", Help: "Messages routed to each shard's connections.",
			ConstLabels: prometheus.Labels{"shard": strconv.Itoa(i)},
		}, func() float64 { return float64(sh.Messages()) }))
	}
	gauge("online_users", "Users logged in.", func() float64 { return float64(s.Set.Online()) })
	gauge("unauthenticated_connections", "Connections that have not logged in yet.", func() float64 { return float64(s.Set.Unauthenticated()) })
	// One scan of the queue totals serves both gauges of a scrape.
	var qmu sync.Mutex
	var qat time.Time
	var qn, qb int64
	totals := func() (int64, int64) {
		qmu.Lock()
		defer qmu.Unlock()
		if time.Since(qat) > time.Second {
			qn, qb, _ = s.Store.QueueTotals()
			qat = time.Now()
		}
		return qn, qb
	}
	gauge("queued_messages", "Messages stored for receivers who are away.", func() float64 { n, _ := totals(); return float64(n) })
	gauge("queued_bytes", "Bytes stored for receivers who are away.", func() float64 { _, b := totals(); return float64(b) })
	gauge("ready", "1 while the server accepts connections and its store answers.", func() float64 {
		if s.Ready() {
			return 1
		}
		return 0
	})
	counter("connections_accepted_total", "Connections accepted.", st.Accepted.Load)
	counter("connections_refused_total", "Connections refused at admission (per-address cap, handshake rate).", st.Refused.Load)
	counter("connections_evicted_total", "Connections closed before login to make room at the global cap.", st.Evicted.Load)
	counter("handshakes_failed_total", "Handshakes that failed.", st.HandshakeFailed.Load)
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "securefastchat_logins_total", Help: "Logins, sign-ups and resumes.",
		ConstLabels: prometheus.Labels{"result": "ok"}}, func() float64 { return float64(st.LoginsOK.Load()) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "securefastchat_logins_total", Help: "Logins, sign-ups and resumes.",
		ConstLabels: prometheus.Labels{"result": "failed"}}, func() float64 { return float64(st.LoginsFailed.Load()) }))
	counter("messages_routed_total", "Messages handed to a receiver's connection.", st.Routed.Load)
	counter("messages_delivered_total", "Messages acknowledged by their receiver.", st.Delivered.Load)
	counter("messages_queued_total", "Messages stored for a receiver who was away or slow.", st.Queued.Load)
	counter("messages_from_queue_total", "Messages delivered from the store.", st.FromQueue.Load)
	counter("messages_expired_total", "Queued messages deleted unread after the retention.", func() int64 { return s.Expired.Load() + st.ExpiredAtFetch.Load() })
	counter("messages_queue_full_total", "Messages refused: the receiver's queue was full.", st.QueueFull.Load)
	counter("store_errors_total", "Commits that failed (disk full, I/O).", st.StoreErrors.Load)
	counter("slow_consumers_total", "Receivers cut off: output full, write deadline or ack timeout.", st.SlowConsumers.Load)
	counter("protocol_errors_total", "Connections closed for a bad frame.", st.ProtocolErrors.Load)
	counter("panics_total", "Panics contained in a connection or shard.", st.Panics.Load)
	counter("signals_total", "Typing signals passed on.", st.Signals.Load)
	counter("broadcasts_total", "Broadcasts sent.", st.Broadcasts.Load)
	counter("live_dropped_total", "Presence, signals and broadcasts dropped for receivers far behind.", st.LiveDropped.Load)
	for _, r := range shard.CloseReasons() {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "securefastchat_connections_closed_total",
			Help: "Connections closed, by the first reason.", ConstLabels: prometheus.Labels{"reason": r.String()}},
			func() float64 { return float64(st.Closes[r].Load()) }))
	}
	for _, r := range shard.DropReasons() {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "securefastchat_dropped_total",
			Help: "Messages and live signals that went to nobody, by reason.", ConstLabels: prometheus.Labels{"reason": r.String()}},
			func() float64 { return float64(st.Drops[r].Load()) }))
	}
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}
