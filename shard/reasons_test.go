package shard

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// The close lines of a flood: 10 a second per reason, and the next line
// let through says how many were left out.
func TestRateLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	now := time.Unix(1700000000, 0)
	l := rateLog{now: func() time.Time { return now }}
	for i := 0; i < 25; i++ {
		l.log(log, CloseProtocol, "closing connection: bad frame length")
	}
	l.log(log, CloseStuck, "closing stuck receiver") // another reason has its own budget
	if n := strings.Count(buf.String(), "bad frame length"); n != rateLogBurst {
		t.Fatalf("%d lines in the first second, want %d", n, rateLogBurst)
	}
	if !strings.Contains(buf.String(), "reason=stuck") {
		t.Fatal("another reason's line was held back")
	}
	now = now.Add(time.Second)
	buf.Reset()
	l.log(log, CloseProtocol, "closing connection: bad frame length")
	if !strings.Contains(buf.String(), "suppressed=15") || !strings.Contains(buf.String(), "reason=protocol") {
		t.Fatalf("the next second's line: %q", buf.String())
	}
}
